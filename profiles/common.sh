# Shared by the recipes: the harness binary, dry-run handling, one place for output.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# HARNESS=path picks the binary (a GPU build, one carried from another machine).
HARNESS="${HARNESS:-$ROOT/target/release/harness}"
OUT_ROOT="$ROOT/profiles/out"
DRY=0
ARGS=()
for a in "$@"; do
  if [ "$a" = "--dry-run" ]; then DRY=1; else ARGS+=("$a"); fi
done
say() { printf '%s: %s\n' "$RECIPE" "$*" >&2; }
run() {
  printf '%s: $ %s\n' "$RECIPE" "$*" >&2
  if [ "$DRY" = 0 ]; then "$@"; fi
}
need_harness() {
  if [ ! -x "$HARNESS" ] && [ "$HARNESS" != "$ROOT/target/release/harness" ]; then
    say "HARNESS=$HARNESS is not an executable file"
    exit 2
  fi
  if [ ! -x "$HARNESS" ]; then
    if [ "$DRY" = 1 ]; then say "would build the harness (cargo build --release)"; else
      (cd "$ROOT" && cargo build --release --quiet); fi
  fi
  export VIRTUAL_ENV="${VIRTUAL_ENV:-$ROOT/.venv}"
}
