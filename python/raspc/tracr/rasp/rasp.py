"""Tracr's RASP API (``tracr.rasp.rasp``), written for raspc.

A program is a DAG of expression objects: s-ops (one value per position) and
selectors (a query-by-key boolean matrix). The names, constructor signatures,
operator overloads, annotations and the evaluator follow Tracr's module, so a
program written against Tracr builds the same DAG here and evaluates to the same
values. ``raspc.tracr.compiler.compiling`` turns the DAG into raspc's C++ graph.

Semantics that users rely on and that this module keeps exactly:

- ``Map`` and ``SequenceMap`` apply their function position by position and give
  ``None`` wherever an argument is ``None`` (the function is not called there).
- ``Map(f, Map(g, x))`` becomes one ``Map`` of ``f . g`` unless ``simplify=False``.
- ``Select(keys, queries, predicate)`` is ``M[q][k] = predicate(keys[k], queries[q])``;
  a ``Comparison`` raises ``ValueError`` on a ``None`` key or query.
- ``Aggregate`` gives ``default`` where a query selects nothing, the value itself
  where it selects one, the mean (a float) where it selects several numbers (int,
  bool, float), and raises ``ValueError`` where it selects several of another type.
- ``&``, ``|`` and ``~`` of two ``Select`` over the same keys and queries (or a
  ``Full``) fold into one ``Select`` with a combined predicate.
- ``annotate``/``named``/``numerical``/``categorical`` return a shallow copy carrying
  the new annotations; the original is unchanged (as in tracr 1.0, tracr-pypi).
"""

import copy
import enum
import itertools
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TypeVar, Union

__all__ = [
    "Aggregate", "Annotator", "Comparison", "ConstantSOp", "ConstantSelector", "DEFAULT_ANNOTATORS",
    "DefaultRASPEvaluator", "Encoding", "Full", "IndicesType", "LengthType", "LinearSequenceMap",
    "Map", "NumericValue", "Predicate", "RASPEvaluator", "RASPExpr", "RASPExprT", "SOp", "SOpT",
    "Select",
    "Selector", "SelectorAnd", "SelectorNot", "SelectorOr", "SelectorValue", "SelectorWidth",
    "SequenceMap", "TokensType", "VT", "Value", "annotate", "categorical", "default_encoding",
    "default_name", "evaluate", "get_encoding", "indices", "is_categorical", "is_numerical",
    "length", "numerical", "selector_and", "selector_not", "selector_or", "sop_not", "tokens",
]

Value = Union[None, int, float, str, bool]
NumericValue = Union[int, float]
SelectorValue = List[List[bool]]
# Type variables and the annotator type, for user code that annotates with them.
VT = TypeVar("VT", bound=Value)
RASPExprT = TypeVar("RASPExprT", bound="RASPExpr")
SOpT = TypeVar("SOpT", bound="SOp")
Annotator = Callable[["RASPExpr"], Any]

_NAME_KEY = "name"
_ENCODING_KEY = "encoding"

# Annotation defaults, computed on first access: key -> function(expr) -> value.
# Users may register their own, as with Tracr.
DEFAULT_ANNOTATORS: Dict[str, Annotator] = {}


def _require(cond: bool, message: str) -> None:
    # Tracr signals malformed constructor arguments with AssertionError; keep the
    # type (users' tests may expect it) but never depend on `assert` (python -O).
    if not cond:
        raise AssertionError(message)


class _Annotations(Mapping):
    """Read-only view of an expression's annotations, filling defaults lazily."""

    def __init__(self, expr: "RASPExpr", **values: Any):
        self._expr = expr
        self._values: Dict[str, Any] = dict(values)

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            if key not in DEFAULT_ANNOTATORS:
                known = set(self._values) | set(DEFAULT_ANNOTATORS)
                raise KeyError(f"No annotation exists for key '{key}'. Available keys: {known}")
            self._values[key] = DEFAULT_ANNOTATORS[key](self._expr)
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class RASPExpr:
    """Base of every RASP expression (s-ops and selectors)."""

    _next_id = itertools.count(1)

    def __init__(self):
        self._annotations = _Annotations(self)

    def __call__(self, xs: Sequence[Value]):
        return evaluate(self, xs)

    @property
    def annotations(self) -> Mapping[str, Any]:
        return self._annotations

    @annotations.setter
    def annotations(self, values: Mapping[str, Any]):
        self._annotations = _Annotations(self, **values)

    @property
    def name(self) -> str:
        return self.annotations[_NAME_KEY]

    @property
    def children(self) -> Sequence["RASPExpr"]:
        raise NotImplementedError(f"{type(self).__name__} does not list its children")

    @property
    def unique_id(self) -> int:
        # Drawn on first use, like Tracr's, so ids follow the order of first access.
        uid = self.__dict__.get("_unique_id")
        if uid is None:
            uid = next(RASPExpr._next_id)
            self.__dict__["_unique_id"] = uid
        return uid

    @property
    def label(self) -> str:
        return f"{self.name}_{self.unique_id}"

    def copy(self):
        """A shallow copy (its id is drawn anew unless this one's was already drawn)."""
        return copy.copy(self)

    def named(self, name: str):
        return annotate(self, name=name)

    def annotated(self, **annotations):
        return annotate(self, **annotations)


def annotate(expr, **annotations):
    """A copy of `expr` with `annotations` added (they replace equal keys)."""
    new = expr.copy()
    new.annotations = {**expr.annotations, **annotations}
    return new


### S-ops


def _lift(op: Callable[[Any, Any], Any], swap: bool = False):
    """An operator overload: SequenceMap against an s-op, Map against a constant."""

    def method(self, other):
        if isinstance(other, SOp):
            if swap:
                return SequenceMap(lambda x, y: op(x, y), other, self)
            return SequenceMap(lambda x, y: op(x, y), self, other)
        if swap:
            return Map(lambda x: op(other, x), self)
        return Map(lambda x: op(x, other), self)

    return method


class SOp(RASPExpr):
    """A sequence operation: one value per input position."""

    # Comparisons with a constant build Maps (as in Tracr they do not accept s-ops).
    def __lt__(self, other):
        return Map(lambda x: x < other, self)

    def __le__(self, other):
        return Map(lambda x: x <= other, self)

    def __eq__(self, other):  # type: ignore[override]
        return Map(lambda x: x == other, self)

    def __ne__(self, other):  # type: ignore[override]
        return Map(lambda x: x != other, self)

    def __gt__(self, other):
        return Map(lambda x: x > other, self)

    def __ge__(self, other):
        return Map(lambda x: x >= other, self)

    # Defining __eq__ makes instances unhashable, as Tracr's are; say so explicitly.
    __hash__ = None  # type: ignore[assignment]

    __add__ = _lift(lambda x, y: x + y)
    __radd__ = _lift(lambda x, y: x + y, swap=True)
    __sub__ = _lift(lambda x, y: x - y)
    __rsub__ = _lift(lambda x, y: x - y, swap=True)
    __mul__ = _lift(lambda x, y: x * y)
    __rmul__ = _lift(lambda x, y: x * y, swap=True)
    __truediv__ = _lift(lambda x, y: x / y)
    __rtruediv__ = _lift(lambda x, y: x / y, swap=True)
    __and__ = _lift(lambda x, y: x and y)
    __rand__ = _lift(lambda x, y: x and y, swap=True)
    __or__ = _lift(lambda x, y: x or y)

    def __ror__(self, other):
        # Tracr's reflected `or` keeps the s-op's value first: `x or other`.
        if isinstance(other, SOp):
            return SequenceMap(lambda x, y: x or y, other, self)
        return Map(lambda x: x or other, self)

    def __invert__(self):
        return Map(lambda x: not x, self)


class _Primitive(SOp):
    """An input s-op: no children, its own name as label."""

    _name = ""

    @property
    def children(self):
        return []

    @property
    def label(self) -> str:
        return self._name

    def __repr__(self):
        return self._name


class TokensType(_Primitive):
    """The input tokens."""

    _name = "tokens"


class IndicesType(_Primitive):
    """The position of each token: 0, 1, 2, ..."""

    _name = "indices"


class LengthType(_Primitive):
    """The input length at every position."""

    _name = "length"


tokens = TokensType()
indices = IndicesType()
length = LengthType()


class Map(SOp):
    """`f` applied to each value of `inner` (None stays None)."""

    def __init__(self, f: Callable[[Value], Value], inner: SOp, simplify: bool = True):
        super().__init__()
        _require(isinstance(inner, SOp), f"Map's inner must be an SOp, got {inner!r}")
        _require(callable(f) and not isinstance(f, RASPExpr),
                 f"Map's f must be a function, got {f!r}")
        self.f = f
        self.inner = inner
        if simplify and isinstance(inner, Map):
            # Fuse with the inner Map: one elementwise function instead of two.
            outer_f, inner_f = f, inner.f
            self.f = lambda x: outer_f(inner_f(x))
            self.inner = inner.inner

    @property
    def children(self):
        return [self.inner]


class SequenceMap(SOp):
    """`f(x, y)` of two s-ops, position by position (None if either is None)."""

    def __init__(self, f: Callable[[Value, Value], Value], fst: SOp, snd: SOp):
        super().__init__()
        _require(isinstance(fst, SOp), f"SequenceMap's fst must be an SOp, got {fst!r}")
        _require(isinstance(snd, SOp), f"SequenceMap's snd must be an SOp, got {snd!r}")
        _require(callable(f) and not isinstance(f, RASPExpr),
                 f"SequenceMap's f must be a function, got {f!r}")
        self.f = f
        self.fst = fst
        self.snd = snd

    @property
    def children(self):
        return [self.fst, self.snd]


class LinearSequenceMap(SequenceMap):
    """`fst_fac * x + snd_fac * y`, position by position."""

    def __init__(self, fst: SOp, snd: SOp, fst_fac: float, snd_fac: float):
        super().__init__(lambda x, y: fst_fac * x + snd_fac * y, fst, snd)
        self.fst_fac = fst_fac
        self.snd_fac = snd_fac


class Full(SOp):
    """`fill` at every position."""

    def __init__(self, fill: Value):
        super().__init__()
        self.fill = fill

    @property
    def children(self):
        return []


class ConstantSOp(SOp):
    """A fixed sequence of values (for tests); its length must match the input."""

    def __init__(self, value: Sequence[Value], check_length: bool = True):
        super().__init__()
        self.value = value
        self.check_length = check_length

    @property
    def children(self):
        return []


def sop_not(sop: SOp) -> SOp:
    return Map(lambda x: not x, sop)


### Selectors


class Comparison(enum.Enum):
    """The predicates of a Select, called as `predicate(key, query)`."""

    EQ = "=="
    LT = "<"
    LEQ = "<="
    GT = ">"
    GEQ = ">="
    NEQ = "!="
    TRUE = "True"
    FALSE = "False"

    def __call__(self, key: Value, query: Value) -> bool:
        if key is None:
            raise ValueError("key is None!")
        if query is None:
            raise ValueError("query is None!")
        return _COMPARE[self](key, query)


_COMPARE = {
    Comparison.EQ: lambda k, q: k == q,
    Comparison.LT: lambda k, q: k < q,
    Comparison.LEQ: lambda k, q: k <= q,
    Comparison.GT: lambda k, q: k > q,
    Comparison.GEQ: lambda k, q: k >= q,
    Comparison.NEQ: lambda k, q: k != q,
    Comparison.TRUE: lambda k, q: True,
    Comparison.FALSE: lambda k, q: False,
}

Predicate = Callable[[Value, Value], bool]


class Selector(RASPExpr):
    """A query-by-key boolean matrix."""

    def __and__(self, other):
        return selector_and(self, other)

    def __rand__(self, other):
        return selector_and(other, self)

    def __or__(self, other):
        return selector_or(self, other)

    def __ror__(self, other):
        return selector_or(other, self)

    def __invert__(self):
        return selector_not(self)


class Select(Selector):
    """`M[q][k] = predicate(keys[k], queries[q])`."""

    def __init__(self, keys: SOp, queries: SOp, predicate: Predicate):
        super().__init__()
        _require(isinstance(keys, SOp), f"Select's keys must be an SOp, got {keys!r}")
        _require(isinstance(queries, SOp), f"Select's queries must be an SOp, got {queries!r}")
        self.keys = keys
        self.queries = queries
        self.predicate = predicate

    @property
    def children(self):
        return [self.keys, self.queries]


class ConstantSelector(Selector):
    """A fixed matrix (for tests); its size must match the input."""

    def __init__(self, value: SelectorValue, check_length: bool = True):
        super().__init__()
        self.value = value
        self.check_length = check_length

    @property
    def children(self):
        return []


class SelectorWidth(SOp):
    """How many keys each query selects."""

    def __init__(self, selector: Selector):
        super().__init__()
        _require(isinstance(selector, Selector),
                 f"SelectorWidth needs a Selector, got {selector!r}")
        self.selector = selector

    @property
    def children(self):
        return [self.selector]


class _SelectorPair(Selector):
    """SelectorAnd / SelectorOr: a combination of two selectors."""

    def __init__(self, fst: Selector, snd: Selector):
        super().__init__()
        name = type(self).__name__
        _require(isinstance(fst, Selector), f"{name}'s fst must be a Selector, got {fst!r}")
        _require(isinstance(snd, Selector), f"{name}'s snd must be a Selector, got {snd!r}")
        self.fst = fst
        self.snd = snd

    @property
    def children(self):
        return [self.fst, self.snd]


class SelectorAnd(_SelectorPair):
    pass


class SelectorOr(_SelectorPair):
    pass


class SelectorNot(Selector):
    def __init__(self, inner: Selector):
        super().__init__()
        _require(isinstance(inner, Selector), f"SelectorNot needs a Selector, got {inner!r}")
        self.inner = inner

    @property
    def children(self):
        return [self.inner]


def selector_not(inner: Selector, simplify: bool = True) -> Selector:
    """`~inner`; a Select is negated inside its predicate instead."""
    if simplify and isinstance(inner, Select):
        pred = inner.predicate
        return Select(inner.keys, inner.queries, lambda k, q: not pred(k, q))
    return SelectorNot(inner)


def _fold(fst: Selector, snd: Selector, combine) -> Optional[Select]:
    """One Select equal to `combine(fst, snd)`, when both read the same keys and
    queries (a Full on either side matches anything: its fill goes into the
    predicate). None when they do not line up."""
    if not (isinstance(fst, Select) and isinstance(snd, Select)):
        return None
    p1, p2 = fst.predicate, snd.predicate
    keys = queries = None
    if isinstance(fst.keys, Full):
        keys, fill = snd.keys, fst.keys.fill
        p1 = (lambda p, v: lambda k, q: p(v, q))(p1, fill)
    if isinstance(snd.keys, Full):
        keys, fill = fst.keys, snd.keys.fill
        p2 = (lambda p, v: lambda k, q: p(v, q))(p2, fill)
    if isinstance(fst.queries, Full):
        queries, fill = snd.queries, fst.queries.fill
        p1 = (lambda p, v: lambda k, q: p(k, v))(p1, fill)
    if isinstance(snd.queries, Full):
        queries, fill = fst.queries, snd.queries.fill
        p2 = (lambda p, v: lambda k, q: p(k, v))(p2, fill)
    if fst.keys is snd.keys:
        keys = fst.keys
    if fst.queries is snd.queries:
        queries = fst.queries
    if keys is None or queries is None:
        return None
    return Select(keys, queries, lambda k, q: combine(p1(k, q), p2(k, q)))


def selector_and(fst: Selector, snd: Selector, simplify: bool = True) -> Selector:
    folded = _fold(fst, snd, lambda a, b: a and b) if simplify else None
    return folded if folded is not None else SelectorAnd(fst, snd)


def selector_or(fst: Selector, snd: Selector, simplify: bool = True) -> Selector:
    folded = _fold(fst, snd, lambda a, b: a or b) if simplify else None
    return folded if folded is not None else SelectorOr(fst, snd)


class Aggregate(SOp):
    """Per query, the selected values of `sop` averaged (see the module doc)."""

    def __init__(self, selector: Selector, sop: SOp, default: Value = None):
        super().__init__()
        _require(isinstance(selector, Selector),
                 f"Aggregate's selector must be a Selector, got {selector!r}")
        _require(isinstance(sop, SOp), f"Aggregate's sop must be an SOp, got {sop!r}")
        _require(default is None or isinstance(default, (str, float, bool, int)),
                 f"Aggregate's default must be None, str, float, bool or int, got {default!r}")
        self.selector = selector
        self.sop = sop
        self.default = default

    @property
    def children(self):
        return [self.selector, self.sop]


### Encodings


class Encoding(enum.Enum):
    """How an s-op is stored in the residual stream."""

    CATEGORICAL = "categorical"
    NUMERICAL = "numerical"


def numerical(sop):
    return annotate(sop, encoding=Encoding.NUMERICAL)


def categorical(sop):
    return annotate(sop, encoding=Encoding.CATEGORICAL)


def get_encoding(sop: SOp) -> Encoding:
    return sop.annotations[_ENCODING_KEY]


def is_numerical(sop: SOp) -> bool:
    return get_encoding(sop) == Encoding.NUMERICAL


def is_categorical(sop: SOp) -> bool:
    return get_encoding(sop) == Encoding.CATEGORICAL


def default_encoding(expr: RASPExpr) -> Encoding:
    if not isinstance(expr, SOp):
        raise TypeError(f"expr {expr} is not a SOp.")
    return Encoding.CATEGORICAL


DEFAULT_ANNOTATORS[_ENCODING_KEY] = default_encoding

# Default names, most specific class first.
_DEFAULT_NAMES = [
    (TokensType, "tokens"), (IndicesType, "indices"), (LengthType, "length"),
    (LinearSequenceMap, "linear_sequence_map"), (SequenceMap, "sequence_map"),
    (Map, "map"), (Full, "full"), (ConstantSOp, "constant_sop"),
    (SelectorWidth, "selector_width"), (Aggregate, "aggregate"), (SOp, "sop"),
    (Select, "select"), (SelectorAnd, "selector_and"), (SelectorOr, "selector_or"),
    (SelectorNot, "selector_not"), (ConstantSelector, "constant_selector"),
    (Selector, "selector"),
]


def default_name(expr: RASPExpr) -> str:
    for cls, name in _DEFAULT_NAMES:
        if isinstance(expr, cls):
            return name
    raise NotImplementedError(f"{expr} was not given a default name!")


DEFAULT_ANNOTATORS[_NAME_KEY] = default_name


### Evaluation


def _mean(selected: List[Value], default: Value) -> Value:
    if not selected:
        return default
    if len(selected) == 1:
        return selected[0]
    if all(isinstance(v, (int, bool, float)) for v in selected):
        return sum(selected) / len(selected)
    raise ValueError(f"Aggregate can only average int, bool and float values; "
                     f"selected {selected}")


class DefaultRASPEvaluator:
    """Evaluates an expression on an input; shared subexpressions once per call."""

    def evaluate(self, expr: RASPExpr, xs: Sequence[Value]):
        memo: Dict[int, Any] = {}
        # An explicit stack: programs built in loops can be thousands of nodes deep.
        stack = [(expr, False)]
        while stack:
            node, ready = stack.pop()
            if id(node) in memo:
                continue
            kids = self._children(node)
            if not ready:
                stack.append((node, True))
                stack.extend((c, False) for c in kids if id(c) not in memo)
                continue
            memo[id(node)] = self._eval_one(node, [memo[id(c)] for c in kids], xs)
        return memo[id(expr)]

    @staticmethod
    def _children(node: RASPExpr) -> Sequence[RASPExpr]:
        if not isinstance(node, RASPExpr):
            raise TypeError(f"not a RASP expression: {node!r}")
        return node.children

    def _eval_one(self, node: RASPExpr, args: List[Any], xs: Sequence[Value]):
        n = len(xs)
        if isinstance(node, TokensType):
            return list(xs)
        if isinstance(node, IndicesType):
            return list(range(n))
        if isinstance(node, LengthType):
            return [n] * n
        if isinstance(node, Map):
            return [None if x is None else node.f(x) for x in args[0]]
        if isinstance(node, SequenceMap):  # LinearSequenceMap included
            return [None if x is None or y is None else node.f(x, y)
                    for x, y in zip(args[0], args[1])]
        if isinstance(node, Full):
            return [node.fill] * n
        if isinstance(node, ConstantSOp):
            if node.check_length and len(xs) != len(node.value):
                raise ValueError(
                    f"Constant len {len(node.value)} doesn't match input len {len(xs)}.")
            return node.value
        if isinstance(node, SelectorWidth):
            return [sum(row) for row in args[0]]
        if isinstance(node, Aggregate):
            matrix, values = args
            return [_mean([v for s, v in zip(row, values) if s], node.default)
                    for row in matrix]
        if isinstance(node, Select):
            keys, queries = args
            return [[bool(node.predicate(k, q)) for k in keys] for q in queries]
        if isinstance(node, ConstantSelector):
            if node.check_length and len(xs) != len(node.value):
                raise ValueError(
                    f"Constant len {len(xs)} doesn't match input len {len(node.value)}.")
            return node.value
        if isinstance(node, SelectorAnd):
            return [[bool(a and b) for a, b in zip(r, s)] for r, s in zip(*args)]
        if isinstance(node, SelectorOr):
            return [[bool(a or b) for a, b in zip(r, s)] for r, s in zip(*args)]
        if isinstance(node, SelectorNot):
            return [[not a for a in r] for r in args[0]]
        raise NotImplementedError(f"Evaluation of {node} is not defined.")


class RASPEvaluator(DefaultRASPEvaluator):
    """Alias kept for code that names Tracr's evaluator base class."""


evaluate = DefaultRASPEvaluator().evaluate
