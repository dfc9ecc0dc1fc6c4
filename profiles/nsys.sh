#!/usr/bin/env bash
# GPU timeline of a harness run with NVIDIA Nsight Systems.
# Usage: profiles/nsys.sh [--dry-run] HARNESS-COMPARE-ARGS...   (see profiles/README.md)
set -euo pipefail
RECIPE=nsys
# The GPU build (scripts/build-gpu.sh: candle on CUDA too) when there is one and HARNESS does
# not name a binary.
GPU_BUILD="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/gpu/release/harness"
if [ -z "${HARNESS:-}" ] && [ -x "$GPU_BUILD" ]; then HARNESS="$GPU_BUILD"; fi
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_harness
say "binary: $HARNESS"
OUT="$OUT_ROOT/nsys"
mkdir -p "$OUT"
missing=()
command -v nsys >/dev/null 2>&1 || missing+=("nsys (NVIDIA Nsight Systems)")
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 || missing+=("an NVIDIA GPU with its driver (nvidia-smi)")
if [ ${#missing[@]} -gt 0 ]; then
  say "cannot profile here: missing ${missing[*]}"
  if [ "$DRY" = 1 ]; then
    say "$ nsys profile --trace=cuda,nvtx,osrt --output $OUT/report $HARNESS compare --isolate none ${ARGS[*]}"
    exit 0
  fi
  exit 1
fi
run nsys profile --trace=cuda,nvtx,osrt --force-overwrite=true --output "$OUT/report" \
  "$HARNESS" compare --isolate none --out "$OUT/results" "${ARGS[@]}"
[ "$DRY" = 1 ] || say "open $OUT/report.nsys-rep in Nsight Systems"
