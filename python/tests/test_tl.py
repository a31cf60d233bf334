"""raspc models in TransformerLens (python/raspc/tl.py), against the raspc binary.

Every examples/*.rasp is compiled by the CLI (RASPC_BINARY, default build/tools/raspc) at
its header settings, to HDF5 and to safetensors; the TransformerLens model built from
it runs padded batches of random inputs, and its decoded outputs must equal
`raspc run` and `raspc eval` (the interpreter); its activations at the hook names of
tl_ground_truth must decode to what `raspc run --trace` prints.
"""

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    from raspc import tl
except ImportError:  # the source tree, without the installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from raspc import tl

torch = pytest.importorskip("torch")
pytest.importorskip("transformer_lens")

REPO = Path(__file__).resolve().parents[2]
RASPC = os.environ.get("RASPC_BINARY", str(REPO / "build" / "tools" / "raspc"))
EXAMPLES = sorted((REPO / "examples").glob("*.rasp"))
SEED = 20261201


def raspc(*args, check=True):
    r = subprocess.run([RASPC, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"raspc {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """example name -> (h5 path, safetensors path), compiled once."""
    if not Path(RASPC).exists():
        pytest.skip(f"no raspc binary at {RASPC} (set RASPC_BINARY)")
    d = tmp_path_factory.mktemp("tl")
    out = {}
    for src in EXAMPLES:
        h5, st = d / (src.stem + ".h5"), d / (src.stem + ".safetensors")
        raspc("compile", src, "-o", h5)
        raspc("compile", src, "--format", "safetensors", "-o", st)
        out[src.stem] = (h5, st)
    return out


_bridges = {}


def bridge(path):
    if path not in _bridges:
        _bridges[path] = tl.to_hooked_transformer(path)
    return _bridges[path]


def random_inputs(model, n, rng, min_len=1):
    md = tl.load(model).meta
    vocab = [t for t in md["vocab"] if t not in ("<bos>", "<pad>")]
    max_len = md["n_ctx"] - 1
    return [[rng.choice(vocab) for _ in range(rng.randint(min_len, max_len))] for _ in range(n)]


def same(got, want):
    """raspc's comparison of decoded values: None only with None, numbers within a
    float32 rounding, anything else equal."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if g is None or w is None:
            if not (g is None and w is None):
                return False
        elif isinstance(g, (int, float)) and isinstance(w, (int, float)) and not isinstance(g, str):
            if not math.isclose(float(g), float(w), rel_tol=1e-5, abs_tol=1e-5):
                return False
        elif g != w:
            return False
    return True


# ------------------------------------------------------------------------------------
# The safetensors file, read with the safetensors package alone


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_safetensors_file_reads_with_safetensors_alone(compiled, name):
    import h5py
    from safetensors import safe_open
    from safetensors.numpy import load_file

    h5, st = compiled[name]
    tensors = load_file(str(st))
    with h5py.File(h5, "r") as f:
        names = sorted(k for k in f if k != "metadata")
        assert sorted(tensors) == names
        for k in names:
            want = f[k][()]
            assert tensors[k].dtype == np.float32 and tensors[k].shape == want.shape, k
            assert np.array_equal(tensors[k], want), k  # bit for bit
        md5 = f["metadata"]
        with safe_open(str(st), framework="numpy") as g:
            md = g.metadata()
        for key in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx",
                    "causal", "bos_id", "pad_id", "int_tokens", "format_version"):
            assert int(md[key]) == int(md5.attrs[key]), key
        for key in ("output_name", "output_encoding", "source_name"):
            assert md[key] == md5.attrs[key].decode(), key
        assert md["source"] == md5["source"][0].decode()
        assert json.loads(md["vocab"]) == md5["vocab"].asstr()[()].tolist()
        assert json.loads(md["residual_labels"]) == md5["residual_labels"].asstr()[()].tolist()
        assert json.loads(md["output_values"]) == [json.loads(v) for v in md5["output_values"][()]]
        assert json.loads(md["ground_truth"]) == json.loads(md5["ground_truth"][0])
    cfg = json.loads(md["hooked_transformer_config"])
    for key in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "d_vocab_out"):
        assert cfg[key] == int(md[key]), key
    assert cfg["act_fn"] == "relu" and cfg["normalization_type"] is None
    assert cfg["attention_dir"] == ("causal" if md["causal"] == "1" else "bidirectional")
    assert tensors["blocks.0.attn.W_Q"].shape == (cfg["n_heads"], cfg["d_model"], cfg["d_head"])
    assert tensors["blocks.0.mlp.W_in"].shape == (cfg["d_model"], cfg["d_mlp"])


def test_other_files_are_refused(tmp_path):
    from safetensors.numpy import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"embed.W_E": np.zeros((2, 2), dtype=np.float32)}, str(plain))
    with pytest.raises(ValueError, match="plain.safetensors: not a raspc safetensors file"):
        tl.load(plain)
    with pytest.raises(FileNotFoundError):
        tl.load(tmp_path / "missing.h5")
    with pytest.raises(TypeError, match="expected a model file path or an object with .weights and .metadata"):
        tl.load(42)


def test_safetensors_and_h5_give_one_model(compiled):
    h5, st = compiled["sort"]
    a, b = tl.numpy_state_dict(h5), tl.numpy_state_dict(st)
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert tl.config_dict(h5) == tl.config_dict(st)
    assert tl.tl_ground_truth(h5) == tl.tl_ground_truth(st)


class ModelLike:
    """What raspc.Model offers tl.py (.weights, .metadata, .ground_truth), read here
    from the HDF5 file with h5py."""

    def __init__(self, path):
        import h5py

        with h5py.File(path, "r") as f:
            self.weights = {k: f[k][()] for k in f if k != "metadata"}
            a = f["metadata"].attrs
            md = f["metadata"]
            config = {k: int(a[k]) for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab",
                                              "d_vocab_out", "n_ctx")}
            config["causal"] = bool(a["causal"])
            self.metadata = {
                "format_version": int(a["format_version"]), "config": config,
                "vocab": md["vocab"].asstr()[()].tolist(), "bos_id": int(a["bos_id"]), "pad_id": int(a["pad_id"]),
                "int_tokens": bool(a["int_tokens"]), "max_len": config["n_ctx"] - 1, "causal": config["causal"],
                "output": a["output_name"].decode(), "output_encoding": a["output_encoding"].decode(),
                "output_values": [json.loads(v) for v in md["output_values"][()]],
                "residual_labels": md["residual_labels"].asstr()[()].tolist(),
                "source": md["source"][0].decode(), "source_name": a["source_name"].decode(),
            }
            self.ground_truth = json.loads(md["ground_truth"][0])


@pytest.mark.parametrize("name", ["sort", "hist", "frac_prevs"])
def test_model_objects_give_the_files_model(compiled, name):
    h5, _ = compiled[name]
    objs = [ModelLike(h5)]
    import raspc as package

    if hasattr(package, "load"):  # the package itself, where it is built
        objs.append(package.load(h5))
    want = tl.load(h5)
    for obj in objs:
        m = tl.load(obj)
        assert m.meta == want.meta, type(obj).__name__
        a, b = tl.numpy_state_dict(obj), tl.numpy_state_dict(h5)
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
        inputs = random_inputs(h5, 8, random.Random(f"{SEED}-obj-{name}"))
        assert tl.run(obj, inputs, hooked=bridge(h5)) == tl.run(h5, inputs, hooked=bridge(h5))


# ------------------------------------------------------------------------------------
# The TransformerLens model


def test_state_dict_loads_strictly_and_is_unprocessed(compiled):
    h5, _ = compiled["sort"]
    ht = bridge(h5)
    sd = tl.state_dict(h5)
    # The bridge holds raspc's weights as they are (no folding, no centering).
    assert torch.equal(ht.blocks[0].attn.W_Q, sd["blocks.0.attn.W_Q"])
    assert torch.equal(ht.blocks[1].mlp.W_in, sd["blocks.1.mlp.W_in"])
    assert torch.equal(ht.W_U, sd["unembed.W_U"])
    assert torch.equal(ht.W_E, sd["embed.W_E"])
    cfg = ht.cfg
    assert cfg.normalization_type is None and cfg.act_fn == "relu"
    assert cfg.attention_dir == "bidirectional"


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_padded_batches_equal_raspc_run_and_eval(compiled, name, tmp_path):
    h5, _ = compiled[name]
    rng = random.Random(f"{SEED}-{name}")
    inputs = random_inputs(h5, 40, rng) + [[]]
    ht = bridge(h5)
    tokens, mask = tl.to_tokens(h5, inputs)
    with torch.no_grad():
        logits = ht(tokens, attention_mask=mask)
    got = tl.decode(h5, logits, mask)

    lines = tmp_path / "inputs.txt"
    lines.write_text("".join(" ".join(s) + "\n" for s in inputs))
    want = [json.loads(l)["value"] for l in raspc("run", h5, "--inputs", lines, "--json").stdout.splitlines()]
    assert len(want) == len(inputs)
    for s, g, w in zip(inputs, got, want):
        assert same(g, w), f"{name} on {s}: TransformerLens {g}, raspc run {w}"
    # The interpreter, on some of them.
    src = REPO / "examples" / f"{name}.rasp"
    for s, g in list(zip(inputs, got))[:8]:
        w = json.loads(raspc("eval", src, "--input", " ".join(s), "--json").stdout)["value"]
        assert same(g, w), f"{name} on {s}: TransformerLens {g}, raspc eval {w}"
    # tl.run does the same in one call.
    assert tl.run(h5, inputs[:5], hooked=ht) == got[:5]


@pytest.mark.parametrize("name", ["sort", "sort_unique", "hist", "dyck1"])
def test_pad_is_never_attended(compiled, name):
    """PAD keys get exactly 0 attention in every head (causal or bidirectional), and a
    sequence decodes the same alone and padded in a batch."""
    h5, _ = compiled[name]
    rng = random.Random(f"{SEED}-pad-{name}")
    md = tl.load(h5).meta
    short = random_inputs(h5, 1, rng)[0][:1]
    longest = random_inputs(h5, 1, rng, min_len=md["n_ctx"] - 1)[0]
    ht = bridge(h5)
    tokens, mask = tl.to_tokens(h5, [short, longest])
    assert tokens[0, 2:].eq(md["pad_id"]).all() and mask[0].tolist()[:3] == [1, 1, 0]
    logits, cache = ht.run_with_cache(tokens, attention_mask=mask)
    for l in range(md["n_layers"]):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"]
        assert pattern[0, :, :, 2:].eq(0).all(), f"layer {l} attends PAD"
        assert torch.allclose(pattern[:, :, :, :].sum(-1)[0, :, :2], torch.ones(1), atol=1e-5)
    alone_tokens, alone_mask = tl.to_tokens(h5, [short])
    with torch.no_grad():
        alone = tl.decode(h5, ht(alone_tokens, attention_mask=alone_mask), alone_mask)
    assert tl.decode(h5, logits, mask)[0] == alone[0]


def test_decoding_is_not_a_plain_argmax(compiled, tmp_path):
    """None is an output whose largest logit is below 0.5: decode gives None where a
    plain argmax gives a value, and decode is what raspc prints."""
    h5, _ = compiled["sort_unique"]
    rng = random.Random(f"{SEED}-argmax")
    inputs = random_inputs(h5, 100, rng)
    tokens, mask = tl.to_tokens(h5, inputs)
    with torch.no_grad():
        logits = bridge(h5)(tokens, attention_mask=mask)
    got = tl.decode(h5, logits, mask)
    values = tl.load(h5).meta["output_values"]
    argmax = [[values[int(logits[b, p].argmax())] for p in range(1, len(s) + 1)] for b, s in enumerate(inputs)]
    assert sum(g != a for g, a in zip(got, argmax)) > 0
    assert any(None in g for g in got)
    lines = tmp_path / "inputs.txt"
    lines.write_text("".join(" ".join(s) + "\n" for s in inputs))
    want = [json.loads(l)["value"] for l in raspc("run", h5, "--inputs", lines, "--json").stdout.splitlines()]
    assert got == want


def test_numerical_output_is_snapped(compiled):
    h5, _ = compiled["frac_prevs"]
    tokens, mask = tl.to_tokens(h5, [["x", "y", "x"]])
    with torch.no_grad():
        logits = bridge(h5)(tokens, attention_mask=mask)
    assert tl.decode(h5, logits, mask) == [[1, 0.5, 2 / 3]]


def test_to_tokens(compiled):
    h5, _ = compiled["sort"]
    md = tl.load(h5).meta
    ids = {t: i for i, t in enumerate(md["vocab"])}
    tokens, mask = tl.to_tokens(h5, [["3", "1"], [2], []])
    bos, pad = md["bos_id"], md["pad_id"]
    assert tokens.tolist() == [[bos, ids["3"], ids["1"]], [bos, ids["2"], pad], [bos, pad, pad]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert tokens.dtype == torch.long
    # One sequence: a string or a list of tokens; int tokens match by value.
    assert tl.to_tokens(h5, "3 1")[0].tolist() == [[bos, ids["3"], ids["1"]]]
    assert tl.to_tokens(h5, ["03", "+1"])[0].tolist() == [[bos, ids["3"], ids["1"]]]
    assert tl.to_tokens(h5, [np.array([3, 1])])[0].tolist() == [[bos, ids["3"], ids["1"]]]
    with pytest.raises(ValueError, match=r"sequence 1, token 0: token '7' is not in the model's vocabulary \{1, 2, 3\}"):
        tl.to_tokens(h5, [["1"], ["7"]])
    with pytest.raises(ValueError, match="token '<pad>' is reserved"):
        tl.to_tokens(h5, [["<pad>"]])
    with pytest.raises(ValueError, match="sequence 0 has 6 tokens, more than the model's maximum length 5"):
        tl.to_tokens(h5, [["1"] * 6])


# ------------------------------------------------------------------------------------
# Ground truth in TransformerLens terms, against raspc's trace


def parse_trace(text):
    """`raspc run --trace` of one input: {section: [(label, [item, ...]), ...]} with
    sections 'embedding', 'layer L attn', 'layer L mlp', the nodes in graph order (two
    nodes may share a label)."""
    out, section = {}, None
    for line in text.splitlines():
        if not line.startswith("  "):
            if line.endswith(":"):  # a section; the last line is the output itself
                section = line[:-1]
                out[section] = []
        elif line.startswith("    ") or " = " not in line:
            continue  # attention patterns: read from --trace --json
        else:
            label, _, values = line.strip().partition(" = ")
            inner = values.strip()[1:-1]
            out[section].append((label, inner.split(", ") if inner else []))
    return out


def trace_item(x):
    if x in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[x]
    try:
        return int(x)
    except ValueError:
        pass
    try:
        return float(x)
    except ValueError:
        return x


SECTION_HOOK = {"embedding": "blocks.0.hook_resid_pre"}


def section_hook(section):
    if section in SECTION_HOOK:
        return SECTION_HOOK[section]
    _, l, sub = section.split()
    return f"blocks.{l}.hook_resid_mid" if sub == "attn" else f"blocks.{l}.hook_resid_post"


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_run_with_cache_equals_raspc_trace(compiled, name):
    h5, _ = compiled[name]
    m = tl.load(h5)  # read once
    checked_heads = []
    rng = random.Random(f"{SEED}-trace-{name}")
    ht = bridge(h5)
    gt = [n for n in tl.tl_ground_truth(h5) if n["residual"]]
    assert gt
    for s in random_inputs(h5, 3, rng):
        trace = parse_trace(raspc("run", h5, "--input", " ".join(s), "--trace").stdout)
        tokens, mask = tl.to_tokens(h5, [s])
        _, cache = ht.run_with_cache(tokens, attention_mask=mask)
        for section, values in trace.items():
            resid = cache[section_hook(section)]
            assert [label for label, _ in values] == [n["label"] for n in gt]
            for n, (_, items) in zip(gt, values):
                got = tl.decode_residual(m, n, resid, mask)[0]
                want = [trace_item(x) for x in items]
                assert same(got, want), f"{name} {s} {section} {n['label']}: TL {got}, trace {want}"
        # At the hook the ground truth names, every node has its final value.
        last = trace[list(trace)[-1]]
        for n, (_, items) in zip(gt, last):
            got = tl.decode_residual(m, n, cache[n["residual"]["hook"]], mask)[0]
            assert same(got, [trace_item(x) for x in items]), f"{name} {n['label']} at {n['residual']}"
        # Attention: each head raspc's trace shows is the pattern at the hook the ground
        # truth gives for its node (or one of the node's helpers).
        steps = json.loads(raspc("run", h5, "--input", " ".join(s), "--trace", "--json").stdout)["trace"]
        places = {}
        for n in tl.tl_ground_truth(m):
            for owner in [n] + n["helpers"]:
                for p in owner["places"]:
                    if "head" in p:
                        places.setdefault((p["hook"], p["head"]), set()).add(n["label"])
        for step in steps:
            for a in step.get("attention", []):
                hook = f"blocks.{step['layer']}.attn.hook_pattern"
                assert a["node"] in places.get((hook, a["head"]), set()), (name, hook, a)
                np.testing.assert_allclose(cache[hook][0, a["head"]].numpy(), np.array(a["pattern"]), atol=1e-4)
                checked_heads.append((hook, a["head"]))
    if any(p.get("head") is not None for n in tl.tl_ground_truth(m) for p in n["places"]):
        assert checked_heads, f"{name}: the trace shows no attention"


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_ground_truth_places_name_the_right_heads_and_neurons(compiled, name):
    """cache[hook][..., a:b] of a node's MLP neurons, through W_out[a:b], writes exactly
    the node's directions (so the range convention is the same as the file's); a node's
    head, through W_O[h], writes nothing outside the residual directions of the layer's
    nodes and helpers; every place is a hook TransformerLens has."""
    h5, _ = compiled[name]
    rng = random.Random(f"{SEED}-places-{name}")
    ht = bridge(h5)
    sd = tl.numpy_state_dict(h5)
    inputs = random_inputs(h5, 16, rng)
    tokens, mask = tl.to_tokens(h5, inputs)
    _, cache = ht.run_with_cache(tokens, attention_mask=mask)
    real = mask.bool().numpy()
    checked = 0
    for n in tl.tl_ground_truth(h5):
        for owner in [n] + n["helpers"]:
            for place in owner["places"]:
                assert place["hook"] in cache, place
                if "neurons" not in place:
                    h = place["head"]
                    pattern = cache[place["hook"]][:, h].numpy()
                    assert np.allclose(pattern.sum(-1)[real], 1, atol=1e-5)
                    continue
                a, b = place["neurons"]
                l = int(place["hook"].split(".")[1])
                post = cache[place["hook"]][..., a:b].numpy()
                wrote = post @ sd[f"blocks.{l}.mlp.W_out"][a:b]  # [batch, pos, d_model]
                outside = [d for d in range(wrote.shape[-1]) if d not in owner["writes"]]
                assert np.abs(wrote[real][:, outside]).max(initial=0) < 1e-4, (name, owner.get("label", owner.get("role")), place)
                checked += 1
    if any(p.get("neurons") for n in tl.tl_ground_truth(h5) for p in n["places"]):
        assert checked > 0


@pytest.mark.parametrize("name", ["sort", "frac_prevs", "dyck1"])
def test_safetensors_file_loads_into_transformer_lens_without_raspc(compiled, name):
    """The recipe of docs/weights.md: the file's config and tensors, TransformerLens's
    own converter, no raspc code; the same logits as to_hooked_transformer."""
    from safetensors import safe_open
    from safetensors.numpy import load_file
    from transformer_lens import TransformerBridge, TransformerBridgeConfig
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    import transformer_lens.model_bridge.sources.native  # noqa: F401

    h5, st = compiled[name]
    with safe_open(str(st), framework="numpy") as f:
        cfg = json.loads(f.metadata()["hooked_transformer_config"])
    model = TransformerBridge.boot_native(TransformerBridgeConfig.from_dict(cfg))
    sd = {k: torch.from_numpy(v) for k, v in load_file(str(st)).items()}
    model.load_state_dict(convert_tl_checkpoint(sd, model.cfg), strict=True)
    inputs = random_inputs(h5, 10, random.Random(f"{SEED}-plain-{name}"))
    tokens, mask = tl.to_tokens(st, inputs)
    with torch.no_grad():
        assert torch.equal(model(tokens, attention_mask=mask), bridge(h5)(tokens, attention_mask=mask))


def random_model(n_heads, d_head, d_mlp, causal, seed):
    """A model of random weights (any sizes, zero ones included) with the metadata of
    raspc.Model: what to_hooked_transformer builds must compute what raspc computes,
    whatever the weights."""
    rng = np.random.default_rng(seed)
    n_layers, d_model, n_ctx = 2, 6, 5
    vocab = ["a", "b", "c", "<bos>", "<pad>"]
    shapes = {"embed.W_E": (5, d_model), "pos_embed.W_pos": (n_ctx, d_model), "unembed.W_U": (d_model, 3),
              "unembed.b_U": (3,)}
    for l in range(n_layers):
        p = f"blocks.{l}."
        for n in "QKV":
            shapes[p + "attn.W_" + n] = (n_heads, d_model, d_head)
            shapes[p + "attn.b_" + n] = (n_heads, d_head)
        shapes.update({p + "attn.W_O": (n_heads, d_head, d_model), p + "attn.b_O": (d_model,),
                       p + "mlp.W_in": (d_model, d_mlp), p + "mlp.b_in": (d_mlp,),
                       p + "mlp.W_out": (d_mlp, d_model), p + "mlp.b_out": (d_model,)})

    class Random:
        weights = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
        config = {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads, "d_head": d_head, "d_mlp": d_mlp,
                  "d_vocab": 5, "d_vocab_out": 3, "n_ctx": n_ctx, "causal": causal}
        metadata = {"config": config, "vocab": vocab, "bos_id": 3, "pad_id": 4, "int_tokens": False,
                    "causal": causal, "output": "out", "output_encoding": "categorical", "output_values": ["x", "y", None],
                    "residual_labels": [f"r{i}" for i in range(d_model)], "source": "", "source_name": "random.rasp"}
        ground_truth = []

    return Random()


@pytest.mark.parametrize("n_heads,d_head,d_mlp", [(2, 3, 4), (0, 0, 3), (2, 3, 0), (1, 0, 0), (3, 1, 2)])
@pytest.mark.parametrize("causal", [False, True])
def test_any_weights_and_sizes_compute_raspcs_forward_pass(n_heads, d_head, d_mlp, causal):
    """Against examples/python/forward.py (raspc's forward pass in numpy): random
    weights, padded batches, sizes TransformerLens cannot build (zero heads, head
    dimensions or neurons, padded with exactly neutral zeros)."""
    sys.path.insert(0, str(REPO / "examples" / "python"))
    import forward

    obj = random_model(n_heads, d_head, d_mlp, causal, seed=hash((n_heads, d_head, d_mlp, causal)) % 2**32)
    ref = forward.Model()
    for k, v in obj.metadata["config"].items():
        setattr(ref, k, v)
    ref.bos_id, ref.pad_id, ref.w = 3, 4, obj.weights
    ref.token_ids = {"a": 0, "b": 1, "c": 2}
    ref.int_tokens = False
    inputs = [["a", "b", "c", "a"], ["c"], ["b", "b"], []]
    want, lens = forward.logits_batch(ref, inputs)
    ht = tl.to_hooked_transformer(obj)
    cfg = ht.cfg
    assert (cfg.n_heads, cfg.d_head, cfg.d_mlp) == (max(n_heads, 1), max(d_head, 1), max(d_mlp, 1))
    tokens, mask = tl.to_tokens(obj, inputs)
    with torch.no_grad():
        got = ht(tokens, attention_mask=mask).numpy()
    for b, n in enumerate(lens):  # real positions only: PAD positions compute garbage
        np.testing.assert_allclose(got[b, :n], want[b, :n], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------
# Rotated models (raspc transform --rotate): another residual basis, the same values


@pytest.mark.parametrize("name", ["sort", "frac_prevs"])
def test_rotated_model_decodes_as_the_original(compiled, name, tmp_path):
    """decode_residual of a rotated model (h5 and safetensors), read through its
    residual_basis, equals the original's at every residual hook; its outputs too; and
    the rotated stream itself is not the original's (no one-hot directions)."""
    h5, _ = compiled[name]
    rot, rot_st = tmp_path / "rot.h5", tmp_path / "rot.safetensors"
    raspc("transform", h5, "--rotate", "--seed", 5, "-o", rot)
    raspc("transform", h5, "--rotate", "--seed", 5, "--format", "safetensors", "-o", rot_st)
    orig, r, rs = tl.load(h5), tl.load(rot), tl.load(rot_st)
    assert orig.meta["residual_basis"] is None
    d = orig.meta["d_model"]
    assert r.meta["residual_basis"].shape == (len(r.meta["residual_labels"]), d) == (d, d)
    np.testing.assert_array_equal(r.meta["residual_basis"], rs.meta["residual_basis"])  # bit for bit
    B = r.meta["residual_basis"].astype(np.float64)
    np.testing.assert_allclose(B @ B.T, np.eye(d), atol=1e-5)
    assert np.count_nonzero(np.abs(B) > 1e-3) > 3 * d  # dense, not a permutation
    nodes = [n for n in tl.tl_ground_truth(h5) if n["residual"]]
    rng = random.Random(f"{SEED}-rotated-{name}")
    inputs = random_inputs(h5, 8, rng)
    tokens, mask = tl.to_tokens(h5, inputs)
    ho, hr = bridge(h5), tl.to_hooked_transformer(rot)
    with torch.no_grad():
        lo, co = ho.run_with_cache(tokens, attention_mask=mask)
        lr, cr = hr.run_with_cache(tokens, attention_mask=mask)
    assert tl.decode(rot, lr, mask) == tl.decode(h5, lo, mask)
    assert tl.run(rot_st, inputs) == tl.run(h5, inputs)
    hooks = [k for k in co.keys() if k.endswith(("hook_resid_pre", "hook_resid_mid", "hook_resid_post"))]
    assert hooks
    for hook in hooks:
        assert not torch.allclose(co[hook], cr[hook], atol=1e-3), hook  # really another basis
        np.testing.assert_allclose(tl.label_space(rot, cr[hook]), co[hook].double().numpy(), atol=1e-3)
        for n in nodes:
            want = tl.decode_residual(h5, n, co[hook], mask)
            assert tl.decode_residual(rot, n, cr[hook], mask) == want, (name, hook, n["label"])
            assert tl.decode_residual(rot_st, n["label"], cr[hook], mask) == want
