#!/usr/bin/env bash
# The whole test suite: formatting and lints, the Rust tests (unit, conformance on every
# runtime, CLI integration, bad inputs) and the exporter's tests. Sets up .venv first.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/setup.sh python
export VIRTUAL_ENV="$ROOT/.venv"

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
echo "== cargo test" >&2
cargo test --release --workspace
echo "== exporter tests" >&2
"$VIRTUAL_ENV/bin/python" -m unittest discover -s models -p 'test_*.py' -v
