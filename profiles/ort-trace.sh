#!/usr/bin/env bash
# ONNX Runtime's own profiler: a Chrome-trace JSON of every node, and the top operators.
# Usage: profiles/ort-trace.sh [--dry-run] HARNESS-COMPARE-ARGS...   (see profiles/README.md)
set -euo pipefail
RECIPE=ort-trace
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_harness
OUT="$OUT_ROOT/ort-trace"
run "$HARNESS" compare --runtimes ort --ort-profile --no-overhead --out "$OUT" "${ARGS[@]}"
[ "$DRY" = 1 ] && exit 0
PY="$VIRTUAL_ENV/bin/python"; [ -x "$PY" ] || PY=python3
"$PY" - "$OUT/ort-profile" <<'PYEOF'
import json, sys, glob, collections
files = sorted(glob.glob(sys.argv[1] + "/*.json"))
if not files:
    sys.exit("ort-trace: no trace written (did the ort rows run? see results.csv)")
for f in files:
    events = json.load(open(f))
    by_op = collections.Counter()
    runs = 0
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e.get("args", {}).get("op_name", "?")] += e.get("dur", 0)
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            runs += 1
    total = sum(by_op.values()) or 1
    print(f"{f}: {runs} runs")
    for op, us in by_op.most_common(10):
        print(f"  {op:<24} {us / 1000:10.1f} ms  {100 * us / total:5.1f}%")
PYEOF
