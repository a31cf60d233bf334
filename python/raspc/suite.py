"""The ground-truth suite from Python (docs/suite.md): building and loading a suite,
its models in TransformerLens, and the interventions that prove their circuits.

    from raspc import suite
    s = suite.load("SUITE")                       # or suite.build("SUITE", programs="classic_*")
    m = s["classic_sort"]
    ht = m.tl()                                   # a TransformerLens model
    m.edges("heads")                              # [(child_hook, child_index, parent_hook, parent_index)]
    suite.patch_node(m, a, b, m.circuit["nodes"][3])   # decoded outputs of a with the node from b

suite.programs() lists the curated programs; suite.index(DIR) rebuilds a suite's index
after shards built its models apart.

Interventions follow the contract of checks.json (docs/runtime.md, "Circuits and
interventions") and use only TransformerLens hooks (run_with_cache, run_with_hooks).
TransformerLens 4.3's native bridge, which raspc's models run on, does not fire
`attn.hook_result` nor `attn.hook_q_input` / `hook_k_input` / `hook_v_input`
(`set_use_attn_result` and `set_use_split_qkv_input` raise NotImplementedError for its
AttentionBridge). Both are linear in hooks it does fire, so this module realises them
exactly there:

- a head's output `hook_result[:, :, h]` is `hook_z[:, :, h] @ W_O[h]`: replacing it
  is replacing head h's `hook_z`, reading it is that product;
- adding `delta` to head h's q input is adding `delta @ W_Q[h]` to `hook_q[:, :, h]`
  (k and v likewise): q = x W_Q + b_Q is linear in x.

`blocks.L.hook_mlp_in` fires once `set_use_hook_mlp_in(True)` is set (`SuiteModel.tl`
and `hooked_for` do). torch and transformer_lens are imported inside the functions that
need them, as in raspc.tl.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import os
import random

from . import tl as _tl

__all__ = [
    "build", "index", "programs", "load", "Suite", "SuiteModel", "hooked_for", "edges_from_weights", "components_from_weights",
    "edge_tuple", "to_torch_index", "component_output", "child_input_hooks", "patch_components",
    "patch_node", "patch_edge", "Patcher", "run", "same", "random_pairs",
]

# ------------------------------------------------------------------------------------
# Building and loading


def _shard(shard):
    """`shard` as (I, N), 1-based, from "I/N" (the command line's form) or (I, N)."""
    if shard is None:
        return None
    parts = shard.split("/") if isinstance(shard, str) else list(shard)
    try:
        i, n = (int(x) for x in parts)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be 'I/N' or (I, N) with 1 <= I <= N, not {shard!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"shard must be 'I/N' or (I, N) with 1 <= I <= N, not {shard!r}")
    return (i, n)


def _core_fn(name):
    from . import _core

    if not hasattr(_core, name):
        raise RuntimeError(f"this raspc module has no suite builder (raspc._core.{name}): reinstall raspc "
                           "from a checkout that has `raspc suite` (pip install .), or run "
                           "`raspc suite build DIR` and then raspc.suite.load(DIR)")
    return getattr(_core, name)


def build(dir, programs=None, jobs=None, shard=None, force=False):
    """Builds the suite into `dir`, as `raspc suite build DIR` does, in-process, and
    returns it loaded (a Suite). A model that fails is marked in the index (its entry's
    "status" and "error"), not raised.

    programs: a glob of the curated programs' names ('classic_*'), or a filesystem glob
    of your own programs when it contains '/' or ends in '.rasp'; None for all.
    jobs: worker threads (None: one per core). shard: "I/N" or (I, N), build every N-th
    program starting at the I-th (a cluster job array; then suite.index(DIR)).
    force: rebuild models already in `dir`.
    """
    text = _core_fn("suite_build")(os.fspath(dir), programs=programs, jobs=0 if jobs is None else int(jobs),
                                   shard=_shard(shard), force=bool(force))
    return Suite(dir, index=json.loads(text))


def index(dir):
    """Rebuilds index.json, index.csv and README.md of `dir` from the models there (after
    shards built them apart), as `raspc suite index DIR`; returns the Suite."""
    text = _core_fn("suite_index")(os.fspath(dir))
    return Suite(dir, index=json.loads(text))


def programs():
    """The curated programs embedded in raspc, with their metadata (`raspc suite list`)."""
    return json.loads(_core_fn("suite_list")())


def load(dir):
    """The suite built in `dir` (its index.json)."""
    return Suite(dir)


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (is this a suite built by `raspc suite build`?)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None


class Suite:
    """A built suite: its index entries, and a SuiteModel per model.

    Iterating gives SuiteModels in index order; `suite["name"]` one of them;
    `suite.filter(category=..., difficulty=..., causal=..., name=GLOB)` a Suite of those
    that match (each argument a value or a list of accepted values)."""

    def __init__(self, dir, index=None, entries=None):
        self.dir = os.fspath(dir)
        self.index = index if index is not None else _read_json(os.path.join(self.dir, "index.json"))
        if not isinstance(self.index, dict) or not isinstance(self.index.get("models"), list):
            raise ValueError(f"{os.path.join(self.dir, 'index.json')}: expected an object with a 'models' list")
        self.entries = list(self.index["models"]) if entries is None else list(entries)
        self._models = {}  # name -> SuiteModel: each model's files and TransformerLens model read once

    def __len__(self):
        return len(self.entries)

    def _model(self, e):
        if e["name"] not in self._models:
            self._models[e["name"]] = SuiteModel(self.dir, e)
        return self._models[e["name"]]

    def __iter__(self):
        return (self._model(e) for e in self.entries)

    def names(self):
        return [e["name"] for e in self.entries]

    def __getitem__(self, name):
        for e in self.entries:
            if e["name"] == name:
                return self._model(e)
        raise KeyError(f"no model '{name}' in the suite at {self.dir}")

    def filter(self, category=None, difficulty=None, causal=None, name=None):
        def accepts(want, got):
            if want is None:
                return True
            return got in (want if isinstance(want, (list, tuple, set)) else [want])

        keep = [e for e in self.entries
                if accepts(category, e.get("category")) and accepts(difficulty, e.get("difficulty"))
                and (causal is None or bool(e.get("causal")) == bool(causal))
                and (name is None or fnmatch.fnmatchcase(e["name"], name))]
        sub = Suite(self.dir, index=self.index, entries=keep)
        sub._models = self._models
        return sub

    def csv_rows(self):
        """index.csv as a list of dicts (strings)."""
        with open(os.path.join(self.dir, "index.csv"), newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def __repr__(self):
        return f"Suite({self.dir!r}, {len(self)} models)"


class SuiteModel:
    """One model of a suite: its files under DIR/models/<name>/, read when first used."""

    def __init__(self, suite_dir, entry):
        self.entry = dict(entry)
        self.name = self.entry["name"]
        rel = self.entry.get("path") or os.path.join("models", self.name)
        self.dir = rel if os.path.isabs(rel) else os.path.join(os.fspath(suite_dir), rel)
        self._json = {}
        self._compiled = {}
        self._bridges = {}

    @classmethod
    def from_dir(cls, model_dir):
        """A model directory on its own (DIR/models/<name>)."""
        model_dir = os.fspath(model_dir)
        return cls(os.path.dirname(model_dir), {"name": os.path.basename(os.path.normpath(model_dir)),
                                                "path": os.path.abspath(model_dir)})

    # --- metadata and files ---
    @property
    def metadata(self):
        """The model's index entry: description, category, difficulty, causal, vocab,
        max_len, sizes, exact."""
        return self.entry

    def path(self, file):
        return os.path.join(self.dir, file)

    def _file_json(self, file):
        if file not in self._json:
            self._json[file] = _read_json(self.path(file))
        return self._json[file]

    @property
    def ground_truth(self):
        """ground_truth.json: {"residual_labels": [...], "nodes": [...]}."""
        return self._file_json("ground_truth.json")

    @property
    def circuit(self):
        """circuit.json: components, nodes with their components and cones, edges."""
        return self._file_json("circuit.json")

    @property
    def checks(self):
        """checks.json: exactness, intervention results, variants."""
        return self._file_json("checks.json")

    @property
    def encoders(self):
        """encoders.json: the input vocabulary, BOS/PAD ids, the output's values."""
        return self._file_json("encoders.json")

    @property
    def program(self):
        with open(self.path("program.rasp"), encoding="utf-8") as f:
            return f.read()

    def weights_path(self, variant=None):
        """model.h5, or the variant's (variant "rotated" or "compressed")."""
        return self.path("model.h5") if variant is None else self.path(os.path.join(variant, "model.h5"))

    def compiled(self, variant=None):
        """raspc.tl.load of the weights (read once)."""
        if variant not in self._compiled:
            self._compiled[variant] = _tl.load(self.weights_path(variant))
        return self._compiled[variant]

    # --- TransformerLens ---
    def tl(self, variant=None):
        """The TransformerLens model (built once; see hooked_for)."""
        if variant not in self._bridges:
            self._bridges[variant] = hooked_for(self.compiled(variant))
        return self._bridges[variant]

    def to_tokens(self, inputs):
        return _tl.to_tokens(self.compiled(), inputs)

    def decode(self, logits, attention_mask=None):
        return _tl.decode(self.compiled(), logits, attention_mask)

    def run(self, inputs, variant=None):
        return _tl.run(self.compiled(variant), inputs, hooked=self.tl(variant))

    # --- the circuit ---
    def edges(self, granularity="heads"):
        """circuit.json's edges as ACDC-style tuples (child_hook, child_index, parent_hook,
        parent_index), indices as tuples: (None, None, h) for head h, (None,) for the
        whole tensor (ACDC's TorchIndex([None]))."""
        return [edge_tuple(e) for e in _edge_list(self.circuit, granularity)]

    def torch_index_edges(self, granularity="heads"):
        """The edges with ACDC's TorchIndex objects (needs ACDC installed): the form
        InterpBench's circuits take, (child, TorchIndex, parent, TorchIndex)."""
        return [to_torch_index(t) for t in self.edges(granularity)]

    def node(self, key):
        """A circuit.json node by id or name."""
        for n in self.circuit["nodes"]:
            if n["id"] == key or (isinstance(key, str) and n.get("name") == key):
                return n
        raise KeyError(f"{self.name}: no node {key!r} in circuit.json")

    def __repr__(self):
        return f"SuiteModel({self.name!r})"


def _edge_list(circuit, granularity):
    if granularity not in ("heads", "qkv"):
        raise ValueError(f"granularity must be 'heads' or 'qkv', not {granularity!r}")
    return circuit["edges"][granularity]


def _index_tuple(index):
    if index is None:
        return (None,)
    return tuple(tuple(x) if isinstance(x, list) else x for x in index)


def edge_tuple(edge):
    """A circuit.json edge as (child_hook, child_index, parent_hook, parent_index)."""
    return (edge["child"], _index_tuple(edge.get("child_index")),
            edge["parent"], _index_tuple(edge.get("parent_index")))


def to_torch_index(t):
    """An edge tuple with ACDC's TorchIndex in place of the index tuples."""
    try:
        from acdc.TLACDCEdge import TorchIndex
    except ImportError:
        raise ImportError("to_torch_index needs ACDC (https://github.com/ArthurConmy/Automatic-Circuit-Discovery): "
                          "the plain tuples of SuiteModel.edges need nothing") from None
    child, ci, parent, pi = t
    return (child, TorchIndex(list(ci)), parent, TorchIndex(list(pi)))


# ------------------------------------------------------------------------------------
# The edge rule, from the weights alone


def _nonzero_cols(a):
    import numpy as np

    return set(np.flatnonzero(np.any(np.asarray(a) != 0, axis=tuple(range(a.ndim - 1)))).tolist())


def _nonzero_rows(a):
    import numpy as np

    a = np.asarray(a)
    return set(np.flatnonzero(np.any(a != 0, axis=tuple(range(1, a.ndim)))).tolist()) if a.size else set()


def components_from_weights(model):
    """Every component of `model` (anything raspc.tl.load takes) by the edge rule, in
    forward order: dicts {hook, index, layer, order, writes, reads} where reads is
    {"q"|"k"|"v"|"mlp"|"out": set of residual directions}. The embedding (a parent only)
    and the output (a child only) are included."""
    m = _tl.load(model)
    w, md = m.weights, m.meta
    L = md["n_layers"]
    comps = [{"hook": "blocks.0.hook_resid_pre", "index": None, "layer": -1, "order": -1,
              "writes": _nonzero_cols(w["embed.W_E"]) | _nonzero_cols(w["pos_embed.W_pos"]), "reads": {}}]
    for l in range(L):
        W_O = w[f"blocks.{l}.attn.W_O"]
        for h in range(W_O.shape[0]):
            writes = _nonzero_cols(W_O[h])
            if not writes:
                continue  # a head with a zero output is no component
            reads = {x: _nonzero_rows(w[f"blocks.{l}.attn.W_{x.upper()}"][h]) for x in ("q", "k", "v")}
            comps.append({"hook": f"blocks.{l}.attn.hook_result", "index": [None, None, h], "layer": l,
                          "order": 2 * l, "writes": writes, "reads": reads})
        W_out = w[f"blocks.{l}.mlp.W_out"]
        writes = _nonzero_cols(W_out) if W_out.size else set()
        if writes:
            comps.append({"hook": f"blocks.{l}.hook_mlp_out", "index": None, "layer": l, "order": 2 * l + 1,
                          "writes": writes, "reads": {"mlp": _nonzero_rows(w[f"blocks.{l}.mlp.W_in"])}})
    comps.append({"hook": f"blocks.{L - 1}.hook_resid_post", "index": None, "layer": L, "order": 1 << 30,
                  "writes": set(), "reads": {"out": _nonzero_rows(w["unembed.W_U"])}})
    return comps


def edges_from_weights(model):
    """The edges of `model` at both granularities by the edge rule, computed from its
    weights alone (an independent derivation of circuit.json's "edges"):
    {"heads": [...], "qkv": [...]}, each edge {"parent", "parent_index", "child",
    "child_index"} as in circuit.json."""
    comps = components_from_weights(model)
    heads, qkv = [], []
    for c in comps:
        if not c["reads"]:
            continue  # the embedding reads nothing
        for p in comps:
            if p["order"] >= c["order"] or not p["writes"]:
                continue
            pe = {"parent": p["hook"], "parent_index": p["index"]}
            if "q" in c["reads"]:  # a head
                l, h = c["layer"], c["index"][2]
                all_reads = c["reads"]["q"] | c["reads"]["k"] | c["reads"]["v"]
                if p["writes"] & all_reads:
                    heads.append(dict(pe, child=c["hook"], child_index=c["index"]))
                for x in ("q", "k", "v"):
                    if p["writes"] & c["reads"][x]:
                        qkv.append(dict(pe, child=f"blocks.{l}.hook_{x}_input", child_index=[None, None, h]))
            elif "mlp" in c["reads"]:
                if p["writes"] & c["reads"]["mlp"]:
                    heads.append(dict(pe, child=c["hook"], child_index=None))
                    qkv.append(dict(pe, child=f"blocks.{c['layer']}.hook_mlp_in", child_index=None))
            elif p["writes"] & c["reads"]["out"]:
                heads.append(dict(pe, child=c["hook"], child_index=None))
                qkv.append(dict(pe, child=c["hook"], child_index=None))
    return {"heads": heads, "qkv": qkv}


# ------------------------------------------------------------------------------------
# Interventions, with TransformerLens hooks


def hooked_for(model):
    """raspc.tl.to_hooked_transformer(model) with the hooks the interventions use:
    hook_mlp_in on; use_attn_result and use_split_qkv_input on where the bridge supports
    them (TransformerLens 4.3's native bridge does not: see the module's docstring)."""
    ht = _tl.to_hooked_transformer(model)
    ht.set_use_hook_mlp_in(True)
    for flag in ("set_use_attn_result", "set_use_split_qkv_input"):
        try:
            getattr(ht, flag)(True)
        except (NotImplementedError, AttributeError):
            pass
    return ht


class _Weights:
    """A model's weights as torch tensors, for the functions that need no forward pass."""

    def __init__(self, model):
        self.compiled = model.compiled() if isinstance(model, SuiteModel) else _tl.load(model)
        self.meta = self.compiled.meta
        self.n_layers = self.meta["n_layers"]

    def w(self, name, h=None):
        import torch

        a = self.compiled.weights[name]
        if h is not None:
            a = a[h]
        return torch.from_numpy(a.copy())


class _Ctx(_Weights):
    """A model as the interventions need it: its weights and its TransformerLens model."""

    def __init__(self, model, hooked=None):
        super().__init__(model)
        if hooked is not None:
            self.ht = hooked
        else:
            self.ht = model.tl() if isinstance(model, SuiteModel) else hooked_for(self.compiled)


def _weights(model):
    """`model` as _Weights: a Patcher's ctx, a SuiteModel, or what raspc.tl.load takes."""
    return model if isinstance(model, _Weights) else _Weights(model)


def _pairs(a, b):
    """(batch a, batch b, single): two batches of sequences, pairwise of equal length.
    As raspc.tl.to_tokens reads inputs: a list of sequences is a batch; a list of tokens,
    or a string of space-separated tokens, is one sequence."""
    def as_batch(x):
        if isinstance(x, str):
            return [x.split()], True
        x = list(x)
        if x and all(not isinstance(s, (str, bytes)) and hasattr(s, "__len__") for s in x):
            return [list(s) for s in x], False
        return [x], True

    A, single = as_batch(a)
    B, _ = as_batch(b)
    if len(A) != len(B):
        raise ValueError(f"a has {len(A)} sequences and b {len(B)}: interventions pair them one to one")
    for i, (x, y) in enumerate(zip(A, B)):
        if len(x) != len(y):
            raise ValueError(f"pair {i}: a has {len(x)} tokens and b {len(y)}: a pair must have one length")
    return A, B, single


def _ref(c):
    """(hook, index) of a component reference: a dict {"hook", "index"}, or a tuple."""
    if isinstance(c, dict):
        return c["hook"], c.get("index")
    hook, index = c
    return hook, (None if index in (None, (None,), [None]) else list(index))


def _head(index, axis=2):
    if index is None or len(index) <= axis or not isinstance(index[axis], int):
        raise ValueError(f"expected a head index [null, null, h] (hook_pattern: [null, h]), got {index!r}")
    return index[axis]


def _split(hook):
    """(layer, rest) of 'blocks.L.rest'."""
    parts = hook.split(".", 2)
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise ValueError(f"not a TransformerLens block hook: {hook!r}")
    return int(parts[1]), parts[2]


def component_output(model, cache, hook, index):
    """What a component writes to the residual stream, from a run_with_cache cache:
    the embedding (blocks.0.hook_resid_pre), a head (attn.hook_result [null, null, h],
    hook_z[:, :, h] @ W_O[h]) or an MLP layer (hook_mlp_out). [batch, pos, d_model].
    `model`: a SuiteModel, a Patcher's ctx, or what raspc.tl.load takes."""
    import torch

    ctx = _weights(model)
    if hook == "blocks.0.hook_resid_pre":
        return cache[hook]
    layer, rest = _split(hook)
    if rest == "attn.hook_result":
        h = _head(index)
        z = cache[f"blocks.{layer}.attn.hook_z"][:, :, h, :]
        return torch.einsum("bse,ed->bsd", z, ctx.w(f"blocks.{layer}.attn.W_O", h))
    if rest == "hook_mlp_out":
        return cache[hook]
    raise ValueError(f"{hook}: not a component that writes the residual stream (embedding, head or MLP)")


def child_input_hooks(model, hook, index, delta):
    """Forward hooks adding `delta` [batch, pos, d_model] to what a child reads:
    a head's q / k / v input (blocks.L.hook_q_input [null, null, h], ...; realised as
    delta @ W_Q[h] added to hook_q[:, :, h]), all three of a head's inputs
    (blocks.L.attn.hook_result [null, null, h], the head granularity), an MLP's input
    (blocks.L.hook_mlp_in, or blocks.L.hook_mlp_out at the head granularity) or the
    output (the final blocks.L.hook_resid_post). `delta` may require grad (its gradient
    is then the metric's gradient with respect to that input). `model`: a SuiteModel,
    a Patcher's ctx, or what raspc.tl.load takes."""
    import torch

    ctx = _weights(model)
    layer, rest = _split(hook)
    hooks = []

    def head_input(x, h):
        W = ctx.w(f"blocks.{layer}.attn.W_{x.upper()}", h)  # [d_model, d_head]

        def fn(act, hook=None):
            add = torch.einsum("bsd,de->bse", delta.to(act.dtype), W.to(act.dtype))
            out = act.clone()
            out[:, :, h, :] = out[:, :, h, :] + add
            return out

        return (f"blocks.{layer}.attn.hook_{x}", fn)

    def add(act, hook=None):
        return act + delta.to(act.dtype)

    if rest in ("hook_q_input", "hook_k_input", "hook_v_input"):
        hooks.append(head_input(rest[5], _head(index)))
    elif rest == "attn.hook_result":
        hooks.extend(head_input(x, _head(index)) for x in ("q", "k", "v"))
    elif rest in ("hook_mlp_in", "hook_mlp_out"):
        hooks.append((f"blocks.{layer}.hook_mlp_in", add))
    elif rest == "hook_resid_post" and layer == ctx.n_layers - 1:
        hooks.append((hook, add))
    else:
        raise ValueError(f"{hook}: not a child of an edge (a head's q/k/v input, an MLP's input or the final "
                         f"hook_resid_post)")
    return hooks


def _replace_hooks(ctx, cache_b, components):
    """Forward hooks replacing each component's output by its output in cache_b."""
    hooks = []
    for c in components:
        hook, index = _ref(c)
        if hook == "blocks.0.hook_resid_pre":
            hooks.append((hook, lambda act, hook=None, v=cache_b[hook]: v.clone()))
            continue
        layer, rest = _split(hook)
        if rest == "attn.hook_result":
            # hook_result[h] = hook_z[h] @ W_O[h]: the same head output.
            h, name = _head(index), f"blocks.{layer}.attn.hook_z"
            hooks.append((name, _set_slice((slice(None), slice(None), h), cache_b[name])))
        elif rest == "attn.hook_pattern":
            name = f"blocks.{layer}.attn.hook_pattern"
            hooks.append((name, _set_slice((slice(None), _head(index, 1)), cache_b[name])))
        elif rest == "mlp.hook_post":
            name = f"blocks.{layer}.mlp.hook_post"
            if index is None:
                sl = (Ellipsis,)
            else:
                a, b = index[2]
                sl = (slice(None), slice(None), slice(a, b))
            hooks.append((name, _set_slice(sl, cache_b[name])))
        elif rest in ("hook_mlp_out", "hook_resid_pre", "hook_resid_post", "hook_attn_out"):
            hooks.append((hook, _set_slice((Ellipsis,), cache_b[hook])))
        else:
            raise ValueError(f"{hook}: cannot patch this component (heads: attn.hook_result [null, null, h], "
                             f"patterns: attn.hook_pattern [null, h], neurons: mlp.hook_post, MLPs: hook_mlp_out)")
    return hooks


def _set_slice(sl, source):
    def fn(act, hook=None):
        out = act.clone()
        out[sl] = source[sl].to(out.dtype)
        return out

    return fn


def _clean(ctx, A, B):
    import torch

    ta, ma = _tl.to_tokens(ctx.compiled, A)
    tb, mb = _tl.to_tokens(ctx.compiled, B)
    if not torch.equal(ma, mb):  # pairs have one length each, so this holds
        raise AssertionError("a and b must have the same lengths pair by pair")
    with torch.no_grad():
        _, ca = ctx.ht.run_with_cache(ta, attention_mask=ma)
        _, cb = ctx.ht.run_with_cache(tb, attention_mask=mb)
    return ta, ma, ca, cb


class Patcher:
    """Interventions on one batch of input pairs: the clean runs of `a` and `b` are made
    once, then each intervention is one forward pass.

    `a`, `b`: one sequence each, or two batches paired one to one (each pair of one
    length). Every method returns the decoded outputs on `a` (one list, or one per pair),
    or with logits=True the logits [batch, pos, d_vocab_out] (to compare interventions
    without the decoding's thresholds: a patched run can sit exactly on one, two values
    at 0.5, where float rounding decides).
    """

    def __init__(self, model, a, b, hooked=None, logits=False):
        self.ctx = _Ctx(model, hooked)
        A, B, self.single = _pairs(a, b)
        self.tokens, self.mask, self.cache_a, self.cache_b = _clean(self.ctx, A, B)
        self.logits = logits

    def run(self, hooks):
        """`a` run with forward hooks (name, fn): decoded outputs, or logits."""
        import torch

        with torch.no_grad():
            logits = self.ctx.ht.run_with_hooks(self.tokens, attention_mask=self.mask, fwd_hooks=list(hooks))
        if self.logits:
            return logits
        out = _tl.decode(self.ctx.compiled, logits, self.mask)
        return out[0] if self.single else out


    def components(self, components):
        """`a` with the outputs of `components` taken from `b` (component references
        {"hook", "index"}: heads attn.hook_result [null, null, h], neurons mlp.hook_post
        [null, null, [i, j]], patterns attn.hook_pattern [null, h], MLP layers
        hook_mlp_out, the embedding blocks.0.hook_resid_pre), everything downstream
        recomputed."""
        return self.run(_replace_hooks(self.ctx, self.cache_b, components))

    def node(self, node):
        """The node interchange: a circuit.json node's components patched from `b`."""
        return self.components(node["components"] if isinstance(node, dict) else node)

    def delta(self, parent, parent_index=None):
        """out_P(b) - out_P(a) of a parent component, [batch, pos, d_model]."""
        return (component_output(self.ctx, self.cache_b, parent, parent_index)
                - component_output(self.ctx, self.cache_a, parent, parent_index))

    def edge(self, edge):
        """Edge patching: the child's input becomes resid_a + out_P(b) - out_P(a),
        nothing else changes. `edge`: a circuit.json edge or an edge tuple."""
        child, ci, parent, pi = _edge_parts(edge)
        return self.run(child_input_hooks(self.ctx, child, ci, self.delta(parent, pi)))

    def edges(self, edges):
        """edge() for each edge, summed: every child's input moved by all its patched
        parents at once."""
        hooks = []
        for e in edges:
            child, ci, parent, pi = _edge_parts(e)
            hooks += child_input_hooks(self.ctx, child, ci, self.delta(parent, pi))
        return self.run(hooks)


    def cone_ablation(self, node):
        """The cone ablation of checks.json: `a` run with every component outside the
        node's cone (circuit.json's "cone": heads, MLP neuron ranges, the embedding)
        taken from `b`; the node's value read from the residual stream after its layer
        (raspc.tl.decode_residual). Returns (patched values, values of the clean run
        of a): equal when the cone is right. None for a node with no residual value."""
        gt = {n["id"]: n for n in self.ctx.meta["ground_truth"]}.get(node["id"])
        if gt is None or not gt.get("writes"):
            return None
        layer = gt.get("layer", -1)
        read = "blocks.0.hook_resid_pre" if layer is None or layer < 0 else f"blocks.{layer}.hook_resid_post"
        got = {}

        def grab(act, hook=None):
            got["resid"] = act.detach().clone()

        hooks = _outside_hooks(self.ctx, self.cache_b, node["cone"]) + [(read, grab)]
        import torch

        with torch.no_grad():
            self.ctx.ht.run_with_hooks(self.tokens, attention_mask=self.mask, fwd_hooks=hooks)
        patched = _tl.decode_residual(self.ctx.compiled, gt, got["resid"], self.mask)
        clean = _tl.decode_residual(self.ctx.compiled, gt, self.cache_a[read], self.mask)
        return (patched[0], clean[0]) if self.single else (patched, clean)


def _outside_hooks(ctx, cache_b, cone):
    """Forward hooks taking from cache_b every head, MLP neuron and the embedding that
    `cone` (component references) does not hold."""
    heads, neurons, embed = set(), {}, False
    for c in cone:
        hook, index = _ref(c)
        if hook == "blocks.0.hook_resid_pre":
            embed = True
            continue
        layer, rest = _split(hook)
        if rest == "attn.hook_result":
            heads.add((layer, _head(index)))
        elif rest == "mlp.hook_post" and index is not None:
            a, b = index[2]
            neurons.setdefault(layer, set()).update(range(a, b))
        elif rest in ("mlp.hook_post", "hook_mlp_out"):
            neurons.setdefault(layer, set()).update(range(cache_b[f"blocks.{layer}.mlp.hook_post"].shape[-1]))
        elif rest != "attn.hook_pattern":  # a pattern is its head's, already there
            raise ValueError(f"{hook}: not a component of a cone")
    hooks = [] if embed else [("blocks.0.hook_resid_pre", _set_slice((Ellipsis,), cache_b["blocks.0.hook_resid_pre"]))]
    for l in range(ctx.n_layers):
        z = f"blocks.{l}.attn.hook_z"
        out = [h for h in range(cache_b[z].shape[2]) if (l, h) not in heads]
        if out:
            hooks.append((z, _set_slice((slice(None), slice(None), out), cache_b[z])))
        post = f"blocks.{l}.mlp.hook_post"
        out = [j for j in range(cache_b[post].shape[-1]) if j not in neurons.get(l, ())]
        if out:
            hooks.append((post, _set_slice((slice(None), slice(None), out), cache_b[post])))
    return hooks


def _edge_parts(edge):
    """(child, child_index, parent, parent_index) with indices as circuit.json's lists
    or None, from a circuit.json edge or an edge tuple."""
    if isinstance(edge, dict):
        return edge["child"], edge.get("child_index"), edge["parent"], edge.get("parent_index")
    child, ci, parent, pi = edge
    norm = lambda i: None if i is None or tuple(i) == (None,) else [list(x) if isinstance(x, tuple) else x for x in i]
    return child, norm(ci), parent, norm(pi)


def patch_components(model, a, b, components, hooked=None):
    """Runs `a` with the outputs of `components` taken from the run on `b` (see
    Patcher.components). Returns the decoded outputs."""
    return Patcher(model, a, b, hooked).components(components)


def patch_node(model, a, b, node, hooked=None):
    """The node interchange of checks.json: `a` run with the node's components (a
    circuit.json node, or its list of components) patched from `b`."""
    return Patcher(model, a, b, hooked).node(node)


def patch_edge(model, a, b, edge, hooked=None):
    """Edge patching of checks.json: the child's input becomes
    resid_a + out_P(b) - out_P(a) (outputs of the clean runs), nothing else changes.
    `edge`: a circuit.json edge or an edge tuple (child, child_index, parent,
    parent_index). Returns the decoded outputs on `a`."""
    return Patcher(model, a, b, hooked).edge(edge)


def run(model, inputs, hooked=None):
    """The decoded outputs of `inputs`, through the TransformerLens model."""
    ctx = _Ctx(model, hooked)
    return _tl.run(ctx.compiled, inputs, hooked=ctx.ht)


def same(got, want):
    """raspc's comparison of decoded values: None only with None, numbers within
    float32 rounding, anything else equal. Lists compare element by element."""
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    if got is None or want is None:
        return got is None and want is None
    if isinstance(got, (int, float)) and isinstance(want, (int, float)) and not isinstance(got, bool):
        return math.isclose(float(got), float(want), rel_tol=1e-5, abs_tol=1e-5)
    return got == want


def random_pairs(model, n, seed=1):
    """`n` random input pairs of one length each (lengths 1..max_len), from the
    vocabulary, seeded: two batches."""
    md = _tl.load(model.compiled() if isinstance(model, SuiteModel) else model).meta
    vocab = [t for t in md["vocab"] if t not in ("<bos>", "<pad>")]
    rng = random.Random(seed)
    A, B = [], []
    for _ in range(n):
        k = rng.randint(1, md["n_ctx"] - 1)
        A.append([rng.choice(vocab) for _ in range(k)])
        B.append([rng.choice(vocab) for _ in range(k)])
    return A, B
