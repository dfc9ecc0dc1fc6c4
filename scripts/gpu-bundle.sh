#!/usr/bin/env bash
# Packs what scripts/gpu-run.sh needs on a GPU machine that has no Rust and no registry
# access, in parts small enough to copy one at a time (at most 56 MiB each, so a transfer
# limit of 64 MiB leaves room for the checkout itself):
#
#   scripts/gpu-bundle.sh [OUT] [--ort-gpu]
#     OUT        the bundle folder (default target/gpu-bundle): part-00/, part-01/, ... and
#                MANIFEST (each piece's sha256)
#     --ort-gpu  adds ONNX Runtime's GPU library (PyPI onnxruntime-gpu==1.31.1, a 256 MB wheel,
#                downloaded here) as a component of its own, in further parts
#   MODEL=DIR    the Hugging Face model folder to carry (default models/out/all-MiniLM-L6-v2,
#                from scripts/setup.sh minilm)
#   HARNESS=path the binary to carry (default below)
#
# Components (each a tar.xz, split into pieces; a part holds whole pieces):
#   base     bin/harness: the GPU build (target/gpu/release/harness, scripts/build-gpu.sh)
#            when there is one, else target/release/harness, stripped; ort/cpu/: ONNX
#            Runtime 1.31.1's CPU library (the parity reference: the machine's Python may
#            hold another version); python/: onnxconverter-common, zipped (pure Python; the
#            exporter's float16 pass, which GPU images rarely have); BUNDLE.json
#   model    models/NAME.fp16/: config, tokenizer and sentence-transformers files and the
#            weights in float16 (MiniLM: 45 MB, where the float32 files, 90 MB each, do not fit
#            a part). gpu-run.sh rebuilds the model folder there: the weights widened back to
#            float32, the ONNX graphs exported with models/export.py. The model measured is
#            then the model with its weights rounded to float16, the same in every runtime and
#            in PyTorch.
#   ort-gpu  ort/gpu/: libonnxruntime.so.1.31.1 and its CUDA, TensorRT and shared provider
#            libraries (--ort-gpu)
#
# On the GPU machine, from a checkout of the same commit: scripts/gpu-run.sh --bundle OUT
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=target/gpu-bundle
ORT_GPU=0
for a in "$@"; do
  case "$a" in
    --ort-gpu) ORT_GPU=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    -*) echo "gpu-bundle: unknown option $a" >&2; exit 2 ;;
    *) OUT=$a ;;
  esac
done
PIECE=$((56 * 1024 * 1024))
say() { printf 'gpu-bundle: %s\n' "$*" >&2; }
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || { say "no .venv: run scripts/setup.sh first (it installs onnxruntime and the exporter)"; exit 1; }
MODEL=${MODEL:-models/out/all-MiniLM-L6-v2}
[ -f "$MODEL/model.safetensors" ] && [ -f "$MODEL/config.json" ] || {
  say "$MODEL has no model.safetensors and config.json: run scripts/setup.sh minilm first, or set MODEL=DIR"; exit 1; }
NAME=$(basename "$MODEL")

BIN=${HARNESS:-target/gpu/release/harness}
[ -x "$BIN" ] || BIN=target/release/harness
if [ ! -x "$BIN" ]; then
  say "building target/release/harness"
  cargo build --release --quiet -p harness
fi
ORT_CPU=$("$PY" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')/libonnxruntime.so.1.31.1
[ -f "$ORT_CPU" ] || { say "ONNX Runtime 1.31.1's library is not at $ORT_CPU"; exit 1; }

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bundle.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
rm -rf "$OUT"
mkdir -p "$OUT"

# base
B="$STAGE/base"
mkdir -p "$B/bin" "$B/ort/cpu" "$B/python"
strip -o "$B/bin/harness" "$BIN"
cp "$ORT_CPU" "$B/ort/cpu/"
# The exporter's float16 pass as installed here, zipped: Python imports from the zip.
"$PY" - "$B/python/onnxconverter_common.zip" <<'EOF'
import os, sys, zipfile
import onnxconverter_common as m
pkg = os.path.dirname(m.__file__)
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for d, _, names in os.walk(pkg):
        for n in names:
            if n.endswith(".py"):
                p = os.path.join(d, n)
                z.write(p, os.path.relpath(p, os.path.dirname(pkg)))
EOF
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
DIRTY=$([ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo false || echo true)
"$PY" - "$B" "$BIN" "$COMMIT" "$DIRTY" <<'EOF'
import hashlib, json, os, sys
root, binary, commit, dirty = sys.argv[1:5]
files = {}
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.join(d, n)
        files[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
json.dump({"commit": commit, "dirty": dirty == "true", "harness_from": binary,
           "harness_gpu_build": "target/gpu/" in binary, "files": files},
          open(os.path.join(root, "BUNDLE.json"), "w"), indent=1)
EOF

# model: the weights in float16, everything else as it is
M="$STAGE/model/models/$NAME.fp16"
mkdir -p "$M"
for f in config.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json \
         modules.json sentence_bert_config.json config_sentence_transformers.json 1_Pooling; do
  if [ -e "$MODEL/$f" ]; then cp -r "$MODEL/$f" "$M/"; fi
done
"$PY" models/cast_weights.py float16 "$MODEL/model.safetensors" "$M/model.fp16.safetensors"

# ort-gpu
if [ "$ORT_GPU" = 1 ]; then
  G="$STAGE/ort-gpu/ort/gpu"
  mkdir -p "$G" "$STAGE/wheel"
  say "downloading onnxruntime-gpu==1.31.1 (256 MB)"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$STAGE/wheel" onnxruntime-gpu==1.31.1
  (cd "$STAGE/wheel" && "$PY" -m zipfile -e ./*.whl x >/dev/null)
  cp "$STAGE"/wheel/x/onnxruntime/capi/libonnxruntime*.so* "$G/"
fi

# Each component: tar.xz, split into pieces; pieces go to parts in order, a new part when
# the next piece would not fit.
part=0
used=0
: >"$OUT/MANIFEST"
for c in base model ort-gpu; do
  [ -d "$STAGE/$c" ] || continue
  say "packing $c"
  tar -C "$STAGE/$c" -cf - . | xz -6 -T0 >"$STAGE/$c.tar.xz"
  split -b "$PIECE" -d -a 2 "$STAGE/$c.tar.xz" "$STAGE/$c.tar.xz."
  for piece in "$STAGE/$c.tar.xz".[0-9][0-9]; do
    size=$(stat -c %s "$piece")
    if [ "$used" -gt 0 ] && [ $((used + size)) -gt "$PIECE" ]; then
      part=$((part + 1)); used=0
    fi
    dir=$(printf '%s/part-%02d' "$OUT" "$part")
    mkdir -p "$dir"
    mv "$piece" "$dir/"
    used=$((used + size))
    printf '%s  %s  %s\n' "$(sha256sum "$dir/$(basename "$piece")" | cut -d' ' -f1)" \
      "$(basename "$dir")/$(basename "$piece")" "$c" >>"$OUT/MANIFEST"
  done
done
du -b "$OUT"/part-* | while read -r n d; do say "$(basename "$d"): $((n / 1024 / 1024)) MiB"; done
say "wrote $OUT (commit $COMMIT$([ "$DIRTY" = true ] && echo ', uncommitted changes'))"
