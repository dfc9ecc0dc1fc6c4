#!/usr/bin/env bash
# CPU profile of the measured windows only: perf records while the harness holds a window open
# (perf's --control FIFO), then `harness profile` splits the samples by scenario into flame
# graphs, time per group of frames and top frames, stored in the results folder.
# Usage: profiles/perf.sh [--dry-run] HARNESS-COMPARE-ARGS...   (see profiles/README.md)
# PERF_FREQ (default 299) and PERF_CALLGRAPH (default dwarf,8192) tune the sampling.
set -euo pipefail
RECIPE=perf
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_harness
OUT="$OUT_ROOT/perf"
RES="$OUT/results"
ISOLATE=(--isolate none)
prev=""
for a in "${ARGS[@]}"; do
  [ "$prev" = "--out" ] && RES="$a"
  case "$a" in --out=*) RES="${a#--out=}";; --isolate|--isolate=*) ISOLATE=();; esac
  prev="$a"
done
OUTARG=(--out "$RES")
for a in "${ARGS[@]}"; do case "$a" in --out|--out=*) OUTARG=();; esac; done
if ! command -v perf >/dev/null 2>&1; then
  say "perf is not installed: apt-get install linux-perf (Debian), then run this again"
  [ "$DRY" = 1 ] && exit 0 || exit 1
fi
FLAME=$(command -v inferno-flamegraph || true)
[ -z "$FLAME" ] && [ -x "$HOME/.cargo/bin/inferno-flamegraph" ] && FLAME="$HOME/.cargo/bin/inferno-flamegraph"
if [ -z "$FLAME" ]; then
  if [ "$DRY" = 1 ]; then say "would install inferno for the flame graphs: cargo install inferno --locked"
  elif ! cargo install inferno --locked --quiet; then
    say "cargo install inferno failed: profiles are written without flame graphs"
  fi
fi
mkdir -p "$OUT"
# The FIFOs and perf.data in a folder of this run's own: recipes may run side by side.
if [ "$DRY" = 1 ]; then WORK="$OUT/run.XXXXXX"; else WORK=$(mktemp -d "$OUT/run.XXXXXX"); fi
CTL="$WORK/ctl" ACK="$WORK/ack" DATA="$WORK/perf.data"
[ "$DRY" = 1 ] || mkfifo "$CTL" "$ACK"
# Starts disabled (-D -1); the harness enables it as each measured window opens and disables
# it as the window closes. Samples carry CLOCK_MONOTONIC times, the clock the rows record
# their windows on. One process (--isolate none): perf cannot name the frames of worker
# processes started while it is disabled.
status=0
run perf record -e cpu-clock -F "${PERF_FREQ:-299}" --call-graph "${PERF_CALLGRAPH:-dwarf,8192}" \
  -k CLOCK_MONOTONIC --control "fifo:$CTL,$ACK" -D -1 -o "$DATA" -- \
  env HARNESS_PERF_CONTROL="$CTL:$ACK" "$HARNESS" compare ${ISOLATE[@]+"${ISOLATE[@]}"} \
  ${OUTARG[@]+"${OUTARG[@]}"} ${ARGS[@]+"${ARGS[@]}"} || status=$?
if [ "$DRY" = 1 ]; then
  say "$ perf script -i $DATA -F comm,pid,tid,time,period,ip,sym,dso > $RES/profile/perf.script"
  say "$ $HARNESS profile $RES"
  exit 0
fi
rm -f "$CTL" "$ACK"
if [ ! -s "$DATA" ]; then
  say "perf recorded nothing (exit $status): check that perf record works here (perf_event_paranoid, a perf with --control); nothing to profile"
  rm -rf "$WORK"; exit 1
fi
[ -f "$RES/results.json" ] || { say "the run wrote no results (exit $status): nothing to profile"; rm -rf "$WORK"; exit 1; }
mkdir -p "$RES/profile"
say "$ perf script ... > $RES/profile/perf.script"
if ! perf script -i "$DATA" -F comm,pid,tid,time,period,ip,sym,dso > "$RES/profile/perf.script" 2> "$WORK/script.err"; then
  say "perf script failed: $(tail -3 "$WORK/script.err")"
  rm -rf "$WORK"; exit 1
fi
rm -rf "$WORK"
run "$HARNESS" profile "$RES"
say "per scenario: $RES/summary.md (Profiles), $RES/report.html (flame graph links), $RES/profile/"
exit "$status"
