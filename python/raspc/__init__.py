"""raspc: compile RASP programs into transformers whose weights compute them exactly.

    import raspc
    model = raspc.compile("examples/sort.rasp")      # vocab, max_len from its header
    model.run([3, 1, 2, 2])                           # [1, 2, 2, 3], the forward pass
    raspc.eval("examples/sort.rasp", [3, 1, 2, 2])    # the same, by the interpreter

docs/python.md describes the API. The C++ core is raspc._core; TransformerLens export
is raspc.tl (needs torch), Tracr's API raspc.tracr.
"""

from .errors import RaspcError
from .model import Model, Trace, TraceStep, compile, eval, load

__version__ = "0.1.0"
__all__ = ["RaspcError", "Model", "Trace", "TraceStep", "compile", "eval", "load"]
