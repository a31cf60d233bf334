"""Compiling, loading, running and saving models: the Python face of raspc's C++ core."""

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from . import _core
from .errors import RaspcError

__all__ = ["Model", "Trace", "TraceStep", "compile", "load", "eval"]

_OPTS = {"max_params"}


def _source(source_or_path):
    """(text, name, is_file): a pathlib.Path, or a str naming an existing file, is a path."""
    if isinstance(source_or_path, os.PathLike):
        return "", os.fspath(source_or_path), True
    if isinstance(source_or_path, str):
        if "\n" not in source_or_path and os.path.isfile(source_or_path):
            return "", source_or_path, True
        return source_or_path, "<string>", False
    raise TypeError(f"expected RASP source text or a path, got {type(source_or_path).__name__}")


def _token(t):
    if isinstance(t, str):
        return t
    if isinstance(t, (bool, int, float, np.integer, np.floating, np.bool_)):
        return str(t.item() if isinstance(t, np.generic) else t)
    raise TypeError(f"a token must be a str, int, float or bool, not {type(t).__name__}")


def _tokens(seq):
    if isinstance(seq, str):
        raise TypeError('an input is a list of tokens, not a str (split it: "1 2 3".split())')
    return [_token(t) for t in seq]


def _batch(inputs):
    """(list of token lists, whether one input was given)."""
    if isinstance(inputs, str):
        raise TypeError('an input is a list of tokens, not a str (split it: "1 2 3".split())')
    items = list(inputs)
    if items and all(isinstance(x, (list, tuple, np.ndarray)) for x in items):
        return [_tokens(x) for x in items], False
    return [_tokens(items)], True


def _vocab(vocab):
    if vocab is None:
        return None
    if isinstance(vocab, str):  # as in a header: "a b c"
        vocab = vocab.split()
    return [_token(t) for t in vocab]


def _options(opts):
    unknown = sorted(set(opts) - _OPTS)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(_OPTS))})")
    max_params = opts.get("max_params")
    return _core.DEFAULT_MAX_PARAMS if max_params is None else int(max_params)


@dataclass
class TraceStep:
    """The residual stream after one sublayer, and every s-op decoded from it."""

    layer: int  # -1 for the embedding
    sublayer: str  # "embed" | "attn" | "mlp"
    residual: np.ndarray  # [len + 1, d_model], row 0 is BOS
    values: dict  # s-op label -> one value per input token


@dataclass
class Trace:
    """One forward pass: every step, and each layer's attention patterns."""

    tokens: list
    steps: list = field(default_factory=list)
    # attention[layer]: [n_heads, len + 1, len + 1], rows queries, columns keys,
    # index 0 BOS; heads a layer does not use are all zero.
    attention: list = field(default_factory=list)

    def values(self, layer, sublayer):
        """The decoded s-ops after `sublayer` ("attn" | "mlp") of `layer` (-1: the embedding)."""
        for s in self.steps:
            if s.layer == layer and (s.sublayer == sublayer or layer == -1):
                return s.values
        raise KeyError(f"no step {sublayer} in layer {layer}")

    @property
    def final(self):
        """The decoded s-ops at the end of the forward pass."""
        return self.steps[-1].values


class Model:
    """A compiled transformer: weights with TransformerLens names, metadata, ground truth."""

    def __init__(self, core):
        if not isinstance(core, _core.Model):
            raise TypeError("use raspc.compile or raspc.load to make a Model")
        self._core = core
        self._metadata = None
        self._weights = None

    # --- running ---
    def run(self, inputs):
        """Decoded outputs of the forward pass: a list of token lists gives a list of
        lists of Python values; one token list gives one list."""
        batch, single = _batch(inputs)
        out = self._core.run(batch)
        return out[0] if single else out

    def logits(self, inputs):
        """The raw logits, [len + 1, d_vocab_out] float64 per input (row 0 is BOS)."""
        batch, single = _batch(inputs)
        out = self._core.logits(batch)
        return out[0] if single else out

    def trace(self, input):
        """Every s-op after every sublayer, and the attention patterns, for one input."""
        tokens = _tokens(input)
        steps = [TraceStep(l, s, r, v) for (l, s, r, v) in self._core.trace(tokens)]
        return Trace(tokens=tokens, steps=steps, attention=self._patterns(steps))

    def _patterns(self, steps):
        # Recomputed from the residual stream that enters each attention sublayer, as the
        # executor computes them (scores / sqrt(d_head), causal mask, softmax).
        cfg = self.config
        w = self.weights
        out = []
        for layer in range(cfg["n_layers"]):
            x = steps[2 * layer].residual
            T = x.shape[0]
            p = np.zeros((cfg["n_heads"], T, T))
            pre = f"blocks.{layer}.attn."
            scale = 1 / math.sqrt(cfg["d_head"]) if cfg["d_head"] > 0 else 1.0
            for h in range(cfg["n_heads"]):
                q = x @ w[pre + "W_Q"][h].astype(np.float64) + w[pre + "b_Q"][h]
                k = x @ w[pre + "W_K"][h].astype(np.float64) + w[pre + "b_K"][h]
                s = (q @ k.T) * scale
                if cfg["causal"]:
                    s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)
                s = np.exp(s - s.max(axis=1, keepdims=True))
                p[h] = s / s.sum(axis=1, keepdims=True)
            out.append(p)
        return out

    # --- what the file holds ---
    @property
    def metadata(self):
        """vocab, max_len, causal, output, output_encoding, output_values, encodings,
        layers, residual_labels, source, ... and config (the TransformerLens sizes)."""
        if self._metadata is None:
            self._metadata = self._core.metadata()
        return self._metadata

    @property
    def config(self):
        """n_layers, d_model, n_heads, d_head, d_mlp, d_vocab, d_vocab_out, n_ctx, causal."""
        return self.metadata["config"]

    @property
    def weights(self):
        """Tensor name (as in the HDF5 file, TransformerLens's) -> float32 array (read-only)."""
        if self._weights is None:
            self._weights = self._core.weights()
            for a in self._weights.values():
                a.flags.writeable = False
        return self._weights

    @property
    def ground_truth(self):
        """Each RASP node: its kind, encoding, value set, and the heads, neurons and
        residual directions that compute it (the file's metadata/ground_truth)."""
        return json.loads(self._core.ground_truth_json())

    @property
    def vocab(self):
        """The input vocabulary (without BOS and PAD)."""
        m = self.metadata
        return [t for i, t in enumerate(m["vocab"]) if i not in (m["bos_id"], m["pad_id"])]

    @property
    def max_len(self):
        return self.metadata["max_len"]

    def save(self, path, overwrite=False, format=None):
        """Writes the model atomically; an existing file only with overwrite=True.
        format: "hdf5" (raspc's weight file) or "safetensors" (TransformerLens names, the
        metadata as strings; docs/weights.md); by default from the suffix, else hdf5."""
        path = os.fspath(path)
        if format is None:
            format = "safetensors" if path.endswith(".safetensors") else "hdf5"
        self._core.save(path, bool(overwrite), format)

    # --- TransformerLens (raspc.tl, which needs torch and transformer-lens) ---
    def to_hooked_transformer(self, *args, **kwargs):
        from . import tl

        return tl.to_hooked_transformer(self, *args, **kwargs)

    def state_dict(self, *args, **kwargs):
        from . import tl

        return tl.state_dict(self, *args, **kwargs)

    def __repr__(self):
        c = self.config
        return (f"<raspc.Model {self.metadata['output']!r}: {c['n_layers']} layers, d_model {c['d_model']}, "
                f"{c['n_heads']} heads, d_mlp {c['d_mlp']}>")


def compile(source_or_path, vocab=None, max_len=None, causal=None, output=None, **opts):
    """Compiles a RASP program (source text, or the path of a .rasp file) into a Model.

    vocab, max_len, causal and output (the s-op to compile, by name) default to the
    program's `# raspc:` header, as on the command line. opts: max_params.
    """
    text, name, is_file = _source(source_or_path)
    core = _core.compile_source(text, name, is_file, _vocab(vocab), max_len, causal, output, _options(opts))
    return Model(core)


def load(path, **opts):
    """Reads an HDF5 weight file (with every check of the command line's reader)."""
    return Model(_core.load(os.fspath(path), _options(opts)))


def eval(source_or_path, input, vocab=None, max_len=None, causal=None, output=None):
    """The reference interpreter's values of the program's output on `input` (one token
    list, or a list of them)."""
    text, name, is_file = _source(source_or_path)
    batch, single = _batch(input)
    out = _core.eval_source(text, name, is_file, batch, _vocab(vocab), max_len, causal, output)
    return out[0] if single else out
