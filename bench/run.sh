#!/usr/bin/env bash
# All benchmarks in one run: compile sizes and times beside Tracr's, forward throughput
# of the CPU runtime beside the numpy forward on the same model, and CRATE's forward
# beside PyTorch's (CRATE_CONFIGS="tiny base", CRATE_BATCHES="1 64"; several minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
echo "== compile (graph -> weights), median of up to 7 runs; Tracr beside it below, run live"
# A row over its budget is marked SLOW and makes bench_compile exit 1: the rest still runs.
"$BUILD/bench/bench_compile" . || echo "(bench_compile: some rows over budget, marked above)"
model=$(mktemp --suffix=.h5)
trap 'rm -f "$model"' EXIT
# The forward pass beside PyTorch (bench/forward_torch.py: the same weights and computation
# with PyTorch's CPU kernels, from the venv `make test` builds) and the numpy forward.
torch_venv=$(./scripts/python-venv.sh python/requirements-test.txt)
for n in 32 64; do
  "$BUILD/tools/raspc" compile examples/sort.rasp --max-len "$n" -o "$model" --force >/dev/null
  echo
  echo "== forward throughput: sort, N = $n, vocabulary {1,2,3} ($(nproc) cores)"
  /usr/bin/time -f "raspc peak resident memory: %M KB" "$BUILD/bench/bench_forward" "$model" "${SECONDS_PER_ROW:-2}" 2>&1
  "$torch_venv/bin/python" bench/forward_torch.py "$model" "${SECONDS_PER_ROW:-2}"
  /usr/bin/python3 bench/forward_numpy.py "$model" "${SECONDS_PER_ROW:-2}"
done

# Tracr run live beside raspc, like for like (bench/tracr_lib_bench.py): Tracr's lib.py
# programs (raspc compiles their literal transcriptions, bench/programs/tracr_*.rasp) and
# issue 12's corpus of Tracr-API programs (python/tests/tracr_programs), compiled by both,
# same-function checked, parameters counted alike. In the venv `make test` builds (pinned
# tracr-pypi, jax, dm-haiku), with the package. TRACR_LENGTHS (default 10 20 40 64) and
# TRACR_CORPUS_LENGTHS (default 10) choose the lengths; BENCH_FAST=1 runs lib.py at N = 10
# only and skips the corpus (each Tracr compile takes about 10 s); TRACR_TIMEOUT (s, 300).
if [ -n "${BENCH_FAST:-}" ]; then
  tracr_lengths=${TRACR_LENGTHS:-10}; corpus_lengths=${TRACR_CORPUS_LENGTHS:-}
else
  tracr_lengths=${TRACR_LENGTHS:-10 20 40 64}; corpus_lengths=${TRACR_CORPUS_LENGTHS:-10}
fi
venv=$(./scripts/python-venv.sh python/requirements-test.txt)
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation . >/dev/null
echo
echo "== raspc beside real Tracr, run live: Tracr's lib.py, transcribed literally (N = $tracr_lengths)"
# shellcheck disable=SC2086 # the lengths are separate arguments
"$venv/bin/python" bench/tracr_lib_bench.py lib $tracr_lengths
if [ -n "$corpus_lengths" ]; then
  echo
  echo "== raspc beside real Tracr, run live: the Tracr-API corpus, python/tests/tracr_programs (N = $corpus_lengths)"
  # shellcheck disable=SC2086
  "$venv/bin/python" bench/tracr_lib_bench.py corpus $corpus_lengths
fi

# Start-up: what one command costs before any work (scripts call raspc hundreds of times),
# from /usr/bin/time -v: wall seconds and peak resident memory.
echo
echo "== start-up: one command on examples/sort.rasp (N = 10), /usr/bin/time -v"
startup=$(mktemp --suffix=.h5)
"$BUILD/tools/raspc" compile examples/sort.rasp -o "$startup" --force >/dev/null
startup_row() { # the command's arguments
  local out wall rss
  out=$(/usr/bin/time -v "$BUILD/tools/raspc" "$@" 2>&1 >/dev/null)
  wall=$(echo "$out" | sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p')
  rss=$(echo "$out" | sed -n 's/.*Maximum resident set size (kbytes): //p')
  printf '%-14s %9s %12s\n' "raspc $1" "$wall" "$rss"
}
printf '%-14s %9s %12s\n' "command" "wall" "peak RSS KB"
startup_row eval examples/sort.rasp --input "3 1 2"
startup_row compile examples/sort.rasp -o "$startup" --force
startup_row run "$startup" --input "3 1 2"
startup_row verify examples/sort.rasp --max-len 3
rm -f "$startup"

# Threads: `raspc run` of sort (N = 64) over 1,024 lines, one thread against one per core,
# on an idle machine and beside one busy process per core (a shared node).
echo
echo "== run threads: sort, N = 64, 1,024 lines ($(nproc) cores), seconds"
model64=$(mktemp --suffix=.h5)
lines=$(mktemp)
trap 'rm -f "$model" "$model64" "$lines"' EXIT
"$BUILD/tools/raspc" compile examples/sort.rasp --max-len 64 -o "$model64" --force >/dev/null
/usr/bin/python3 -c 'import random; random.seed(1); print("\n".join(" ".join(random.choice("123") for _ in range(64)) for _ in range(1024)))' >"$lines"
time_run() { /usr/bin/time -f %e "$BUILD/tools/raspc" run "$model64" --inputs "$lines" --threads "$1" 2>&1 >/dev/null | tail -1; }
printf '%-14s %10s %10s\n' "" "--threads 1" "--threads 0"
printf '%-14s %10s %10s\n' "idle" "$(time_run 1)" "$(time_run 0)"
busy=()
for _ in $(seq "$(nproc)"); do (while :; do :; done) & busy+=($!); done
printf '%-14s %10s %10s\n' "busy cores" "$(time_run 1)" "$(time_run 0)"
kill "${busy[@]}" 2>/dev/null; wait "${busy[@]}" 2>/dev/null || true

# CRATE on the CPU: raspc's CrateExecutor beside the PyTorch reference, same random weights
# (a checkpoint converted by tools/crate_convert.py) and images, same thread count. PyTorch
# from PyPI (the venv above: its own MKL kernels), not Debian's build on the system BLAS.
echo
echo "== CRATE forward throughput, CPU ($(nproc) cores): raspc beside PyTorch (tools/crate_torch.py)"
torch_py="$torch_venv/bin/python"
if ! "$torch_py" -c "import torch, h5py" 2>/dev/null; then
  echo "(skipped: $torch_py cannot import torch and h5py; python/requirements-test.txt lists them)"
else
  crate=$(mktemp -d)
  trap 'rm -f "$model" "$model64" "$lines"; rm -rf "$crate"' EXIT
  batches=${CRATE_BATCHES:-1 64}
  max=$(echo "$batches" | tr ' ' '\n' | sort -n | tail -1)
  "$torch_py" tools/crate_torch.py images --config tiny --batch "$max" --seed 1 -o "$crate/images.h5" >/dev/null
  for cfg in ${CRATE_CONFIGS:-tiny base}; do
    "$torch_py" tools/crate_torch.py checkpoint --config "$cfg" --seed 0 --format bare \
      -o "$crate/$cfg.pth" >/dev/null
    "$torch_py" tools/crate_convert.py "$crate/$cfg.pth" -o "$crate/$cfg.h5" --config "$cfg" >/dev/null
    # shellcheck disable=SC2086 # the batch sizes are separate arguments
    "$BUILD/bench/bench_crate" "$crate/$cfg.h5" "$crate/images.h5" "${SECONDS_PER_ROW:-2}" $batches >>"$crate/results"
    threads=$("$torch_py" -c 'import json, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
print([r for r in rows if r.get("device") == "cpu" and "threads" in r][-1]["threads"])' "$crate/results")
    # shellcheck disable=SC2086
    "$torch_py" bench/crate_torch_bench.py "$crate/$cfg.pth" "$crate/images.h5" "${SECONDS_PER_ROW:-2}" \
      "$threads" "$cfg" $batches >>"$crate/results"
  done
  "$torch_py" bench/crate_torch_bench.py --table "$crate/results"
fi
