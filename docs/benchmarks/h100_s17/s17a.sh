#!/usr/bin/env bash
# Session 17, call A: full collections paused during generate (this tree) against 08a2749's engine (.gpu_runs/old,
# da3a9b5's prompt_tree, identical engine), GSM8K 128 x 1024 peaked, continuous-tree, with collector counts.
set -uo pipefail
export PYTHONUNBUFFERED=1
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
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
