#!/usr/bin/env bash
# Runs a fuzzer for a bounded time: tests/fuzz/run.sh EXE SECONDS
#
# The working corpus (tests/fuzz/corpus-work/NAME/, gitignored) is rebuilt from
# scratch each run, so runs are reproducible: for fuzz_frontend from examples/, the
# prelude and tests/fuzz/seeds/; for fuzz_hdf5 from tests/fuzz/seeds-hdf5/ (model,
# CRATE model and images files written by raspc and by h5py). Crash, leak and timeout inputs are written to the repository root
# (crash-*, leak-*, timeout-*, oom-*; gitignored). Exits non-zero when libFuzzer
# found a problem.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 FUZZ_EXECUTABLE SECONDS" >&2
  exit 2
fi
exe=$(realpath "$1")
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
name=$(basename "$exe")
work=$here/corpus-work/$name
log=$work/fuzz.log

rm -rf "$work"
mkdir -p "$work/corpus"
case $name in
fuzz_hdf5)
  cp "$here"/seeds-hdf5/* "$work/corpus/"
  # libhdf5 (not instrumented, not ours) leaks a little on some of its error paths.
  opts=(-max_len=65536)
  leaks=0
  ;;
*)
  cp "$root"/examples/*.rasp "$root/frontend/stdlib/prelude.rasp" "$work/corpus/"
  # Seeds may share names with examples; keep both.
  for f in "$here"/seeds/*; do
    [[ -f $f ]] || continue
    cp "$f" "$work/corpus/seed-$(basename "$f")"
  done
  opts=(-dict="$here/rasp.dict" -max_len=4096)
  leaks=1
  ;;
esac
nseeds=$(ls "$work/corpus" | wc -l)

echo "fuzz: $(basename "$exe") for ${seconds}s from $nseeds seeds (log: ${log#"$root"/})"
status=0
(
  cd "$root"
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=$leaks} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$exe" "$work/corpus" "${opts[@]}" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$root/" -print_final_stats=1
) >"$log" 2>&1 || status=$?

stat() { grep -m1 "^stat::$1:" "$log" | awk '{print $2}' || true; }
execs=$(stat number_of_executed_units)
rate=$(stat average_exec_per_sec)
added=$(stat new_units_added)
rss=$(stat peak_rss_mb)
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}' || true)
if [[ $status -ne 0 ]]; then
  echo "---- last lines of ${log#"$root"/} ----"
  tail -n 60 "$log"
  artifact=$(grep -o "Test unit written to [^ ]*" "$log" | tail -1 | sed "s/Test unit written to //" || true)
  echo "fuzz: FAILED (exit $status) after ${execs:-?} execs; input: ${artifact:-none}"
  exit "$status"
fi
echo "fuzz: OK ${execs:-?} execs in ${seconds}s (${rate:-?}/s), coverage ${cov:-?}, ${added:-?} new inputs, peak RSS ${rss:-?} MB"
