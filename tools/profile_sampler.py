"""Where a sampler call's device time goes, kernel by kernel (torch.profiler over plain calls on a GPU).

    PYTHONPATH=$PWD python3 tools/profile_sampler.py --batch 1024 --dist flat peaked --backends triton triton-row

Prints, per (backend, logits shape), each kernel's device time per call and its launches per call; the logits are
tools/bench_sampler.py's (peaked like a trained model's, or flat like a random-weight model's).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

from bench_sampler import SETTINGS, make_logits  # noqa: E402
from prompt_tree.sampler import Sampler  # noqa: E402
from prompt_tree.sampling import SamplingParams  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1024])
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--dist", nargs="+", default=["flat", "peaked"], choices=["flat", "peaked"])
    ap.add_argument("--setting", default="apps", choices=sorted(SETTINGS))
    ap.add_argument("--backends", nargs="+", default=["triton", "triton-row"])
    ap.add_argument("--chunk", type=int, default=None, help="the split kernels' chunk size")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--rounds", action="store_true",
                    help="also list the last call's kernels in launch order with their device times (which round "
                         "of the split kernels costs what)")
    args = ap.parse_args(argv)
    params = SamplingParams(seed=1, **SETTINGS[args.setting])
    for B in args.batch:
        for dist in args.dist:
            logits = make_logits(B, args.vocab, dist, "cuda", torch.bfloat16)
            ids = torch.arange(B, device="cuda") * 7919
            step = torch.full((B,), 3, dtype=torch.int64, device="cuda")
            for backend in args.backends:
                kw = dict(chunk=args.chunk) if backend == "triton" and args.chunk else {}
                sampler = Sampler(params, "cuda", backend=backend, **kw)
                sampler(logits, ids, step)
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(args.calls):
                        sampler(logits, ids, step)
                    torch.cuda.synchronize()
                print(f"\n== {backend} B{B} V{args.vocab} {dist} {args.setting} bf16: per call")
                total = 0.0
                for e in sorted(prof.key_averages(), key=lambda e: -getattr(e, "device_time_total",
                                                                            getattr(e, "cuda_time_total", 0))):
                    t = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)) / args.calls
                    if t <= 0:
                        continue
                    total += t
                    print(f"  {e.key[:60]:60s} {t / 1e3:8.3f} ms  x{e.count / args.calls:.0f}")
                print(f"  {'total':60s} {total / 1e3:8.3f} ms", flush=True)
                if args.rounds:
                    print("  in launch order, the last call (us): " + launch_order(prof, args.calls))
    return 0


def launch_order(prof, calls: int) -> str:
    """The device kernels of the last of `calls` identical calls, in start order: "name us, ..."."""
    kernels = sorted((e for e in prof.events() if "cuda" in str(getattr(e, "device_type", "")).lower()),
                     key=lambda e: e.time_range.start)
    per = len(kernels) // calls if calls else 0
    last = kernels[len(kernels) - per:] if per else []
    def short(name: str) -> str:  # "_pass_kernel[...]" -> "pass"; a templated ATen kernel -> its first word
        return name.split("[")[0].split("<")[0].split("(")[0].strip("_").replace("_kernel", "")[:24]

    return ", ".join(f"{short(e.name)} {e.time_range.elapsed_us():.0f}" for e in last)


if __name__ == "__main__":
    raise SystemExit(main())
