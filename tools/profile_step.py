"""Where one decode step's device time goes, kernel by kernel, in the job's own composition (GPU).

    PYTHONPATH=$PWD python3 tools/profile_step.py --model llama3-8b --rows 2400/8/job/1024 4096/0/128/1024

Builds a step benchmark row (prompt_tree.benchmark.step.measure_row: the engine's own loop, graph replays) and
runs torch.profiler around its timed steps. A row is PREFIX/PROBLEMS/SUFFIX/BATCH: a PREFIX-token few-shot
block, PROBLEMS problem nodes of --problem-len tokens with BATCH / PROBLEMS samples each (0: the samples sit
under the prefix), and each sequence part-way through its completion. SUFFIX `job` draws those positions as a
continuous batch holds them in steady state: a sample is live in proportion to its length, so a live sample's
length is drawn length-biased from the job's lognormal (median 180, sigma 0.6, cap 512) and its position
uniformly within it. A number N puts every sequence at N tokens (4096/0/128/B is the step benchmark's tree
row). Prints the step's median device time (CUDA events), then each kernel's device time per step and its
launches per step, grouped (GEMM, attention, sampler, other), and writes the table as JSON to --out.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys

import torch
from torch.profiler import ProfilerActivity, profile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from prompt_tree.benchmark.bench_tokenizer import bench_tokenizer  # noqa: E402
from prompt_tree.benchmark.job import draw_length  # noqa: E402
from prompt_tree.benchmark.step import measure_row  # noqa: E402
from prompt_tree.config import get_preset  # noqa: E402
from prompt_tree.engine import Engine  # noqa: E402

# Kernel-name fragments of each group; the first group whose fragment a kernel name contains wins.
GROUPS = (("attention", ("_shared_kernel", "_own_kernel", "_merge_kernel", "flash", "attn")),
          ("sampler", ("_pass_kernel", "_stats_kernel", "_decide_kernel", "_start_kernel", "_sample_kernel")),
          ("gemm", ("gemm", "nvjet", "cutlass", "sm90_", "cublas", "matmul")))


def group_of(name: str) -> str:
    low = name.lower()
    for group, frags in GROUPS:
        if any(f.lower() in low for f in frags):
            return group
    return "other"


def job_positions(batch: int, rng: random.Random, cap: int = 512) -> list[int]:
    """Tokens generated so far by each live sequence of a continuous batch in steady state (see the module doc)."""
    out = []
    while len(out) < batch:
        n = draw_length("lognormal", rng, cap)
        if rng.random() < n / cap:  # accept in proportion to length: the length-biased draw
            out.append(max(1, math.ceil(rng.random() * n)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llama3-8b")
    ap.add_argument("--rows", nargs="+", default=["2400/8/job/1024"],
                    help="PREFIX/PROBLEMS/SUFFIX/BATCH per row: SUFFIX 'job' or a token count, PROBLEMS 0 for none")
    ap.add_argument("--problem-len", type=int, default=500)
    ap.add_argument("--mode", default="tree", choices=["none", "tree", "flat"])
    ap.add_argument("--greedy", action="store_true", help="argmax, no stop strings (default: T 0.8, top-p 0.95)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--eager", action="store_true", help="no CUDA graphs (if a profiler misses graph kernels)")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    args = ap.parse_args(argv)
    config = get_preset(args.model)
    tok, _ = bench_tokenizer(config.vocab_size)
    engine = Engine.random(config, device=torch.device("cuda"), dtype="bf16", tokenizer=tok,
                           cuda_graphs=not args.eager)
    engine.eos_ids = ()
    report = []
    for spec in args.rows:
        prefix, problems, suffix, batch = spec.split("/")
        prefix, problems, batch = int(prefix), int(problems), int(batch)
        rng = random.Random(batch)
        suffixes = job_positions(batch, rng) if suffix == "job" else [int(suffix)] * batch
        holder = {}

        @contextlib.contextmanager
        def around():
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                yield
            holder["prof"] = prof

        row = measure_row(engine, batch, prefix, args.mode, not args.greedy, steps=args.steps,
                          problems=problems, problem_len=args.problem_len, suffixes=suffixes,
                          around_steps=around)
        kernels = []
        for e in holder["prof"].key_averages():
            t = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)) / args.steps / 1e3
            if t > 0:
                kernels.append(dict(name=e.key, group=group_of(e.key), ms=t, launches=e.count / args.steps))
        kernels.sort(key=lambda k: -k["ms"])
        groups = {}
        for k in kernels:
            groups[k["group"]] = groups.get(k["group"], 0.0) + k["ms"]
        mean_suffix = sum(suffixes) / batch
        print(f"\n== {args.model} B{batch} (padded {row['padded_rows']}) prefix {prefix} + {problems} x "
              f"{args.problem_len}, mean suffix {mean_suffix:.0f}, {args.mode}, "
              f"{'greedy' if args.greedy else 'sampled'}: step {row['step_ms']:.2f} ms (events), "
              f"host {row['host_ms']:.3f} ms")
        for g, t in sorted(groups.items(), key=lambda x: -x[1]):
            print(f"  {g:10s} {t:8.3f} ms")
        print(f"  {'sum':10s} {sum(groups.values()):8.3f} ms")
        for k in kernels[:16]:
            print(f"    {k['name'][:70]:70s} {k['ms']:8.3f} ms x{k['launches']:.0f}")
        report.append(dict(model=args.model, batch=batch, prefix=prefix, problems=problems,
                           problem_len=args.problem_len, mean_suffix=mean_suffix, mode=args.mode,
                           sampled=not args.greedy, groups=groups, kernels=kernels[:40], **row))
        torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "profile_step.json"), "w", encoding="utf-8") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=report), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
