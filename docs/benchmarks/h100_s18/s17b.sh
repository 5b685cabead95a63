#!/usr/bin/env bash
# Session 17, call B: the final tree (weakref, paused full collections, host gap profile) then 08a2749 (.gpu_runs/old), GSM8K 128 x 1024.

set -uo pipefail
export PYTHONUNBUFFERED=1
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
PYTHONPATH=/tmp/site:$PWD timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_engine_cuda.py::test_cuda_host_gap_profile tests/test_collector.py 2>&1 | tail -3
for v in ${ORDER:-new old}; do
  src=$PWD; [ $v = old ] && src=$PWD/.gpu_runs/old
  mkdir -p "$OUT/$v"
  left=$(( ${LIMIT:-585} - ($(date +%s) - t0) )); [ $left -lt 60 ] && { echo "no time for $v"; break; }
  GC_OUT="$OUT/$v/gc.json" PYTHONPATH=/tmp/site:$src timeout $left python3 .gpu_runs/gc_wrap.py bench --workloads job --models llama-3.2-1b --job-shapes gsm8k \
    --lengths lognormal --problems ${P:-128} --samples 1024 --engines continuous-tree --logits ${LOGITS:-peaked} --time-budget-s 560 --out "$OUT/$v" > "$OUT/$v/job.log" 2>&1
  echo "$v rc $? $(( $(date +%s) - t0 )) s"
  grep '^GC ' "$OUT/$v/job.log" | cut -c1-400
  python3 - "$OUT/$v/job.json" <<'PY'
import json, sys, os
p = sys.argv[1]
if os.path.exists(p):
    for r in json.load(open(p))["rows"]:
        print(f'{r["engine"]} {r.get("logits")} s={r["seconds"]:.2f} tok/s={r["tokens_per_s"]:.0f} host_s={r["host_s"]} rebuild_s={r["rebuild_s"]} steps={r["decode_steps"]} batch={r["mean_batch"]:.0f}')
PY
done
python3 - "$OUT/new/job.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["rows"]:
    g = r.get("host_gaps") or {}
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in g.items() if not isinstance(v, dict)})
    for k in ("host_s", "late_host_s"):
        print(k, {p: round(v, 2) for p, v in (g.get(k) or {}).items()})
PY
