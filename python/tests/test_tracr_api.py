"""raspc.tracr's RASP API against Tracr's: same names, same values, same errors.

Pure Python (no compiled core). Where an installed `tracr` (tracr-pypi) is available,
every corpus program and every lib program is also evaluated by Tracr's own evaluator
and must give identical values (types included).
"""

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # the corpus package beside this file
import tracr_programs  # noqa: E402
from raspc.tracr import convert, lib, rasp
from raspc.tracr.compiler import lowering

try:  # Tracr's own module, to compare with; the tests that need it skip without it.
    from tracr.compiler import lib as tracr_lib
    from tracr.rasp import rasp as tracr_rasp
except ImportError:
    tracr_lib = tracr_rasp = None

needs_tracr = pytest.mark.skipif(tracr_rasp is None, reason="tracr (tracr-pypi) is not installed")

CORPUS = tracr_programs.CORPUS
INPUTS_PER_PROGRAM = 25


def same(a, b):
    """Equal values of equal types, position by position (1 == 1.0 == True is not enough)."""
    return len(a) == len(b) and all(x == y and type(x) is type(y) for x, y in zip(a, b))


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 60 + 14
    assert len({e.name for e in CORPUS}) == len(CORPUS)
    assert any(e.causal for e in CORPUS)


@needs_tracr
@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_corpus_matches_tracr_evaluator(entry):
    ours = entry.build()
    theirs = convert.to_tracr(ours)
    assert type(theirs).__module__ == "tracr.rasp.rasp"
    rng = random.Random(entry.name)
    for xs in entry.inputs(rng, INPUTS_PER_PROGRAM):
        a, b = rasp.evaluate(ours, xs), tracr_rasp.evaluate(theirs, xs)
        assert same(a, b), (xs, a, b)


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_lowering_keeps_values(entry):
    program = entry.build()
    lowered = lowering.lower(program, entry.vocab, entry.max_seq_len)
    rng = random.Random("lower" + entry.name)
    for xs in entry.inputs(rng, INPUTS_PER_PROGRAM):
        assert same(rasp.evaluate(lowered, xs), rasp.evaluate(program, xs)), xs


# Tracr's lib functions, called the same way on both sides.
LIB_CALLS = [
    ("make_length", lambda m: m.make_length(), ["a", "b"]),
    ("make_reverse", lambda m: m.make_reverse(m_rasp(m).tokens), [1, 2, 3]),
    ("make_hist", lambda m: m.make_hist(), ["a", "b", "c"]),
    ("make_sort_unique", lambda m: m.make_sort_unique(m_rasp(m).tokens, m_rasp(m).indices), [1, 2, 3]),
    ("make_sort", lambda m: m.make_sort(m_rasp(m).tokens, m_rasp(m).tokens, max_seq_len=5, min_key=1),
     [1, 2, 3]),
    ("make_sort_freq", lambda m: m.make_sort_freq(max_seq_len=5), [1, 2, 3]),
    ("make_frac_prevs", lambda m: m.make_frac_prevs(m_rasp(m).tokens == "a"), ["a", "b"]),
    ("make_pair_balance", lambda m: m.make_pair_balance(m_rasp(m).tokens, "(", ")"), ["(", ")", "x"]),
    ("make_shuffle_dyck", lambda m: m.make_shuffle_dyck(["()", "{}", "[]"]),
     ["(", ")", "{", "}", "[", "]"]),
    ("make_shuffle_dyck2", lambda m: m.make_shuffle_dyck2(), ["(", ")", "{", "}", "x"]),
    ("shift_by", lambda m: m.shift_by(2, m_rasp(m).tokens), [1, 2, 3]),
    ("detect_pattern", lambda m: m.detect_pattern(m_rasp(m).tokens, "aba"), ["a", "b"]),
    ("make_count_less_freq", lambda m: m.make_count_less_freq(2), ["a", "b", "c"]),
    ("make_count", lambda m: m.make_count(m_rasp(m).tokens, "a"), ["a", "b"]),
    ("make_nary_sequencemap",
     lambda m: m.make_nary_sequencemap(lambda x, y, z: x + 2 * y - z, m_rasp(m).tokens,
                                       m_rasp(m).indices, m_rasp(m).tokens), [1, 2, 3]),
]


def m_rasp(module):
    return rasp if module is lib else tracr_rasp


@needs_tracr
@pytest.mark.parametrize("name,call,vocab", LIB_CALLS, ids=[c[0] for c in LIB_CALLS])
def test_lib_matches_tracr_lib(name, call, vocab):
    ours, theirs = call(lib), call(tracr_lib)
    assert ours.name == theirs.name
    rng = random.Random(name)
    for _ in range(40):
        xs = [rng.choice(vocab) for _ in range(rng.randint(1, 6))]
        assert same(rasp.evaluate(ours, xs), tracr_rasp.evaluate(theirs, xs)), xs


@needs_tracr
@pytest.mark.parametrize("name,call,vocab", LIB_CALLS, ids=[c[0] for c in LIB_CALLS])
def test_tracr_programs_convert(name, call, vocab):
    theirs = call(tracr_lib)
    ours = convert.from_tracr(theirs)
    assert isinstance(ours, rasp.SOp)
    assert ours.name == theirs.name
    assert rasp.get_encoding(ours).value == tracr_rasp.get_encoding(theirs).value
    rng = random.Random("convert" + name)
    for _ in range(20):
        xs = [rng.choice(vocab) for _ in range(rng.randint(1, 6))]
        assert same(rasp.evaluate(ours, xs), tracr_rasp.evaluate(theirs, xs)), xs


def test_lib_examples_from_descriptions():
    assert lib.make_length()("abcdefg") == [7] * 7
    assert lib.make_reverse(rasp.tokens)("Hello") == list("olleH")
    assert lib.make_hist()("abac") == [2, 1, 2, 1]
    assert lib.make_sort_unique(rasp.tokens, rasp.tokens)([2, 4, 3, 1]) == [1, 2, 3, 4]
    assert lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)([2, 4, 1, 2]) == [1, 2, 2, 4]
    assert lib.make_sort_freq(5)([2, 4, 2, 1]) == [2, 2, 4, 1]
    assert lib.make_frac_prevs(rasp.tokens == "l")("hello") == [0, 0, 1 / 3, 1 / 2, 2 / 5]
    assert lib.make_pair_balance(rasp.tokens, "(", ")")("a()b(c))") == [
        0, 1 / 2, 0, 0, 1 / 5, 1 / 6, 0, -1 / 8]
    assert lib.make_shuffle_dyck2()("({)}") == [1, 1, 1, 1]
    assert lib.make_shuffle_dyck2()("(){)}") == [0, 0, 0, 0, 0]
    assert lib.detect_pattern(rasp.tokens, "abc")("abcabc") == [None, None, True, False, False, True]
    assert lib.make_count_less_freq(2)(["a", "a", "a", "b", "b", "c"]) == [3] * 6
    assert lib.make_count(rasp.tokens, "a")(["c", "a", "b", "c"]) == [1] * 4
    with pytest.raises(ValueError, match="at least 1"):
        lib.detect_pattern(rasp.tokens, "")


@needs_tracr
def test_module_spellings():
    import raspc.tracr.rasp.rasp as module

    from raspc.tracr.rasp import rasp as tracr_spelling
    assert tracr_spelling is module
    assert rasp.Map is module.Map and rasp.evaluate is module.evaluate
    for name in ["tokens", "indices", "length", "Map", "SequenceMap", "LinearSequenceMap", "numerical",
                 "categorical", "is_numerical", "is_categorical", "get_encoding", "Select", "Comparison",
                 "Aggregate", "SelectorWidth", "SelectorAnd", "SelectorOr", "SelectorNot", "Full",
                 "ConstantSOp", "ConstantSelector", "annotate", "evaluate", "Encoding", "RASPExpr",
                 "SOp", "Selector", "selector_and", "selector_or", "selector_not", "DEFAULT_ANNOTATORS"]:
        assert hasattr(rasp, name), name
        assert hasattr(tracr_rasp, name), name
    import types
    import typing
    public = {n for n in dir(tracr_rasp) if not n.startswith("_") and not hasattr(typing, n)
              and not isinstance(getattr(tracr_rasp, n), types.ModuleType)}
    assert sorted(n for n in public if not hasattr(rasp, n)) == []
    assert [c.name for c in rasp.Comparison] == [c.name for c in tracr_rasp.Comparison]
    assert [c.value for c in rasp.Comparison] == [c.value for c in tracr_rasp.Comparison]


def test_operators_build_the_same_nodes():
    x = rasp.tokens
    cases = {
        "x + 1": (x + 1, [2, 3]), "1 + x": (1 + x, [2, 3]), "x - 1": (x - 1, [0, 1]),
        "5 - x": (5 - x, [4, 3]), "x * 3": (x * 3, [3, 6]), "x / 2": (x / 2, [0.5, 1.0]),
        "2 / x": (2 / x, [2.0, 1.0]), "x < 2": (x < 2, [True, False]), "x == 2": (x == 2, [False, True]),
        "x != 2": (x != 2, [True, False]), "x >= 2": (x >= 2, [False, True]), "~(x == 1)": (~(x == 1), [False, True]),
        "x & 0": (x & 0, [0, 0]), "x | 0": (x | 0, [1, 2]), "0 | x": (0 | x, [1, 2]),
        "x + x": (x + rasp.indices, [1, 3]),
    }
    for text, (sop, want) in cases.items():
        assert rasp.evaluate(sop, [1, 2]) == want, text
    assert isinstance(x + 1, rasp.Map) and isinstance(x + rasp.indices, rasp.SequenceMap)
    with pytest.raises(TypeError):
        hash(x + 1)  # __eq__ builds a Map, so s-ops are unhashable, as in Tracr


def test_map_fusion_and_simplify_flag():
    inner = rasp.Map(lambda v: v + 1, rasp.tokens)
    fused = rasp.Map(lambda v: v * 10, inner)
    assert fused.inner is rasp.tokens and fused([1, 2]) == [20, 30]
    kept = rasp.Map(lambda v: v * 10, inner, simplify=False)
    assert kept.inner is inner and kept([1, 2]) == [20, 30]


def test_none_propagates_and_functions_skip_it():
    calls = []
    shifted = lib.shift_by(1, rasp.tokens)
    out = rasp.Map(lambda v: calls.append(v) or v, shifted)
    assert out([7, 8, 9]) == [None, 7, 8]
    assert calls == [7, 8]
    assert rasp.SequenceMap(lambda a, b: a + b, shifted, rasp.tokens)([1, 2]) == [None, 3]


def test_aggregate_semantics():
    everything = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE)
    nothing = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.FALSE)
    first = rasp.Select(rasp.indices, rasp.Full(0), rasp.Comparison.EQ)
    assert rasp.Aggregate(everything, rasp.tokens)([1, 2]) == [1.5, 1.5]
    assert rasp.Aggregate(everything, rasp.tokens)([True, False]) == [0.5, 0.5]
    one = rasp.Aggregate(first, rasp.tokens)([3, 1])
    assert one == [3, 3] and all(type(v) is int for v in one)  # one value: itself, not a float
    assert rasp.Aggregate(first, rasp.tokens)(["a", "b"]) == ["a", "a"]
    assert rasp.Aggregate(nothing, rasp.tokens)([1, 2]) == [None, None]
    assert rasp.Aggregate(nothing, rasp.tokens, default=0)([1, 2]) == [0, 0]
    assert rasp.Aggregate(everything, rasp.tokens)([0.5, 1.5]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="int, bool and float"):
        rasp.Aggregate(everything, rasp.tokens)(["a", "a"])
    with pytest.raises(AssertionError):
        rasp.Aggregate(everything, rasp.tokens, default=[1])
    with pytest.raises(AssertionError):
        rasp.Aggregate(rasp.tokens, rasp.tokens)


def test_select_semantics_and_errors():
    sel = rasp.Select(rasp.tokens, rasp.indices, rasp.Comparison.LT)  # key < query
    assert sel([0, 5, 1]) == [[False, False, False], [True, False, False], [True, False, True]]
    assert rasp.Select(rasp.tokens, rasp.tokens, lambda k, q: k == q + 1)([1, 2]) == [
        [False, True], [False, False]]
    with pytest.raises(ValueError, match="key is None"):
        rasp.Select(lib.shift_by(1, rasp.tokens), rasp.tokens, rasp.Comparison.EQ)([1, 2])
    with pytest.raises(ValueError, match="query is None"):
        rasp.Comparison.LT(1, None)
    with pytest.raises(AssertionError):
        rasp.Select(rasp.tokens, 3, rasp.Comparison.EQ)


@needs_tracr
def test_selector_combinators_fold_like_tracr():
    a = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LEQ)
    b = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.GEQ)
    c = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT)
    assert isinstance(a & b, rasp.Select) and isinstance(a | b, rasp.Select)
    assert isinstance(~a, rasp.Select)
    assert isinstance(a & c, rasp.SelectorAnd) and isinstance(a | c, rasp.SelectorOr)
    assert isinstance(~(a & c), rasp.SelectorNot)
    full = rasp.Select(rasp.Full(2), rasp.tokens, rasp.Comparison.LT)  # 2 < query
    assert isinstance(full & a, rasp.Select) and (full & a).keys is rasp.tokens
    xs = [1, 3, 2]
    assert (a & b)(xs) == rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)(xs)
    for s in [a & c, a | c, ~(a & c), full & a, full | c]:
        assert s(xs) == convert.to_tracr(s)(xs)


def test_annotations_copy_like_tracr():
    m = rasp.Map(lambda v: v, rasp.tokens)
    n = rasp.numerical(m)
    assert n is not m and rasp.is_numerical(n) and rasp.is_categorical(m)
    named = m.named("ident")
    assert named.name == "ident" and m.name == "map"
    assert named.label.startswith("ident_")
    both = rasp.numerical(m.named("x")).annotated(extra=1)
    assert both.annotations["name"] == "x" and both.annotations["extra"] == 1
    with pytest.raises(KeyError, match="No annotation"):
        m.annotations["missing"]
    with pytest.raises(TypeError):
        rasp.get_encoding(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ))
    assert rasp.tokens.label == "tokens" and rasp.length.label == "length"


def test_constants_and_errors():
    assert rasp.Full(4)([1, 2, 3]) == [4, 4, 4]
    assert rasp.ConstantSOp([1, 2])(["a", "b"]) == [1, 2]
    with pytest.raises(ValueError, match="doesn't match"):
        rasp.ConstantSOp([1, 2])(["a"])
    assert rasp.ConstantSOp([1, 2], check_length=False)(["a"]) == [1, 2]
    sel = rasp.ConstantSelector([[True, False], [True, True]])
    assert rasp.SelectorWidth(sel)([0, 0]) == [1, 2]
    with pytest.raises(ValueError, match="doesn't match"):
        sel([0])
    assert rasp.length([5, 5, 5]) == [3, 3, 3]
    assert rasp.indices("abc") == [0, 1, 2]
    with pytest.raises(AssertionError):
        rasp.Map(rasp.tokens, rasp.tokens)
    with pytest.raises(AssertionError):
        rasp.SelectorWidth(rasp.tokens)


def test_evaluator_handles_deep_programs():
    # Built in a loop, thousands of nodes deep: no recursion limit in evaluate.
    x = rasp.tokens
    for _ in range(3000):
        x = rasp.Map(lambda v: v + 1, x, simplify=False)
    assert rasp.evaluate(x, [0, 1]) == [3000, 3001]


def test_from_tracr_rejects_other_objects():
    with pytest.raises(TypeError, match="expected a RASP expression"):
        convert.from_tracr(42)
