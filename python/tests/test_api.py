"""The raspc package: compile, load, run, trace, save, eval, errors, and the graph builder
(Python functions as maps). Every compiled model is checked against the interpreter."""

import os
import pathlib
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

import raspc
from raspc import _core

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.rasp"))


def cli_binary():
    path = os.environ.get("RASPC_BINARY") or str(ROOT / "build" / "tools" / "raspc")
    return path if os.path.isfile(path) else shutil.which("raspc")


def random_inputs(vocab, max_len, count, seed):
    rng = random.Random(seed)
    out = [[rng.choice(vocab) for _ in range(n)] for n in range(1, max_len + 1)]
    while len(out) < count:
        out.append([rng.choice(vocab) for _ in range(rng.randint(1, max_len))])
    return out


def test_examples_exist():
    assert len(EXAMPLES) >= 15


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_matches_interpreter(path):
    model = raspc.compile(path)
    inputs = random_inputs(model.vocab, model.max_len, 40, seed=path.stem)
    got = model.run(inputs)
    want = raspc.eval(path, inputs)
    assert len(got) == len(inputs)
    for inp, g, w in zip(inputs, got, want):
        assert len(g) == len(inp)
        assert g == w, f"{path.name} on {inp}: model {g}, interpreter {w}"
    # One input gives one list.
    assert model.run(inputs[0]) == want[0]


def test_sort_values_and_types():
    model = raspc.compile(ROOT / "examples" / "sort.rasp")
    assert model.run([3, 1, 2, 2]) == [1, 2, 2, 3]
    assert model.run(["3", "1", "2"]) == [1, 2, 3]  # tokens as strings or ints
    assert all(type(v) is int for v in model.run([3, 1, 2]))
    assert raspc.eval(ROOT / "examples" / "sort.rasp", [3, 1, 2, 2]) == [1, 2, 2, 3]
    assert model.vocab == ["1", "2", "3"]
    assert model.max_len == 5
    md = model.metadata
    assert md["output"] == "out"  # the last s-op assigned
    assert md["causal"] is False
    assert md["config"]["n_ctx"] == 6
    assert md["config"]["d_vocab"] == 5  # 3 tokens, BOS, PAD
    assert len(md["residual_labels"]) == md["config"]["d_model"]


def test_compile_source_text_with_options():
    src = "x = tokens + 1;\nout = x * 2;\n"
    model = raspc.compile(src, vocab=[1, 2, 3], max_len=4)
    assert model.run([[1, 2], [3, 3, 3]]) == [[4, 6], [8, 8, 8]]
    assert raspc.eval(src, [1, 2], vocab=[1, 2, 3], max_len=4) == [4, 6]
    # `output` picks another s-op than the last one.
    model = raspc.compile(src, vocab="1 2 3", max_len=4, output="x")
    assert model.run([1, 2]) == [2, 3]


def test_logits_shapes_and_decoding():
    model = raspc.compile(ROOT / "examples" / "sort.rasp")
    lg = model.logits([[3, 1, 2], [1]])
    c = model.config
    assert [a.shape for a in lg] == [(4, c["d_vocab_out"]), (2, c["d_vocab_out"])]
    values = model.metadata["output_values"]
    # Categorical output: the value of the largest logit, positions 1.. (0 is BOS).
    assert [values[i] for i in lg[0][1:].argmax(axis=1)] == [1, 2, 3]


def test_weights_and_ground_truth():
    model = raspc.compile(ROOT / "examples" / "sort.rasp")
    w = model.weights
    c = model.config
    assert w["embed.W_E"].shape == (c["d_vocab"], c["d_model"])
    assert w["blocks.0.attn.W_Q"].shape == (c["n_heads"], c["d_model"], c["d_head"])
    assert w["unembed.W_U"].dtype == np.float32
    gt = model.ground_truth
    assert isinstance(gt, list)
    out = next(n for n in gt if n["name"] == "out")
    assert out["kind"] == "aggregate" and out["layer"] == c["n_layers"] - 1 and out["sublayer"] == "attn"
    assert model.metadata["output"] == "out"


def test_save_load_round_trip_equals_cli(tmp_path):
    os.chdir(ROOT)  # the CLI records the path as given
    model = raspc.compile("examples/sort.rasp")
    ours = tmp_path / "py.h5"
    model.save(ours)
    with pytest.raises(raspc.RaspcError, match="exists"):
        model.save(ours)
    model.save(ours, overwrite=True)
    loaded = raspc.load(ours)
    assert loaded.run([[3, 1, 2], [2, 2, 1, 1, 3]]) == [[1, 2, 3], [1, 1, 2, 2, 3]]
    assert loaded.metadata == model.metadata
    for name, a in model.weights.items():
        assert np.array_equal(a, loaded.weights[name]), name
    assert loaded.ground_truth == model.ground_truth
    binary = cli_binary()
    if binary is None:
        pytest.skip("no raspc binary (build/tools/raspc or RASPC_BINARY) to compare with")
    theirs = tmp_path / "cli.h5"
    subprocess.run([binary, "compile", "examples/sort.rasp", "-o", str(theirs)], check=True, capture_output=True)
    assert ours.read_bytes() == theirs.read_bytes()


def test_save_never_overwrites_the_source(tmp_path):
    src = tmp_path / "p.rasp"
    src.write_text("# raspc: --vocab \"1 2\" --max-len 3\nout = tokens + 1;\n")
    model = raspc.compile(src)
    with pytest.raises(raspc.RaspcError):
        model.save(src, overwrite=True)
    assert src.read_text().startswith("# raspc:")


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(raspc.RaspcError) as e:
        raspc.load(bad)
    assert str(bad) in str(e.value)
    assert (e.value.file, e.value.line, e.value.col) == (str(bad), None, None)
    with pytest.raises(raspc.RaspcError):
        raspc.load(tmp_path / "missing.h5")


def test_syntax_error(tmp_path):
    src = tmp_path / "bad.rasp"
    src.write_text("x = tokens + ;\n")
    with pytest.raises(raspc.RaspcError) as e:
        raspc.compile(src, vocab=[1, 2], max_len=3)
    err = e.value
    assert isinstance(err, ValueError)
    assert (err.file, err.line) == (str(src), 1)
    assert err.col == 14
    assert str(err).startswith(f"{src}:1:14: error: ")
    assert str(err).endswith("x = tokens + ;\n             ^")
    assert err.message in str(err)


def test_unknown_name():
    with pytest.raises(raspc.RaspcError) as e:
        raspc.eval("x = tokns + 1;", [1, 2], vocab=[1, 2], max_len=3)
    err = e.value
    assert (err.file, err.line, err.col) == ("<string>", 1, 5)
    assert err.message == "use of undefined name 'tokns'"
    assert str(err) == "<string>:1:5: error: use of undefined name 'tokns'\nx = tokns + 1;\n    ^"


def test_input_errors():
    model = raspc.compile(ROOT / "examples" / "sort.rasp")
    with pytest.raises(raspc.RaspcError, match="position 1"):
        model.run([1, 7])
    with pytest.raises(raspc.RaspcError, match="maximum length"):
        model.run([1] * 6)
    with pytest.raises(TypeError):
        model.run("1 2 3")
    with pytest.raises(raspc.RaspcError, match="not in the vocabulary"):
        raspc.eval(ROOT / "examples" / "sort.rasp", [1, 7])
    with pytest.raises(raspc.RaspcError, match="no vocabulary"):
        raspc.compile("out = tokens;", max_len=3)
    with pytest.raises(TypeError, match="unknown option"):
        raspc.compile("out = tokens;", vocab=[1], max_len=3, mlp_width=3)


def test_trace_shapes_and_reverse_head():
    model = raspc.compile(ROOT / "examples" / "reverse.rasp")
    c = model.config
    tokens = [1, 2, 3, 3]
    tr = model.trace(tokens)
    assert len(tr.steps) == 1 + 2 * c["n_layers"]
    assert [(s.layer, s.sublayer) for s in tr.steps[:3]] == [(-1, "embed"), (0, "attn"), (0, "mlp")]
    for s in tr.steps:
        assert s.residual.shape == (len(tokens) + 1, c["d_model"])
    assert tr.final["out"] == [3, 3, 2, 1]
    assert tr.values(-1, "embed")["tokens"] == tokens
    assert len(tr.attention) == c["n_layers"]
    for p in tr.attention:
        assert p.shape == (c["n_heads"], len(tokens) + 1, len(tokens) + 1)
        np.testing.assert_allclose(p.sum(axis=2), 1.0, rtol=1e-9)
    # The head of `out` attends from position i to position n - 1 - i (BOS is row 0).
    gt = model.ground_truth
    nodes = gt
    node = next(n for n in nodes if n.get("name") == "out")
    p = tr.attention[node["layer"]][node["heads"][0]]
    n = len(tokens)
    assert [int(p[1 + i].argmax()) for i in range(n)] == [1 + n - 1 - i for i in range(n)]
    assert all(p[1 + i, 1 + n - 1 - i] > 0.99 for i in range(n))


# --- the graph builder (raspc.tracr's base) ---


def inputs_over(vocab, max_len, count=30, seed=0):
    return random_inputs(vocab, max_len, count, seed)


def test_graph_func_maps():
    g = _core.Graph()
    t = g.tokens()
    twice = g.func(lambda x: 2 * x + 1, [t], "twice")
    i = g.indices()
    total = g.func(lambda a, b: a + b, [twice, i])
    g.name(total, "total")
    model = _core.compile_graph(g, total, [1, 2, 3], 5)
    assert isinstance(model, raspc.Model)
    nodes = {n["id"]: n for n in model.ground_truth}
    assert (nodes[twice]["op"], nodes[total]["op"], nodes[total]["name"]) == ("twice", "<lambda>", "total")
    assert model.metadata["output"] == "total"
    for inp in inputs_over([1, 2, 3], 5):
        want = [2 * x + 1 + k for k, x in enumerate(inp)]
        assert g.evaluate(total, inp) == want
        assert model.run(inp) == want


def test_graph_select_aggregate_width_and_constant_comparisons():
    g = _core.Graph()
    t = g.tokens()
    i = g.indices()
    prev = g.select(i, i, "<=")
    num = g.encode(g.func(lambda x: x, [t], "num"), "numerical")
    mean = g.encode(g.aggregate(prev, num, 0), "numerical")
    everyone = g.select(t, t, "true")
    nobody = g.select(t, t, "false")
    width = g.selector_width(everyone)
    none_width = g.selector_width(nobody)
    out = g.func(lambda m, w, z: round(m * 6) + 100 * w + 1000 * z, [mean, width, none_width], "combine")
    model = _core.compile_graph(g, out, [1, 2, 3], 4)
    for inp in inputs_over([1, 2, 3], 4):
        want = [round(sum(inp[: k + 1]) / (k + 1) * 6) + 100 * len(inp) for k in range(len(inp))]
        assert g.evaluate(out, inp) == want
        assert model.run(inp) == want
    assert g.evaluate(everyone, [1, 2]) == [[True, True], [True, True]]
    assert g.evaluate(nobody, [1, 2]) == [[False, False], [False, False]]


def test_graph_select_with_a_python_predicate_is_one_head():
    # Tracr's shift_by: Select(indices, indices, lambda k, q: q == k + 1), no map before it.
    g = _core.Graph()
    i = g.indices()

    def off_by_one(k, q):
        return q == k + 1

    shifted = g.aggregate(g.select(i, i, off_by_one), g.tokens(), None)
    model = _core.compile_graph(g, shifted, ["a", "b", "c"], 5)
    assert model.config["n_layers"] == 1
    for inp in inputs_over(["a", "b", "c"], 5):
        want = [None] + inp[:-1]
        assert g.evaluate(shifted, inp) == want
        assert model.run(inp) == want
    with pytest.raises(raspc.RaspcError, match="a function of \\(key, query\\), not int"):
        g.select(i, i, 3)


def test_graph_categorical_aggregate_with_strings():
    g = _core.Graph()
    t = g.tokens()
    length = g.length()
    opp = g.func(lambda n, k: n - k - 1, [length, g.indices()], "opp")
    flip = g.select(g.indices(), opp, "==")
    rev = g.aggregate(flip, g.func(str.upper, [t], "upper"))
    model = _core.compile_graph(g, rev, ["a", "b", "c"], 4)
    for inp in inputs_over(["a", "b", "c"], 4):
        want = [x.upper() for x in reversed(inp)]
        assert g.evaluate(rev, inp) == want
        assert model.run(inp) == want


def test_graph_function_is_called_once_per_value():
    calls = []

    def f(x):
        calls.append(x)
        return x * x

    g = _core.Graph()
    sq = g.func(f, [g.tokens()], "square")
    model = _core.compile_graph(g, sq, [1, 2, 3], 5)
    assert sorted(calls) == [1, 2, 3]
    assert model.run([3, 2]) == [9, 4]


def test_graph_exception_in_function():
    g = _core.Graph()
    bad = g.func(lambda x: 10 // (x - 2), [g.tokens()], "bad")
    with pytest.raises(raspc.RaspcError) as e:
        _core.compile_graph(g, bad, [1, 2, 3], 4)
    assert "bad(2) raised ZeroDivisionError" in e.value.message
    assert e.value.file == "<graph>"
    assert e.value.line == bad + 1
    with pytest.raises(raspc.RaspcError, match=r"bad\(2\) raised ZeroDivisionError"):
        g.evaluate(bad, [1, 2])
    assert g.evaluate(bad, [1, 3]) == [-10, 10]


def test_graph_bad_return_and_big_ints():
    g = _core.Graph()
    t = g.tokens()
    listy = g.func(lambda x: [x], [t], "listy")
    with pytest.raises(raspc.RaspcError, match="listy\\(1\\) returned \\[1\\]: a list is not a RASP value"):
        g.evaluate(listy, [1])
    big = g.func(lambda x: 2**70 + x, [t], "big")
    with pytest.raises(raspc.RaspcError, match="does not fit in 64 bits"):
        g.evaluate(big, [1])
    with pytest.raises(raspc.RaspcError, match="unknown comparison"):
        g.select(t, t, "~")
    with pytest.raises(raspc.RaspcError, match="not a node"):
        g.func(abs, [99], "abs")
    with pytest.raises(raspc.RaspcError, match="1, 2 or 3"):
        g.func(lambda *a: 0, [t, t, t, t])


def test_causal_compile_eval_and_patterns():
    path = ROOT / "examples" / "frac_prevs.rasp"
    model = raspc.compile(path, causal=True)
    assert model.metadata["causal"] is True and model.config["causal"] is True
    inputs = random_inputs(model.vocab, model.max_len, 30, seed="causal")
    assert model.run(inputs) == raspc.eval(path, inputs, causal=True)
    tr = model.trace(["x", "y", "y", "x"])
    assert tr.final["out"] == [1.0, 0.5, 1 / 3, 0.5]
    for p in tr.attention:
        for h in range(p.shape[0]):
            assert np.all(np.triu(p[h], k=1) == 0)  # no query sees a later key


def test_import_needs_no_torch():
    code = "import sys, raspc; raspc.compile('out = tokens;', vocab=[1], max_len=2); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_numpy_inputs_and_tokens():
    model = raspc.compile(ROOT / "examples" / "reverse.rasp")
    assert model.run(np.array([1, 2, 3])) == [3, 2, 1]
    assert model.run(np.array([[1, 2], [3, 1]])) == [[2, 1], [1, 3]]
    g = _core.Graph()
    half = g.func(lambda x: np.float64(x) / 2, [g.tokens()], "half")
    assert g.evaluate(half, [1, 3]) == [0.5, 1.5]
    twice = g.func(lambda x: np.int64(x) * 2, [g.tokens()], "twice")  # numpy scalars are values
    assert g.evaluate(twice, [1, 3]) == [2, 6]
    odd = g.func(lambda x: np.bool_(x % 2), [g.tokens()], "odd")
    assert g.evaluate(odd, [1, 2]) == [True, False]


def test_graph_model_save_and_load(tmp_path):
    g = _core.Graph()
    t = g.tokens()
    quoted = g.func(lambda x: f'"{x}"', [t], 'say "it"')
    width = g.selector_width(g.select(t, t, "true"))
    out = g.func(lambda q, w: q * w, [quoted, width], "repeat")
    model = _core.compile_graph(g, out, ["a", "b"], 3)
    model.save(tmp_path / "g.h5")
    loaded = raspc.load(tmp_path / "g.h5")
    inputs = inputs_over(["a", "b"], 3)
    assert loaded.run(inputs) == model.run(inputs) == [g.evaluate(out, x) for x in inputs]
    assert loaded.run(["a", "b"]) == ['"a""a"', '"b""b"']
    assert loaded.metadata["source_name"] == "<graph>"
    assert 'say "it"' in {n["op"] for n in loaded.ground_truth}
    assert "true" in {n["op"] for n in loaded.ground_truth}


def test_save_safetensors_equals_cli(tmp_path):
    """Model.save(format="safetensors") writes what `raspc compile --format safetensors`
    writes, and the safetensors package alone reads it back."""
    os.chdir(ROOT)
    model = raspc.compile("examples/sort.rasp")
    ours = tmp_path / "py.safetensors"
    model.save(ours)  # the format from the suffix
    with pytest.raises(ValueError, match="format must be 'hdf5' or 'safetensors', not 'onnx'"):
        model.save(tmp_path / "x.onnx", format="onnx")
    from safetensors.numpy import load_file

    tensors = load_file(str(ours))
    assert set(tensors) == set(model.weights)
    for name, a in model.weights.items():
        assert np.array_equal(a, tensors[name]), name
    binary = cli_binary()
    if binary is None:
        pytest.skip("no raspc binary (build/tools/raspc or RASPC_BINARY) to compare with")
    theirs = tmp_path / "cli.safetensors"
    subprocess.run([binary, "compile", "examples/sort.rasp", "--format", "safetensors", "-o", str(theirs)],
                   check=True, capture_output=True)
    assert ours.read_bytes() == theirs.read_bytes()
