"""raspc models in TransformerLens (docs/python-tl.md).

A compiled model is read from a weight file (``.h5`` through h5py, ``.safetensors``
through the safetensors package) or taken from an object with ``.weights`` (tensor name
-> numpy array, named as in the HDF5 file) and ``.metadata`` (the file's metadata), such
as ``raspc.Model``. torch and transformer_lens are imported inside the functions that
need them, so importing this module costs nothing.

TransformerLens 4 removed ``HookedTransformer``; its replacement for a model given by a
config and a state dict is ``TransformerBridge.boot_native``, which has the same hook
names (``blocks.L.attn.hook_pattern``, ``blocks.L.mlp.hook_post``,
``blocks.L.hook_resid_post``, ...). ``to_hooked_transformer`` builds that bridge from the
legacy HookedTransformer state dict (``state_dict``: ``embed.W_E``,
``blocks.L.attn.W_Q`` [n_heads, d_model, d_head], ...) with TransformerLens's own
converter, and loads it strictly. The weights are raspc's, unprocessed: no layer norm,
no folding, no centering. A model without heads, head dimensions or MLP neurons gets one
zero head / dimension / neuron (ReLU(0) is 0: exactly neutral), since TransformerLens
cannot build empty ones (it reads d_mlp 0 as "4 * d_model").

PAD is masked by TransformerLens's ``attention_mask`` argument, which the native
attention applies to causal and bidirectional models alike: pass the mask
``to_tokens`` returns (``run`` does), or PAD keys are attended in a padded batch.
"""

from __future__ import annotations

import json
import math
import os

_INT_KEYS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx",
             "causal", "bos_id", "pad_id", "int_tokens")
_STR_KEYS = ("output_name", "output_encoding", "source_name", "source")
_LIST_KEYS = ("vocab", "residual_labels")


class _Compiled:
    """A compiled model as tl.py sees it: numpy weights and decoded metadata."""

    def __init__(self, weights, meta):
        self.weights = weights
        self.meta = meta


def _text(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if hasattr(v, "item") and getattr(v, "shape", None) == ():  # numpy scalar
        return _text(v.item())
    if hasattr(v, "shape") and getattr(v, "shape", None) == (1,):  # HDF5 [1] string datasets
        return _text(v[0])
    return v


def _normalize(raw, where, decoded_values=False):
    """The metadata of a file (HDF5 attributes and datasets, or safetensors' string map)
    as Python values: ints, strs, lists, the ground truth as a list of dicts.
    decoded_values: output_values holds the values themselves, not their JSON texts."""
    meta = {}
    for key in _INT_KEYS:
        if key not in raw:
            raise ValueError(f"{where}: metadata has no '{key}'")
        meta[key] = int(_text(raw[key]))
    meta["causal"] = bool(meta["causal"])
    meta["int_tokens"] = bool(meta["int_tokens"])
    for key in _STR_KEYS:
        meta[key] = _text(raw.get(key, ""))
    for key in _LIST_KEYS:
        v = _text(raw[key])
        meta[key] = json.loads(v) if isinstance(v, str) else [_text(x) for x in v]
    # Output values: one JSON array text (safetensors), or one JSON scalar text per value
    # (HDF5), or values already decoded.
    v = _text(raw["output_values"])
    if decoded_values:
        meta["output_values"] = list(v)
    elif isinstance(v, str):
        meta["output_values"] = json.loads(v)
    else:
        meta["output_values"] = [json.loads(_text(x)) for x in v]
    gt = _text(raw.get("ground_truth", "[]"))
    meta["ground_truth"] = json.loads(gt) if isinstance(gt, str) else list(gt)
    meta["residual_basis"] = _basis(raw.get("residual_basis"), meta, where)
    return meta


def _basis(v, meta, where):
    """The residual basis [n_labels, d_model] of a rotated or compressed model as float32
    numpy (HDF5: a dataset; safetensors: a JSON array of rows), or None (one-hot labels)."""
    import numpy as np

    if v is None:
        return None
    v = _text(v)
    b = np.asarray(json.loads(v) if isinstance(v, str) else v, dtype=np.float32)
    want = (len(meta["residual_labels"]), meta["d_model"])
    if b.shape != want:
        raise ValueError(f"{where}: residual_basis has shape {list(b.shape)}, expected {list(want)} "
                         f"(n_labels, d_model)")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{where}: residual_basis has a non-finite value")
    return b


def _read_h5(path):
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        weights = {k: np.asarray(f[k][()], dtype=np.float32) for k in f if k != "metadata"}
        md = f["metadata"]
        raw = {k: md.attrs[k] for k in md.attrs}
        for k in md:
            raw[k] = md[k][()]
    # Datasets of strings: lists of bytes; source and ground_truth: shape [1].
    raw["vocab"] = [_text(x) for x in raw["vocab"]]
    raw["residual_labels"] = [_text(x) for x in raw["residual_labels"]]
    raw["output_values"] = [_text(x) for x in raw["output_values"]]
    return weights, raw


def _read_safetensors(path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(os.fspath(path), framework="numpy") as f:
        raw = dict(f.metadata() or {})
    if raw.get("format") != "raspc":
        raise ValueError(f"{path}: not a raspc safetensors file (no __metadata__ format 'raspc')")
    return load_file(os.fspath(path)), raw


def load(model):
    """The compiled model behind `model`: a path (.h5 or .safetensors), an object with
    .weights (tensor name -> array) and .metadata (raspc.Model's: the file's metadata
    with the sizes under "config", the output's name under "output" and output_values
    decoded; the ground truth from .ground_truth or metadata["ground_truth"]), or what
    this function returned."""
    if isinstance(model, _Compiled):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic == b"\x89HDF\r\n\x1a\n":
            weights, raw = _read_h5(path)
        else:
            weights, raw = _read_safetensors(path)
        return _Compiled(weights, _normalize(raw, path))
    if hasattr(model, "weights") and hasattr(model, "metadata"):
        import numpy as np

        # raspc.Model: the sizes under metadata["config"], the output's name under
        # "output", output_values decoded, the ground truth a property of its own.
        md = dict(model.metadata)
        raw = dict(md)
        raw.update(md.get("config", {}))
        raw.setdefault("output_name", md.get("output", ""))
        gt = getattr(model, "ground_truth", None)
        if gt is not None:
            raw["ground_truth"] = gt
        weights = {k: np.asarray(v, dtype=np.float32) for k, v in dict(model.weights).items()}
        return _Compiled(weights, _normalize(raw, type(model).__name__, decoded_values=True))
    raise TypeError(f"expected a model file path or an object with .weights and .metadata, got {type(model).__name__}")


# ------------------------------------------------------------------------------------
# Configuration and weights


def _tl_sizes(m):
    """The sizes TransformerLens gets: at least one head, head dimension and neuron."""
    md = m.meta
    return {
        "n_heads": max(md["n_heads"], 1),
        "d_head": max(md["d_head"], 1),
        "d_mlp": max(md["d_mlp"], 1),
    }


def config_dict(model):
    """The TransformerBridgeConfig (HookedTransformerConfig) arguments of `model` as
    TransformerLens gets it."""
    m = load(model)
    md = m.meta
    s = _tl_sizes(m)
    return {
        "n_layers": md["n_layers"],
        "d_model": md["d_model"],
        "n_heads": s["n_heads"],
        "d_head": s["d_head"],
        "d_mlp": s["d_mlp"],
        "n_ctx": md["n_ctx"],
        "d_vocab": md["d_vocab"],
        "d_vocab_out": md["d_vocab_out"],
        "act_fn": "relu",
        "normalization_type": None,
        "attention_dir": "causal" if md["causal"] else "bidirectional",
        "positional_embedding_type": "standard",
        # raspc divides scores by sqrt(d_head), by 1 when there are no head dimensions.
        "attn_scale": math.sqrt(md["d_head"]) if md["d_head"] > 0 else 1.0,
        "use_attn_scale": True,
        "attn_only": False,
        "final_rms": False,
        "gated_mlp": False,
        "original_architecture": "raspc",
        "architecture": "TransformerLensNative",
        "model_name": "raspc:" + (md["source_name"] or md["output_name"]),
        "init_weights": False,
    }


def _require_tl4():
    """TransformerLens 4 or later: raspc builds its TransformerBridge (older versions'
    HookedTransformer attends to PAD in bidirectional models; see docs/python-tl.md)."""
    import transformer_lens

    if not hasattr(transformer_lens, "TransformerBridge"):
        from importlib.metadata import version

        raise ImportError(f"raspc.tl needs transformer-lens >= 4 (it has TransformerBridge); this is "
                          f"transformer-lens {version('transformer-lens')}: pip install 'transformer-lens>=4'")


def hooked_transformer_config(model):
    """The transformer_lens TransformerBridgeConfig of `model` (TransformerLens 4's
    HookedTransformerConfig)."""
    _require_tl4()
    from transformer_lens import TransformerBridgeConfig

    return TransformerBridgeConfig.from_dict(config_dict(model))


def numpy_state_dict(model):
    """The HookedTransformer state dict of `model` as float32 numpy arrays: TL names and
    shapes, raspc's weights (zero-padded to the sizes of config_dict)."""
    import numpy as np

    m = load(model)
    md, w = m.meta, m.weights
    s = _tl_sizes(m)
    D = md["d_model"]
    H, Dh, M = s["n_heads"], s["d_head"], s["d_mlp"]
    shapes = {
        "embed.W_E": (md["d_vocab"], D),
        "pos_embed.W_pos": (md["n_ctx"], D),
        "unembed.W_U": (D, md["d_vocab_out"]),
        "unembed.b_U": (md["d_vocab_out"],),
    }
    for l in range(md["n_layers"]):
        p = f"blocks.{l}."
        for n in ("W_Q", "W_K", "W_V"):
            shapes[p + "attn." + n] = (H, D, Dh)
        for n in ("b_Q", "b_K", "b_V"):
            shapes[p + "attn." + n] = (H, Dh)
        shapes[p + "attn.W_O"] = (H, Dh, D)
        shapes[p + "attn.b_O"] = (D,)
        shapes[p + "mlp.W_in"] = (D, M)
        shapes[p + "mlp.b_in"] = (M,)
        shapes[p + "mlp.W_out"] = (M, D)
        shapes[p + "mlp.b_out"] = (D,)
    sd = {}
    for name, shape in shapes.items():
        if name not in w:
            raise ValueError(f"the model has no tensor '{name}'")
        src = np.asarray(w[name], dtype=np.float32)
        if src.ndim != len(shape) or any(a > b for a, b in zip(src.shape, shape)):
            raise ValueError(f"tensor '{name}' has shape {list(src.shape)}, expected at most {list(shape)}")
        out = np.zeros(shape, dtype=np.float32)
        out[tuple(slice(0, n) for n in src.shape)] = src  # the padding is zero
        sd[name] = out
    return sd


def state_dict(model):
    """The TransformerLens parameters of `model` as torch tensors (TL names)."""
    import torch

    return {k: torch.from_numpy(v) for k, v in numpy_state_dict(model).items()}


def to_hooked_transformer(model):
    """A transformer_lens TransformerBridge (TransformerLens 4's HookedTransformer)
    computing `model`: decode(model, ht(tokens, attention_mask=mask), mask) with
    tokens, mask = to_tokens(model, inputs) gives raspc's run's values."""
    import torch

    _require_tl4()
    from transformer_lens import TransformerBridge
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    import transformer_lens.model_bridge.sources.native  # noqa: F401  (adds boot_native)

    bridge = TransformerBridge.boot_native(hooked_transformer_config(model), model_name=config_dict(model)["model_name"])
    params = convert_tl_checkpoint(state_dict(model), bridge.cfg)
    with torch.no_grad():
        # Strict: every parameter of the bridge comes from raspc, and nothing else.
        bridge.load_state_dict(params, strict=True)
    bridge.eval()
    return bridge


# ------------------------------------------------------------------------------------
# Tokens and decoding


def _token_ids(md):
    ids = {}
    for i, tok in enumerate(md["vocab"]):
        if i not in (md["bos_id"], md["pad_id"]):
            ids[tok] = i
    return ids


def _token_id(md, ids, tok, seq, pos):
    import numbers

    # Tokens are the vocabulary's strings; an int (numpy's too) is its numeral.
    if isinstance(tok, str):
        key = tok
    elif isinstance(tok, numbers.Integral) and not isinstance(tok, bool):
        key = str(int(tok))
    else:
        key = str(tok)
    if key in ids:
        return ids[key]
    if md["int_tokens"]:
        # An int token matches by value ("03" and "+3" are 3), as raspc run reads it.
        t = key.strip()
        digits = t[1:] if t[:1] in "+-" else t
        if digits.isdigit() and digits.isascii():
            v = str(int(t))
            if v in ids:
                return ids[v]
    if key in ("<bos>", "<pad>"):
        raise ValueError(f"sequence {seq}, token {pos}: token '{key}' is reserved (to_tokens adds BOS and PAD itself)")
    known = ", ".join(t for t in md["vocab"] if t not in ("<bos>", "<pad>"))
    raise ValueError(f"sequence {seq}, token {pos}: token {tok!r} is not in the model's vocabulary {{{known}}}")


def to_tokens(model, inputs):
    """Token ids and attention mask for a batch, as raspc encodes it.

    `inputs`: a batch, a list of sequences each a list of tokens (strings as in the
    vocabulary, or ints for a model over int tokens); or one sequence, a list of tokens
    or a string of space-separated tokens (a batch of one). Each sequence gets BOS first and is right-padded
    with PAD to the longest. Returns (tokens, attention_mask), both torch int64 of shape
    [batch, 1 + longest]; the mask is 1 on BOS and the real tokens, 0 on PAD.
    """
    import torch

    md = load(model).meta
    # A batch is a list of sequences (lists, tuples, arrays); anything else is one sequence.
    def is_seq(s):
        return not isinstance(s, (str, bytes)) and hasattr(s, "__len__") and hasattr(s, "__iter__")

    batch = isinstance(inputs, (list, tuple)) and len(inputs) > 0 and all(is_seq(s) for s in inputs)
    seqs = [list(s) for s in inputs] if batch else [inputs]
    seqs = [s.split() if isinstance(s, str) else list(s) for s in seqs]
    max_len = md["n_ctx"] - 1
    ids = _token_ids(md)
    longest = max((len(s) for s in seqs), default=0)
    tokens = torch.full((len(seqs), longest + 1), md["pad_id"], dtype=torch.long)
    mask = torch.zeros((len(seqs), longest + 1), dtype=torch.long)
    for b, s in enumerate(seqs):
        if len(s) > max_len:
            raise ValueError(f"sequence {b} has {len(s)} tokens, more than the model's maximum length {max_len}")
        tokens[b, 0] = md["bos_id"]
        for i, tok in enumerate(s):
            tokens[b, i + 1] = _token_id(md, ids, tok, b, i)
        mask[b, : len(s) + 1] = 1
    return tokens, mask


def _snap(x, values):
    """raspc's numerical decoding: the nearest value of `values` when within
    1e-3 * max(1, |value|), else x."""
    best, dist = None, math.inf
    for v in values:
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            d = abs(x - v)
            if d < dist:
                best, dist = v, d
    if best is not None and dist < 1e-3 * max(1.0, abs(best)):
        return best
    return x


def _decode_categorical(row, values):
    """The value of the first largest entry of `row` when it is at least 0.5, else None."""
    best = None
    for j, x in enumerate(row):
        if best is None or x > row[best]:
            best = j
    if best is None or not (row[best] >= 0.5) or best >= len(values):
        return None
    return values[best]


def _lengths(attention_mask, n_rows, T):
    """The number of real tokens (BOS excluded) of each sequence."""
    import numpy as np

    if attention_mask is None:
        return [T - 1] * n_rows
    mask = attention_mask.detach().cpu().numpy() if hasattr(attention_mask, "detach") else np.asarray(attention_mask)
    return [int(x) - 1 for x in mask.reshape(n_rows, -1).sum(axis=-1)]


def decode(model, logits, attention_mask=None):
    """raspc's decoding of TransformerLens logits [batch, pos, d_vocab_out]: one list of
    values per sequence, for positions 1 .. len (BOS and PAD give nothing; without a
    mask every position after BOS counts).

    Categorical: the first largest logit gives output_values[column], but only when it
    is at least 0.5; below that the value is None (an output with no value on, e.g. an
    aggregate that selected nothing): a plain argmax would give a value there.
    Numerical: logits[..., 0], snapped to the nearest possible output value when within
    1e-3 * max(1, |value|) of it.
    """
    md = load(model).meta
    x = logits.detach().to("cpu").double().numpy() if hasattr(logits, "detach") else logits
    if x.ndim == 2:
        x = x[None]
    lens = _lengths(attention_mask, x.shape[0], x.shape[1])
    values = md["output_values"]
    out = []
    for b in range(x.shape[0]):
        row = []
        for p in range(1, lens[b] + 1):
            if md["output_encoding"] == "numerical":
                row.append(_snap(float(x[b, p, 0]), values))
            else:
                row.append(_decode_categorical(x[b, p].tolist(), values))
        out.append(row)
    return out


def label_space(model, resid):
    """A residual stream activation [..., d_model] in label coordinates [..., n_labels],
    the columns the ground truth's `reads` and `writes` index: resid @ B.T for a rotated
    or compressed model with residual basis B, resid itself (as numpy) for a one-hot one."""
    import numpy as np

    m = load(model)
    x = resid.detach().to("cpu").double().numpy() if hasattr(resid, "detach") else np.asarray(resid)
    b = m.meta.get("residual_basis")
    if b is None:
        return x
    if x.shape[-1] != b.shape[1]:
        raise ValueError(f"the residual stream has {x.shape[-1]} dimensions, the model's d_model is {b.shape[1]}")
    return x @ b.astype(np.float64).T


def decode_residual(model, node, resid, attention_mask=None):
    """The values of ground-truth node `node` (a dict of tl_ground_truth or of the file's
    ground truth, or a node's name) read from a residual stream activation
    [batch, pos, d_model] (e.g. cache["blocks.1.hook_resid_post"]), as raspc's trace
    reads them: categorical, the first largest of its `writes` directions (None when all
    are below 0.5); numerical, its one direction, snapped to its value set. A rotated or
    compressed model's stream is read through its basis (label_space)."""
    m = load(model)
    if isinstance(node, str):
        found = [n for n in m.meta["ground_truth"] if _label(n) == node]
        if not found:
            raise ValueError(f"no node labelled '{node}' in the ground truth")
        node = found[0]
    x = label_space(m, resid)
    if x.ndim == 2:
        x = x[None]
    lens = _lengths(attention_mask, x.shape[0], x.shape[1])
    writes = node["writes"]
    present = [v for v in node["value_set"] if v is not None]
    numerical = node["encoding"] == "numerical" or (node["encoding"] != "categorical" and len(writes) == 1)
    out = []
    for b in range(x.shape[0]):
        row = []
        for p in range(1, lens[b] + 1):
            if numerical:
                row.append(_snap(float(x[b, p, writes[0]]), node["value_set"]))
            else:
                k = min(len(writes), len(present))
                row.append(_decode_categorical([float(x[b, p, d]) for d in writes[:k]], present[:k]))
        out.append(row)
    return out


def run(model, inputs, hooked=None):
    """Runs `inputs` through TransformerLens (`hooked`, or a new to_hooked_transformer)
    and decodes: the values raspc's run gives."""
    import torch

    ht = hooked if hooked is not None else to_hooked_transformer(model)
    tokens, mask = to_tokens(model, inputs)
    with torch.no_grad():
        logits = ht(tokens, attention_mask=mask, return_type="logits")
    return decode(model, logits, mask)


# ------------------------------------------------------------------------------------
# Ground truth in TransformerLens terms


def _label(n):
    """The name raspc's trace prints for a node."""
    if n.get("name"):
        return n["name"]
    if n["kind"] == "tokens":
        return n.get("op") or "tokens"
    if n["kind"] in ("indices", "length"):
        return n["kind"]
    return f"{n['kind']}_{n['id']}"


def _places(layer, heads, mlp):
    """Hook names of a block of heads or neurons. Neuron ranges are [begin, end), as
    Python slices: cache[hook][..., begin:end]."""
    out = []
    if layer is None or layer < 0:
        return out
    for h in heads or []:
        out.append({"hook": f"blocks.{layer}.attn.hook_pattern", "head": h,
                    "index": f"[:, {h}, :, :]"})
    if mlp is not None:
        a, b = mlp
        out.append({"hook": f"blocks.{layer}.mlp.hook_post", "neurons": [a, b], "index": f"[..., {a}:{b}]"})
    return out


def _residual_hook(layer, n_layers):
    # The node's value is complete after the whole layer that computes it (an
    # aggregate's BOS cleanup runs in that layer's MLP); embedded nodes are there from
    # the start.
    if layer is None or layer < 0:
        return "blocks.0.hook_resid_pre" if n_layers > 0 else "hook_embed"
    return f"blocks.{layer}.hook_resid_post"


def tl_ground_truth(model):
    """Each node of the ground truth with its places as TransformerLens hook names.

    A list, in graph order, of dicts: the file's keys (id, name, kind, op, encoding,
    value_set, location, layer, sublayer, heads, mlp, reads, writes, args) plus
      label:     the name raspc's trace prints,
      places:    [{"hook": "blocks.L.attn.hook_pattern", "head": h}, or
                  {"hook": "blocks.L.mlp.hook_post", "neurons": [a, b]}]  ([a, b) as a
                  Python slice a:b), the heads and neurons computing the node,
      residual:  {"hook": "blocks.L.hook_resid_post" (or "blocks.0.hook_resid_pre" for
                  the embedding), "directions": writes}: where its value can be read
                  (decode_residual), or None for a node not in the residual stream,
      helpers:   the file's helpers, each with its places too.
    """
    m = load(model)
    n_layers = m.meta["n_layers"]
    out = []
    for n in m.meta["ground_truth"]:
        e = dict(n)
        e["label"] = _label(n)
        e["places"] = _places(n.get("layer"), n.get("heads"), n.get("mlp"))
        e["residual"] = ({"hook": _residual_hook(n.get("layer"), n_layers), "directions": list(n["writes"])}
                         if n.get("writes") else None)
        e["helpers"] = [dict(h, places=_places(h.get("layer"), h.get("heads"), h.get("mlp")))
                        for h in n.get("helpers", [])]
        out.append(e)
    return out
