#!/usr/bin/env bash
# Session 21: one call = CUDA engine tests, the GSM8K job (this tree), then step rows, each stage bounded by LIMIT.
# STAGES (default "tests job step"), TT (pytest timeout), P (GSM8K problems), LOGITS (job), LIMIT (s for the call),
# SMODELS/SBATCH (step rows).
set -uo pipefail
export PYTHONUNBUFFERED=1
t0=$(date +%s)
left() { echo $(( ${LIMIT:-575} - ($(date +%s) - t0) )); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton, sys; print('torch', torch.__version__, 'triton', triton.__version__, 'python', sys.version.split()[0])"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONPATH=/tmp/site:$PWD
for st in ${STAGES:-tests job step}; do
  l=$(left); [ $l -lt 40 ] && { echo "no time for $st"; break; }
  case $st in
  tests)
    timeout $(( ${TT:-120} < l ? ${TT:-120} : l )) python3 -m pytest -q -p no:cacheprovider ${TESTS:-tests/test_engine_cuda.py} > "$OUT/cuda_tests.log" 2>&1
    echo "tests rc $? $(( $(date +%s) - t0 )) s"; tail -3 "$OUT/cuda_tests.log";;
  job)
    mkdir -p "$OUT/job"
    GC_OUT="$OUT/job/gc.json" timeout $l python3 .gpu_runs/gc_wrap.py bench --workloads job --models llama-3.2-1b --job-shapes gsm8k \
      --lengths lognormal --problems ${P:-128} --samples 1024 --engines continuous-tree --logits ${LOGITS:-peaked} --time-budget-s $(( l - 20 )) --out "$OUT/job" > "$OUT/job/job.log" 2>&1
    echo "job rc $? $(( $(date +%s) - t0 )) s"
    python3 - "$OUT/job/job.json" <<'PY'
import json, sys, os
p = sys.argv[1]
if os.path.exists(p):
    for r in json.load(open(p))["rows"]:
        g = r.get("host_gaps") or {}
        print(f'{r["engine"]} {r.get("logits")} s={r["seconds"]:.2f} tok/s={r["tokens_per_s"]:.0f} host_s={r["host_s"]:.3f} between_s={g.get("between_s")} late={g.get("late_steps")}/{g.get("steps")} late_idle={g.get("late_idle_s")} p50={g.get("p50_ms")} rebuild_s={r["rebuild_s"]:.2f} steps={r["decode_steps"]} batch={r["mean_batch"]:.0f} decode_dev={r.get("decode_device_s")}')
PY
    ;;
  step)
    mkdir -p "$OUT/step"
    timeout $l python3 -m prompt_tree.cli bench --workloads step --models ${SMODELS:-llama3-8b,codellama-7b} --batches ${SBATCH:-128,1024} \
      --prefixes 4096 --modes none,tree --sampling greedy,sampled --logits peaked --time-budget-s $(( l - 20 )) --out "$OUT/step" > "$OUT/step/step.log" 2>&1
    echo "step rc $? $(( $(date +%s) - t0 )) s"
    python3 - "$OUT/step/step.json" <<'PY'
import json, sys, os
p = sys.argv[1]
if os.path.exists(p):
    d = json.load(open(p)); print(d["device"], "copy", round(d["copy_bw_tbs"], 2), "TB/s matmul", round(d["matmul_tflops"]), "TFLOP/s", d.get("skinny_gemm"))
    for r in d["rows"]:
        if r.get("skipped"): continue
        print(f'{r["model"]:13s} {r["mode"]:5s} B{r["batch"]:<5d} {r["sampling"]:8s} {r.get("engine")} step={r["step_ms"]:.3f} phys={r["physical_ms"]:.3f} x{r["step_over_physical"]:.3f} host={r["host_ms"]:.4f}')
    print("not run:", d.get("not_run"))
PY
    ;;
  esac
done
echo "total $(( $(date +%s) - t0 )) s"
