#!/usr/bin/python3
"""CRATE forward throughput of the PyTorch reference (tools/crate_torch.py) on the CPU and,
where torch sees a GPU, on CUDA (float32, TF32 off as in raspc), timed as bench_crate
times raspc: one warm-up at the first batch size, then per batch size repeats within the
budget (at least 2, at most 25), the median. One JSON object per line.

  crate_torch_bench.py CHECKPOINT.pth IMAGES.h5 BUDGET_SECONDS THREADS CONFIG BATCH...
  crate_torch_bench.py --table RESULTS.jsonl     the side-by-side table of both
"""
import json
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import crate_torch  # noqa: E402


def blas_library():
    """The BLAS PyTorch's CPU products use: the one it was built with (the PyPI wheel: MKL,
    linked in), else the library this process loaded (Debian's python3-torch uses the
    system's libblas.so.3: the reference BLAS unless an optimised one is installed)."""
    import torch
    config = torch.__config__.show()
    if "BLAS_INFO=mkl" in config:
        return f"MKL, built into PyTorch {torch.__version__}"
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            name = os.path.basename(line.split()[-1]) if "/" in line else ""
            if ("blas" in name or "mkl" in name) and "cublas" not in name:
                path = os.path.realpath(line.split()[-1])
                libs.add(path)
    def label(p):
        if "openblas" in p:
            return f"OpenBLAS ({p})"
        if "/blas/libblas" in p:
            return f"the reference BLAS ({p})"
        return p
    return ", ".join(label(p) for p in sorted(libs)) or "none found"


def bench(argv):
    import h5py
    import torch
    ckpt, images_h5, budget, threads, preset = argv[0], argv[1], float(argv[2]), int(argv[3]), argv[4]
    batches = [int(b) for b in argv[5:]]
    torch.set_num_threads(threads)
    sd = crate_torch.state_dict_of(torch.load(ckpt, map_location="cpu", weights_only=True))
    cfg, problems = crate_torch.infer_config(sd, preset=preset)
    if problems:
        sys.exit(f"crate_torch_bench: {ckpt}: " + "; ".join(problems))
    with h5py.File(images_h5, "r") as f:
        images = torch.from_numpy(f["images"][()])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        print(json.dumps({"impl": "pytorch", "device": "cuda", "skipped": "torch.cuda.is_available() is False"}))
    torch.backends.cuda.matmul.allow_tf32 = False  # plain float32, as raspc's cuBLAS calls
    for device in devices:
        model = crate_torch.CRATE(cfg)
        model.load_state_dict(sd)
        model.eval().to(device)

        def forward(x):
            model(x)
            if device == "cuda":
                torch.cuda.synchronize()  # time the work, not its launch

        per_image = 0.0
        with torch.inference_mode():
            for i, b in enumerate(batches):
                x = images[:b].contiguous().to(device)
                if i == 0:
                    t0 = time.perf_counter()
                    forward(x)
                    per_image = (time.perf_counter() - t0) / b
                repeats = min(25, max(2, int(budget / max(per_image * b, 1e-9))))
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    forward(x)
                    times.append(time.perf_counter() - t0)
                per_image = times[0] / b
                med = statistics.median(times)
                print(json.dumps({"impl": "pytorch", "device": device, "dim": cfg["dim"], "depth": cfg["depth"],
                                  "batch": b, "threads": torch.get_num_threads(), "repeats": repeats,
                                  "median_s": round(med, 6), "images_per_s": round(b / med, 3),
                                  "blas": blas_library() if device == "cpu" else torch.cuda.get_device_name()}),
                      flush=True)


def table(path):
    rows = [json.loads(x) for x in open(path) if x.strip()]
    skipped = {(r["impl"], r["device"]): r["skipped"] for r in rows if "skipped" in r}
    rows = [r for r in rows if "skipped" not in r]
    names = {(v["dim"], v["depth"]): k for k, v in crate_torch.PRESETS.items()}
    got = {}
    for r in rows:
        got[(names.get((r["dim"], r["depth"]), f"d{r['dim']}"), r["batch"], r.get("device", "cpu"), r["impl"])] = r
    print(f"{'model':<6} {'params':>7} {'device':>6} {'batch':>5} {'raspc img/s':>12} {'PyTorch img/s':>14}"
          f" {'raspc/PyTorch':>14} {'repeats':>8}")
    for (name, batch, device, impl) in got:
        if impl != "raspc":
            continue
        ours, theirs = got[(name, batch, device, "raspc")], got.get((name, batch, device, "pytorch"))
        params = crate_torch.count_params(crate_torch.make_config(name)) / 1e6 if name in crate_torch.PRESETS else 0
        t = f"{theirs['images_per_s']:>14.2f}" if theirs else f"{'-':>14}"
        ratio = f"{ours['images_per_s'] / theirs['images_per_s']:>13.2f}x" if theirs else f"{'-':>14}"
        reps = f"{ours['repeats']}/{theirs['repeats'] if theirs else '-'}"
        print(f"{name:<6} {params:>6.2f}M {device:>6} {batch:>5} {ours['images_per_s']:>12.2f} {t} {ratio} {reps:>8}")
    for (impl, device), why in sorted(skipped.items()):
        print(f"{impl} on {device}: skipped ({why})")
    first = next((r for r in rows if r["impl"] == "pytorch" and r.get("device", "cpu") == "cpu"), None)
    threads = {r["impl"]: r["threads"] for r in rows}
    print(f"threads: raspc {threads.get('raspc', '-')} (Eigen), PyTorch {threads.get('pytorch', '-')} "
          f"(torch.set_num_threads); repeats raspc/PyTorch, median reported; PyTorch's BLAS: "
          f"{first['blas'] if first else '-'}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        table(sys.argv[2])
    elif len(sys.argv) >= 7:
        bench(sys.argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
