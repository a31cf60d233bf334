"""raspc beside real Tracr, run live: Tracr's own lib.py programs, built with the installed
`tracr` (tracr-pypi, jax, dm-haiku), compiled by Tracr (full compile, assembly included)
and by raspc (`raspc.tracr`, the same program objects), at each length N.

Per row: layers, most heads in a layer, residual width, MLP width, parameters and compile
seconds, Tracr's and raspc's side by side, and a same-function check: both models run on
the same 30 random inputs, their decoded outputs compared with each other and with Tracr's
own evaluator (`rasp.evaluate`), numbers within 1e-3 (Tracr's numerical MLPs are
approximate). Parameters are counted alike: every weight and bias,
embeddings included, the unembedding left out on both sides (Tracr's is an implicit 0/1
read-out of the output's directions, not a parameter).

Run by bench/run.sh in the venv `make test` builds; alone:
  VENV/bin/python bench/tracr_live.py [N ...]     (default: 10 20)
A compile that Tracr refuses, or that takes longer than TRACR_TIMEOUT seconds (default
300), is reported as such.
"""

import multiprocessing as mp
import os
import random
import sys
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def programs(n):
    """(name, build, vocab, input generator) for Tracr's lib programs at length n."""
    from tracr.compiler import lib
    from tracr.rasp import rasp

    def any_of(vocab):
        return lambda rng: [rng.choice(vocab) for _ in range(rng.randint(1, n))]

    def distinct(vocab):
        return lambda rng: rng.sample(vocab, rng.randint(1, min(n, len(vocab))))

    abc = ["a", "b", "c"]
    nums = list(range(1, n + 1))
    return [
        ("length", lambda: lib.make_length(), abc, any_of(abc)),
        ("reverse", lambda: lib.make_reverse(rasp.tokens), abc, any_of(abc)),
        ("hist", lambda: lib.make_hist(), abc, any_of(abc)),
        ("sort_unique", lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens), nums, distinct(nums)),
        ("sort", lambda: lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n, min_key=1), [1, 2, 3],
         any_of([1, 2, 3])),
        ("sort_freq", lambda: lib.make_sort_freq(n), [1, 2, 3], any_of([1, 2, 3])),
        ("frac_prevs", lambda: lib.make_frac_prevs(rasp.tokens == "x"), ["x", "y"], any_of(["x", "y"])),
        ("pair_balance", lambda: lib.make_pair_balance(rasp.tokens, "(", ")"), ["(", ")"], any_of(["(", ")"])),
        ("shuffle_dyck2", lambda: lib.make_shuffle_dyck2(), ["(", ")", "{", "}"], any_of(["(", ")", "{", "}"])),
    ]


def tracr_sizes(model):
    import jax

    c = model.model_config
    params = sum(int(x.size) for x in jax.tree_util.tree_leaves(model.params))
    d_model = model.params["token_embed"]["embeddings"].shape[1]
    return {"layers": c.num_layers, "heads": c.num_heads, "residual": d_model, "mlp": c.mlp_hidden_size,
            "params": params}


def raspc_sizes(model):
    c = model.config
    params = sum(int(a.size) for k, a in model.weights.items() if not k.startswith("unembed."))
    return {"layers": c["n_layers"], "heads": c["n_heads"], "residual": c["d_model"], "mlp": c["d_mlp"],
            "params": params}


def _tracr_worker(name, n, inputs, queue):
    """Compiles with Tracr in a child process (so that a slow compile can be stopped) and
    returns its sizes, time and outputs."""
    try:
        from tracr.compiler import compiling

        build = {p[0]: p for p in programs(n)}[name][1]
        t = time.perf_counter()
        model = compiling.compile_rasp_to_model(build(), vocab=set({p[0]: p for p in programs(n)}[name][2]),
                                                max_seq_len=n, compiler_bos="BOS")
        secs = time.perf_counter() - t
        outs = [model.apply(["BOS"] + xs).decoded[1:] for xs in inputs]
        queue.put(("ok", tracr_sizes(model), secs, outs))
    except Exception as e:  # Tracr's refusals are part of the table
        queue.put(("refused", f"{type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}", 0, None))


def same(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= 1e-3 * max(1.0, abs(b))
    return a == b


def main():
    import raspc.tracr as rt
    from tracr.rasp import rasp as trasp

    lengths = [int(x) for x in sys.argv[1:]] or [10, 20]
    timeout = float(os.environ.get("TRACR_TIMEOUT", "300"))
    cols = ("layers", "heads", "residual", "mlp", "params")
    print(f"{'program':<14} {'N':>3}  " + "  ".join(f"{c:>15}" for c in cols) +
          f"  {'compile s':>15}  {'same':>5}  {'exact':>13}")
    print(f"{'':<14} {'':>3}  " + "  ".join(f"{'Tracr / raspc':>15}" for _ in cols) + f"  {'Tracr / raspc':>15}  {'':>5}  {'Tracr / raspc':>13}")
    ctx = mp.get_context("spawn")
    for n in lengths:
        for name, build, vocab, gen in programs(n):
            rng = random.Random(f"{name}{n}")
            inputs = [gen(rng) for _ in range(30)]
            program = build()
            want = [trasp.evaluate(program, xs) for xs in inputs]
            t = time.perf_counter()
            ours = rt.compile_rasp_to_model(program, vocab=set(vocab), max_seq_len=n, compiler_bos="BOS")
            our_secs = time.perf_counter() - t
            our_outs = [ours.apply(["BOS"] + xs).decoded[1:] for xs in inputs]
            rs = raspc_sizes(ours.raspc_model)
            q = ctx.Queue()
            proc = ctx.Process(target=_tracr_worker, args=(name, n, inputs, q))
            proc.start()
            try:
                status, ts, tsecs, touts = q.get(timeout=timeout)
            except Exception:
                status, ts, tsecs, touts = "timeout", f"over {timeout:.0f} s", 0, None
            proc.join(5)
            if proc.is_alive():
                proc.kill()
            if status != "ok":
                print(f"{name:<14} {n:>3}  Tracr: {status} ({ts}); raspc: " +
                      ", ".join(f"{c} {rs[c]}" for c in cols) + f", {our_secs:.3f} s")
                continue
            def agree(xs, ys):
                return sum(len(x) == len(y) and all(same(a, b) for a, b in zip(x, y)) for x, y in zip(xs, ys))

            k = len(inputs)
            print(f"{name:<14} {n:>3}  " + "  ".join(f"{ts[c]:>7} / {rs[c]:<5}" for c in cols) +
                  f"  {tsecs:>6.2f} / {our_secs:<6.3f}  {agree(touts, our_outs):>2}/{k}"
                  f"  {agree(touts, want):>2}/{k} / {agree(our_outs, want):>2}/{k}", flush=True)


if __name__ == "__main__":
    main()
