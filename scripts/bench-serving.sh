#!/usr/bin/env bash
# Network figures on all-MiniLM-L6-v2 (sequence 128, batch-1 requests, KServe v2 over HTTP
# with binary tensors), everything on loopback:
#   1. our server (ort, 2 threads) at concurrency 1, 4, 16 without and with dynamic batching;
#   2. NVIDIA Triton (PyTriton; its Python backend runs onnxruntime, 2 threads) the same way;
#   3. the serving tax at low load: `harness compare --served`, ort, concurrency 1;
#   4. the load generator's own ceiling on a trivial endpoint next to wrk (if installed) at
#      equal connections.
# Usage: scripts/bench-serving.sh [OUT]   (default results/serving-<UTC time>)
# MIN_TIME (default 10s) sets each scenario's minimum duration.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${1:-results/serving-$(date -u +%Y-%m-%dT%H-%M-%SZ)}
MIN_TIME=${MIN_TIME:-10s}
M=models/out/all-MiniLM-L6-v2
scripts/setup.sh minilm
scripts/setup.sh triton
cargo build --release --quiet
export VIRTUAL_ENV="$ROOT/.venv"
H=target/release/harness
mkdir -p "$OUT"
LOAD=(--protocol kserve-http --model minilm --vocab 30522 --batch 1 --seq 128
      --concurrency 1,4,16 --warmup-time 2s --min-time "$MIN_TIME" --min-samples 200)

wait_ready() { # URL
  for _ in $(seq 1 600); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; return 1
}

serve_ours() { # TAG ARGS...
  local tag=$1; shift
  $H serve --model $M --name minilm --runtime ort --threads 2 --http-port 18500 --no-grpc \
    --shutdown-after 30m "$@" 2>"$OUT/$tag.server.log" &
  SERVER=$!
  wait_ready http://127.0.0.1:18500/v2/models/minilm/ready
  $H load --target http://127.0.0.1:18500 "${LOAD[@]}" --label "$tag" --server-threads 2 \
    --metrics-url http://127.0.0.1:18500/metrics --out "$OUT/$tag" | tee "$OUT/$tag.txt"
  kill -TERM $SERVER; wait $SERVER || true
}

serve_ours ours-ort
serve_ours ours-ort-batching --max-batch 16 --max-queue-delay 2ms

if [ -x .venv-triton/bin/python ]; then
  triton() { # TAG DELAY_US
    .venv-triton/bin/python models/triton_serve.py --model $M --name minilm --threads 2 --max-batch 16 \
      --max-queue-delay-us "$2" --http-port 18600 --grpc-port 18601 --metrics-port 18602 \
      --shutdown-after 1800 >"$OUT/$1.server.log" 2>&1 &
    SERVER=$!
    wait_ready http://127.0.0.1:18600/v2/models/minilm/ready
    $H load --target http://127.0.0.1:18600 "${LOAD[@]}" --label "$1" --server-threads 2 \
      --metrics-url http://127.0.0.1:18602/metrics --out "$OUT/$1" | tee "$OUT/$1.txt"
    kill -TERM $SERVER; wait $SERVER || true
  }
  triton triton 0
  triton triton-batching 2000
else
  echo "Triton skipped: run scripts/setup.sh triton first" | tee "$OUT/triton-skipped.txt"
fi

$H compare --model $M --runtimes ort --batch 1 --seq 128 --threads 2 --concurrency 1 \
  --warmup-time 2s --min-time "$MIN_TIME" --min-samples 200 --served --out "$OUT/serving-tax" \
  | tee "$OUT/serving-tax.txt"

# The load generator's ceiling: a trivial endpoint, 2 and 16 connections, beside wrk.
$H serve --model models/fixtures/tiny-bert --http-port 18700 --no-grpc --io-threads 1 \
  --shutdown-after 30m 2>"$OUT/ceiling.server.log" &
SERVER=$!
wait_ready http://127.0.0.1:18700/v2/health/live
$H load --target http://127.0.0.1:18700/v2/health/live --protocol http-get --concurrency 2,16 \
  --warmup-time 1s --min-time "$MIN_TIME" --label harness-load --out "$OUT/ceiling" | tee "$OUT/ceiling.txt"
if command -v wrk >/dev/null; then
  for c in 2 16; do
    wrk -t 2 -c $c -d "${MIN_TIME}" --latency http://127.0.0.1:18700/v2/health/live | tee "$OUT/wrk-c$c.txt"
  done
else
  echo "wrk not installed (Debian: apt-get install wrk)" | tee "$OUT/wrk-skipped.txt"
fi
kill -TERM $SERVER; wait $SERVER || true
$H report "$OUT"/ours-ort "$OUT"/ours-ort-batching $(ls -d "$OUT"/triton "$OUT"/triton-batching 2>/dev/null) --out "$OUT/all"
echo "results: $OUT (merged report: $OUT/all/report.html)"
