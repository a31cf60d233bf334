#!/bin/bash
# Checks suite programs: the header lines, an exhaustive exact `raspc verify`, the compile
# and its size. Prints one row per program; exits 1 if any row has a note.
# Usage: scripts/check_suite_programs.sh [NAME.rasp...]   (default: every suite/programs/*.rasp)
# RASPC names the binary (default: build-dev/tools/raspc, else build/tools/raspc).
root=$(cd "$(dirname "$0")/.." && pwd)
R=${RASPC:-$root/build-dev/tools/raspc}
[ -x "$R" ] || R=$root/build/tools/raspc
cd "$root/suite/programs" || exit 1
files=("$@"); [ ${#files[@]} -eq 0 ] && files=(*.rasp)
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%-34s %-20s %-7s %-3s %-3s %-6s %-7s %-7s %s\n' name category diff L H params inputs exact note
for f in "${files[@]}"; do
  f=${f##*/}
  n=${f%.rasp}
  cat=$(sed -n 's/^# category: //p' "$f" | head -1)
  dif=$(sed -n 's/^# difficulty: //p' "$f" | head -1)
  desc=$(sed -n 's/^# description: //p' "$f" | head -1)
  note=""
  [ "$(sed -n 1p "$f" | cut -c1-9)" = "# raspc: " ] || note="$note bad-line1"
  [ -n "$desc" ] || note="$note no-desc"
  case "$cat" in classic|arithmetic-map|string-map|sequence-map|selector-width|numerical-aggregate|causal|composite-selector) ;; *) note="$note bad-cat";; esac
  [ "$cat" = causal ] && ! sed -n 1p "$f" | grep -q -- --causal && note="$note no-causal-flag"
  case "$dif" in easy|medium|hard) ;; *) note="$note bad-diff";; esac
  v=$(timeout 300 "$R" verify "$f" --json 2>&1); vrc=$?
  c=$(timeout 300 "$R" compile "$f" -o "$tmp/model.h5" --force --json 2>&1); crc=$?
  L=$(echo "$c" | sed -n 's/.*"layers": \([0-9]*\).*/\1/p')
  H=$(echo "$c" | sed -n 's/.*"heads": \([0-9]*\).*/\1/p')
  P=$(echo "$c" | sed -n 's/.*"parameters": \([0-9]*\).*/\1/p')
  I=$(echo "$v" | sed -n 's/.*"inputs": \([0-9]*\).*/\1/p')
  ex=$(echo "$v" | grep -q '"exhaustive": true' && echo "$v" | grep -q '"mismatches": 0' && echo "$v" | grep -q '"rejected": 0' && [ $vrc -eq 0 ] && echo yes || echo NO)
  [ $crc -eq 0 ] || note="$note compile-failed"
  [ -n "$P" ] && [ "$P" -gt 105000 ] && note="$note big"   # the brief: about 100,000 at most
  [ "$ex" = yes ] || note="$note verify:$(echo "$v" | tr '\n' ' ' | cut -c1-120)"
  [ -n "$note" ] && fail=1
  printf '%-34s %-20s %-7s %-3s %-3s %-6s %-7s %-7s %s\n' "$n" "$cat" "$dif" "$L" "$H" "$P" "$I" "$ex" "$note"
done
exit $fail
