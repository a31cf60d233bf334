"""The ground-truth suite from Python (python/raspc/suite.py) in real TransformerLens.

Two parts. The first needs only `raspc compile` (RASPC_BINARY, default
build/tools/raspc): the interventions of raspc.suite, made of TransformerLens hooks, are
checked against what they must mean (patching nothing gives a's output, patching every
component gives b's, a head's patched q input is the q the head computes from the
patched residual, an edge outside the edge rule never matters). The second builds a
small suite (raspc.suite.build, else `raspc suite build`), loads its models into
TransformerLens, runs run_with_cache, and checks that patching the hooks named by
circuit.json reproduces the intervention results recorded in checks.json, and that
circuit.json's edges equal the edge rule computed here from the weights alone.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from raspc import suite, tl
except ImportError:  # the source tree, without the installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from raspc import suite, tl

torch = pytest.importorskip("torch")
pytest.importorskip("transformer_lens")

REPO = Path(__file__).resolve().parents[2]
RASPC = os.environ.get("RASPC_BINARY", str(REPO / "build" / "tools" / "raspc"))
# Categorical with three layers, a selector width, a numerical output.
PROGRAMS = ["sort", "hist", "frac_prevs"]
# RASPC_TEST_SUITE=DIR runs the second part on a suite already built (the whole suite,
# say) instead of building PROGRAMS.
SUITE_DIR = os.environ.get("RASPC_TEST_SUITE")
# Suite programs for the second part: categorical, numerical, causal with pattern checks,
# a composite selector.
SUITE_PROGRAMS = ["classic_sort", "classic_hist", "numagg_prefix_mean", "causal_running_max", "compsel_leaders"]
MODELS = ([e["name"] for e in json.loads((Path(SUITE_DIR) / "index.json").read_text())["models"]]
          if SUITE_DIR else SUITE_PROGRAMS)


def raspc(*args, check=True):
    r = subprocess.run([RASPC, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"raspc {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def need_binary():
    if not Path(RASPC).exists():
        pytest.skip(f"no raspc binary at {RASPC} (set RASPC_BINARY)")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """program name -> (h5 path, TransformerLens model with suite's hooks)."""
    need_binary()
    d = tmp_path_factory.mktemp("suite-models")
    out = {}
    for name in PROGRAMS:
        h5 = d / f"{name}.h5"
        raspc("compile", REPO / "examples" / f"{name}.rasp", "-o", h5)
        out[name] = (str(h5), suite.hooked_for(str(h5)))
    return out


# ------------------------------------------------------------------------------------
# The interventions, against their meaning (no suite needed)


@pytest.mark.parametrize("name", PROGRAMS)
def test_patching_nothing_gives_a_and_everything_gives_b(compiled, name):
    h5, ht = compiled[name]
    A, B = suite.random_pairs(h5, 24, seed=7)
    want_a, want_b = suite.run(h5, A, ht), suite.run(h5, B, ht)
    assert want_a == tl.run(h5, A) and want_a == raspc_run(h5, A)  # the hooked model is the model
    assert sum(not suite.same(x, y) for x, y in zip(want_a, want_b)) > 0, "the pairs must differ somewhere"
    assert suite.same(suite.patch_components(h5, A, B, [], ht), want_a)
    every = [{"hook": c["hook"], "index": c["index"]} for c in suite.components_from_weights(h5) if c["writes"]]
    assert every[0]["hook"] == "blocks.0.hook_resid_pre"
    assert suite.same(suite.patch_components(h5, A, B, every, ht), want_b)


def raspc_run(h5, inputs):
    """`raspc run`'s outputs (one JSON line per input)."""
    need_binary()
    lines = Path(h5).with_suffix(".inputs.txt")
    lines.write_text("".join(" ".join(s) + "\n" for s in inputs))
    return [json.loads(l)["value"] for l in raspc("run", h5, "--inputs", lines, "--json").stdout.splitlines()]


def run_grab(ht, tokens, mask, hooks, names):
    """Activations at `names` of a run with `hooks` (run_with_hooks; TransformerLens 4.3's
    run_with_cache ignores fwd_hooks), read after the hooks."""
    got = {}

    def grab(name):
        def fn(act, hook):
            got[name] = act.detach().clone()

        return fn

    ht.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=list(hooks) + [(n, grab(n)) for n in names])
    return got


def test_patched_q_input_is_the_q_of_the_patched_residual(compiled):
    """hook_q_input is realised on hook_q: the head's q is exactly (resid + delta)
    W_Q[h] + b_Q[h]; its k and v, and the other heads, are untouched."""
    h5, ht = compiled["sort"]
    ctx = suite._Ctx(h5, ht)
    tokens, mask = tl.to_tokens(h5, [["3", "1", "2", "2"], ["2", "1", "3", "1"]])
    _, clean = ht.run_with_cache(tokens, attention_mask=mask)
    checked = 0
    for layer in range(ctx.n_layers):
        W_Q, b_Q = ctx.w(f"blocks.{layer}.attn.W_Q"), ctx.w(f"blocks.{layer}.attn.b_Q")
        for h in range(W_Q.shape[0]):
            if not torch.any(W_Q[h] != 0):
                continue
            resid = clean[f"blocks.{layer}.hook_resid_pre"]
            delta = torch.randn(resid.shape, generator=torch.Generator().manual_seed(layer * 10 + h))
            hooks = suite.child_input_hooks(ctx, f"blocks.{layer}.hook_q_input", [None, None, h], delta)
            names = [f"blocks.{layer}.attn.hook_{x}" for x in "qkv"]
            got = run_grab(ht, tokens, mask, hooks, names)
            q, q0 = got[names[0]], clean[names[0]]
            want = torch.einsum("bsd,de->bse", resid + delta, W_Q[h]) + b_Q[h]
            assert torch.allclose(q[:, :, h], want, atol=1e-4)
            assert not torch.allclose(q[:, :, h], q0[:, :, h], atol=1e-3)
            others = [g for g in range(W_Q.shape[0]) if g != h]
            assert torch.equal(q[:, :, others], q0[:, :, others])
            assert torch.equal(got[names[1]], clean[names[1]]) and torch.equal(got[names[2]], clean[names[2]])
            checked += 1
    assert checked >= 2


def test_patched_mlp_input_changes_only_the_mlp(compiled):
    """hook_mlp_in feeds the MLP alone: its pre-activations move by delta W_in, the
    residual stream only by what the MLP's output changes."""
    h5, ht = compiled["sort"]
    ctx = suite._Ctx(h5, ht)
    tokens, mask = tl.to_tokens(h5, [["3", "1", "2"]])
    _, clean = ht.run_with_cache(tokens, attention_mask=mask)
    delta = torch.full_like(clean["blocks.1.hook_resid_mid"], 0.25)
    hooks = suite.child_input_hooks(ctx, "blocks.1.hook_mlp_in", None, delta)
    names = ["blocks.1.mlp.hook_pre", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    got = run_grab(ht, tokens, mask, hooks, names)
    pre = (clean["blocks.1.hook_resid_mid"] + delta) @ ctx.w("blocks.1.mlp.W_in") + ctx.w("blocks.1.mlp.b_in")
    assert torch.allclose(got["blocks.1.mlp.hook_pre"], pre, atol=1e-4)
    assert not torch.allclose(got["blocks.1.mlp.hook_pre"], clean["blocks.1.mlp.hook_pre"], atol=1e-3)
    assert torch.allclose(got["blocks.1.hook_resid_post"],
                          clean["blocks.1.hook_resid_mid"] + got["blocks.1.hook_mlp_out"], atol=1e-5)


def test_head_output_is_z_times_W_O(compiled):
    """component_output of a head, summed with b_O over the heads, is the attention
    layer's output: hook_result as TransformerLens defines it."""
    h5, ht = compiled["sort"]
    ctx = suite._Ctx(h5, ht)
    tokens, mask = tl.to_tokens(h5, [["3", "1", "2", "2"]])
    _, cache = ht.run_with_cache(tokens, attention_mask=mask)
    for l in range(ctx.n_layers):
        n_heads = ctx.compiled.weights[f"blocks.{l}.attn.W_O"].shape[0]
        total = sum(suite.component_output(ctx, cache, f"blocks.{l}.attn.hook_result", [None, None, h])
                    for h in range(n_heads)) + ctx.w(f"blocks.{l}.attn.b_O")
        assert torch.allclose(total, cache[f"blocks.{l}.hook_attn_out"], atol=1e-5)


@pytest.mark.parametrize("name", PROGRAMS)
def test_every_edge_into_the_output_together_gives_b(compiled, name):
    """The output reads only what its parents write: adding all their differences to
    the final residual of a turns a's output into b's."""
    h5, ht = compiled[name]
    A, B = suite.random_pairs(h5, 24, seed=11)
    p = suite.Patcher(h5, A, B, ht)
    out = f"blocks.{p.ctx.n_layers - 1}.hook_resid_post"
    into = [e for e in suite.edges_from_weights(h5)["heads"] if e["child"] == out]
    assert into
    want_b = suite.run(h5, B, ht)
    assert suite.same(p.edges(into), want_b)
    # The same by hand: one delta, the sum of the parents' differences, on the output.
    delta = sum(p.delta(e["parent"], e["parent_index"]) for e in into)
    with torch.no_grad():
        logits = ht.run_with_hooks(p.tokens, attention_mask=p.mask,
                                   fwd_hooks=suite.child_input_hooks(h5, out, None, delta))
    assert suite.same(tl.decode(h5, logits, p.mask), want_b)
    # One parent alone is not enough where there are several.
    if len(into) > 1:
        assert not all(suite.same(suite.patch_edge(h5, A, B, e, ht), suite.run(h5, B, ht)) for e in into)


@pytest.mark.parametrize("name", PROGRAMS)
def test_a_pair_outside_the_edge_rule_never_matters(compiled, name):
    """Patching a (parent, child) pair that the edge rule leaves out (the parent writes
    nothing the child reads) leaves every output as it was; at least one edge it keeps
    does change an output."""
    h5, ht = compiled[name]
    comps = suite.components_from_weights(h5)
    edges = suite.edges_from_weights(h5)["heads"]
    kept = {(e["parent"], str(e["parent_index"]), e["child"], str(e["child_index"])) for e in edges}
    A, B = suite.random_pairs(h5, 16, seed=5)
    want = suite.run(h5, A, ht)
    outside = 0
    for c in comps[1:]:
        for p in comps:
            if p["order"] >= c["order"] or not p["writes"]:
                continue
            key = (p["hook"], str(p["index"]), c["hook"], str(c["index"]))
            if key in kept:
                continue
            outside += 1
            edge = {"parent": p["hook"], "parent_index": p["index"], "child": c["hook"], "child_index": c["index"]}
            assert suite.same(suite.patch_edge(h5, A, B, edge, ht), want), key
    assert any(not suite.same(suite.patch_edge(h5, A, B, e, ht), want) for e in edges)
    if name == "sort":
        assert outside > 0  # the check above ran


def test_pairs_must_have_one_length(compiled):
    h5, ht = compiled["sort"]
    with pytest.raises(ValueError, match="pair 0: a has 2 tokens and b 3"):
        suite.patch_components(h5, [["1", "2"]], [["1", "2", "3"]], [], ht)
    with pytest.raises(ValueError, match="not a child of an edge"):
        suite.patch_edge(h5, ["1"], ["2"], {"parent": "blocks.0.hook_resid_pre", "parent_index": None,
                                             "child": "blocks.0.hook_resid_post", "child_index": None}, ht)


def test_score_attribution_example_runs_and_scores_outside_the_rule_zero(compiled, capsys):
    """examples/python/score_attribution.py on compiled models: its figures are
    fractions, and EAP gives exactly 0 to a pair the edge rule leaves out (the parent's
    directions and the child's reads do not meet, so the product is a sum of zeros)."""
    sys.path.insert(0, str(REPO / "examples" / "python"))
    try:
        import score_attribution as sa
    finally:
        sys.path.pop(0)
    h5, ht = compiled["sort"]
    A, B = suite.random_pairs(h5, 16, seed=1)
    p = suite.Patcher(h5, A, B, ht)
    for g in ("heads", "qkv"):
        cands = sa.candidates(suite.components_from_weights(h5), g)
        rule = {suite.edge_tuple(e) for e in suite.edges_from_weights(h5)[g]}
        scores = sa.eap_scores(p, cands)
        assert rule < set(scores)
        assert all(scores[k] == 0.0 for k in set(scores) - rule)
        assert any(scores[k] != 0.0 for k in rule)
    # Its command line, in this process (TransformerLens imported once).
    argv = sys.argv
    sys.argv = ["score_attribution.py", "--h5", h5, compiled["hist"][0], "--json", "--pairs", "16"]
    try:
        sa.main()
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    rows = [json.loads(l) for l in out.splitlines()]
    assert [x.get("model") for x in rows[:2]] == ["sort", "hist"] and rows[2]["models"] == 2
    for x in rows[:2]:
        assert 0 < x["truth"] <= x["rule_edges"] < x["candidates"]
        for k in ("precision@k", "recall@k", "precision@t", "recall@t"):
            assert 0.0 <= x[k] <= 1.0


# ------------------------------------------------------------------------------------
# A built suite


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A suite of SUITE_PROGRAMS (the curated programs raspc embeds), built by raspc.suite.build."""
    if SUITE_DIR:
        return suite.load(SUITE_DIR)
    out = tmp_path_factory.mktemp("suite") / "built"
    for name in SUITE_PROGRAMS:
        s = suite.build(out, programs=name, jobs=2)
    return s


def test_index_lists_the_models(built):
    assert sorted(built.names()) == sorted(MODELS)
    for m in built:
        e = m.metadata
        for key in ("name", "description", "category", "difficulty", "causal", "vocab", "max_len", "n_layers",
                    "d_model", "n_heads", "d_mlp", "params", "nodes", "exact", "path"):
            assert key in e, (m.name, key)
        exact = e["exact"]  # true, or checks.json's {"inputs", "equal", ...}
        assert exact is True or (isinstance(exact, dict) and exact["equal"] == exact["inputs"] > 0), exact
        for f in ("program.rasp", "model.h5", "model.safetensors", "tl_config.json", "encoders.json",
                  "ground_truth.json", "circuit.json", "checks.json", "card.md"):
            assert os.path.isfile(m.path(f)), (m.name, f)
    first = MODELS[0]
    assert first in built.filter(name=first[:2] + "*").names()
    assert all(n.startswith(first[:2]) for n in built.filter(name=first[:2] + "*").names())
    cat, diff = built[first].metadata["category"], built[first].metadata["difficulty"]
    assert first in built.filter(category=cat, difficulty=diff).names()
    assert all(m.metadata["category"] == cat for m in built.filter(category=cat))
    assert len(built.filter(category="no such category")) == 0
    with pytest.raises(KeyError, match="no model 'no such model'"):
        built["no such model"]
    rows = built.csv_rows()
    assert sorted(r["name"] for r in rows) == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_suite_model_runs_in_transformer_lens_as_raspc_run(built, name):
    m = built[name]
    A, _ = suite.random_pairs(m, 16, seed=2)
    tokens, mask = m.to_tokens(A)
    logits, cache = m.tl().run_with_cache(tokens, attention_mask=mask)
    got = m.decode(logits, mask)
    assert suite.same(got, raspc_eval(m, A))
    assert f"blocks.{m.metadata['n_layers'] - 1}.hook_resid_post" in cache
    cfg = json.loads(Path(m.path("tl_config.json")).read_text())
    assert cfg["use_attn_result"] is True and cfg["use_split_qkv_input"] is True
    want = tl.config_dict(m.weights_path())
    assert set(cfg) == set(want) | {"use_attn_result", "use_split_qkv_input"}
    for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "d_vocab_out", "act_fn",
              "normalization_type", "attention_dir", "positional_embedding_type", "attn_scale"):
        assert suite.same(cfg[k], want[k]), (k, cfg[k], want[k])
    enc = m.encoders
    assert enc["input"]["vocab"] == tl.load(m.weights_path()).meta["vocab"]
    assert enc["output"]["values"] == tl.load(m.weights_path()).meta["output_values"]


def raspc_eval(m, inputs):
    """The interpreter's outputs (raspc.eval when the module is built, else the CLI)."""
    try:
        import raspc as rp

        return [rp.eval(m.path("program.rasp"), s) for s in inputs]
    except ImportError:
        need_binary()
        return [json.loads(raspc("eval", m.path("program.rasp"), "--input", " ".join(s), "--json").stdout)["value"]
                for s in inputs]


def edge_set(edges):
    return {suite.edge_tuple(e) for e in edges}


@pytest.mark.parametrize("name", MODELS)
def test_circuit_edges_equal_the_edge_rule_from_the_weights(built, name):
    m = built[name]
    mine = suite.edges_from_weights(m.weights_path())
    for g in ("heads", "qkv"):
        assert edge_set(m.circuit["edges"][g]) == edge_set(mine[g]), g
        assert set(m.edges(g)) == edge_set(mine[g])
        assert len(m.edges(g)) == len(m.circuit["edges"][g])  # no duplicates
    comps = {(c["hook"], json.dumps(c["index"])) for c in m.circuit["components"]}
    want = {(c["hook"], json.dumps(c["index"])) for c in suite.components_from_weights(m.weights_path())[1:-1]}
    assert comps == want
    assert m.circuit["n_layers"] == m.metadata["n_layers"]


def test_edge_tuples_are_acdc_style(built):
    m = built["sort"] if "sort" in MODELS else built[MODELS[0]]
    for child, ci, parent, pi in m.edges("heads"):
        assert isinstance(ci, tuple) and isinstance(pi, tuple)
        if child.endswith("attn.hook_result"):
            assert ci[:2] == (None, None) and isinstance(ci[2], int)
        else:
            assert ci == (None,)
    if m.name == "sort":  # its output is read from the head of layer 2 (examples/sort.rasp's `out`)
        assert ("blocks.2.hook_resid_post", (None,), "blocks.2.attn.hook_result", (None, None, 0)) in m.edges("heads")


def test_edge_tuples_as_torch_index(built):
    pytest.importorskip("acdc")
    from acdc.TLACDCEdge import TorchIndex

    e = built[MODELS[0]].torch_index_edges("qkv")[0]
    assert isinstance(e[1], TorchIndex) and isinstance(e[3], TorchIndex)


def on_threshold(m, logits, got, want):
    """Whether every position where `got` and `want` differ is one where the decoding
    is decided by rounding: categorical logits with the largest within 1e-3 of 0.5 or of
    the second largest. raspc's checks run in double precision, TransformerLens in
    float32: on such a position either answer is the same intervention."""
    if m.encoders["output"]["encoding"] != "categorical":
        return False
    for p, (g, w) in enumerate(zip(got, want)):
        if suite.same(g, w):
            continue
        row = sorted(logits[0, p + 1].tolist(), reverse=True)
        if not (abs(row[0] - 0.5) < 1e-3 or (len(row) > 1 and row[0] - row[1] < 1e-3)):
            return False
    return True


@pytest.mark.parametrize("name", MODELS)
def test_recorded_node_interventions_reproduce(built, name):
    """Every example of checks.json's node interchanges: patching the node's hooks
    (circuit.json) on a with b gives the recorded decoded output (or differs only on
    a decoding threshold, which float32 and double may decide apart)."""
    m = built[name]
    checks = m.checks["interventions"]
    assert checks["passed"] is True
    nodes = {n["id"]: n for n in m.circuit["nodes"]}
    replayed = boundary = 0  # boundary: decided by rounding (on_threshold)
    for rec in checks["nodes"]:
        if rec["check"] == "skipped":
            assert rec["reason"]
            continue
        assert rec["check"] in ("interchange", "pattern")
        assert rec["agree"] == rec["pairs"] > 0
        assert rec["cone_ablation"]["unchanged"] == rec["cone_ablation"]["pairs"]
        for ex in rec["examples"]:
            got = suite.patch_node(m, ex["a"], ex["b"], nodes[rec["id"]])
            if not suite.same(got, ex["output"]):
                logits = suite.Patcher(m, ex["a"], ex["b"], logits=True).node(nodes[rec["id"]])
                assert on_threshold(m, logits, got, ex["output"]), (rec["name"], ex, got)
                boundary += 1
            replayed += 1
    assert replayed > boundary


@pytest.mark.parametrize("name", MODELS)
def test_recorded_edge_witnesses_reproduce(built, name):
    """Every witness of a necessary edge: patching it (child input += out_P(b) -
    out_P(a)) gives the recorded output, which differs from a's; and the necessary and
    unnecessary edges together are circuit.json's."""
    m = built[name]
    rec = m.checks["interventions"]["edges"]
    replayed = boundary = 0  # boundary: decided by rounding (on_threshold)
    for g in ("heads", "qkv"):
        r = rec[g]
        assert r["total"] == len(m.circuit["edges"][g])
        unnecessary = edge_set(r.get("unnecessary", []))
        assert unnecessary <= edge_set(m.circuit["edges"][g])
        assert r["necessary"] == r["total"] - len(unnecessary)
        assert len(r.get("witness", [])) == r["necessary"]  # one per necessary edge
        for w in r.get("witness", []):
            assert suite.edge_tuple(w["edge"]) not in unnecessary
            got = suite.patch_edge(m, w["a"], w["b"], w["edge"])
            if not suite.same(got, w["output"]):
                logits = suite.Patcher(m, w["a"], w["b"], logits=True).edge(w["edge"])
                assert on_threshold(m, logits, got, w["output"]), (g, w, got)
                boundary += 1
            else:
                assert not suite.same(got, m.run([w["a"]])[0]), (g, w)  # necessary: the output changed
            replayed += 1
    # A model with no necessary edge (length: same-length pairs cannot change it) has
    # nothing to replay.
    assert replayed > boundary or replayed == 0 == rec["heads"]["necessary"]


@pytest.mark.parametrize("name", MODELS)
def test_cone_ablation_keeps_every_node_value(built, name):
    """Every component outside a node's cone (circuit.json) taken from another input
    leaves the node's value, read from the residual stream after its layer, as it was:
    checked here in TransformerLens on pairs of our own."""
    m = built[name]
    A, B = suite.random_pairs(m, 24, seed=13)
    p = suite.Patcher(m, A, B)
    checked = 0
    for node in m.circuit["nodes"]:
        r = p.cone_ablation(node)
        if r is None:
            continue
        patched, clean = r
        assert suite.same(patched, clean), (node["name"] or node["id"], node["cone"])
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("name", MODELS)
def test_the_circuit_holds_on_the_rotated_variant(built, name):
    """The rotated variant computes the same outputs, and the same heads and neurons
    patched the same way give the recorded node interchange outputs and the same
    edge-patched logits: the circuit does not depend on the basis."""
    m = built[name]
    if not os.path.isfile(m.weights_path("rotated")):
        pytest.skip(f"{name}: no rotated/model.h5")
    A, _ = suite.random_pairs(m, 16, seed=3)
    assert suite.same(m.run(A, variant="rotated"), m.run(A))
    rotated, ht = m.weights_path("rotated"), m.tl("rotated")
    nodes = {n["id"]: n for n in m.circuit["nodes"]}
    replayed = 0
    for rec in m.checks["interventions"]["nodes"]:
        for ex in rec.get("examples", [])[:1]:
            assert suite.same(suite.patch_node(rotated, ex["a"], ex["b"], nodes[rec["id"]], ht), ex["output"])
            replayed += 1
    # An edge patch can leave a position exactly on a decoding threshold (two values at
    # 0.5), where rounding decides: compare the logits, which the rotation must keep.
    for w in m.checks["interventions"]["edges"]["qkv"].get("witness", [])[:8]:
        want = suite.Patcher(m, w["a"], w["b"], logits=True).edge(w["edge"])
        got = suite.Patcher(rotated, w["a"], w["b"], ht, logits=True).edge(w["edge"])
        assert torch.allclose(got, want, atol=1e-3), w
        replayed += 1
    assert replayed > 0
