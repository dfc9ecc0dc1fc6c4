#!/usr/bin/env bash
# The whole test suite: formatting and lints, the Rust tests (unit, conformance on every
# runtime, CLI integration, bad inputs, network mode against our server and Triton), the
# exporter's tests and the CPU container image (built with podman and run, scripts/container.sh).
# Sets up .venv, .venv-triton and .venv-fastapi first.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/setup.sh python
# NVIDIA Triton (PyTriton) and the FastAPI baseline for the client tests against them.
scripts/setup.sh triton
scripts/setup.sh fastapi
export VIRTUAL_ENV="$ROOT/.venv"

# The report test renders report.html in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium for the report test" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi

# The perf recipe's test records for real (Debian's linux-perf).
if ! command -v perf >/dev/null 2>&1; then
  echo "== installing linux-perf for the profile test" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
  else
    sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
  fi
fi

# ... and draws flame graphs with inferno (crates.io).
if ! command -v inferno-flamegraph >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/inferno-flamegraph" ]; then
  echo "== installing inferno for the profile test" >&2
  cargo install inferno --locked --quiet
fi

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
echo "== cargo test" >&2
cargo test --release --workspace
echo "== exporter tests" >&2
"$VIRTUAL_ENV/bin/python" -m unittest discover -s models -p 'test_*.py' -v
# docker/Dockerfile on a Debian base made from Debian's archive (no public registry here), with
# the binary cargo test built: about 2 minutes the first time on a machine, 10 s after.
echo "== container image (scripts/container.sh)" >&2
scripts/container.sh
