"""``compile_rasp_to_model``: Tracr's entry point, compiling with raspc.

The program (built with ``raspc.tracr.rasp`` or with an installed ``tracr``) is
lowered (``lowering.py``: Python predicates, constant s-ops and selectors become
comparisons of relabelled s-ops), then mapped node for node onto raspc's C++ graph
(``raspc._core.Graph``): Map, SequenceMap and LinearSequenceMap become host functions
that the C++ compiler tabulates over its inferred value sets; Select, SelectorAnd/Or/
Not, Aggregate and SelectorWidth become raspc's own nodes; the ``encoding``
annotation becomes raspc's encoding; names become node names. raspc compiles the
graph exactly (no MLP approximation), so ``mlp_exactness`` is accepted and unused.

Values that are not RASP scalars (tuples, as ``lib.make_nary_sequencemap`` builds)
travel through the graph as interned ints and are turned back at the functions that
read them and at the output.
"""

import numbers
from typing import Any, Dict, List, Set

from raspc.tracr import convert
from raspc.tracr.compiler import assemble, lowering
from raspc.tracr.rasp import rasp

COMPILER_BOS = "compiler_bos"
COMPILER_PAD = "compiler_pad"

UnsupportedError = lowering.UnsupportedError

def _is_scalar(v) -> bool:
    # numbers.Real takes numpy's scalars too (raspc converts them with .item()).
    return v is None or isinstance(v, (str, numbers.Real))


class _Interned:
    """Non-scalar values <-> ints, for s-ops raspc cannot store as they are."""

    def __init__(self):
        self.ids: Dict[Any, int] = {}
        self.values: List[Any] = []

    def encode(self, v, intern: bool):
        """`v` as raspc stores it: interned (None aside) when `intern`, else as is."""
        if v is None or not intern:
            return v
        try:
            key = (type(v), v)
            hash(key)
        except TypeError:
            raise UnsupportedError(f"the value {v!r} is neither a RASP scalar nor hashable; "
                                   f"raspc cannot store it in an s-op") from None
        if key not in self.ids:
            self.ids[key] = len(self.values)
            self.values.append(v)
        return self.ids[key]

    def decode(self, i):
        return None if i is None else self.values[i]


def _topological(program) -> List[rasp.RASPExpr]:
    order, seen = [], set()
    stack = [(program, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in seen:
            continue
        if ready:
            seen.add(id(node))
            order.append(node)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(list(node.children)) if id(c) not in seen)
    return order


_CMP = {
    rasp.Comparison.EQ: "==", rasp.Comparison.NEQ: "!=", rasp.Comparison.LT: "<",
    rasp.Comparison.LEQ: "<=", rasp.Comparison.GT: ">", rasp.Comparison.GEQ: ">=",
    rasp.Comparison.TRUE: "true", rasp.Comparison.FALSE: "false",
}


class _Builder:
    def __init__(self, core, vocab, max_seq_len):
        self.token_type = _token_type(vocab)
        self.g = core.Graph()
        self.sets = lowering.ValueSets(vocab, max_seq_len)
        self.interned = _Interned()
        self.ids: Dict[int, int] = {}
        self.opaque: Set[int] = set()  # ids of s-ops whose values are interned

    def is_opaque(self, sop) -> bool:
        values = self.sets.of(sop)
        # Unknown value sets are means of numbers: scalars.
        return values is not None and any(not _is_scalar(v) for v in values)

    def host_function(self, node, f, args):
        """`f` over the values of `args`, as the C++ side calls it: the values of
        opaque arguments turned back from their ints, an opaque result interned."""
        decode = [id(a) in self.opaque for a in args]
        intern = self.is_opaque(node)
        interned = self.interned

        def call(*xs):
            xs = [interned.decode(x) if d else x for x, d in zip(xs, decode)]
            try:
                y = f(*xs)
            except ArithmeticError:
                # Tracr's basis inference ignores arithmetic errors: they come from
                # combinations of values no input produces. None in the table.
                return None
            return interned.encode(y, intern)

        return self.g.func(call, [self.ids[id(a)] for a in args], node.label)

    def add(self, node) -> int:
        g = self.g
        if isinstance(node, rasp.TokensType):
            out = g.tokens(self.token_type)
        elif isinstance(node, rasp.IndicesType):
            out = g.indices()
        elif isinstance(node, rasp.LengthType):
            out = g.length()
        elif isinstance(node, rasp.Full):
            out = g.constant(self.interned.encode(node.fill, self.is_opaque(node)))
        elif isinstance(node, rasp.SequenceMap):  # LinearSequenceMap too: f is fst_fac*x + snd_fac*y
            out = self.host_function(node, node.f, [node.fst, node.snd])
        elif isinstance(node, rasp.Map):
            out = self.host_function(node, node.f, [node.inner])
        elif isinstance(node, rasp.Select):
            if not isinstance(node.predicate, rasp.Comparison):
                raise UnsupportedError(f"{node.label}: predicate left after lowering")
            if node.predicate not in (rasp.Comparison.EQ, rasp.Comparison.NEQ,
                                      rasp.Comparison.TRUE, rasp.Comparison.FALSE):
                for side in (node.keys, node.queries):
                    if id(side) in self.opaque:
                        raise UnsupportedError(
                            f"{node.label}: compares {side.label}, whose values are not RASP "
                            f"scalars, with {node.predicate.value}; raspc orders only scalars")
            out = g.select(self.ids[id(node.keys)], self.ids[id(node.queries)], _CMP[node.predicate])
        elif isinstance(node, rasp.SelectorAnd):
            out = g.select_and(self.ids[id(node.fst)], self.ids[id(node.snd)])
        elif isinstance(node, rasp.SelectorOr):
            out = g.select_or(self.ids[id(node.fst)], self.ids[id(node.snd)])
        elif isinstance(node, rasp.SelectorNot):
            out = g.select_not(self.ids[id(node.inner)])
        elif isinstance(node, rasp.SelectorWidth):
            out = g.selector_width(self.ids[id(node.selector)])
        elif isinstance(node, rasp.Aggregate):
            out = g.aggregate(self.ids[id(node.selector)], self.ids[id(node.sop)],
                              self.interned.encode(node.default, self.is_opaque(node)))
        else:
            raise UnsupportedError(f"{node.label}: raspc cannot compile {type(node).__name__}")
        if isinstance(node, rasp.SOp):
            if rasp.is_numerical(node):
                out = g.encode(out, "numerical")
            if self.is_opaque(node):
                self.opaque.add(id(node))
        return out

    def build(self, program) -> int:
        order = _topological(program)
        names: Dict[str, int] = {}
        for node in order:
            names[node.name] = names.get(node.name, 0) + 1
        for node in order:
            gid = self.add(node)
            self.ids[id(node)] = gid
            if not isinstance(node, (rasp.TokensType, rasp.IndicesType, rasp.LengthType)):
                # The user's name where it is unique in the program, else Tracr's label.
                self.g.name(gid, node.name if names[node.name] == 1 else node.label)
        return self.ids[id(program)]


def _token_type(vocab) -> str:
    """raspc's type for the input tokens, so that functions see the vocabulary's values
    (not their text): bool, int, float (ints and floats mixed) or str."""
    if all(isinstance(v, bool) for v in vocab):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vocab):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vocab):
        return "float"
    if all(isinstance(v, str) for v in vocab):
        return "str"
    kinds = sorted({type(v).__name__ for v in vocab})
    raise UnsupportedError(f"the vocabulary mixes {', '.join(kinds)} tokens; raspc's input is "
                           f"all bool, all numbers or all str")


def _core():
    try:
        from raspc import _core
    except ImportError as e:
        raise ImportError("raspc.tracr needs raspc's compiled core (raspc._core); install the "
                          "raspc package with `pip install .` from the raspc checkout") from e
    return _core


def _sorted_vocab(vocab) -> List[Any]:
    try:
        return sorted(vocab)
    except TypeError:
        return sorted(vocab, key=lambda v: (type(v).__name__, repr(v)))


def compile_rasp_to_model(
    program,
    vocab,
    max_seq_len: int,
    causal: bool = False,
    compiler_bos: str = COMPILER_BOS,
    compiler_pad: str = COMPILER_PAD,
    mlp_exactness: int = 100,
) -> assemble.AssembledTransformerModel:
    """Compiles a RASP program (raspc.tracr or tracr objects) into a raspc model.

    Raises ValueError for a BOS or PAD token inside the vocabulary and for bad
    arguments, UnsupportedError (a NotImplementedError, as Tracr raises) for programs
    raspc cannot compile, and raspc.RaspcError for errors raspc's compiler finds
    (located at the node, named by its label)."""
    del mlp_exactness  # raspc's MLPs are exact tables, nothing to tune
    program = convert.from_tracr(program)
    if not isinstance(program, rasp.SOp):
        raise TypeError(f"the program must be an SOp, got {type(program).__name__}")
    vocab_list = _sorted_vocab(set(vocab))
    if not vocab_list:
        raise ValueError("the vocabulary is empty")
    if compiler_bos in vocab_list:
        raise ValueError(f"the BOS token {compiler_bos!r} must not be in the vocabulary {vocab_list!r}")
    if compiler_pad in vocab_list:
        raise ValueError(f"the PAD token {compiler_pad!r} must not be in the vocabulary {vocab_list!r}")
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 1:
        raise ValueError(f"max_seq_len must be a positive int, got {max_seq_len!r}")

    lowered = lowering.lower(program, vocab_list, max_seq_len)
    builder = _Builder(_core(), vocab_list, max_seq_len)
    out = builder.build(lowered)
    model = _core().compile_graph(builder.g, out, vocab_list, max_seq_len, causal=causal)
    opaque_out = id(lowered) in builder.opaque
    return assemble.AssembledTransformerModel(
        raspc_model=model,
        vocab=vocab_list,
        max_seq_len=max_seq_len,
        causal=causal,
        compiler_bos=compiler_bos,
        compiler_pad=compiler_pad,
        output_encoding="numerical" if rasp.is_numerical(lowered) else "categorical",
        decode_value=builder.interned.decode if opaque_out else None,
    )
