"""Rewrites a Tracr-API program into the subset raspc's graph builder takes.

raspc's ``select`` compares keys and queries with one of ``== != < <= > >= true false``.
Tracr also allows any Python predicate ``f(key, query)``, and fixed matrices
(``ConstantSelector``) and fixed sequences (``ConstantSOp``). One general mechanism
covers them all: tabulate the predicate over the value sets the keys and queries can
take (inferred here from the vocabulary and maximum length, as Tracr's basis inference
does), then write the same relation as comparisons of two relabelled s-ops:

1. it already is a comparison of the raw values: use that comparison;
2. each query value q selects a set S_q of key values; when the distinct non-empty
   S_q are pairwise disjoint, label each key by its set and each query by its set:
   ``select(a(keys), b(queries), ==)``;
3. when the S_q are nested (a chain by inclusion): a key's label is the first set of
   the chain that holds it, a query's the index of its set: ``a(k) <= b(q)``;
4. otherwise one ``==`` select per distinct set, or'ed together.

The relabellings are Maps (raspc evaluates them over the value sets too), and where a
relabelling is the identity the s-op itself is used. The rewrite is exact on every
pair of values the program can produce; the tests check it with the evaluator.
"""

import itertools
from typing import Any, Dict, List, Optional, Sequence

from raspc.tracr.rasp import rasp


class UnsupportedError(NotImplementedError):
    """A program raspc cannot compile (the message says which expression and why)."""


def _sort_key(v):
    return (type(v).__name__, v)


def _sorted(values) -> List[Any]:
    try:
        return sorted(values, key=_sort_key)
    except TypeError:
        return sorted(values, key=repr)


class ValueSets:
    """The values each s-op can take on inputs over `vocab` of length 1..max_seq_len.

    `of(sop)` is a Python set (None included where the s-op can be None), or None
    when it cannot be enumerated (a numerical mean of floats)."""

    def __init__(self, vocab: Sequence[Any], max_seq_len: int):
        self.vocab = list(vocab)
        self.n = max_seq_len
        self._memo: Dict[int, Optional[set]] = {}

    def of(self, expr: rasp.SOp) -> Optional[set]:
        stack = [(expr, False)]
        while stack:
            node, ready = stack.pop()
            if id(node) in self._memo:
                continue
            sops = self._sop_inputs(node)
            if not ready:
                stack.append((node, True))
                stack.extend((c, False) for c in sops if id(c) not in self._memo)
                continue
            self._memo[id(node)] = self._one(node, [self._memo[id(c)] for c in sops])
        return self._memo[id(expr)]

    @staticmethod
    def _sop_inputs(node) -> List[rasp.SOp]:
        if isinstance(node, rasp.Aggregate):
            return [node.sop]
        if isinstance(node, rasp.SelectorWidth):
            return []
        return [c for c in node.children if isinstance(c, rasp.SOp)]

    def _apply(self, node, f, args):
        try:
            return f(*args)
        except ArithmeticError:
            # As Tracr's basis inference: a division by zero on a combination of values
            # no input produces (length 0 from a selector width) is left out. raspc's
            # tables give None there (see compiling.host_function).
            return None
        except Exception as e:  # a function that fails on a value the s-op can hold
            raise UnsupportedError(
                f"{node.label}: its function raised {type(e).__name__}: {e} on the input "
                f"value(s) {args!r}, which the program can produce") from e

    def _one(self, node, ins: List[Optional[set]]) -> Optional[set]:
        n = self.n
        if isinstance(node, rasp.TokensType):
            return set(self.vocab)
        if isinstance(node, rasp.IndicesType):
            return set(range(n))
        if isinstance(node, rasp.LengthType):
            return set(range(1, n + 1))
        if isinstance(node, rasp.Full):
            return {node.fill}
        if isinstance(node, rasp.ConstantSOp):
            return set(node.value)
        if isinstance(node, rasp.SelectorWidth):
            return set(range(n + 1))
        if isinstance(node, rasp.Map):
            (xs,) = ins
            if xs is None:
                return None
            return {None if x is None else self._apply(node, node.f, (x,)) for x in xs}
        if isinstance(node, rasp.SequenceMap):
            xs, ys = ins
            if xs is None or ys is None:
                return None
            return {None if x is None or y is None else self._apply(node, node.f, (x, y))
                    for x in xs for y in ys}
        if isinstance(node, rasp.Aggregate):
            (xs,) = ins
            if xs is None:
                return None
            out = {node.default}
            if rasp.is_categorical(node):
                return out | xs
            nums = [x for x in xs if x is not None]
            if not all(isinstance(x, (int, bool)) for x in nums):
                return None  # means of floats: not enumerable here
            # Every mean of 1..n selected values (sums of w values over w).
            sums = {0}
            for w in range(1, n + 1):
                sums = {s + x for s in sums for x in nums}
                out |= {s / w for s in sums}
            return out
        raise UnsupportedError(f"{node.label}: no value set for {type(node).__name__}")


def _comparison_matching(pred, keys, queries) -> Optional[rasp.Comparison]:
    """A Comparison equal to `pred` on every pair of keys and queries, if any."""
    table = {(i, j): bool(pred(k, q)) for i, k in enumerate(keys) for j, q in enumerate(queries)}
    for cmp in rasp.Comparison:
        try:
            if all(bool(cmp(k, q)) == table[(i, j)]
                   for i, k in enumerate(keys) for j, q in enumerate(queries)):
                return cmp
        except TypeError:  # values of kinds the comparison does not order
            continue
    return None


class _Lowerer:
    def __init__(self, vocab, max_seq_len):
        self.sets = ValueSets(vocab, max_seq_len)
        self.done: Dict[int, rasp.RASPExpr] = {}

    def relabel(self, sop: rasp.SOp, table: Dict[Any, Any], fallback, name: str) -> rasp.SOp:
        """`sop` with each value v replaced by table[v] (fallback(v) for values outside
        the inferred set); `sop` itself when that is the identity."""
        if all(k == v and type(k) is type(v) for k, v in table.items()):
            return sop

        def f(v, table=table, fallback=fallback):
            return table[v] if v in table else fallback(v)

        return rasp.Map(f, sop, simplify=False).named(name)

    def lower_select(self, sel: rasp.Select, keys: rasp.SOp, queries: rasp.SOp) -> rasp.Selector:
        pred = sel.predicate
        if isinstance(pred, rasp.Comparison):
            return self.keep(sel, rasp.Select(keys, queries, pred))
        kset, qset = self.sets.of(sel.keys), self.sets.of(sel.queries)
        if kset is None or qset is None:
            raise UnsupportedError(
                f"{sel.label}: a Select with a Python predicate needs the values of its keys "
                f"and queries, and those of "
                f"{(sel.keys if kset is None else sel.queries).label} cannot be enumerated "
                f"(a numerical mean of non-integers)")
        K = _sorted(v for v in kset if v is not None)
        Q = _sorted(v for v in qset if v is not None)
        try:
            cmp = _comparison_matching(pred, K, Q)
            rows = {q: frozenset(i for i, k in enumerate(K) if pred(k, q)) for q in Q}
        except Exception as e:
            raise UnsupportedError(f"{sel.label}: its predicate raised {type(e).__name__}: {e}") from e
        name = sel.name
        if cmp is not None:
            return self.keep(sel, rasp.Select(keys, queries, cmp))

        def row_of(q):  # for a query value outside the inferred set
            return frozenset(i for i, k in enumerate(K) if pred(k, q))

        def unknown_key(k):
            raise UnsupportedError(f"{sel.label}: key value {k!r} is outside the inferred "
                                   f"value set {K!r}")

        classes = _sorted({s for s in rows.values() if s})
        classes.sort(key=lambda s: (len(s), sorted(s)))
        disjoint = all(not (a & b) for a, b in itertools.combinations(classes, 2))
        if disjoint:
            # Keys labelled by their class, queries by theirs; outside every class,
            # labels that meet nothing. Singleton classes are labelled by their key,
            # so that the keys' relabelling is the identity when each key has a class.
            numbers = all(isinstance(k, (int, float)) and not isinstance(k, bool) for k in K)
            strings = all(isinstance(k, str) for k in K)
            # (Sentinels of the keys' own type exist for numbers and strings only.)
            singletons = all(len(c) == 1 for c in classes) and (numbers or strings)
            label_of_class = {c: (K[next(iter(c))] if singletons else j) for j, c in enumerate(classes)}
            if singletons:
                miss_k, miss_q = self._missing_labels(K)
            else:
                miss_k, miss_q = -1, -2
            key_label = {k: miss_k for k in K}
            for c, lab in label_of_class.items():
                for i in c:
                    key_label[K[i]] = lab
            qlab = {q: label_of_class.get(s, miss_q) for q, s in rows.items()}
            a = self.relabel(keys, key_label, unknown_key, f"{name}_key_class")
            b = self.relabel(queries, qlab,
                             lambda q: label_of_class.get(row_of(q), miss_q), f"{name}_query_class")
            return self.keep(sel, rasp.Select(a, b, rasp.Comparison.EQ))
        chain = sorted(set(rows.values()), key=len)
        if all(x <= y for x, y in zip(chain, chain[1:])):
            # k in S_q  <=>  (first chain set holding k) <= (index of S_q in the chain).
            sets = chain if not chain[0] else [frozenset()] + chain  # index 0: the empty set
            key_label = {}
            for i, k in enumerate(K):
                key_label[k] = next((j for j, s in enumerate(sets) if i in s), len(sets))
            index = {s: j for j, s in enumerate(sets)}
            qlab = {q: index[s] for q, s in rows.items()}

            def q_fallback(q):
                s = row_of(q)
                if s not in index:
                    raise UnsupportedError(f"{sel.label}: query value {q!r} is outside the "
                                           f"inferred value set {Q!r}")
                return index[s]

            a = self.relabel(keys, key_label, unknown_key, f"{name}_key_rank")
            b = self.relabel(queries, qlab, q_fallback, f"{name}_query_rank")
            return self.keep(sel, rasp.Select(a, b, rasp.Comparison.LEQ))
        # General relation: one select per distinct set of keys, or'ed. In select c a key
        # is 1 when it is in the set (else 0) and a query 1 when its set is c (else 2).
        out = None
        for j, c in enumerate(classes):
            members = {K[i] for i in c}
            kl = {k: int(k in members) for k in K}
            ql = {q: 1 if s == c else 2 for q, s in rows.items()}
            a = self.relabel(keys, kl, unknown_key, f"{name}_in_set{j}")
            b = self.relabel(queries, ql, lambda q, c=c: 1 if row_of(q) == c else 2,
                             f"{name}_has_set{j}")
            part = rasp.Select(a, b, rasp.Comparison.EQ)
            out = part if out is None else rasp.SelectorOr(out, part)
        if out is None:  # nothing is ever selected
            return self.keep(sel, rasp.Select(keys, queries, rasp.Comparison.FALSE))
        return self.keep(sel, out)

    @staticmethod
    def _missing_labels(K):
        """Two labels equal to no key value (nor to each other), of the keys' kind:
        numbers below the smallest key, or strings no key equals."""
        if all(isinstance(k, str) for k in K):
            taken = set(K)
            miss_k = next(s for s in ("~none", "~none1", "~none2", "~none3") if s not in taken)
            miss_q = next(s for s in ("~no_query", "~no_query1", "~no_query2") if s not in taken)
            return miss_k, miss_q
        low = min(K) if K else 0
        return low - 1, low - 2

    @staticmethod
    def keep(old: rasp.RASPExpr, new: rasp.RASPExpr) -> rasp.RASPExpr:
        """`new` with `old`'s annotations (its name, its encoding)."""
        values = dict(old.annotations)
        if values:
            new.annotations = {**new.annotations, **values}
        return new

    def lower(self, program: rasp.SOp) -> rasp.SOp:
        stack = [(program, False)]
        while stack:
            node, ready = stack.pop()
            if id(node) in self.done:
                continue
            kids = list(node.children)
            if not ready:
                stack.append((node, True))
                stack.extend((c, False) for c in kids if id(c) not in self.done)
                continue
            args = [self.done[id(c)] for c in kids]
            self.done[id(node)] = self.lower_one(node, args)
        return self.done[id(program)]

    def lower_one(self, node, args):
        same = all(a is c for a, c in zip(args, node.children))
        if isinstance(node, rasp.Select):
            return self.lower_select(node, args[0], args[1])
        if isinstance(node, rasp.ConstantSOp):
            value = list(node.value)

            def at(i, value=value):
                return value[i] if i < len(value) else None

            return self.keep(node, rasp.Map(at, rasp.indices, simplify=False))
        if isinstance(node, rasp.ConstantSelector):
            matrix = [list(r) for r in node.value]

            def holds(k, q, matrix=matrix):
                return q < len(matrix) and k < len(matrix[q]) and bool(matrix[q][k])

            as_select = self.keep(node, rasp.Select(rasp.indices, rasp.indices, holds))
            return self.lower_select(as_select, rasp.indices, rasp.indices)
        if same:
            return node
        if isinstance(node, rasp.Map):
            return self.keep(node, rasp.Map(node.f, args[0], simplify=False))
        if isinstance(node, rasp.LinearSequenceMap):
            return self.keep(node, rasp.LinearSequenceMap(args[0], args[1], node.fst_fac, node.snd_fac))
        if isinstance(node, rasp.SequenceMap):
            return self.keep(node, rasp.SequenceMap(node.f, args[0], args[1]))
        if isinstance(node, rasp.SelectorWidth):
            return self.keep(node, rasp.SelectorWidth(args[0]))
        if isinstance(node, rasp.Aggregate):
            return self.keep(node, rasp.Aggregate(args[0], args[1], default=node.default))
        if isinstance(node, rasp.SelectorAnd):
            return self.keep(node, rasp.SelectorAnd(*args))
        if isinstance(node, rasp.SelectorOr):
            return self.keep(node, rasp.SelectorOr(*args))
        if isinstance(node, rasp.SelectorNot):
            return self.keep(node, rasp.SelectorNot(*args))
        raise UnsupportedError(f"{node.label}: raspc cannot compile {type(node).__name__}")


def lower(program: rasp.SOp, vocab: Sequence[Any], max_seq_len: int) -> rasp.SOp:
    """`program` with every Select a Comparison and no constant s-ops or selectors."""
    return _Lowerer(vocab, max_seq_len).lower(program)
