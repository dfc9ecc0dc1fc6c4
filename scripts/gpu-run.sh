#!/usr/bin/env bash
# The GPU comparison in one command, for a machine with an NVIDIA GPU, within a time limit.
# It needs no Rust and no registry: given a bundle made on a build machine
# (scripts/gpu-bundle.sh), it unpacks the harness binary, ONNX Runtime's libraries and the
# model's weights from it and rebuilds the model folder with the exporter (PyTorch,
# transformers and onnx, which GPU images have).
#
#   scripts/gpu-run.sh [--bundle DIR] [OUT] [MODEL_DIR...]
#     --bundle DIR  a bundle's folder (its part-NN/ folders and MANIFEST): every component
#                   whose pieces are all there is checked against MANIFEST and unpacked
#     OUT           results folder (default results/gpu-<UTC time>)
#     MODEL_DIR     model folders (default: the committed fixture, and all-MiniLM-L6-v2 when
#                   exported or rebuilt from the bundle)
#   HARNESS=path    the harness binary (default: the bundle's, else target/release/harness,
#                   built with cargo when there is cargo)
#   ORT_LIB=path    ONNX Runtime's library (default: the bundle's GPU library, else its CPU one);
#                   with the CPU library ort's GPU rows are skipped with the reason
#   PYTHON=path     Python with PyTorch for the eager reference and the export (default python3)
#   MIN_TIME        per scenario (default 2s)
#   TIME_LIMIT      seconds for the whole run (default 570); each step gets what is left
#   MODELS_OUT      where a bundle's model is rebuilt (default models/out)
#
# Writes OUT/list.txt (what can run here, and why not), OUT/nvidia-smi.txt, and per model
# OUT/NAME (harness compare: ort and candle-native on cpu, cuda and tensorrt, fp32 and fp16,
# batch 1/8/32, sequence 128 or the model's longest; IO binding, device time per inference),
# OUT/NAME-e2e (on cuda with the host copies timed: copy in, compute, copy out),
# OUT/NAME-torch.json (PyTorch eager, same shapes), and OUT/gpu-run.md: every row of every
# model in one table (wall and device time, the stages, parity, PyTorch eager). NAME is the
# model folder's name (with the fixture's folder "fixture-" before it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { printf 'gpu-run: %s\n' "$*" >&2; }
BUNDLE=
if [ "${1:-}" = "--bundle" ]; then
  BUNDLE=${2:?--bundle needs a folder}
  shift 2
fi
OUT=${1:-results/gpu-$(date -u +%Y-%m-%dT%H-%M-%SZ)}
shift || true
MODELS=("$@")
PY=${PYTHON:-python3}
MIN_TIME=${MIN_TIME:-2s}
LIMIT=${TIME_LIMIT:-570}
MODELS_OUT=${MODELS_OUT:-models/out}
REBUILT=()
seconds() { case $1 in *ms) awk "BEGIN { print ${1%ms} / 1000 }" ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac; }
left() { echo $((LIMIT - SECONDS)); }
step() { # step NAME CMD...: runs CMD within the time left; a failure is reported, not fatal
  local name=$1; shift
  local t; t=$(left)
  if [ "$t" -le 10 ]; then say "skipped $name: the time limit ($LIMIT s) is spent"; return 0; fi
  if ! timeout --kill-after=10 "$t" "$@"; then say "$name did not complete (see above)"; fi
}
mkdir -p "$OUT"

if [ -n "$BUNDLE" ]; then
  [ -f "$BUNDLE/MANIFEST" ] || { say "$BUNDLE has no MANIFEST: not a bundle (scripts/gpu-bundle.sh makes one)"; exit 2; }
  U="$BUNDLE/unpacked"
  "$PY" - "$BUNDLE" "$U" <<'EOF' || exit 2
import hashlib, io, lzma, os, sys, tarfile
bundle, dest = sys.argv[1:3]
pieces = {}
for line in open(os.path.join(bundle, "MANIFEST")):
    sha, path, comp = line.split()
    pieces.setdefault(comp, []).append((sha, path))
for comp, ps in pieces.items():
    missing = [p for _, p in ps if not os.path.isfile(os.path.join(bundle, p))]
    if missing:
        print(f"gpu-run: bundle component {comp}: {len(missing)} of {len(ps)} pieces are not here ({', '.join(missing)}); skipped", file=sys.stderr)
        continue
    data = bytearray()
    for sha, p in sorted(ps, key=lambda x: x[1].rsplit(".", 1)[1]):
        b = open(os.path.join(bundle, p), "rb").read()
        if hashlib.sha256(b).hexdigest() != sha:
            sys.exit(f"gpu-run: {p} does not match MANIFEST (a truncated copy?): copy it again")
        data += b
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(bytes(data))), mode="r:") as t:
        t.extractall(dest, filter="data")
    print(f"gpu-run: unpacked {comp} ({len(ps)} piece(s), {len(data) >> 20} MiB)", file=sys.stderr)
EOF
  if [ -f "$U/BUNDLE.json" ]; then
    built=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["commit"])' "$U/BUNDLE.json")
    here=$(git rev-parse HEAD 2>/dev/null || echo unknown)
    [ "$built" = "$here" ] || say "note: the bundle was built at $built, this checkout is $here"
  fi
  if [ -z "${HARNESS:-}" ] && [ -f "$U/bin/harness" ]; then chmod +x "$U/bin/harness"; HARNESS="$U/bin/harness"; fi
  if [ -z "${ORT_LIB:-}" ]; then
    for l in "$U/ort/gpu/libonnxruntime.so.1.31.1" "$U/ort/cpu/libonnxruntime.so.1.31.1"; do
      [ -f "$l" ] && { ORT_LIB=$l; break; }
    done
  fi
  if [ -d "$U/python" ]; then
    PYTHONPATH="$(find "$U/python" -name '*.zip' | paste -sd:)${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONPATH
  fi
fi

# CUDA 13's libraries from the Python environment's nvidia packages (PyTorch's), for ONNX
# Runtime's CUDA provider and the GPU build (candle links cuBLAS).
NV=$("$PY" -c 'import glob, os, nvidia; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "**", "lib*.so*"), recursive=True)})))' 2>/dev/null || true)
[ -n "$NV" ] && export LD_LIBRARY_PATH="$NV${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
H=${HARNESS:-target/release/harness}
if [ ! -x "$H" ]; then
  if ! command -v cargo >/dev/null 2>&1; then
    say "no harness binary at $H and no cargo to build one: make a bundle on a machine with Rust (scripts/gpu-bundle.sh), copy it here and pass --bundle DIR, or set HARNESS=path"
    exit 2
  fi
  say "building $H (cargo build --release)"
  cargo build --release --quiet
fi
if ! "$H" --version >/dev/null 2>"$OUT/harness-start.txt"; then
  say "$H does not start here: $(head -c 400 "$OUT/harness-start.txt")"
  grep -q libcuda "$OUT/harness-start.txt" && say "it is the GPU build (candle on CUDA), which needs the NVIDIA driver; on a machine without one use a default build (HARNESS=path, or gpu-bundle.sh without target/gpu)"
  exit 2
fi
if [ -n "$BUNDLE" ]; then
  # The model folder, rebuilt from the float16 weights: widened to float32, then exported.
  for FP16 in "$U"/models/*.fp16; do
    [ -f "$FP16/model.fp16.safetensors" ] || continue
    NAME=$(basename "$FP16" .fp16)
    DEST="$MODELS_OUT/$NAME"
    REBUILT+=("$DEST")
    [ -f "$DEST/model.onnx" ] && continue
    CK="$U/models/$NAME.checkpoint"
    rm -rf "$CK"; cp -r "$FP16" "$CK"; rm "$CK/model.fp16.safetensors"
    "$PY" models/cast_weights.py float32 "$FP16/model.fp16.safetensors" "$CK/model.safetensors"
    say "exporting $DEST from the bundle's weights (models/export.py)"
    step "the export" "$PY" models/export.py --checkpoint "$CK" --out "$DEST" --name "$NAME" >&2
  done
fi
ORT=()
[ -n "${ORT_LIB:-}" ] && ORT=(--ort-lib "$ORT_LIB")
if [ ${#MODELS[@]} -eq 0 ]; then
  MODELS=(models/fixtures/tiny-bert)
  for m in "${REBUILT[@]}" "$MODELS_OUT/all-MiniLM-L6-v2"; do
    [ -f "$m/model.onnx" ] || continue
    dup=0; for x in "${MODELS[@]}"; do [ "$x" = "$m" ] && dup=1; done
    [ "$dup" = 1 ] || MODELS+=("$m")
  done
fi
GPU=0
if nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1; then GPU=1; else say "nvidia-smi failed: no NVIDIA driver here; the GPU rows will be skipped with their reasons"; fi
"$H" list "${ORT[@]}" | tee "$OUT/list.txt"
RUNS=()
NAMES=()
for M in "${MODELS[@]}"; do
  NAME=$(basename "$M")
  [ "$M" = models/fixtures/tiny-bert ] && NAME=fixture-$NAME
  # Sequence 128, or the model's longest when shorter (the fixture takes 64).
  SEQ=$("$PY" -c "import json,sys; print(min(128, json.load(open(sys.argv[1])).get('max_position_embeddings', 128)))" "$M/config.json")
  # The fixture checks that everything runs; the real model gets the time.
  # The fixture checks that everything runs, at the minima; the real model shares the time
  # left: its comparison a half (--budget: each row an equal share, to a +-2% median where it
  # gets there), the end-to-end run a half of the rest, PyTorch what remains.
  if [ "$M" = models/fixtures/tiny-bert ]; then
    T=300ms; PACE=(--target-ci off --max-time 5s)
  else
    T=$MIN_TIME; PACE=(--budget "$(( $(left) / 2 ))s" --max-time 30s)
  fi
  step "$NAME" "$H" compare --model "$M" --runtimes ort,candle-native --device cpu,cuda,tensorrt \
    --variant fp32,fp16 --batch 1,8,32 --seq "$SEQ" --min-time "$T" --min-samples 30 \
    --no-overhead --trt-fp16 "${PACE[@]}" "${ORT[@]}" --out "$OUT/$NAME"
  RUNS+=("$OUT/$NAME")
  [ "$M" = models/fixtures/tiny-bert ] || PACE=(--budget "$(( $(left) / 2 ))s" --max-time 30s)
  if [ "$GPU" = 1 ]; then
    step "$NAME end to end" "$H" compare --model "$M" --runtimes ort,candle-native --device cuda \
      --variant fp32 --batch 1,8,32 --seq "$SEQ" --min-time "$T" --min-samples 30 --no-overhead \
      --gpu-copies "${PACE[@]}" "${ORT[@]}" --out "$OUT/$NAME-e2e"
    RUNS+=("$OUT/$NAME-e2e")
  fi
  if [ -f "$M/model.safetensors" ]; then
    DEV=cuda; [ "$GPU" = 1 ] || DEV=cpu
    step "PyTorch eager ($NAME, $DEV)" "$PY" models/torch_bench.py --model "$M" --device "$DEV" \
      --dtype fp32,fp16 --batch 1,8,32 --seq "$SEQ" --min-time "$(seconds "$T")" --json "$OUT/$NAME-torch.json"
  fi
  NAMES+=("$NAME")
done
# One table of every model's rows: host wall time, the device's span and its stages, parity,
# and PyTorch eager at the same shapes.
"$PY" - "$OUT" "${NAMES[@]}" >"$OUT/gpu-run.md" <<'EOF' || say "the summary table could not be written"
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
def load(p):
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None
def f(x, d=3):
    return "-" if x is None else f"{x:.{d}f}"
print("# GPU run\n")
print("Host wall p50 against the device's span on the runtime's stream (CUDA events; copy in, compute and copy out with --gpu-copies), ms.\n")
for name in names:
    print(f"## {name}\n")
    print("| runtime | device | variant | batch | copies | wall p50 | device p50 | copy in | compute | copy out | device share | parity | status |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|")
    for run, copies in ((name, "excluded"), (name + "-e2e", "timed")):
        r = load(os.path.join(out, run, "results.json"))
        for s in (r or {}).get("scenarios", []):
            m = s.get("measurement") or {}
            d = m.get("device") or {}
            p50 = lambda k: (d.get(k) or {}).get("p50_ms")
            status = s["status"] if s["status"] != "skipped" else "skipped: " + (s.get("error") or "")[:90]
            if d.get("warning"):
                status += " (host-bound)"
            elif d and not d.get("total"):
                status += "; device time " + d["status"][:60]
            print(f"| {s['runtime']} | {s['device']} | {s['variant']} | {s['batch']} | {copies if s['device'] != 'cpu' else '-'} "
                  f"| {f((m.get('latency') or {}).get('p50_ms'))} | {f(p50('total'))} | {f(p50('h2d'))} | {f(p50('compute'))} | {f(p50('d2h'))} "
                  f"| {f(d.get('device_share'), 2)} | {s['parity']['status']} | {status} |")
    t = load(os.path.join(out, name + "-torch.json")) or []
    for x in t:
        print(f"| pytorch-eager | {x['device']} | {x['dtype']} | {x['batch']} | - | {f(x['p50_ms'])} | - | - | - | - | - | - | {x['samples']} samples |")
    print()
EOF
say "results: $OUT ($SECONDS s): ${RUNS[*]}; the table: $OUT/gpu-run.md"
