"""The compiled model as Tracr hands it out: ``AssembledTransformerModel.apply``.

``apply(["BOS", t1, ..., tn])`` runs raspc's transformer on ``t1 .. tn`` and returns
an object whose ``decoded`` is ``["BOS", y1, ..., yn]``, the BOS position included as
Tracr does. ``raspc_model`` is the ``raspc.Model`` underneath (run, logits, trace,
to_hooked_transformer, save).
"""

import dataclasses
from typing import Any, List, Sequence


@dataclasses.dataclass
class AssembledTransformerModelOutput:
    """What `apply` returns. `decoded[0]` is the BOS token, as in Tracr; positions
    holding the PAD token decode to None (Tracr leaves them unspecified)."""

    decoded: List[Any]


@dataclasses.dataclass
class AssembledTransformerModel:
    """A raspc model behind Tracr's interface."""

    raspc_model: Any
    vocab: List[Any]
    max_seq_len: int
    causal: bool
    compiler_bos: str
    compiler_pad: str
    output_encoding: str  # "categorical" or "numerical", as Tracr's output space
    # Turns a decoded value of raspc's back into the program's value (for s-ops whose
    # values raspc stores under another name, such as tuples).
    decode_value: Any = None

    def apply(self, tokens: Sequence[Any]) -> AssembledTransformerModelOutput:
        tokens = list(tokens)
        if not tokens or tokens[0] != self.compiler_bos:
            raise ValueError(f"the input must start with the BOS token {self.compiler_bos!r} "
                             f"(as with Tracr), got {tokens!r}")
        body = tokens[1:]
        # Tracr pads on the right; PAD positions carry no value.
        n = len(body)
        while n > 0 and body[n - 1] == self.compiler_pad:
            n -= 1
        body, pads = body[:n], len(body) - n
        if len(body) + pads > self.max_seq_len:
            raise ValueError(f"the input has {len(body) + pads} tokens after BOS; the model "
                             f"was compiled for at most {self.max_seq_len}")
        for t in body:
            if t == self.compiler_pad or t == self.compiler_bos:
                raise ValueError(f"{t!r} may only appear as BOS (first) or PAD (trailing), "
                                 f"got {tokens!r}")
            if t not in self.vocab:
                raise ValueError(f"token {t!r} is not in the vocabulary {self.vocab!r}")
        values: List[Any] = []
        if body:
            values = list(self.raspc_model.run([body])[0])
            if self.decode_value is not None:
                values = [self.decode_value(v) for v in values]
        return AssembledTransformerModelOutput(
            decoded=[self.compiler_bos] + values + [None] * pads)

    def __call__(self, tokens: Sequence[Any]) -> AssembledTransformerModelOutput:
        return self.apply(tokens)
