#!/usr/bin/env bash
# CPU profile of a harness run: perf stat counters and a perf record flame graph.
# Usage: profiles/perf.sh [--dry-run] HARNESS-COMPARE-ARGS...   (see profiles/README.md)
set -euo pipefail
RECIPE=perf
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_harness
OUT="$OUT_ROOT/perf"
mkdir -p "$OUT"
if ! command -v perf >/dev/null 2>&1; then
  say "perf is not installed: apt-get install linux-perf (Debian), then run this again"
  [ "$DRY" = 1 ] && exit 0 || exit 1
fi
if perf stat -e instructions true >/dev/null 2>&1; then
  EVENTS="cycles,instructions,cache-references,cache-misses,task-clock,context-switches,page-faults"
  say "hardware counters available"
else
  EVENTS="task-clock,context-switches,cpu-migrations,page-faults"
  say "no hardware counters on this machine (VM?): software events only; IPC and cache misses are unavailable"
fi
run perf stat -e "$EVENTS" -o "$OUT/stat.txt" -- "$HARNESS" compare --isolate none --out "$OUT/results" "${ARGS[@]}"
run perf record -F 499 -g -o "$OUT/perf.data" -- "$HARNESS" compare --isolate none --out "$OUT/results-record" "${ARGS[@]}"
if command -v inferno-collapse-perf >/dev/null 2>&1 && command -v inferno-flamegraph >/dev/null 2>&1; then
  if [ "$DRY" = 1 ]; then
    say "$ perf script -i $OUT/perf.data | inferno-collapse-perf | inferno-flamegraph > $OUT/flamegraph.svg"
  else
    perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > "$OUT/flamegraph.svg"
    say "flame graph: $OUT/flamegraph.svg"
  fi
else
  say "no flame graph: cargo install inferno, then run this again (perf.data is kept: perf report -i $OUT/perf.data)"
fi
[ "$DRY" = 1 ] || say "counters: $OUT/stat.txt"
