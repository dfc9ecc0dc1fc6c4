#!/usr/bin/env bash
# The main job: set up (first run only), build, and compare ONNX Runtime, tract and candle (its
# ONNX graph engine and its hand-written BERT, candle-native) on all-MiniLM-L6-v2 at batch 1
# and 8, sequence 128, 1 and 2 threads.
# Extra arguments go to `harness compare` (e.g. --min-time 10s --out results/minilm).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/setup.sh minilm
echo "build: cargo build --release" >&2
cargo build --release --quiet
export VIRTUAL_ENV="$ROOT/.venv"
exec target/release/harness compare --model models/out/all-MiniLM-L6-v2 \
  --batch 1,8 --seq 128 --threads 1,2 "$@"
