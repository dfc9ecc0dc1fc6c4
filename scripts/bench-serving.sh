#!/usr/bin/env bash
# Every serving baseline on the same model and load, side by side: all-MiniLM-L6-v2, batch-1
# requests of 128 tokens, everything on loopback, each server with ONNX Runtime (or vLLM's
# PyTorch) on 2 threads:
#   KServe v2 HTTP (binary tensors): ours, ours with dynamic batching (16 / 2 ms), the FastAPI
#     baseline, Triton (PyTriton, Python backend), Triton's dynamic batcher (16 / 2 ms);
#   OpenAI /v1/embeddings (sentences of 126 one-token words): ours, ours batching, FastAPI,
#     vLLM (when scripts/setup.sh vllm has been run).
# Each server: closed loop at 1, 4 and 16 connections, then the highest open-loop rate over
# 16 connections with p99 <= $SLO (the capacity search: open-loop probes around it), the
# server's process tree watched (--server-pid: its CPU and peak memory beside the client's).
# Then the serving tax at low load (`harness compare --served`), and one merged report.
# Usage: scripts/bench-serving.sh [OUT]   (default results/serving-<UTC time>)
# MIN_TIME (default 5s) per closed-loop row, PROBE_MAX (default 8s) per probe, SLO (default
# 150ms); ONLY="ours fastapi" limits the servers (names: ours ours-batching fastapi triton
# triton-batching vllm).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${1:-results/serving-$(date -u +%Y-%m-%dT%H-%M-%SZ)}
MIN_TIME=${MIN_TIME:-5s}
PROBE_MAX=${PROBE_MAX:-8s}
SLO=${SLO:-150ms}
ONLY=${ONLY:-ours ours-batching fastapi triton triton-batching vllm}
M=models/out/all-MiniLM-L6-v2
scripts/setup.sh minilm
scripts/setup.sh triton
scripts/setup.sh fastapi
cargo build --release --quiet
export VIRTUAL_ENV="$ROOT/.venv"
H=target/release/harness
mkdir -p "$OUT"
PORT=18500
COMMON=(--model minilm --batch 1 --warmup-time 2s --server-threads 2)

wanted() { [[ " $ONLY " == *" $1 "* ]]; }

wait_ready() { # URL PID
  for _ in $(seq 1 1800); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { echo "server exited before it was ready: $1" >&2; return 1; }
    sleep 0.1
  done
  echo "not ready: $1" >&2; return 1
}

# measure TAG PROTOCOL METRICS_URL [LOAD OPTIONS...]: closed loop, then the capacity search
# (labelled TAG-capacity: its short closed-loop run must not merge into TAG's rows).
measure() {
  local tag=$1 proto=$2 metrics=$3; shift 3
  $H load --target "http://127.0.0.1:$PORT" --protocol "$proto" "${COMMON[@]}" "$@" \
    --concurrency 1,4,16 --min-time "$MIN_TIME" --min-samples 100 --target-ci off \
    --label "$tag" --metrics-url "$metrics" --server-pid "$SERVER" --out "$OUT/$tag" \
    | tee "$OUT/$tag.txt"
  $H load --target "http://127.0.0.1:$PORT" --protocol "$proto" "${COMMON[@]}" "$@" \
    --concurrency 16 --find-max-rate --slo "p99:$SLO" --min-time 2s --max-time "$PROBE_MAX" \
    --label "$tag-capacity" --metrics-url "$metrics" --server-pid "$SERVER" --out "$OUT/$tag-capacity" \
    | tee "$OUT/$tag-capacity.txt"
}

stop() { kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
trap stop EXIT

ours() { # TAG ARGS...
  local tag=$1; shift
  $H serve --model $M --name minilm --runtime ort --threads 2 --http-port $PORT --no-grpc \
    --shutdown-after 1h "$@" 2>"$OUT/$tag.server.log" &
  SERVER=$!
  wait_ready "http://127.0.0.1:$PORT/v2/models/minilm/ready" "$SERVER"
  measure "$tag-kserve" kserve-http "http://127.0.0.1:$PORT/metrics" --seq 128
  measure "$tag-embeddings" openai-embeddings "http://127.0.0.1:$PORT/metrics" --seq 126
  stop
}
wanted ours && ours ours
wanted ours-batching && ours ours-batching --max-batch 16 --max-queue-delay 2ms

if wanted fastapi; then
  .venv-fastapi/bin/python models/fastapi_serve.py --model $M --name minilm --threads 2 \
    --http-port $PORT --shutdown-after 3600 >"$OUT/fastapi.ready" 2>"$OUT/fastapi.server.log" &
  SERVER=$!
  wait_ready "http://127.0.0.1:$PORT/v2/models/minilm/ready" "$SERVER"
  measure fastapi-kserve kserve-http "http://127.0.0.1:$PORT/metrics" --seq 128
  measure fastapi-embeddings openai-embeddings "http://127.0.0.1:$PORT/metrics" --seq 126
  stop
fi

triton() { # TAG DELAY_US
  .venv-triton/bin/python models/triton_serve.py --model $M --name minilm --threads 2 --max-batch 16 \
    --max-queue-delay-us "$2" --http-port $PORT --grpc-port $((PORT + 1)) --metrics-port $((PORT + 2)) \
    --shutdown-after 3600 >"$OUT/$1.ready" 2>"$OUT/$1.server.log" &
  SERVER=$!
  wait_ready "http://127.0.0.1:$PORT/v2/models/minilm/ready" "$SERVER"
  # Triton's metadata has no vocabulary: MiniLM's.
  measure "$1-kserve" kserve-http "http://127.0.0.1:$((PORT + 2))/metrics" --seq 128 --vocab 30522
  stop
}
wanted triton && triton triton 0
wanted triton-batching && triton triton-batching 2000

if wanted vllm; then
  if [ -x .venv-vllm/bin/python ]; then
    scripts/vllm-serve.sh --model $M --name minilm --port $PORT >"$OUT/vllm.server.log" 2>&1 &
    SERVER=$!
    wait_ready "http://127.0.0.1:$PORT/health" "$SERVER"
    measure vllm-embeddings openai-embeddings "http://127.0.0.1:$PORT/metrics" --seq 126
    stop
  else
    echo "vLLM skipped: run scripts/setup.sh vllm first" | tee "$OUT/vllm-skipped.txt"
  fi
fi
trap - EXIT

# The serving tax at low load: in-process against our server, same inputs.
$H compare --model $M --runtimes ort --batch 1 --seq 16,128 --threads 2 --concurrency 1 \
  --warmup-time 2s --min-time "$MIN_TIME" --min-samples 200 --served --out "$OUT/serving-tax" \
  | tee "$OUT/serving-tax.txt"

folders=()
for d in "$OUT"/*/; do [ -f "$d/results.json" ] && [ "$(basename "$d")" != all ] && folders+=("$d"); done
$H report "${folders[@]}" --out "$OUT/all"

# One table: every server's closed-loop rows with its own CPU and memory, and its capacity.
python3 - "$OUT/all/results.json" "$SLO" <<'PY' | tee "$OUT/table.md"
import json, sys
r = json.load(open(sys.argv[1]))
caps = {}
for c in r["capacity"]:
    label, proto = c["group"].split("/")[:2]
    caps[label.removesuffix("-capacity") + "/" + proto] = c
print(f"| server | protocol | connections | p50 ms | p99 ms | items/s | server cores | server peak MB | client cores | capacity, p99 <= {sys.argv[2]} |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in r["scenarios"]:
    sv, m = s.get("served"), s.get("measurement")
    if not sv or not m or "/open-" in s["id"] or s["id"].count("/") != 4 or "-capacity/" in s["id"]:
        continue
    label, proto = s["id"].split("/")[0], s["id"].split("/")[1]
    conns = s["id"].rsplit("/c", 1)[1]
    srv = (s.get("resources") or {}).get("server") or {}
    cap = caps.get(f"{label}/{proto}")
    cap_txt = "-" if cap is None or conns != "16" else (f"{cap['capacity']:.1f}/s" if cap["capacity"] > 0 else "none")
    print(f"| {label} | {proto} | {conns} | {m['latency']['p50_ms']:.2f} | {m['latency']['p99_ms']:.2f} | "
          f"{s.get('throughput_per_s') or 0:.1f} | {srv.get('cores_busy', 0):.2f} | {srv.get('peak_rss_bytes', 0)/1e6:.0f} | "
          f"{sv.get('client_cores_busy') or 0:.2f} | {cap_txt} |")
PY
echo "results: $OUT (merged report: $OUT/all/report.html, table: $OUT/table.md)"
