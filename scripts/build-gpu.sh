#!/usr/bin/env bash
# Builds `harness` with candle's CUDA kernels (feature candle-cuda) on a machine without a
# CUDA toolkit: nvcc, its headers and NVVM come from PyPI, pinned (about 330 MB, into
# .venv-cuda); the CUDA 13 libraries candle links against come from the same wheels PyTorch
# installs (nvidia-cublas, -curand, -cuda-nvrtc, -cuda-runtime). The kernels are compiled for
# compute capability $CUDA_COMPUTE_CAP (default 90: H100/H200), about 7 minutes on 2 cores.
#
#   scripts/build-gpu.sh            -> target/release/harness (ONNX Runtime GPU providers, NVML,
#                                      candle on CUDA)
#
# The driver library (libcuda.so.1) is not on PyPI: the link records it as needed (against an
# empty stub) and leaves the driver's symbols to be resolved when the binary starts, so this
# binary starts only where an NVIDIA driver is installed (the default build runs anywhere),
# with the CUDA 13 libraries on LD_LIBRARY_PATH (run `scripts/build-gpu.sh --print-libdir`).
# The stripped binary is about 87 MB (candle's PTX kernels); `xz -9` brings it to about 13 MB,
# small enough to carry to a GPU machine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv-cuda"
PKGS=(nvidia-cuda-nvcc==13.2.86 nvidia-cuda-crt==13.2.86 nvidia-nvvm==13.2.86
      nvidia-cuda-runtime==13.2.86 nvidia-cuda-cccl==13.2.75 nvidia-cuda-nvrtc==13.2.86
      nvidia-cublas==13.4.1.3 nvidia-curand==10.4.2.51)
say() { printf 'build-gpu: %s\n' "$*" >&2; }
stamp="$VENV/.pkgs"
if [ "$(cat "$stamp" 2>/dev/null)" != "${PKGS[*]}" ]; then
  say "installing nvcc and CUDA 13.2 headers and libraries into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}"
  echo "${PKGS[*]}" >"$stamp"
fi
CU=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
if [ "${1:-}" = "--print-libdir" ]; then echo "$CU/lib"; exit 0; fi
[ -x "$CU/bin/nvcc" ] || { say "nvcc not found under $CU/bin"; exit 1; }
# The linker wants unversioned names; the wheels ship only versioned ones.
LINK="$ROOT/target/cuda-link"
mkdir -p "$LINK"
for lib in cublas cublasLt curand nvrtc cudart; do
  f=$(ls "$CU"/lib/lib$lib.so.* 2>/dev/null | head -1)
  [ -n "$f" ] || { say "lib$lib.so.* missing under $CU/lib"; exit 1; }
  ln -sf "$f" "$LINK/lib$lib.so"
done
# An empty libcuda with the driver's soname: the binary then needs libcuda.so.1 at start.
printf '' >"$LINK/empty.c"
cc -shared -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$LINK/empty.c"
export CUDA_ROOT="$CU" CUDA_PATH="$CU" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export PATH="$CU/bin:$PATH"
export LIBRARY_PATH="$LINK:$CU/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L $LINK -C link-arg=-Wl,--unresolved-symbols=ignore-in-object-files"
say "cargo build --release --features candle-cuda (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
cargo build --release -p harness --features candle-cuda --target-dir target/gpu
say "built target/gpu/release/harness"
