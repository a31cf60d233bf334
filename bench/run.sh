#!/usr/bin/env bash
# All benchmarks in one run: compile sizes and times beside Tracr's, then forward
# throughput of the CPU runtime beside the numpy forward on the same model.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
echo "== compile (graph -> weights), median of 7 runs"
"$BUILD/bench/bench_compile" .
model=$(mktemp --suffix=.h5)
trap 'rm -f "$model"' EXIT
"$BUILD/tools/raspc" compile examples/sort.rasp --max-len 32 -o "$model" --force >/dev/null
echo
echo "== forward throughput: sort, N = 32, vocabulary {1,2,3} ($(nproc) cores)"
"$BUILD/bench/bench_forward" "$model" "${SECONDS_PER_ROW:-2}"
/usr/bin/python3 bench/forward_numpy.py "$model" "${SECONDS_PER_ROW:-2}"
