#!/bin/bash
# Checks every progs-b suite program: header, exhaustive exact verify, compile, params.
# Usage: suite/check_progs_b.sh [FILES...]   (default: width_ numagg_ causal_ compsel_)
R=${RASPC:-/work/main/build-dev/tools/raspc}
cd "$(dirname "$0")/programs" || exit 1
files=("$@"); [ ${#files[@]} -eq 0 ] && files=(width_*.rasp numagg_*.rasp causal_*.rasp compsel_*.rasp)
fail=0
printf '%-34s %-20s %-7s %-3s %-3s %-6s %-7s %-7s %s\n' name category diff L H params inputs exact note
for f in "${files[@]}"; do
  f=${f##*/}
  n=${f%.rasp}; n=${n##*/}
  cat=$(sed -n 's/^# category: //p' "$f" | head -1)
  dif=$(sed -n 's/^# difficulty: //p' "$f" | head -1)
  desc=$(sed -n 's/^# description: //p' "$f" | head -1)
  note=""
  [ "$(sed -n 1p "$f" | cut -c1-9)" = "# raspc: " ] || note="$note bad-line1"
  [ -n "$desc" ] || note="$note no-desc"
  case "$cat" in selector-width|numerical-aggregate|causal|composite-selector) ;; *) note="$note bad-cat";; esac
  case "$dif" in easy|medium|hard) ;; *) note="$note bad-diff";; esac
  v=$(timeout 300 "$R" verify "$f" --json 2>&1); vrc=$?
  c=$(timeout 300 "$R" compile "$f" -o /tmp/pb_chk_$$.h5 --force --json 2>&1); crc=$?
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
rm -f /tmp/pb_chk_$$.h5
exit $fail
