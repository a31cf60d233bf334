"""Tracr's API on raspc: compile a Tracr program by changing its imports.

    from raspc.tracr import rasp                      # was: from tracr.rasp import rasp
    from raspc.tracr.compiler import compiling, lib   # was: from tracr.compiler import ...
    model = compiling.compile_rasp_to_model(program, vocab={1, 2, 3}, max_seq_len=5,
                                            compiler_bos="BOS")
    model.apply(["BOS", 3, 1, 2]).decoded             # ["BOS", ...], as Tracr
    model.raspc_model                                 # the raspc.Model underneath

Programs built with an installed `tracr` are accepted by `compile_rasp_to_model` too.
See docs/python-tracr.md for the mapping onto raspc and the remaining differences.
"""
from raspc.tracr import rasp  # noqa: F401
from raspc.tracr.compiler import compiling, lib  # noqa: F401
from raspc.tracr.compiler.compiling import (  # noqa: F401
    COMPILER_BOS, COMPILER_PAD, UnsupportedError, compile_rasp_to_model)
from raspc.tracr.convert import from_tracr, to_tracr  # noqa: F401
