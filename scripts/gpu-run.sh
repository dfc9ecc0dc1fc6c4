#!/usr/bin/env bash
# The GPU comparison in one command, for a machine with an NVIDIA GPU. It builds nothing when
# given a binary (HARNESS=path, e.g. one built elsewhere and carried over), else builds here.
#
#   scripts/gpu-run.sh [OUT] [MODEL_DIR...]
#     OUT         results folder (default results/gpu-<UTC time>)
#     MODEL_DIR   model folders (default: the committed fixture, and all-MiniLM-L6-v2 when exported)
#   HARNESS=path  the harness binary (default target/release/harness, built if missing)
#   ORT_LIB=path  ONNX Runtime GPU library (onnxruntime-gpu==1.31.1's capi/libonnxruntime.so.1.31.1);
#                 without it ort's GPU rows are skipped with the reason
#   PYTHON=path   Python with PyTorch for the eager reference (default python3)
#   MIN_TIME      per scenario (default 3s)
#
# Writes, per model: OUT/NAME (harness compare: cpu and cuda rows, fp32 and fp16, batch 1/8/32,
# sequence 128 or the model's longest; ort with IO binding), OUT/NAME-e2e (ort on cuda with host copies timed),
# OUT/NAME-torch.json (PyTorch eager, same shapes), and OUT/list.txt (what can run, and why not).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${1:-results/gpu-$(date -u +%Y-%m-%dT%H-%M-%SZ)}
shift || true
MODELS=("$@")
if [ ${#MODELS[@]} -eq 0 ]; then
  MODELS=(models/fixtures/tiny-bert)
  [ -f models/out/all-MiniLM-L6-v2/model.onnx ] && MODELS+=(models/out/all-MiniLM-L6-v2)
fi
H=${HARNESS:-target/release/harness}
if [ ! -x "$H" ]; then
  echo "gpu-run: building $H (cargo build --release)" >&2
  cargo build --release --quiet
fi
PY=${PYTHON:-python3}
MIN_TIME=${MIN_TIME:-3s}
ORT=()
[ -n "${ORT_LIB:-}" ] && ORT=(--ort-lib "$ORT_LIB")
mkdir -p "$OUT"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed: no driver?" >&2
"$H" list "${ORT[@]}" | tee "$OUT/list.txt"
for M in "${MODELS[@]}"; do
  NAME=$(basename "$M")
  # Sequence 128, or the model's longest when shorter (the fixture takes 64).
  SEQ=$(python3 -c "import json,sys; print(min(128, json.load(open(sys.argv[1])).get('max_position_embeddings', 128)))" "$M/config.json")
  "$H" compare --model "$M" --runtimes ort,candle,candle-native --device cpu,cuda --variant fp32,fp16 \
    --batch 1,8,32 --seq "$SEQ" --min-time "$MIN_TIME" --min-samples 30 --no-overhead \
    "${ORT[@]}" --out "$OUT/$NAME" | tee "$OUT/$NAME.txt" || true
  "$H" compare --model "$M" --runtimes ort --device cuda --variant fp32 --batch 1,8,32 --seq "$SEQ" \
    --min-time "$MIN_TIME" --min-samples 30 --no-overhead --gpu-copies \
    "${ORT[@]}" --out "$OUT/$NAME-e2e" | tee "$OUT/$NAME-e2e.txt" || true
  "$PY" models/torch_bench.py --model "$M" --device cuda --dtype fp32,fp16 --batch 1,8,32 --seq "$SEQ" \
    --json "$OUT/$NAME-torch.json" | tee "$OUT/$NAME-torch.txt" || echo "PyTorch reference failed (see above)" >&2
done
echo "results: $OUT"
