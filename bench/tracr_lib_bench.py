"""raspc beside real Tracr, like for like, on two sets of programs:

  lib     every program of Tracr's lib.py: raspc compiles its literal transcription in
          raspc's RASP (bench/programs/tracr_*.rasp, from the text), Tracr compiles the
          lib.py original (the installed tracr-pypi);
  corpus  issue 12's corpus, python/tests/tracr_programs (programs written with Tracr's
          API): raspc.tracr compiles each program, Tracr compiles the same program
          (converted to real Tracr objects by raspc.tracr.convert.to_tracr).

For each program and length N both models run on the same random inputs (lengths N, N/2
and 3). Columns: layers, most heads in a layer, residual width, MLP width, parameters,
compile seconds (Tracr / raspc), and
  same   inputs where raspc's model and Tracr's model give the same outputs: decoded
         outputs equal, numbers within 1e-3 (Tracr's numerical MLPs approximate). Where
         Tracr's own evaluator gives None (an aggregate that selects nothing, with Tracr's
         default None), Tracr's model decodes an arbitrary value: raspc must give None
         there and Tracr's value is not compared.
  = Tracr eval  inputs where Tracr's model / raspc's model agree with Tracr's evaluator
         (rasp.evaluate of the Tracr program; None positions skipped). A row has the same
         function when raspc's model equals Tracr's, or, where Tracr's model is wrong (it
         disagrees with its own evaluator, e.g. length at N = max_seq_len), Tracr's evaluator.
  exact  inputs where raspc's model equals raspc's interpreter exactly (lib: raspc.eval
         of the same text; corpus: the evaluator of raspc.tracr, whose program it compiled).
Parameters are counted alike on both sides: every weight and bias, token and position
embeddings included, the unembedding left out on both (Tracr's is an implicit read-out
of the output's directions with no parameters; raspc's unembed.* is left out to match).
Compile seconds: Tracr's compile_rasp_to_model (assembly included, in a child process
that has already imported jax); raspc's raspc.compile / compile_rasp_to_model in process.

Usage (in the venv with tracr-pypi, jax, dm-haiku, and the raspc package):
  python bench/tracr_lib_bench.py lib [N ...]      (default 10 20 40 64)
  python bench/tracr_lib_bench.py corpus [N ...]   (default 10)
Env: TRACR_TIMEOUT (seconds per Tracr compile, default 300), BENCH_INPUTS (default 12),
BENCH_ONLY (comma-separated program names).
"""

import multiprocessing as mp
import os
import queue as queue_mod
import random
import re
import sys
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROGRAMS = os.path.join(HERE, "programs")
sys.path.insert(0, os.path.join(ROOT, "python", "tests"))  # the corpus package


# --- lib.py: (name, .rasp file, Tracr builder, vocab, input generator) per length ------

def lib_programs(n):
    from tracr.compiler import lib
    from tracr.rasp import rasp

    def any_of(vocab):
        return lambda rng, k: [rng.choice(vocab) for _ in range(k)]

    def distinct(vocab):
        return lambda rng, k: rng.sample(vocab, min(k, len(vocab)))

    abc, nums = ["a", "b", "c"], list(range(1, n + 1))
    return [
        ("length", "tracr_make_length", lambda: lib.make_length(), abc, any_of(abc)),
        ("reverse", "tracr_make_reverse", lambda: lib.make_reverse(rasp.tokens), abc, any_of(abc)),
        ("hist", "tracr_make_hist", lambda: lib.make_hist(), abc, any_of(abc)),
        ("sort_unique", "tracr_make_sort_unique", lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens),
         nums, distinct(nums)),
        ("sort", "tracr_make_sort", lambda: lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n, min_key=1),
         [1, 2, 3], any_of([1, 2, 3])),
        ("sort_freq", "tracr_make_sort_freq", lambda: lib.make_sort_freq(n), [1, 2, 3], any_of([1, 2, 3])),
        ("frac_prevs", "tracr_make_frac_prevs", lambda: lib.make_frac_prevs(rasp.tokens == "x"), ["x", "y"],
         any_of(["x", "y"])),
        ("pair_balance", "tracr_make_pair_balance", lambda: lib.make_pair_balance(rasp.tokens, "(", ")"),
         ["(", ")"], any_of(["(", ")"])),
        ("shuffle_dyck2", "tracr_make_shuffle_dyck2", lambda: lib.make_shuffle_dyck2(), ["(", ")", "{", "}"],
         any_of(["(", ")", "{", "}"])),
        ("shift_by", "tracr_shift_by", lambda: lib.shift_by(1, rasp.tokens), abc, any_of(abc)),
        ("detect_pattern", "tracr_detect_pattern", lambda: lib.detect_pattern(rasp.tokens, "abc"), abc,
         any_of(abc)),
        ("count_less_freq", "tracr_make_count_less_freq", lambda: lib.make_count_less_freq(2), abc, any_of(abc)),
        ("count", "tracr_make_count", lambda: lib.make_count(rasp.tokens, "a"), abc, any_of(abc)),
        ("nary_sequencemap", "tracr_make_nary_sequencemap",
         lambda: lib.make_nary_sequencemap(lambda x, y, z: x + y * z, rasp.tokens, rasp.indices, rasp.tokens),
         [1, 2, 3], any_of([1, 2, 3])),
    ]


def lib_source(stem, n):
    """The transcription's text; a `max_seq_len = ...;` line (make_sort's argument) is set to n."""
    with open(os.path.join(PROGRAMS, stem + ".rasp")) as f:
        text = f.read()
    return re.sub(r"(?m)^max_seq_len = \d+;", f"max_seq_len = {n};", text)


def corpus_entries():
    import tracr_programs

    return tracr_programs.CORPUS


def build_at(entry, n):
    """The corpus program for length n: entries that pass the corpus's length L to a lib
    function (make_sort's max_seq_len) get n, so that their keys stay unique at n."""
    import tracr_programs

    saved, tracr_programs.L = tracr_programs.L, n
    try:
        return entry.build()
    finally:
        tracr_programs.L = saved


# --- sizes, counted alike --------------------------------------------------------------

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


# --- Tracr in a child process -----------------------------------------------------------

def _tracr_job(mode, name, n, inputs):
    from tracr.compiler import compiling
    from tracr.rasp import rasp

    if mode == "lib":
        spec = {p[0]: p for p in lib_programs(n)}[name]
        program, vocab, causal = spec[2](), spec[3], False
    else:
        from raspc.tracr import convert

        entry = {e.name: e for e in corpus_entries()}[name]
        program, vocab, causal = convert.to_tracr(build_at(entry, n)), entry.vocab, entry.causal
    t = time.perf_counter()
    model = compiling.compile_rasp_to_model(program, vocab=set(vocab), max_seq_len=n, causal=causal,
                                            compiler_bos="BOS", compiler_pad="PAD")
    secs = time.perf_counter() - t
    outs = [model.apply(["BOS"] + xs).decoded[1:] for xs in inputs]
    want = [rasp.evaluate(program, xs) for xs in inputs]
    return ("ok", tracr_sizes(model), secs, outs, want)


def _tracr_worker(jobs, results):
    """Compiles a list of jobs with Tracr, one result per job, in order (a child process,
    so that a compile past the timeout can be stopped)."""
    import logging

    import jax  # noqa: F401  (imported once, before the first timed compile)

    # Tracr logs a warning per unreachable argument of a failing map (x % 0): not a result.
    logging.disable(logging.WARNING)

    for i, (mode, name, n, inputs) in enumerate(jobs):
        try:
            results.put((i,) + _tracr_job(mode, name, n, inputs))
        except Exception as e:  # Tracr's refusals are part of the table
            msg = str(e).splitlines()[0][:70] if str(e) else ""
            results.put((i, "refused", f"{type(e).__name__}: {msg}", 0, None, None))


def run_tracr(jobs, timeout):
    """Results for every job; a job past `timeout` is reported as such and the rest go on
    in a fresh child."""
    ctx = mp.get_context("spawn")
    start = 0
    while start < len(jobs):
        q = ctx.Queue()
        proc = ctx.Process(target=_tracr_worker, args=(jobs[start:], q), daemon=True)
        proc.start()
        done = start
        while done < len(jobs):
            try:
                r = q.get(timeout=timeout + (60 if done == start else 0))  # the first pays jax's import
            except queue_mod.Empty:
                yield done, ("timeout", f"over {timeout:.0f} s", 0, None, None)
                done += 1
                break
            yield start + r[0], r[1:]
            done = start + r[0] + 1
        if proc.is_alive():
            proc.join(2)
        if proc.is_alive():
            proc.kill()
        proc.join()
        start = done


# --- comparison -------------------------------------------------------------------------

def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, str)


def close(a, b, tol):
    if _num(a) and _num(b):
        return abs(float(a) - float(b)) <= tol * max(1.0, abs(float(b)))
    return a == b


def same_function(ours, theirs, want):
    """One input: raspc's outputs against Tracr's model where Tracr's evaluator is not None,
    raspc's None where it is."""
    if len(ours) != len(theirs):
        return False
    for a, b, w in zip(ours, theirs, want):
        if w is None:
            if a is not None:
                return False
        elif not close(a, b, 1e-3):
            return False
    return True


def agrees(model, want, tol):
    """One input: a model's outputs against Tracr's evaluator, None positions skipped."""
    return len(model) == len(want) and all(w is None or close(a, w, tol) for a, w in zip(model, want))


def exact(ours, ref):
    return len(ours) == len(ref) and all(close(a, b, 1e-9) for a, b in zip(ours, ref))


# --- the table ----------------------------------------------------------------------------

COLS = ("layers", "heads", "residual", "mlp", "params")


def header():
    print(f"{'program':<40} {'N':>3}  " + "  ".join(f"{c:>17}" for c in COLS) +
          f"  {'compile s':>17}  {'same':>5}  {'= Tracr eval':>13}  {'exact':>5}")
    print(f"{'':<40} {'':>3}  " + "  ".join(f"{'Tracr / raspc':>17}" for _ in COLS) +
          f"  {'Tracr / raspc':>17}  {'':>5}  {'Tracr / raspc':>13}  {'raspc':>5}", flush=True)


def row(name, n, ours, our_secs, tracr, ok_same, ok_exact, k, t_eval=0, r_eval=0):
    if tracr[0] != "ok":
        return (f"{name:<40} {n:>3}  Tracr {tracr[0]} ({tracr[1]}); raspc " +
                ", ".join(f"{c} {ours[c]}" for c in COLS) + f", {our_secs:.3f} s, exact {ok_exact}/{k}")
    ts = tracr[1]
    return (f"{name:<40} {n:>3}  " + "  ".join(f"{ts[c]:>8} / {ours[c]:<6}" for c in COLS) +
            f"  {tracr[2]:>8.2f} / {our_secs:<6.3f}  {ok_same:>2}/{k:<2}  {t_eval:>2}/{k:<2}/ {r_eval:>2}/{k:<2}"
            f"  {ok_exact:>2}/{k:<2}")


def inputs_for(gen, n, rng, count):
    lengths = sorted({n, max(1, n // 2), min(n, 3)}, reverse=True)
    return [gen(rng, lengths[i % len(lengths)]) for i in range(count)]


def main():
    args = sys.argv[1:]
    mode = args[0] if args and args[0] in ("lib", "corpus") else "lib"
    lengths = [int(x) for x in args[1:] if x.isdigit()] or ([10, 20, 40, 64] if mode == "lib" else [10])
    timeout = float(os.environ.get("TRACR_TIMEOUT", "300"))
    count = int(os.environ.get("BENCH_INPUTS", "12"))
    only = {s for s in os.environ.get("BENCH_ONLY", "").split(",") if s}

    import raspc

    rows = []  # (name, n, ours, tracr, same ok, exact ok)
    header()
    for n in lengths:
        work = []  # (name, ours sizes, our secs, our outs, inputs, exact count)
        if mode == "lib":
            for name, stem, _, vocab, gen in lib_programs(n):
                if only and name not in only:
                    continue
                rng = random.Random(f"{name}{n}")
                inputs = inputs_for(gen, n, rng, count)
                text = lib_source(stem, n)
                voc = " ".join(str(v) for v in vocab)
                t = time.perf_counter()
                try:
                    model = raspc.compile(text, vocab=voc, max_len=n)
                except Exception as e:
                    # Tracr still runs: the row says whether Tracr compiles what raspc refuses.
                    work.append((stem, name, str(e).splitlines()[0][:120], 0, None, inputs, 0))
                    continue
                secs = time.perf_counter() - t
                outs = model.run([[str(x) for x in xs] for xs in inputs])
                ref = raspc.eval(text, [[str(x) for x in xs] for xs in inputs], vocab=voc, max_len=n)
                k_exact = sum(exact(a, b) for a, b in zip(outs, ref))
                work.append((stem, name, raspc_sizes(model), secs, outs, inputs, k_exact))
        else:
            import raspc.tracr as rt
            from raspc.tracr import rasp as rrasp

            for e in corpus_entries():
                if only and e.name not in only:
                    continue
                rng = random.Random(f"{e.name}{n}")
                if e.gen is not None:  # the entry's own generator (distinct keys, full lengths)
                    inputs = [e.gen(rng) for _ in range(count)]
                else:
                    inputs = inputs_for(lambda r, k: [r.choice(e.vocab) for _ in range(k)], n, rng, count)
                program = build_at(e, n)
                t = time.perf_counter()
                try:
                    model = rt.compile_rasp_to_model(program, vocab=set(e.vocab), max_seq_len=n, causal=e.causal,
                                                     compiler_bos="BOS", compiler_pad="PAD")
                except Exception as ex:
                    work.append((e.name, e.name, str(ex).splitlines()[0][:120], 0, None, inputs, 0))
                    continue
                secs = time.perf_counter() - t
                outs = [model.apply(["BOS"] + xs).decoded[1:] for xs in inputs]
                ref = [rrasp.evaluate(program, xs) for xs in inputs]
                k_exact = sum(exact(a, b) for a, b in zip(outs, ref))
                work.append((e.name, e.name, raspc_sizes(model.raspc_model), secs, outs, inputs, k_exact))
        jobs = [(mode, key, n, inputs) for (_, key, _, _, _, inputs, _) in work]
        for i, tracr in run_tracr(jobs, timeout):
            label, _, ours, secs, outs, inputs, k_exact = work[i]
            if outs is None:  # raspc refused; ours is its message
                t = (f"Tracr {', '.join(f'{c} {tracr[1][c]}' for c in COLS)}, {tracr[2]:.2f} s"
                     if tracr[0] == "ok" else f"Tracr {tracr[0]} ({tracr[1]})")
                print(f"{label:<40} {n:>3}  raspc refused ({ours}); {t}", flush=True)
                rows.append((label, n, None, tracr, False, False, False))
                continue
            k_same = t_eval = r_eval = 0
            if tracr[0] == "ok":
                k_same = sum(same_function(a, b, w) for a, b, w in zip(outs, tracr[3], tracr[4]))
                t_eval = sum(agrees(b, w, 1e-3) for b, w in zip(tracr[3], tracr[4]))
                r_eval = sum(agrees(a, w, 1e-6) for a, w in zip(outs, tracr[4]))
            print(row(label, n, ours, secs, tracr, k_same, k_exact, len(inputs), t_eval, r_eval), flush=True)
            # The same function: raspc's model equals Tracr's, or, where Tracr's model is wrong
            # (it disagrees with Tracr's own evaluator), raspc's equals Tracr's evaluator.
            k = len(inputs)
            rows.append((label, n, ours, tracr, k_same == k or r_eval == k, k_exact == k, t_eval == k))
        if len(lengths) > 1:
            print(f"-- N = {n}:", end="")
            summary([r for r in rows if r[1] == n])
            print(flush=True)
    summary(rows)


def summary(rows):
    ok = [r for r in rows if r[3] is not None and r[3][0] == "ok"]  # Tracr compiled
    both = [r for r in ok if r[2] is not None]
    lay = sum(r[2]["layers"] <= r[3][1]["layers"] for r in both)
    fewer = sum(r[2]["layers"] < r[3][1]["layers"] for r in both)
    par = sum(r[2]["params"] <= r[3][1]["params"] for r in both)
    both_ok = sum(r[2]["layers"] <= r[3][1]["layers"] and r[2]["params"] <= r[3][1]["params"] for r in both)
    same = sum(r[4] for r in both)
    ex = sum(r[5] for r in rows if r[2] is not None)
    print(f"\n{len(rows)} rows; Tracr compiled {len(ok)}, refused or timed out {len(rows) - len(ok)}; "
          f"raspc refused {sum(r[2] is None for r in rows)} ({sum(r[2] is None for r in ok)} that Tracr compiles)")
    print(f"of the {len(both)} rows both compile: layers <= Tracr {lay}, fewer layers {fewer}, "
          f"params <= Tracr {par}, layers and params <= Tracr {both_ok}; same function on every input {same}; "
          f"raspc exact on every input {ex}/{sum(r[2] is not None for r in rows)}")
    tracr_wrong = [f"{r[0]} N={r[1]}" for r in both if not r[6]]
    if tracr_wrong:
        print("rows where Tracr's model disagrees with Tracr's own evaluator: " + ", ".join(tracr_wrong))
    miss = [f"{r[0]} N={r[1]}" for r in ok if r[2] is None or r[2]["layers"] > r[3][1]["layers"] or
            r[2]["params"] > r[3][1]["params"] or not r[4] or not r[5]]
    if miss:
        print("rows missing a target (raspc compiles, layers, params, same, exact): " + ", ".join(miss))


if __name__ == "__main__":
    main()
