"""Moving programs between an installed ``tracr`` and ``raspc.tracr``.

``from_tracr`` rebuilds a program made of ``tracr.rasp.rasp`` objects out of this
package's classes, node for node (no Map fusion, no selector folding: the DAG stays
the one the user built), keeping functions, predicates, defaults and annotations.
``to_tracr`` does the reverse, so one program can be evaluated and compiled by both
(the tests use it to run real Tracr on the corpus). Shared subexpressions stay shared.
"""

from typing import Any, Callable, Dict

from raspc.tracr.rasp import rasp


def _rebuild(program, target, is_source: Callable[[Any], bool]):
    """Rebuild the DAG under `program` with the classes of module `target`."""
    done: Dict[int, Any] = {}

    def convert_predicate(pred):
        # A Comparison enum becomes the target's member of the same value; a function
        # stays itself (it only sees values, never expression objects).
        if type(pred).__name__ == "Comparison" and hasattr(pred, "value"):
            return target.Comparison(pred.value)
        return pred

    def convert_annotations(src, dst):
        values = {}
        for key in list(src.annotations):
            v = src.annotations[key]
            if type(v).__name__ == "Encoding" and hasattr(v, "value"):
                v = target.Encoding(v.value)
            values[key] = v
        if values:
            dst.annotations = {**dst.annotations, **values}

    def build(node, args):
        kind = type(node).__name__
        if kind == "TokensType":
            return target.tokens
        if kind == "IndicesType":
            return target.indices
        if kind == "LengthType":
            return target.length
        if kind == "Map":
            return target.Map(node.f, args[0], simplify=False)
        if kind == "LinearSequenceMap":
            return target.LinearSequenceMap(args[0], args[1], node.fst_fac, node.snd_fac)
        if kind == "SequenceMap":
            return target.SequenceMap(node.f, args[0], args[1])
        if kind == "Full":
            return target.Full(node.fill)
        if kind == "ConstantSOp":
            return target.ConstantSOp(node.value, check_length=node.check_length)
        if kind == "Select":
            return target.Select(args[0], args[1], convert_predicate(node.predicate))
        if kind == "ConstantSelector":
            return target.ConstantSelector(node.value, check_length=node.check_length)
        if kind == "SelectorWidth":
            return target.SelectorWidth(args[0])
        if kind == "SelectorAnd":
            return target.SelectorAnd(args[0], args[1])
        if kind == "SelectorOr":
            return target.SelectorOr(args[0], args[1])
        if kind == "SelectorNot":
            return target.SelectorNot(args[0])
        if kind == "Aggregate":
            return target.Aggregate(args[0], args[1], default=node.default)
        raise TypeError(f"cannot convert RASP expression of type {type(node).__module__}.{kind}: "
                        f"{node!r}")

    stack = [(program, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in done:
            continue
        if not is_source(node):
            raise TypeError(f"not a RASP expression: {node!r} (type {type(node).__name__})")
        kids = list(node.children)
        if not ready:
            stack.append((node, True))
            stack.extend((c, False) for c in kids if id(c) not in done)
            continue
        out = build(node, [done[id(c)] for c in kids])
        # Primitives too: a program may have marked the shared `tokens` numerical.
        convert_annotations(node, out)
        done[id(node)] = out
    return done[id(program)]


def is_tracr_expr(obj) -> bool:
    """Whether `obj` is an expression of an installed tracr (not of raspc.tracr)."""
    return any(c.__module__.startswith("tracr.") and c.__name__ == "RASPExpr"
               for c in type(obj).__mro__)


def from_tracr(program):
    """The same program built from raspc.tracr classes. `program` must be a
    tracr.rasp.rasp expression; raspc.tracr expressions are returned unchanged."""
    if isinstance(program, rasp.RASPExpr):
        return program
    if not is_tracr_expr(program):
        raise TypeError(f"expected a RASP expression (tracr or raspc.tracr), got {program!r}")
    return _rebuild(program, rasp, is_tracr_expr)


def to_tracr(program):
    """The same program built from an installed tracr's classes (needs `tracr`)."""
    from tracr.rasp import rasp as tracr_rasp  # imported here: tracr is optional

    if is_tracr_expr(program):
        return program
    if not isinstance(program, rasp.RASPExpr):
        raise TypeError(f"expected a raspc.tracr RASP expression, got {program!r}")
    return _rebuild(program, tracr_rasp, lambda n: isinstance(n, rasp.RASPExpr))
