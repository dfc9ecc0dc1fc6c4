#!/usr/bin/env bash
# The load generator's own ceiling next to wrk and oha: requests/s against our server's
# /v2/health/live (a trivial endpoint, so the clients are what is measured) at equal
# connections, each client with THREADS threads, in alternating rounds on the same server; the
# median of the rounds, and each client's own CPU (user + system seconds per second).
# Usage: scripts/bench-load.sh [OUT]   (default results/load-ceiling-<UTC time>)
# CONNS (default "16 64 256"), ROUNDS (default 3), SECS (default 5) set the sweep; THREADS
# (default 2) the client threads of the harness and wrk (oha takes its own default).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${1:-results/load-ceiling-$(date -u +%Y-%m-%dT%H-%M-%SZ)}
CONNS=${CONNS:-16 64 256}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
THREADS=${THREADS:-2}
cargo build --release --quiet
H=target/release/harness
mkdir -p "$OUT"
rm -f "$OUT/ports.json"
command -v wrk >/dev/null || echo "wrk not installed (Debian: apt-get install wrk): skipped" >&2
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
[ -x "$OHA" ] || { echo "oha not installed (cargo install oha): skipped" >&2; OHA=; }

$H serve --model models/fixtures/tiny-bert --runtime tract --http-port 0 --no-grpc \
  --port-file "$OUT/ports.json" --shutdown-after 30m 2>"$OUT/server.log" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do [ -s "$OUT/ports.json" ] && break; sleep 0.1; done
PORT=$(sed -E 's/.*"http": *([0-9]+).*/\1/' "$OUT/ports.json")
URL=http://127.0.0.1:$PORT/v2/health/live
for _ in $(seq 1 300); do curl -sf "$URL" >/dev/null && break; sleep 0.1; done

# Runs a client in a subshell and prints "REQ_PER_S CPU_S": its requests/s, and its CPU
# (user + system seconds, from the subshell's `times` once the client has exited).
cpu_of() { awk 'NR==2 { split($1,u,"m"); split($2,s,"m"); print u[1]*60+u[2]+s[1]*60+s[2] }' "$1"; }
run_wrk() {
  ( wrk -t"$THREADS" -c"$1" -d"${SECS}s" "$URL" >"$OUT/wrk.out"; times >"$OUT/times"
    echo "$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk.out") $(cpu_of "$OUT/times")" )
}
run_oha() {
  ( "$OHA" -z "${SECS}s" -c "$1" --no-tui "$URL" >"$OUT/oha.out" 2>&1; times >"$OUT/times"
    echo "$(awk '/Requests\/sec/ {print $2}' "$OUT/oha.out") $(cpu_of "$OUT/times")" )
}
run_harness() {
  ( $H load --target "$URL" --protocol http-get --concurrency "$1" --warmup-time 1s \
      --min-time "${SECS}s" --max-time "${SECS}s" --target-ci off --label harness \
      --client-threads "$THREADS" \
      --out "$OUT/harness-c$1-r$2" --json >"$OUT/harness-c$1-r$2.json" 2>/dev/null
    # Its own CPU over the measured window (the process monitor), not its warm-up.
    python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['scenarios'][0]; m=r['measurement']
print(m['iterations']/m['window_s'], r['served']['client_cores_busy']*float(sys.argv[2]))" \
      "$OUT/harness-c$1-r$2.json" "$SECS" )
}

median() { sort -g | awk '{a[NR]=$1} END { if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

: >"$OUT/rounds.txt"
for c in $CONNS; do
  for r in $(seq 1 "$ROUNDS"); do
    for tool in harness wrk oha; do
      case $tool in
        wrk) command -v wrk >/dev/null || continue; line=$(run_wrk "$c") ;;
        oha) [ -n "$OHA" ] || continue; line=$(run_oha "$c") ;;
        harness) line=$(run_harness "$c" "$r") ;;
      esac
      echo "$c $tool $r $line" | tee -a "$OUT/rounds.txt" >&2
    done
  done
done

{
  echo "| connections | harness req/s | wrk req/s | oha req/s | harness/wrk | harness/oha | client CPU (cores): harness / wrk / oha |"
  echo "|---|---|---|---|---|---|---|"
  for c in $CONNS; do
    m() { awk -v c="$c" -v t="$1" -v k="$2" '$1==c && $2==t {print $k}' "$OUT/rounds.txt" | median; }
    cores() { local v; v=$(m "$1" 5); [ -n "$v" ] && awk -v v="$v" -v s="$SECS" 'BEGIN {printf "%.2f", v/s}' || echo -; }
    h=$(m harness 4); w=$(m wrk 4); o=$(m oha 4)
    ratio() { [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a/b}' || echo -; }
    printf "| %s | %.0f | %s | %s | %s | %s | %s / %s / %s |\n" "$c" "$h" "${w:--}" "${o:--}" \
      "$(ratio "$h" "$w")" "$(ratio "$h" "$o")" "$(cores harness)" "$(cores wrk)" "$(cores oha)"
  done
} | tee "$OUT/table.md"
echo "rounds: $OUT/rounds.txt (median of $ROUNDS rounds of ${SECS}s; server: $URL)" >&2
