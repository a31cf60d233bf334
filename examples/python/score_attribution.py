#!/usr/bin/env python3
"""Scores an interpretability method against the suite's ground truth: attribution
patching on edges (EAP), the worked example of docs/suite.md.

    python examples/python/score_attribution.py SUITE_DIR [--models GLOB] [--granularity heads|qkv]
    python examples/python/score_attribution.py --h5 sort.h5 hist.h5 ...   # models compiled alone

For each model, on seeded pairs (clean a, corrupt b, one length each), every candidate
edge P -> C of the complete graph (every component P before every child C) gets the EAP
score, the first-order estimate of patching that edge:

    score(P -> C) = mean over pairs of  sum over positions  (out_P(b) - out_P(a)) . d metric / d input_C

at the clean run, where metric is the clean output's logit summed over the positions (a
numerical output: the output itself). Edges are ranked by |score|; the top k (k the
number of ground-truth edges) are the method's circuit, and so are the edges with
|score| above --threshold. Precision and recall are against the ground truth: the edges
that checks.json proves necessary (circuit.json's edges less its "unnecessary" ones);
--truth rule takes circuit.json's edges as they are. With --h5 (no suite), the edges
come from raspc.suite.edges_from_weights and necessity is measured here by patching each
edge on the same pairs.

Needs torch and transformer-lens (pip install '.[tl]'); runs on the CPU in seconds per
model.
"""

import argparse
import fnmatch
import json
import os
import sys
import time

try:
    from raspc import suite
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    from raspc import suite


def candidates(comps, granularity):
    """Every (parent, child) of the complete graph: each component before each child."""
    out = []
    for c in comps[1:]:
        if granularity == "heads":
            children = [(c["hook"], c["index"])]
        elif c["hook"].endswith("attn.hook_result"):
            children = [(f"blocks.{c['layer']}.hook_{x}_input", c["index"]) for x in "qkv"]
        elif c["hook"].endswith("hook_mlp_out"):
            children = [(f"blocks.{c['layer']}.hook_mlp_in", None)]
        else:
            children = [(c["hook"], None)]  # the output
        for p in comps:
            if p["order"] < c["order"] and p["writes"]:
                for child, ci in children:
                    out.append({"parent": p["hook"], "parent_index": p["index"], "child": child, "child_index": ci})
    return out


def key(e):
    return suite.edge_tuple(e)


def eap_scores(patcher, edges):
    """The EAP score of each edge (a dict edge tuple -> score)."""
    import torch

    ctx = patcher.ctx
    children = {}
    for e in edges:
        children.setdefault((e["child"], json.dumps(e["child_index"])), (e["child"], e["child_index"]))
    shape = patcher.cache_a["blocks.0.hook_resid_pre"].shape
    leaves, hooks = {}, []
    for k, (child, ci) in children.items():
        leaves[k] = torch.zeros(shape, requires_grad=True)
        hooks += suite.child_input_hooks(ctx, child, ci, leaves[k])
    with torch.enable_grad():
        logits = ctx.ht.run_with_hooks(patcher.tokens, attention_mask=patcher.mask, fwd_hooks=hooks)
        real = patcher.mask.clone()
        real[:, 0] = 0  # BOS carries no output
        if ctx.meta["output_encoding"] == "numerical":
            per_pos = logits[..., 0]
        else:
            target = logits.detach().argmax(-1, keepdim=True)
            per_pos = logits.gather(-1, target)[..., 0]
        (per_pos * real).sum().backward()
    n = shape[0]
    scores = {}
    for e in edges:
        g = leaves[(e["child"], json.dumps(e["child_index"]))].grad
        d = patcher.delta(e["parent"], e["parent_index"])
        scores[key(e)] = float((d * g).sum()) / n
    return scores


def show(k):
    """An edge tuple as 'parent[index] -> child[index]'."""
    child, ci, parent, pi = k
    idx = lambda i: "" if i == (None,) else "[" + ", ".join("null" if x is None else str(x) for x in i) + "]"
    return f"{parent}{idx(pi)} -> {child}{idx(ci)}"


def precision_recall(chosen, truth):
    tp = len(chosen & truth)
    return (tp / len(chosen) if chosen else 1.0), (tp / len(truth) if truth else 1.0)


def score_model(name, h5, ht, circuit_edges, unnecessary, args, run_h5=None):
    """One model's figures: a dict. The method runs on run_h5 (a variant) when given;
    the components (the candidates) are the original's, which the variant shares."""
    t0 = time.time()
    A, B = suite.random_pairs(h5, args.pairs, seed=args.seed)
    patcher = suite.Patcher(run_h5 or h5, A, B, ht)
    comps = suite.components_from_weights(h5)
    cands = candidates(comps, args.granularity)
    rule = {key(e) for e in circuit_edges}
    if unnecessary is None:  # no checks.json: measure necessity on these pairs
        clean = suite.run(h5, A, ht)
        unnecessary = {key(e) for e in circuit_edges if suite.same(patcher.edge(e), clean)}
    truth = rule if args.truth == "rule" else rule - unnecessary
    scores = eap_scores(patcher, cands)
    assert rule <= set(scores), "every ground-truth edge is a candidate"
    ranked = sorted(scores, key=lambda k: -abs(scores[k]))
    top = set(ranked[: len(truth)])
    above = {k for k in ranked if abs(scores[k]) > args.threshold}
    p_k, r_k = precision_recall(top, truth)
    p_t, r_t = precision_recall(above, truth)
    return {"model": name, "candidates": len(cands), "truth": len(truth), "rule_edges": len(rule),
            "precision@k": p_k, "recall@k": r_k, "precision@t": p_t, "recall@t": r_t,
            "missed": sorted(map(show, truth - above)), "seconds": time.time() - t0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", nargs="?", help="a suite built by `raspc suite build`")
    ap.add_argument("--models", default="*", help="a glob of model names (default all)")
    ap.add_argument("--h5", nargs="+", default=[], help="compiled models instead of a suite")
    ap.add_argument("--granularity", choices=("heads", "qkv"), default="heads")
    ap.add_argument("--truth", choices=("necessary", "rule"), default="necessary")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=1e-6, help="|score| above which an edge is chosen")
    ap.add_argument("--variant", choices=("rotated", "compressed"),
                    help="run the method on the suite's variant of each model (the truth is the original's)")
    ap.add_argument("--json", action="store_true", help="one JSON object per model, then the means")
    args = ap.parse_args()
    if bool(args.suite) == bool(args.h5):
        ap.error("give a suite directory or --h5 files, not both")
    if args.variant and not args.suite:
        ap.error("--variant needs a suite (its models' rotated/ and compressed/ folders)")

    jobs = []  # (name, h5, hooked, circuit edges, unnecessary edges or None, variant h5 or None)
    if args.suite:
        for m in suite.load(args.suite):
            if fnmatch.fnmatchcase(m.name, args.models):
                rec = m.checks["interventions"]["edges"][args.granularity]
                jobs.append((m.name, m.weights_path(), lambda m=m: m.tl(args.variant), m.circuit["edges"][args.granularity],
                             {key(e) for e in rec.get("unnecessary", [])},
                             m.weights_path(args.variant) if args.variant else None))
    for path in args.h5:
        name = os.path.splitext(os.path.basename(path))[0]
        jobs.append((name, path, lambda p=path: suite.hooked_for(p), suite.edges_from_weights(path)[args.granularity],
                     None, None))
    if not jobs:
        sys.exit(f"no model matches {args.models!r}")

    rows = []
    for name, h5, make, edges, unnecessary, run_h5 in jobs:
        row = score_model(name, h5, make(), edges, unnecessary, args, run_h5)
        rows.append(row)
        if args.json:
            print(json.dumps(row))
    keys = ("precision@k", "recall@k", "precision@t", "recall@t")
    # A model with no necessary edge (length on pairs of one length: nothing can change
    # it) has nothing to find: it is listed but left out of the means.
    scored = [r for r in rows if r["truth"] > 0]
    mean = {k: sum(r[k] for r in scored) / len(scored) if scored else float("nan") for k in keys}
    if args.json:
        left_out = [r["model"] for r in rows if not r["truth"]]
        print(json.dumps({"mean": mean, "models": len(scored), "left_out": left_out}))
        return
    on = f", on the {args.variant} variants" if args.variant else ""
    print(f"EAP on edges ({args.granularity}){on}, {args.pairs} pairs, seed {args.seed}; truth: "
          f"{'necessary edges' if args.truth == 'necessary' else 'circuit.json edges'}; "
          f"k = |truth|, t = |score| > {args.threshold:g}")
    head = f"{'model':<16} {'cand':>5} {'truth':>5} {'P@k':>6} {'R@k':>6} {'P@t':>6} {'R@t':>6} {'s':>5}"
    print(head)
    print("-" * len(head))
    for r in rows:
        figs = " ".join(f"{r[k]:>6.2f}" if r["truth"] else f"{'-':>6}" for k in keys)
        print(f"{r['model']:<16} {r['candidates']:>5} {r['truth']:>5} {figs} {r['seconds']:>5.1f}")
    print("-" * len(head))
    print(f"{'mean (' + str(len(scored)) + ')':<16} {'':>5} {'':>5} " + " ".join(f"{mean[k]:>6.2f}" for k in keys))


if __name__ == "__main__":
    main()
