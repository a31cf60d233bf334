#!/usr/bin/env bash
# Runs the front-end fuzzer for a bounded time: tests/fuzz/run.sh EXE SECONDS
#
# The working corpus (tests/fuzz/corpus-work/, gitignored) is rebuilt from scratch
# each run from examples/, the prelude and tests/fuzz/seeds/, so runs are
# reproducible. Crash, leak and timeout inputs are written to the repository root
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
work=$here/corpus-work
log=$work/fuzz.log

rm -rf "$work"
mkdir -p "$work/corpus"
cp "$root"/examples/*.rasp "$root/frontend/stdlib/prelude.rasp" "$work/corpus/"
# Seeds may share names with examples; keep both.
for f in "$here"/seeds/*; do
  [[ -f $f ]] || continue
  cp "$f" "$work/corpus/seed-$(basename "$f")"
done
nseeds=$(ls "$work/corpus" | wc -l)

echo "fuzz: $(basename "$exe") for ${seconds}s from $nseeds seeds (log: ${log#"$root"/})"
status=0
(
  cd "$root"
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$exe" "$work/corpus" \
    -dict="$here/rasp.dict" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
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
