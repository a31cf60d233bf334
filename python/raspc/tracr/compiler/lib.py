"""The programs of Tracr's ``compiler/lib.py``, written here from their descriptions.

Each returns the same values as Tracr's function of the same name under Tracr's
evaluator (the tests check this against an installed tracr), and compiles with raspc.
The first group reads the whole sequence and so is meant for non-causal models; the
second only looks at earlier positions and gives the same values causally.
"""

from typing import List, Sequence

from raspc.tracr.rasp import rasp


def make_length() -> rasp.SOp:
    """The input length at every position, as the width of an all-true selector."""
    everything = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE).named("all_true_selector")
    return rasp.SelectorWidth(everything).named("length")


# Tracr's lib exports a ready-made `length` built this way (not the `rasp.length` primitive).
length = make_length()


def make_reverse(sop: rasp.SOp) -> rasp.SOp:
    """`sop` read back to front: position i takes position length - 1 - i."""
    mirror = (length - rasp.indices).named("opp_idx")
    mirror = (mirror - 1).named("opp_idx-1")
    pick = rasp.Select(rasp.indices, mirror, rasp.Comparison.EQ).named("reverse_selector")
    return rasp.Aggregate(pick, sop).named("reverse")


def make_pair_balance(sop: rasp.SOp, open_token: str, close_token: str) -> rasp.SOp:
    """Per position, the fraction of the prefix equal to `open_token` minus the fraction
    equal to `close_token` (numerical)."""
    is_open = rasp.numerical(sop == open_token).named("bools_open")
    opens = rasp.numerical(make_frac_prevs(is_open)).named("opens")
    is_close = rasp.numerical(sop == close_token).named("bools_close")
    closes = rasp.numerical(make_frac_prevs(is_close)).named("closes")
    return rasp.numerical(rasp.LinearSequenceMap(opens, closes, 1, -1)).named("pair_balance")


def make_shuffle_dyck(pairs: List[str]) -> rasp.SOp:
    """True at every position when each bracket pair, taken on its own, is balanced
    over the whole input (no prefix closes more than it opened, and the end is even);
    False everywhere otherwise."""
    if len(pairs) < 1:
        raise AssertionError("make_shuffle_dyck needs at least one pair")
    balances = []
    for pair in pairs:
        if len(pair) != 2:
            raise AssertionError(f"a pair is two tokens, got {pair!r}")
        balances.append(make_pair_balance(rasp.tokens, pair[0], pair[1]).named(f"balance_{pair}"))

    negative = balances[0] < 0
    for b in balances[1:]:
        negative = negative | (b < 0)
    negative = rasp.numerical(rasp.Map(lambda x: x, negative)).named("any_negative")

    everywhere = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE).named("select_all")
    ever_negative = rasp.numerical(rasp.Aggregate(everywhere, negative, default=0)).named("has_neg")

    even = balances[0] == 0
    for b in balances[1:]:
        even = even & (b == 0)
    last = rasp.Select(rasp.indices, length - 1, rasp.Comparison.EQ).named("select_last")
    even_at_end = rasp.Aggregate(last, even).named("last_zero")

    never_negative = (~ever_negative).named("not_has_neg")
    return (even_at_end & never_negative).named("shuffle_dyck")


def make_shuffle_dyck2() -> rasp.SOp:
    return make_shuffle_dyck(pairs=["()", "{}"]).named("shuffle_dyck2")


def make_hist() -> rasp.SOp:
    """How many times each position's token occurs in the input."""
    same = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ).named("same_tok")
    return rasp.SelectorWidth(same).named("hist")


def make_sort_unique(vals: rasp.SOp, keys: rasp.SOp) -> rasp.SOp:
    """`vals` ordered by increasing `keys`; the keys must be distinct."""
    below = rasp.Select(keys, keys, rasp.Comparison.LT).named("smaller")
    rank = rasp.SelectorWidth(below).named("target_pos")
    move = rasp.Select(rank, rasp.indices, rasp.Comparison.EQ)
    return rasp.Aggregate(move, vals).named("sort")


def make_sort(vals: rasp.SOp, keys: rasp.SOp, *, max_seq_len: int, min_key: float) -> rasp.SOp:
    """`vals` ordered by increasing numeric `keys`, which may repeat: each key gets
    `min_key * i / max_seq_len` added (i its position) so ties become distinct and
    keep their input order."""
    distinct = rasp.SequenceMap(lambda k, i: k + min_key * i / max_seq_len, keys, rasp.indices)
    return make_sort_unique(vals, distinct)


def make_sort_freq(max_seq_len: int) -> rasp.SOp:
    """The tokens ordered by decreasing frequency; equal frequencies keep input order."""
    hist = -1 * make_hist().named("hist")
    return make_sort(rasp.tokens, hist, max_seq_len=max_seq_len, min_key=1).named("sort_freq")


def make_frac_prevs(bools: rasp.SOp) -> rasp.SOp:
    """Per position i, the fraction of positions <= i where `bools` holds (numerical)."""
    bools = rasp.numerical(bools)
    upto = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    return rasp.numerical(rasp.Aggregate(upto, bools, default=0)).named("frac_prevs")


def shift_by(offset: int, /, sop: rasp.SOp) -> rasp.SOp:
    """`sop` moved `offset` positions later; the first `offset` positions are None."""
    earlier = rasp.Select(rasp.indices, rasp.indices, lambda k, q: q == k + offset)
    return rasp.Aggregate(earlier, sop, default=None).named(f"shift_by({offset})")


def detect_pattern(sop: rasp.SOp, pattern: Sequence[rasp.Value]) -> rasp.SOp:
    """True where `pattern` ends at this position of `sop`, False where it does not;
    the first len(pattern) - 1 positions are None."""
    if len(pattern) < 1:
        raise ValueError(f"Length of `pattern` must be at least 1. Got {pattern}")
    # matches[j] holds where the j-th element from the end of the pattern sits j
    # positions back; the pattern ends here when all of them hold.
    matches = []
    for back, element in enumerate(reversed(pattern)):
        here = sop == element
        matches.append(here if back == 0 else shift_by(back, here))
    found = matches.pop()
    while matches:
        found = found & matches.pop()
    return found.named(f"detect_pattern({pattern})")


def make_count_less_freq(n: int) -> rasp.SOp:
    """How many positions hold a token that occurs at most `n` times, everywhere."""
    hist = make_hist().named("hist")
    rare = rasp.Select(hist, hist, lambda k, q: k <= n).named("select_less")
    return rasp.SelectorWidth(rare).named("count_less_freq")


def make_count(sop, token):
    """How many positions of `sop` equal `token`, everywhere."""
    hits = rasp.Select(sop, sop, lambda k, q: k == token)
    return rasp.SelectorWidth(hits).named(f"count_{token}")


def make_nary_sequencemap(f, *sops):
    """`f` of n s-ops, position by position: binary SequenceMaps gather the values
    into tuples (categorical, so the model grows with the product of the value
    sets), then one Map applies `f`."""
    packed, *rest = sops
    for sop in rest:
        packed = rasp.SequenceMap(lambda x, y: (*x, y) if isinstance(x, tuple) else (x, y),
                                  packed, sop)
    return rasp.Map(lambda args: f(*args), packed)
