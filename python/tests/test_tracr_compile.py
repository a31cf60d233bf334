"""Tracr-API programs compiled by raspc: every corpus program's model against the
evaluator (Tracr's semantics), and the errors users see."""

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # the corpus package beside this file
import tracr_programs  # noqa: E402

import raspc  # noqa: E402
from raspc.tracr import compile_rasp_to_model, convert, lib, rasp  # noqa: E402
from raspc.tracr.compiler import compiling  # noqa: E402

try:
    from tracr.compiler import lib as tracr_lib
    from tracr.rasp import rasp as tracr_rasp
except ImportError:
    tracr_lib = tracr_rasp = None

CORPUS = tracr_programs.CORPUS
INPUTS_PER_PROGRAM = 30


def expected(entry, program, xs):
    """What the model must output: the evaluator's value; for a causal model, position
    i evaluated on the prefix xs[:i + 1] (the model sees nothing later)."""
    if not entry.causal:
        return rasp.evaluate(program, xs)
    return [rasp.evaluate(program, xs[: i + 1])[i] for i in range(len(xs))]


def agrees(got, want, numerical):
    """raspc's criterion (runtime matchesInterpreter): None only with None, numerical
    outputs within 1e-6 relative to max(1, |want|) (the forward pass computes in
    floating point and snaps to the nearest value of the output's value set, which may
    hold values 1e-16 apart, e.g. 0.2 - 0.6 and -0.4), anything else equal and of the
    same type."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if numerical and w is not None:
            if not isinstance(g, (int, float)) or abs(g - w) > 1e-6 * max(1.0, abs(w)):
                return False
        elif g != w or type(g) is not type(w):
            return False
    return True


@pytest.fixture(scope="module")
def compiled():
    cache = {}

    def get(entry):
        if entry.name not in cache:
            program = entry.build()
            cache[entry.name] = (program, compile_rasp_to_model(
                program, vocab=set(entry.vocab), max_seq_len=entry.max_seq_len, causal=entry.causal,
                compiler_bos="BOS", compiler_pad="PAD"))
        return cache[entry.name]

    return get


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_corpus_model_equals_evaluator(entry, compiled):
    program, model = compiled(entry)
    assert isinstance(model.raspc_model, raspc.Model)
    numerical = rasp.is_numerical(program)
    assert model.output_encoding == ("numerical" if numerical else "categorical")
    rng = random.Random(entry.name)
    inputs = entry.inputs(rng, INPUTS_PER_PROGRAM)
    if entry.gen is None:  # the longest inputs too, where mistakes show first
        inputs += [[rng.choice(entry.vocab) for _ in range(entry.max_seq_len)] for _ in range(5)]
    for xs in inputs:
        out = model.apply(["BOS"] + xs).decoded
        assert out[0] == "BOS"
        want = expected(entry, program, xs)
        assert agrees(out[1:], want, numerical), (xs, out[1:], want)


@pytest.mark.parametrize("entry", CORPUS[:20], ids=lambda e: e.name)
def test_batched_raspc_run_equals_apply(entry, compiled):
    program, model = compiled(entry)
    rng = random.Random("batch" + entry.name)
    batch = entry.inputs(rng, 8)
    runs = model.raspc_model.run(batch)
    for xs, got in zip(batch, runs):
        assert list(got) == model.apply(["BOS"] + xs).decoded[1:]


@pytest.mark.skipif(tracr_rasp is None, reason="tracr (tracr-pypi) is not installed")
@pytest.mark.parametrize("build,vocab,n", [
    (lambda: tracr_lib.make_sort_unique(tracr_rasp.tokens, tracr_rasp.indices), [1, 2, 3], 5),
    (lambda: tracr_lib.make_hist(), ["a", "b", "c"], 5),
    (lambda: tracr_lib.make_frac_prevs(tracr_rasp.tokens == "a"), ["a", "b"], 5),
    (lambda: tracr_lib.make_shuffle_dyck2(), ["(", ")", "{", "}"], 6),
    (lambda: tracr_lib.detect_pattern(tracr_rasp.tokens, "ab"), ["a", "b"], 5),
    (lambda: tracr_lib.make_sort_freq(5), [1, 2, 3], 5),
], ids=["sort_unique", "hist", "frac_prevs", "shuffle_dyck2", "detect_pattern", "sort_freq"])
def test_programs_built_with_real_tracr_compile(build, vocab, n):
    program = build()
    assert type(program).__module__.startswith("tracr.")
    model = compile_rasp_to_model(program, vocab=set(vocab), max_seq_len=n, compiler_bos="BOS")
    numerical = tracr_rasp.is_numerical(program)
    rng = random.Random(repr(vocab))
    for _ in range(30):
        xs = [rng.choice(vocab) for _ in range(rng.randint(1, n))]
        want = tracr_rasp.evaluate(program, xs)
        assert agrees(model.apply(["BOS"] + xs).decoded[1:], want, numerical), xs


def test_quick_start_as_in_tracr():
    from raspc.tracr.compiler import compiling as tracr_spelling

    program = lib.make_reverse(rasp.tokens)
    model = tracr_spelling.compile_rasp_to_model(program, vocab={1, 2, 3}, max_seq_len=5,
                                                 compiler_bos="BOS")
    assert model.apply(["BOS", 1, 2, 3]).decoded == ["BOS", 3, 2, 1]
    assert model.raspc_model.run([1, 1, 2]) == [2, 1, 1]
    # The example at the top of docs/python-tracr.md.
    sort = compiling.compile_rasp_to_model(lib.make_sort_unique(rasp.tokens, rasp.tokens),
                                           vocab={1, 2, 3}, max_seq_len=5, compiler_bos="BOS")
    assert sort.apply(["BOS", 3, 1, 2]).decoded == ["BOS", 1, 2, 3]
    # Tracr's default BOS token name.
    default = compiling.compile_rasp_to_model(program, {1, 2, 3}, 5)
    assert default.apply(["compiler_bos", 2, 3]).decoded == ["compiler_bos", 3, 2]


def test_padding_and_input_errors():
    model = compile_rasp_to_model(lib.make_hist(), vocab={"a", "b"}, max_seq_len=4,
                                  compiler_bos="BOS", compiler_pad="PAD")
    assert model.apply(["BOS", "a", "b", "a", "PAD"]).decoded == ["BOS", 2, 1, 2, None]
    assert model.apply(["BOS"]).decoded == ["BOS"]
    with pytest.raises(ValueError, match="must start with the BOS token 'BOS'"):
        model.apply(["a", "b"])
    with pytest.raises(ValueError, match="'c' is not in the vocabulary"):
        model.apply(["BOS", "a", "c"])
    with pytest.raises(ValueError, match="at most 4"):
        model.apply(["BOS", "a", "a", "a", "a", "a"])
    with pytest.raises(ValueError, match="only appear as BOS"):
        model.apply(["BOS", "PAD", "a"])


def test_compile_argument_errors():
    program = lib.make_hist()
    with pytest.raises(ValueError, match="BOS token 'a' must not be in the vocabulary"):
        compile_rasp_to_model(program, {"a", "b"}, 4, compiler_bos="a")
    with pytest.raises(ValueError, match="PAD token 'b' must not be in the vocabulary"):
        compile_rasp_to_model(program, {"a", "b"}, 4, compiler_pad="b")
    with pytest.raises(ValueError, match="max_seq_len must be a positive int"):
        compile_rasp_to_model(program, {"a"}, 0)
    with pytest.raises(ValueError, match="vocabulary is empty"):
        compile_rasp_to_model(program, set(), 3)
    with pytest.raises(TypeError, match="must be an SOp"):
        compile_rasp_to_model(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ), {"a"}, 3)
    with pytest.raises(TypeError, match="expected a RASP expression"):
        compile_rasp_to_model("tokens", {"a"}, 3)


def test_function_failing_on_a_reachable_value_is_reported():
    table = {1: 10}
    program = rasp.Select(rasp.tokens, rasp.Map(lambda x: table[x], rasp.tokens), lambda k, q: k < q)
    with pytest.raises(NotImplementedError, match=r"map_\d+: its function raised KeyError: 2"):
        compile_rasp_to_model(rasp.SelectorWidth(program), {1, 2}, 3)
    with pytest.raises(NotImplementedError, match=r"map_\d+: its function raised KeyError: 2 on the input value\(s\) \(2,\)"):
        compile_rasp_to_model(rasp.Map(lambda x: table[x], rasp.tokens), {1, 2}, 3)


def test_arithmetic_errors_on_unreachable_values_are_ignored_as_tracr():
    # make_length can be 0 as far as value sets know; no input gives it.
    n = lib.make_length()
    program = rasp.SequenceMap(lambda i, m: 12 // m + i, rasp.indices, n)
    model = compile_rasp_to_model(program, {"a"}, 4, compiler_bos="BOS")
    assert model.apply(["BOS", "a", "a", "a"]).decoded == ["BOS", 4, 5, 6]


def test_numerical_from_a_none_default_is_refused():
    # A known difference: raspc refuses a numerical s-op whose input can be None, even
    # where the selector always selects (position 0 exists); Tracr compiles this
    # program (its models hold no None).
    zero = rasp.Map(lambda i: 0, rasp.indices)
    first = rasp.Aggregate(rasp.Select(rasp.indices, zero, rasp.Comparison.EQ), rasp.tokens)
    same = rasp.SequenceMap(lambda x, f: x == f, rasp.tokens, first)
    as_number = rasp.numerical(rasp.Map(lambda b: 1 if b else 0, same)).named("same_as_first")
    program = rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE),
                                            as_number, default=0))
    with pytest.raises(raspc.RaspcError, match="numerical but can be None") as err:
        compile_rasp_to_model(program, {1, 2}, 3)
    assert "same_as_first" in str(err.value)
    if tracr_rasp is not None:
        from tracr.compiler import compiling as tracr_compiling

        theirs = tracr_compiling.compile_rasp_to_model(convert.to_tracr(program), {1, 2}, 3, compiler_bos="BOS")
        assert abs(theirs.apply(["BOS", 1, 2, 1]).decoded[1] - 2 / 3) < 1e-3


def test_encodings_tracr_refuses_compile():
    # Tracr requires categorical tokens and Select operands; raspc compiles these.
    tokens = rasp.numerical(rasp.tokens)
    mean = rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ),
                                         tokens, default=0))
    model = compile_rasp_to_model(mean, {1, 2, 3}, 4, compiler_bos="BOS")
    assert model.apply(["BOS", 1, 2, 3]).decoded == ["BOS", 1.0, 1.5, 2.0]
    shifted = rasp.numerical(rasp.Map(lambda x: x + 1, rasp.tokens))
    rank = rasp.SelectorWidth(rasp.Select(shifted, shifted, rasp.Comparison.LT))
    model = compile_rasp_to_model(rank, {1, 2, 3}, 4, compiler_bos="BOS")
    assert model.apply(["BOS", 3, 1, 2, 1]).decoded == ["BOS", 3, 0, 2, 0]


def test_categorical_aggregate_of_equal_values_keeps_their_type():
    # Tracr's evaluator averages several equal values into a float (True, True -> 1.0);
    # the compiled model (Tracr's and raspc's) moves the value itself.
    same = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
    program = rasp.Aggregate(same, rasp.tokens == 1)
    assert program([1, 2, 1]) == [1.0, False, 1.0]
    model = compile_rasp_to_model(program, {1, 2}, 4, compiler_bos="BOS")
    decoded = model.apply(["BOS", 1, 2, 1]).decoded
    assert decoded == ["BOS", True, False, True] and type(decoded[1]) is bool


def test_raspc_compile_errors_name_the_node():
    # A categorical aggregate that would average different values: raspc refuses it
    # (Tracr's compiler silently gives wrong outputs there).
    everything = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE)
    program = rasp.Aggregate(everything, rasp.tokens).named("average_tokens")
    with pytest.raises(raspc.RaspcError, match="average_tokens"):
        compile_rasp_to_model(program, {1, 2}, 3)


def test_tuple_values_through_the_graph():
    program = lib.make_nary_sequencemap(lambda a, b, c: f"{a}{b}{c}", rasp.tokens, rasp.indices, rasp.tokens)
    model = compile_rasp_to_model(program, {"x", "y"}, 3, compiler_bos="BOS")
    assert model.apply(["BOS", "x", "y", "y"]).decoded == ["BOS", "x0x", "y1y", "y2y"]
    pairs = rasp.SequenceMap(lambda a, b: (a, b), rasp.tokens, rasp.indices)
    model = compile_rasp_to_model(lib.make_reverse(pairs), {"x", "y"}, 3, compiler_bos="BOS")
    assert model.apply(["BOS", "x", "y"]).decoded == ["BOS", ("y", 1), ("x", 0)]


def test_converted_program_keeps_names():
    program = tracr_programs.by_name("mix_named_nodes").build()
    model = compile_rasp_to_model(program, set(tracr_programs.NUMS), 5)
    labels = set(model.raspc_model.trace([1, 2]).final)
    assert "product" in labels, labels
    # plus_one has no directions of its own: the head reads it through tokens, and the
    # product's MLP computes it from tokens; that MLP reads rank_le's head output
    # 1/(w+1) directly (one layer in all). The ground truth names them all the same.
    nodes = {n["name"]: n for n in model.raspc_model.ground_truth}
    assert nodes["plus_one"]["sublayer"] == "fused"
    assert (nodes["rank_le"]["layer"], nodes["rank_le"]["sublayer"], nodes["rank_le"]["heads"]) == (0, "attn", [0])
    assert (nodes["product"]["layer"], nodes["product"]["sublayer"]) == (0, "mlp")
    assert nodes["plus_one"]["value_set"] == [1, 2, 3, 4, 5]  # tokens 0..4, plus one


def kinds(program):
    """The class names of the DAG's nodes in preorder, each node once."""
    out, seen, stack = [], set(), [program]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        out.append(type(e).__name__)
        stack.extend(reversed(list(e.children)))
    return out


def test_tracr_conversion_round_trip_is_structural():
    if tracr_rasp is None:
        pytest.skip("tracr (tracr-pypi) is not installed")
    program = lib.make_shuffle_dyck2()
    there = convert.to_tracr(program)
    back = convert.from_tracr(there)
    assert kinds(there) == kinds(program) == kinds(back)
    assert len(kinds(program)) > 20


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_corpus_model_in_transformerlens(entry, compiled):
    """Every corpus model loaded into TransformerLens (raspc.tl), run on one padded batch
    of random inputs (lengths 1 to the maximum) and decoded: raspc's forward pass's values."""
    pytest.importorskip("transformer_lens")
    from raspc import tl

    program, model = compiled(entry)
    m = model.raspc_model
    rng = random.Random("tl" + entry.name)
    batch = entry.inputs(rng, 6) + [[rng.choice(entry.vocab) for _ in range(entry.max_seq_len)]]
    assert tl.run(m, batch, hooked=m.to_hooked_transformer()) == m.run(batch)
