"""raspc beside real Tracr (tracr-pypi, jax, dm-haiku) on the corpus's Tracr subset:
the same program compiled by both, outputs compared, sizes recorded side by side.

Tracr's compiler jit-compiles every model (about 10 s each on a small machine), so
only the entries marked `tracr=True` run here. Sizes are printed (pytest -s) and, when
RASPC_TRACR_SIZES names a file, written there as JSON (atomically, never over an
existing file) for docs/python-tracr.md.
"""

import json
import os
import random
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # the corpus package beside this file
import tracr_programs  # noqa: E402

from raspc.tracr import compile_rasp_to_model, convert, rasp  # noqa: E402

tracr_compiling = pytest.importorskip("tracr.compiler.compiling",
                                      reason="tracr (tracr-pypi with jax, dm-haiku) is not installed")
jax = pytest.importorskip("jax")

SUBSET = [e for e in tracr_programs.CORPUS if e.tracr]
INPUTS = 12
# Tracr's numerical MLPs and softmax attention approximate; raspc's decoded numbers
# are exact. Numerical outputs are compared to this absolute tolerance.
NUMERICAL_TOLERANCE = 0.02
SIZES = {}

# Programs of the subset that real Tracr refuses (raspc compiles them all): the test
# checks that Tracr still raises this, so the list stays true.
TRACR_REFUSES = {
    "num_mean_tokens": (NotImplementedError, "can currently only average binary variables"),
    "width_prefix_length": (ValueError, "does not include rasp.tokens"),
    "agg_first_token": (NotImplementedError, "Full object .* cannot be translated"),
    "width_and": (AttributeError, "'SelectorAnd' object has no attribute 'queries'"),
}


def tracr_sizes(model):
    cfg = model.model_config
    return {"layers": cfg.num_layers, "heads": cfg.num_heads, "residual": len(model.residual_labels),
            "mlp_hidden": cfg.mlp_hidden_size,
            "params": int(sum(x.size for x in jax.tree_util.tree_leaves(model.params)))}


def raspc_sizes(model):
    cfg = model.raspc_model.config
    weights = model.raspc_model.weights
    return {"layers": cfg["n_layers"], "heads": cfg["n_heads"], "residual": cfg["d_model"],
            "mlp_hidden": cfg["d_mlp"], "params": int(sum(w.size for w in weights.values()))}


def compile_with_tracr(entry, program):
    return tracr_compiling.compile_rasp_to_model(
        convert.to_tracr(program), vocab=set(entry.vocab), max_seq_len=entry.max_seq_len,
        causal=entry.causal, compiler_bos="BOS", compiler_pad="PAD")


@pytest.mark.parametrize("entry", SUBSET, ids=lambda e: e.name)
def test_raspc_beside_real_tracr(entry):
    program = entry.build()
    ours = compile_rasp_to_model(program, vocab=set(entry.vocab), max_seq_len=entry.max_seq_len,
                                 causal=entry.causal, compiler_bos="BOS", compiler_pad="PAD")
    theirs = None
    if entry.name in TRACR_REFUSES:
        kind, message = TRACR_REFUSES[entry.name]
        with pytest.raises(kind, match=message):
            compile_with_tracr(entry, program)
    else:
        theirs = compile_with_tracr(entry, program)
    numerical = rasp.is_numerical(program)
    rng = random.Random("real" + entry.name)
    # Two lengths only: Tracr's apply re-traces its jitted forward pass for every new
    # length, which dominates this test's time (test_tracr_compile covers all lengths).
    lengths = [entry.max_seq_len, max(1, entry.max_seq_len - 2)]
    inputs = (entry.inputs(rng, INPUTS) if entry.gen else
              [[rng.choice(entry.vocab) for _ in range(lengths[i % 2])] for i in range(INPUTS)])
    for xs in inputs:
        want = rasp.evaluate(program, xs)
        a = ours.apply(["BOS"] + xs).decoded
        b = theirs.apply(["BOS"] + xs).decoded if theirs else None
        assert a[0] == "BOS" and (b is None or b[0] == "BOS")
        for i, w in enumerate(want):
            if w is None:
                assert a[i + 1] is None
                continue  # Tracr's model leaves None unspecified (it decodes some value)
            if numerical:
                assert abs(a[i + 1] - w) <= 1e-6 * max(1.0, abs(w)), (xs, a, want)
                assert b is None or abs(b[i + 1] - w) <= NUMERICAL_TOLERANCE, (xs, b, want)
            else:
                assert a[i + 1] == w and (b is None or b[i + 1] == w), (xs, a, b, want)
    SIZES[entry.name] = {"tracr": tracr_sizes(theirs) if theirs else "refused",
                         "raspc": raspc_sizes(ours)}
    print(f"\n{entry.name}: tracr {SIZES[entry.name]['tracr']}  raspc {SIZES[entry.name]['raspc']}")


def teardown_module(module):
    path = os.environ.get("RASPC_TRACR_SIZES")
    if not path or not SIZES:
        return
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; RASPC_TRACR_SIZES never overwrites")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".sizes-")
    with os.fdopen(fd, "w") as f:
        json.dump(SIZES, f, indent=1, sort_keys=True)
    os.link(tmp, path)  # fails rather than replace a file created meanwhile
    os.unlink(tmp)
