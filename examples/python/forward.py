#!/usr/bin/env python3
"""Runs a model compiled by raspc with numpy and h5py only (nothing of raspc).

    python3 forward.py MODEL.h5 --input "3 1 2 2"          # [1, 2, 2, 3]
    python3 forward.py MODEL.h5 --input "3 1 2 2" --json   # {"value": [1, 2, 2, 3]}
    python3 forward.py MODEL.h5 --inputs FILE              # one sequence per line

From another script:

    import forward
    model = forward.load("sort.h5")
    forward.forward(model, ["3", "1", "2", "2"])           # [1, 2, 2, 3]
    forward.forward_batch(model, [["3", "1"], ["2"]])      # [[1, 3], [2]]

The computation is the one of raspc's CPU runtime (docs/weights.md): BOS at position
0, right-padding with PAD (masked as keys), TransformerLens attention with scores
divided by sqrt(d_head), ReLU MLPs, no layer norm, float32.
"""
import argparse
import json
import re
import shlex
import sys

import h5py
import numpy as np


def _text(x):
    """A string read by h5py: bytes (variable-length strings) or str (attributes)."""
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


class Model:
    pass


def load(path):
    """Reads a raspc weight file into a Model (weights as float32 numpy arrays)."""
    m = Model()
    with h5py.File(path, "r") as f:
        meta = f["metadata"]
        a = meta.attrs
        for key in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx",
                    "bos_id", "pad_id"):
            setattr(m, key, int(a[key]))
        m.causal = bool(int(a["causal"]))
        m.int_tokens = bool(int(a["int_tokens"]))
        m.output_name = _text(a["output_name"])
        m.output_encoding = _text(a["output_encoding"])
        m.vocab = [_text(t) for t in meta["vocab"][()]]
        m.residual_labels = [_text(t) for t in meta["residual_labels"][()]]
        m.output_values = [json.loads(_text(v)) for v in meta["output_values"][()]]
        # Format 2: one string of shape [1] each.
        m.ground_truth = json.loads(_text(meta["ground_truth"][0]))
        m.source = _text(meta["source"][0])
        m.w = {name: np.asarray(f[name][()], dtype=np.float32) for name in f if name != "metadata"}
    m.token_ids = {t: i for i, t in enumerate(m.vocab) if i not in (m.bos_id, m.pad_id)}
    return m


def encode(m, tokens, seq=0):
    """Token ids for one sequence (strings or ints), BOS first."""
    if len(tokens) > m.n_ctx - 1:
        raise ValueError(f"sequence {seq} has {len(tokens)} tokens, more than the model's maximum length "
                         f"{m.n_ctx - 1}")
    ids = [m.bos_id]
    for pos, tok in enumerate(tokens):
        tok = str(tok)
        i = m.token_ids.get(tok)
        if i is None and m.int_tokens and re.fullmatch(r"[+-]?[0-9]+", tok):
            i = m.token_ids.get(str(int(tok)))  # matched by value: "03" and "+3" are 3
        if i is None:
            raise ValueError(f"sequence {seq}, position {pos}: token '{tok}' is not in the model's vocabulary")
        ids.append(i)
    return ids


def logits_batch(m, batch):
    """Logits [B, T, d_vocab_out] and the lengths (BOS included) of a batch."""
    ids = [encode(m, toks, s) for s, toks in enumerate(batch)]
    B, T = len(ids), max(len(i) for i in ids)
    lens = np.array([len(i) for i in ids])
    tok = np.full((B, T), m.pad_id, dtype=np.int64)
    for b, i in enumerate(ids):
        tok[b, :len(i)] = i
    w = m.w
    x = w["embed.W_E"][tok] + w["pos_embed.W_pos"][np.arange(T)][None, :, :]  # [B, T, D]
    # mask[b, i, j]: may query i of sequence b attend key j?
    key_ok = np.arange(T)[None, :] < lens[:, None]  # not PAD
    mask = np.broadcast_to(key_ok[:, None, :], (B, T, T))
    if m.causal:
        mask = mask & np.tril(np.ones((T, T), dtype=bool))[None]
    scale = np.float32(1.0 / np.sqrt(m.d_head)) if m.d_head > 0 else np.float32(1.0)
    for l in range(m.n_layers):
        p = f"blocks.{l}.attn."
        xh = x[:, None]  # [B, 1, T, D], broadcast over heads
        q = xh @ w[p + "W_Q"] + w[p + "b_Q"][None, :, None, :]  # [B, H, T, d_head]
        k = xh @ w[p + "W_K"] + w[p + "b_K"][None, :, None, :]
        v = xh @ w[p + "W_V"] + w[p + "b_V"][None, :, None, :]
        scores = (q @ k.transpose(0, 1, 3, 2)) * scale  # [B, H, T, T]
        scores = np.where(mask[:, None], scores, np.float32(-np.inf))
        scores = scores - scores.max(axis=-1, keepdims=True)
        a = np.exp(scores)
        a = a / a.sum(axis=-1, keepdims=True)
        z = a @ v  # [B, H, T, d_head]
        x = x + (z @ w[p + "W_O"]).sum(axis=1) + w[p + "b_O"]
        p = f"blocks.{l}.mlp."
        h = np.maximum(x @ w[p + "W_in"] + w[p + "b_in"], np.float32(0))
        x = x + h @ w[p + "W_out"] + w[p + "b_out"]
    return x @ w["unembed.W_U"] + w["unembed.b_U"], lens


def snap(x, values):
    """The value of `values` nearest to x within 1e-3 * max(1, |value|), else x."""
    best, dist = None, np.inf
    for v in values:
        if isinstance(v, (bool, int, float)):
            d = abs(x - float(v))
            if d < dist:
                best, dist = v, d
    if best is not None and dist < 1e-3 * max(1.0, abs(float(best))):
        return best
    return float(x)


def decode(m, row):
    if m.output_encoding == "categorical":
        j = int(np.argmax(row))  # first maximum
        return m.output_values[j] if row[j] >= 0.5 else None
    return snap(float(row[0]), m.output_values)


def forward_batch(m, batch):
    """Output values for each sequence of a batch (lists of tokens, without BOS)."""
    batch = [list(s) for s in batch]
    if not batch:
        return []
    logits, lens = logits_batch(m, batch)
    return [[decode(m, logits[b, p]) for p in range(1, lens[b])] for b in range(len(batch))]


def forward(m, tokens):
    """Output values for one sequence of tokens (without BOS)."""
    return forward_batch(m, [tokens])[0]


def fmt_value(v):
    if v is None:
        return "None"
    if isinstance(v, (bool, int, float)):
        return repr(v)
    return str(v)


def fmt_seq(vals):
    return "[" + ", ".join(fmt_value(v) for v in vals) + "]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="weight file written by raspc compile")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--input", help='tokens separated by spaces, e.g. "3 1 2 2"')
    g.add_argument("--inputs", help="a file with one input sequence per line")
    ap.add_argument("--json", action="store_true", help='print {"value": [...]}')
    args = ap.parse_args()
    try:
        m = load(args.model)
        if args.input is not None:
            batch = [shlex.split(args.input)]
        else:
            with open(args.inputs, encoding="utf-8") as f:
                batch = [shlex.split(line) for line in f.read().splitlines()]
        outs = forward_batch(m, batch)
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for vals in outs:
        print(json.dumps({"value": vals}) if args.json else fmt_seq(vals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
