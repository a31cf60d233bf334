"""A corpus of programs written with Tracr's API (raspc.tracr.rasp and lib).

Each entry is a function returning a program, registered with the vocabulary, the
maximum length, whether the model is causal, and optionally an input generator. The
tests compile every entry with raspc and compare the model with the evaluator (ours and
an installed tracr's) on random inputs; a subset is also compiled with real Tracr.

Causal entries only look at earlier positions, so the (non-causal) evaluator gives the
values a causal model must produce at every prefix.
"""

import dataclasses
import random
from typing import Any, Callable, List, Optional

from raspc.tracr import rasp
from raspc.tracr.compiler import lib


@dataclasses.dataclass
class Entry:
    name: str
    build: Callable[[], rasp.SOp]
    vocab: List[Any]
    max_seq_len: int
    causal: bool = False
    gen: Optional[Callable[[random.Random], List[Any]]] = None
    # Part of the subset compiled with real Tracr too (its compiler is slow).
    tracr: bool = False

    def inputs(self, rng: random.Random, count: int) -> List[List[Any]]:
        out = []
        for _ in range(count):
            if self.gen is not None:
                out.append(self.gen(rng))
            else:
                n = rng.randint(1, self.max_seq_len)
                out.append([rng.choice(self.vocab) for _ in range(n)])
        return out


CORPUS: List[Entry] = []


def program(vocab, max_seq_len, causal=False, gen=None, tracr=False):
    def register(build):
        CORPUS.append(Entry(build.__name__, build, list(vocab), max_seq_len, causal, gen, tracr))
        return build

    return register


NUMS = [0, 1, 2, 3, 4]
SMALL = [1, 2, 3]
LETTERS = ["a", "b", "c"]
L = 5  # the usual maximum length


DYCK1 = ["(", ")", "x"]
DYCK2 = ["(", ")", "{", "}", "x"]


def select_all():
    return rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE)


def prefix():
    return rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)


# --- Tracr's lib.py programs -------------------------------------------------------

@program(LETTERS, L)
def lib_length():
    return lib.make_length()


@program(NUMS, L, tracr=True)
def lib_reverse():
    return lib.make_reverse(rasp.tokens)


@program(LETTERS, L, tracr=True)
def lib_hist():
    return lib.make_hist()


@program(NUMS, L, tracr=True)
def lib_sort_unique():
    return lib.make_sort_unique(rasp.tokens, rasp.indices)


@program([1, 2, 3, 4, 5, 6], L, gen=lambda rng: rng.sample([1, 2, 3, 4, 5, 6], rng.randint(1, L)))
def lib_sort_unique_by_tokens():
    # Keys must be distinct: the generator draws distinct tokens.
    return lib.make_sort_unique(rasp.tokens, rasp.tokens)


@program(SMALL, L)
def lib_sort():
    return lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=L, min_key=1)


@program(SMALL, L)
def lib_sort_freq():
    return lib.make_sort_freq(max_seq_len=L)


@program(DYCK1, L)
def lib_pair_balance():
    return lib.make_pair_balance(rasp.tokens, "(", ")")


@program(DYCK1, L)
def lib_shuffle_dyck1():
    return lib.make_shuffle_dyck(["()"])


@program(DYCK2, L, tracr=True)
def lib_shuffle_dyck2():
    return lib.make_shuffle_dyck2()


@program(LETTERS, L, causal=True, tracr=True)
def lib_frac_prevs():
    return lib.make_frac_prevs(rasp.tokens == "a")


@program(LETTERS, L, causal=True)
def lib_shift_by():
    return lib.shift_by(2, rasp.tokens)


@program(LETTERS, L, causal=True, tracr=True)
def lib_detect_pattern():
    return lib.detect_pattern(rasp.tokens, "abc")


@program(LETTERS, L)
def lib_count_less_freq():
    return lib.make_count_less_freq(2)


@program(LETTERS, L)
def lib_count():
    return lib.make_count(rasp.tokens, "a")


@program(SMALL, 4)
def lib_nary_sequencemap():
    return lib.make_nary_sequencemap(lambda x, y, z: x * y + z, rasp.tokens, rasp.indices, rasp.tokens)


# --- numeric maps (categorical) ----------------------------------------------------

@program(NUMS, L, tracr=True)
def map_add_one():
    return rasp.Map(lambda x: x + 1, rasp.tokens)


@program(NUMS, L)
def map_double():
    return rasp.tokens * 2


@program(NUMS, L)
def map_square():
    return rasp.Map(lambda x: x * x, rasp.tokens)


@program(NUMS, L)
def map_mod3():
    return rasp.Map(lambda x: x % 3, rasp.tokens)


@program(NUMS, L)
def map_abs_diff():
    return rasp.Map(lambda x: abs(x - 2), rasp.tokens)


@program(NUMS, L)
def map_clamp():
    return rasp.Map(lambda x: min(max(x, 1), 3), rasp.tokens)


@program(NUMS, L)
def map_gt2():
    return rasp.tokens > 2


@program(NUMS, L)
def map_parity_str():
    return rasp.Map(lambda x: "even" if x % 2 == 0 else "odd", rasp.tokens)


@program(LETTERS, L)
def map_upper():
    return rasp.Map(str.upper, rasp.tokens)


@program(LETTERS, L)
def map_is_vowel():
    return rasp.Map(lambda c: c in "aeiou", rasp.tokens)


@program(NUMS, L)
def map_chain_fused():
    # Map of a Map: Tracr's API fuses the two into one function.
    return rasp.Map(lambda x: x - 1, rasp.Map(lambda x: 3 * x, rasp.tokens))


@program(NUMS, L)
def map_chain_unfused():
    return rasp.Map(lambda x: x - 1, rasp.Map(lambda x: 3 * x, rasp.tokens), simplify=False)


@program(NUMS, L)
def map_not():
    return ~(rasp.tokens == 0)


@program(NUMS, L)
def map_indices_half():
    return rasp.Map(lambda i: i // 2, rasp.indices)


@program(NUMS, L)
def map_rsub():
    return 10 - rasp.tokens


@program(NUMS, L)
def map_to_numerical():
    return rasp.numerical(rasp.Map(lambda x: x / 2, rasp.tokens))


@program(NUMS, L)
def map_numerical_to_numerical():
    half = rasp.numerical(rasp.Map(lambda x: x / 2, rasp.tokens))
    return rasp.numerical(rasp.Map(lambda x: 2 * x + 1, half))


@program(NUMS, L)
def map_full_constant():
    return rasp.Full(3) + rasp.tokens


# --- sequence maps ------------------------------------------------------------------

@program(NUMS, L, tracr=True)
def seqmap_add_indices():
    return rasp.SequenceMap(lambda x, i: x + i, rasp.tokens, rasp.indices)


@program(NUMS, L)
def seqmap_mul_indices():
    return rasp.tokens * rasp.indices


@program(NUMS, L)
def seqmap_max():
    return rasp.SequenceMap(max, rasp.tokens, rasp.indices)


@program(NUMS, L)
def seqmap_eq_indices():
    return rasp.SequenceMap(lambda x, i: x == i, rasp.tokens, rasp.indices)


@program(NUMS, L)
def seqmap_mod_sum():
    return rasp.SequenceMap(lambda x, i: (x + i) % 5, rasp.tokens, rasp.indices)


@program(LETTERS, L)
def seqmap_concat():
    return rasp.SequenceMap(lambda c, i: f"{c}{i}", rasp.tokens, rasp.indices)


@program(NUMS, L)
def seqmap_length_minus_tokens():
    return rasp.SequenceMap(lambda n, x: n - x, lib.make_length(), rasp.tokens)


@program(NUMS, L)
def seqmap_is_last():
    return rasp.SequenceMap(lambda i, n: i == n - 1, rasp.indices, lib.make_length())


@program(NUMS, L)
def seqmap_and():
    return (rasp.tokens > 1) & (rasp.indices < 3)


@program(NUMS, L)
def seqmap_or():
    return (rasp.tokens == 0) | (rasp.indices == 0)


@program(NUMS, L, tracr=True)
def linear_sequence_map():
    a = rasp.numerical(rasp.Map(lambda x: x, rasp.tokens))
    b = rasp.numerical(rasp.Map(lambda i: i, rasp.indices))
    return rasp.numerical(rasp.LinearSequenceMap(a, b, 2, -1))


@program(NUMS, L)
def seqmap_tokens_tokens_shifted():
    prev = lib.shift_by(1, rasp.tokens)
    return rasp.SequenceMap(lambda x, p: x - p, rasp.tokens, prev)


# --- selector widths ------------------------------------------------------------------

@program(NUMS, L)
def width_smaller():
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT))


@program(NUMS, L)
def width_greater_equal():
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.GEQ))


@program(NUMS, L)
def width_not_equal():
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.NEQ))


@program(NUMS, L, causal=True, tracr=True)
def width_prefix_length():
    return rasp.SelectorWidth(prefix())


@program(NUMS, L)
def width_none():
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.FALSE))


@program(NUMS, L)
def width_lambda_window():
    return rasp.SelectorWidth(rasp.Select(rasp.indices, rasp.indices, lambda k, q: abs(k - q) <= 1))


@program(NUMS, L)
def width_same_parity():
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, lambda k, q: k % 2 == q % 2))


@program(NUMS, L, tracr=True)
def width_and():
    sel = (rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
           & rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT))
    return rasp.SelectorWidth(sel)


@program(NUMS, L)
def width_or():
    sel = (rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT)
           | rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ))
    return rasp.SelectorWidth(sel)


@program(NUMS, L)
def width_not():
    return rasp.SelectorWidth(~rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ))


@program(NUMS, L)
def width_selector_not_unsimplified():
    return rasp.SelectorWidth(rasp.selector_not(
        rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LEQ), simplify=False))


@program(NUMS, L)
def width_folded_same_keys():
    # Two Selects over the same keys and queries fold into one with a combined predicate.
    a = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LEQ)
    b = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.NEQ)
    return rasp.SelectorWidth(a & b)


@program(NUMS, L)
def width_folded_full():
    # A Full query side folds its fill into the predicate.
    a = rasp.Select(rasp.tokens, rasp.Full(2), rasp.Comparison.LT)
    b = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.NEQ)
    return rasp.SelectorWidth(a | b)


@program(LETTERS, L)
def width_count_b():
    return lib.make_count(rasp.tokens, "b")


@program(NUMS, L)
def width_distinct_smaller():
    # How many distinct values are smaller: widths of first occurrences.
    first = rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
                               & rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT)) == 0
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT)
                              & rasp.Select(first, rasp.Full(True), rasp.Comparison.EQ))


@program(NUMS, L)
def width_of_width():
    hist = lib.make_hist()
    return rasp.SelectorWidth(rasp.Select(hist, hist, rasp.Comparison.EQ))


# --- categorical aggregates ------------------------------------------------------------

@program(NUMS, L, tracr=True)
def agg_first_token():
    return rasp.Aggregate(rasp.Select(rasp.indices, rasp.Full(0), rasp.Comparison.EQ), rasp.tokens)


@program(NUMS, L)
def agg_last_token():
    last = rasp.Select(rasp.indices, lib.make_length() - 1, rasp.Comparison.EQ)
    return rasp.Aggregate(last, rasp.tokens)


@program(NUMS, L)
def agg_next_token():
    return rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q + 1), rasp.tokens)


@program(NUMS, L)
def agg_next_token_default():
    return rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q + 1),
                          rasp.tokens, default=0)


@program(LETTERS, L)
def agg_reverse_letters():
    return lib.make_reverse(rasp.tokens)


@program(NUMS, L)
def agg_reverse_indices_plus_tokens():
    return lib.make_reverse(rasp.tokens + rasp.indices)


@program(NUMS, L)
def agg_rotate_left():
    n = lib.make_length()
    # make_length's value set includes 0 (a selector width): the modulo by zero that
    # tabulating meets there is ignored, as Tracr's basis inference ignores it.
    target = rasp.SequenceMap(lambda i, m: (i + 1) % m, rasp.indices, n)
    return rasp.Aggregate(rasp.Select(rasp.indices, target, rasp.Comparison.EQ), rasp.tokens)


@program(NUMS, L)
def agg_sort_by_indices_desc():
    return lib.make_sort_unique(rasp.tokens, -1 * rasp.indices)


@program(NUMS, L)
def agg_sort_numbers():
    return lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=L, min_key=1)


@program(LETTERS, L)
def agg_max_token_via_sort():
    keys = rasp.SequenceMap(lambda c, i: "abc".index(c) + i / 10, rasp.tokens, rasp.indices)
    ordered = lib.make_sort_unique(rasp.tokens, keys)
    last = rasp.Select(rasp.indices, lib.make_length() - 1, rasp.Comparison.EQ)
    return rasp.Aggregate(last, ordered)


@program(LETTERS, L)
def agg_token_at_first_a():
    is_a = rasp.tokens == "a"
    earlier_a = rasp.SelectorWidth(rasp.Select(is_a, is_a, lambda k, q: k)
                                   & rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT))
    first_a = rasp.SequenceMap(lambda a, w: a and w == 0, is_a, earlier_a)
    return rasp.Aggregate(rasp.Select(first_a, rasp.Full(True), rasp.Comparison.EQ), rasp.indices)


@program(NUMS, L)
def agg_shift_by_3():
    return lib.shift_by(3, rasp.tokens)


@program(LETTERS, L)
def agg_bool_selected_once():
    # A boolean value moved by a one-key selector stays a bool.
    return rasp.Aggregate(rasp.Select(rasp.indices, rasp.Full(0), rasp.Comparison.EQ),
                          rasp.tokens == "a")


@program(NUMS, L)
def agg_constant_selector_like():
    # Every query reads position min(i + 2, length - 1).
    n = lib.make_length()
    target = rasp.SequenceMap(lambda i, m: min(i + 2, m - 1), rasp.indices, n)
    return rasp.Aggregate(rasp.Select(rasp.indices, target, rasp.Comparison.EQ), rasp.tokens)


# --- numerical aggregates -------------------------------------------------------------

@program(NUMS, L, tracr=True)
def num_mean_tokens():
    vals = rasp.numerical(rasp.Map(lambda x: x, rasp.tokens))
    return rasp.numerical(rasp.Aggregate(select_all(), vals, default=0))


@program(LETTERS, L)
def num_frac_a():
    return rasp.numerical(rasp.Aggregate(select_all(), rasp.numerical(rasp.tokens == "a"), default=0))


@program(NUMS, L)
def num_frac_small():
    return lib.make_frac_prevs(rasp.tokens < 2)


@program(NUMS, L)
def num_frac_equal_first():
    # default=-1, not None: raspc refuses a numerical s-op that can be None (see
    # test_numerical_from_a_none_default_is_refused); Tracr's compiler would refuse the
    # categorical default, so this entry is not in the real-Tracr subset.
    first = rasp.Aggregate(rasp.Select(rasp.indices, rasp.Full(0), rasp.Comparison.EQ), rasp.tokens,
                           default=-1)
    same = rasp.numerical(rasp.SequenceMap(lambda x, f: x == f, rasp.tokens, first))
    return rasp.numerical(rasp.Aggregate(select_all(), same, default=0))


@program(NUMS, L)
def num_mean_of_smaller():
    vals = rasp.numerical(rasp.Map(lambda x: x, rasp.tokens))
    return rasp.numerical(rasp.Aggregate(
        rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT), vals, default=0))


@program(NUMS, L)
def num_frac_then_threshold():
    frac = lib.make_frac_prevs(rasp.tokens == 0)
    return rasp.Map(lambda f: f > 0.5, frac)


@program(NUMS, L)
def num_frac_indices_even():
    return rasp.numerical(rasp.Aggregate(select_all(),
                                         rasp.numerical(rasp.Map(lambda i: i % 2 == 0, rasp.indices)),
                                         default=0))


@program(LETTERS, L)
def num_aggregate_categorical_to_numerical_map():
    frac = rasp.numerical(rasp.Aggregate(select_all(), rasp.numerical(rasp.tokens == "b"), default=0))
    return rasp.numerical(rasp.Map(lambda f: 1 - f, frac))


# --- causal programs -----------------------------------------------------------------

@program(LETTERS, L, causal=True)
def causal_prev_token():
    return lib.shift_by(1, rasp.tokens)


@program(LETTERS, L, causal=True)
def causal_seen_b():
    frac = lib.make_frac_prevs(rasp.tokens == "b")
    return rasp.Map(lambda f: f > 0, frac)


@program(NUMS, L, causal=True)
def causal_prefix_count_zero():
    return rasp.SelectorWidth(prefix() & rasp.Select(rasp.tokens, rasp.Full(0), rasp.Comparison.EQ))


@program(NUMS, L, causal=True)
def causal_first_token():
    return rasp.Aggregate(rasp.Select(rasp.indices, rasp.Full(0), rasp.Comparison.EQ), rasp.tokens)


@program(LETTERS, L, causal=True)
def causal_same_as_prev():
    prev = lib.shift_by(1, rasp.tokens)
    return rasp.SequenceMap(lambda x, p: x == p, rasp.tokens, prev)


@program(LETTERS, L, causal=True)
def causal_detect_ab():
    return lib.detect_pattern(rasp.tokens, "ab")


@program(DYCK1, L, causal=True)
def causal_pair_balance():
    return lib.make_pair_balance(rasp.tokens, "(", ")")


@program(NUMS, L, causal=True)
def causal_prefix_mean():
    vals = rasp.numerical(rasp.Map(lambda x: x, rasp.tokens))
    return rasp.numerical(rasp.Aggregate(prefix(), vals, default=0))


@program(NUMS, L, causal=True)
def causal_count_smaller_before():
    return rasp.SelectorWidth(prefix() & rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT))


@program(NUMS, L, causal=True)
def causal_position_parity():
    width = rasp.SelectorWidth(prefix())
    return rasp.Map(lambda w: w % 2, width)


@program(LETTERS, L, causal=True)
def causal_prev_two_equal():
    one = lib.shift_by(1, rasp.tokens)
    two = lib.shift_by(2, rasp.tokens)
    return rasp.SequenceMap(lambda a, b: a == b, one, two)


# --- more mixed programs ---------------------------------------------------------------

@program(NUMS, L)
def mix_is_sorted():
    bigger_before = rasp.SelectorWidth(
        rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.GT)
        & rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT))
    bad = rasp.numerical(rasp.Map(lambda w: w > 0, bigger_before))
    any_bad = rasp.numerical(rasp.Aggregate(select_all(), bad, default=0))
    return rasp.Map(lambda f: f == 0, any_bad)


@program(NUMS, L)
def mix_most_frequent_count():
    hist = lib.make_hist()
    top = rasp.SelectorWidth(rasp.Select(hist, hist, rasp.Comparison.GT))
    return rasp.Map(lambda t: t == 0, top)


@program(NUMS, L)
def mix_palindrome():
    opposite = rasp.SequenceMap(lambda n, i: n - i - 1, rasp.length, rasp.indices)
    # default=-1 for the reason given at num_frac_equal_first.
    rev = rasp.Aggregate(rasp.Select(rasp.indices, opposite, rasp.Comparison.EQ), rasp.tokens, default=-1)
    same = rasp.numerical(rasp.SequenceMap(lambda x, y: x != y, rasp.tokens, rev))
    mismatch = rasp.numerical(rasp.Aggregate(select_all(), same, default=0))
    return rasp.Map(lambda m: m == 0, mismatch)


@program(NUMS, L)
def mix_rank_plus_token():
    rank = rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT))
    return rasp.SequenceMap(lambda r, x: r * 10 + x, rank, rasp.tokens)


@program(LETTERS, L)
def mix_unique_letters():
    first = rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
                               & rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT))
    is_first = rasp.numerical(rasp.Map(lambda w: w == 0, first))
    return rasp.numerical(rasp.Aggregate(select_all(), is_first, default=0))


@program(NUMS, L)
def mix_hist_of_reverse():
    rev = lib.make_reverse(rasp.tokens)
    return rasp.SelectorWidth(rasp.Select(rev, rasp.tokens, rasp.Comparison.EQ))


@program(NUMS, L)
def mix_token_minus_first():
    first = rasp.Aggregate(rasp.Select(rasp.indices, rasp.Full(0), rasp.Comparison.EQ), rasp.tokens)
    return rasp.tokens - first


@program(NUMS, L)
def mix_count_equal_to_length():
    n = lib.make_length()
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, n, rasp.Comparison.EQ))


@program(NUMS, L)
def mix_rasp_length_primitive():
    return rasp.SequenceMap(lambda n, i: n - i, rasp.length, rasp.indices)


def full_length(n):
    """Inputs of exactly n tokens (a ConstantSOp/ConstantSelector fixes the length)."""
    return lambda rng: [rng.choice(NUMS) for _ in range(n)]


@program(NUMS, L, gen=full_length(L))
def mix_constant_sop():
    return rasp.SequenceMap(lambda c, x: c + x, rasp.ConstantSOp([1, 0, 1, 0, 1]), rasp.tokens)


@program(NUMS, 3, gen=full_length(3))
def mix_constant_selector():
    sel = rasp.ConstantSelector([[True, False, True], [False, True, False], [True, True, True]])
    return rasp.SelectorWidth(sel)


@program(NUMS, L)
def mix_named_nodes():
    a = (rasp.tokens + 1).named("plus_one")
    b = rasp.SelectorWidth(rasp.Select(a, a, rasp.Comparison.LEQ)).named("rank_le")
    return (a * b).named("product")


@program([True, False], L)
def pred_bool_vocab_opposite():
    # How many positions hold the other boolean, signed by this one.
    width = rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, lambda k, q: k == (not q)))
    return rasp.SequenceMap(lambda w, t: w if t else -w, width, rasp.tokens)


@program(LETTERS, L)
def pred_next_letter_width():
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, lambda k, q: ord(k) == ord(q) + 1))


@program(NUMS, L)
def pred_general_relation():
    # Neither disjoint nor nested: lowered to one select per set of keys, or'ed.
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.indices, lambda k, q: abs(k - q) == 1))


def by_name(name: str) -> Entry:
    for e in CORPUS:
        if e.name == name:
            return e
    raise KeyError(name)
