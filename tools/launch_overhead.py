"""Where the host time of one plain tree_attention call goes, and what small decode rows cost on the GPU (GPU).

    python tools/launch_overhead.py [--out DIR]

Host part: microseconds of CPU per call for the whole op, for a planned call
(prompt_tree.kernels.plan_tree_attention's run) and for pieces of them (checks, stream switches, one Triton launch
through the JIT dispatcher, the same compiled kernel launched directly), on a decode row whose GPU time is far below
the host time (32/8, B=16, 1K prefix). Each is a loop of calls without synchronisation,
divided by the count: the GPU keeps up, so this is the host cost.
GPU part (--graph): the small rows of the attention grid under CUDA-graph replay (per layer), with and without the side
stream that overlaps the own-suffix kernel with the shared kernels.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time

import torch

from prompt_tree.kernels import LaunchOptions, build_tree_meta, launch, plan_tree_attention, tree_attention
from prompt_tree.kernels import attention_plan as plan_mod, triton_tree, worklist
from prompt_tree.kernels.bench import graph_per_layer, make_workload
from prompt_tree.kernels.tree_attention import _check

D = 128


def host_us(fn, n: int = 400) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--graph", action="store_true", help="also time the small rows under graph replay")
    args = ap.parse_args(argv)
    import triton

    res: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                 "date": time.strftime("%Y-%m-%d"), "host_us": {}, "graph_us": {}}
    hq, hkv, B, suffix = 32, 8, 16, 256
    q, k, v, segs, own_starts, _ = make_workload(hq, hkv, B, [(1024, 1)], suffix)
    m = build_tree_meta([1] * B, own_starts, [suffix] * B, segs, hq, hkv, D, "cuda")
    out = torch.empty_like(q)
    ws = (torch.empty(B, m.max_slots, hq, D, device="cuda"), torch.empty(B, m.max_slots, hq, device="cuda"))
    h = res["host_us"]
    h["op_default"] = host_us(lambda: tree_attention(q, k, v, m, out=out, workspace=ws))
    runner, jit = LaunchOptions(raw=False), LaunchOptions(direct=False)
    h["op_direct_runner"] = host_us(lambda: tree_attention(q, k, v, m, out=out, workspace=ws, options=runner))
    h["op_jit_dispatch"] = host_us(lambda: tree_attention(q, k, v, m, out=out, workspace=ws, options=jit))
    two = LaunchOptions(overlap=True)
    h["op_side_stream"] = host_us(lambda: tree_attention(q, k, v, m, out=out, workspace=ws, options=two))
    h["op_alloc"] = host_us(lambda: tree_attention(q, k, v, m))
    plan = plan_tree_attention(q, k, v, m, out=out, workspace=ws)
    assert plan._raw is not None, "the plan is not on the direct path"
    h["plan_run"] = host_us(lambda: plan.run(q, k, v))
    h["plan_check_only"] = host_us(lambda: plan_mod._signature(q, k, v) == plan._sig)
    h["raw_launch_ok"] = host_us(launch.raw_launch_ok)
    h["no_launch_hooks"] = host_us(launch.no_launch_hooks)
    h["check"] = host_us(lambda: _check(q, k, v, m))
    main_s = torch.cuda.current_stream()
    side = torch.cuda.Stream()

    def streams():
        side.wait_stream(main_s)
        with torch.cuda.stream(side):
            pass
        main_s.wait_stream(side)

    h["stream_fork_join"] = host_us(streams)
    o_part, l_part = ws
    grid = (B, 2)
    margs = (o_part, l_part, m.row_seq, m.seq_shared_slots, out, l_part,
             o_part.stride(0), o_part.stride(1), l_part.stride(0), l_part.stride(1), out.stride(0), out.stride(1),
             l_part.stride(0))
    mkw = dict(NUM_HEADS=hq, HEAD_DIM=D, EXTRA_SLOTS=1, BLOCK_H=16, BLOCK_D=128, WRITE_LSE=False)
    h["merge_launch_jit"] = host_us(lambda: triton_tree._merge_kernel[grid](*margs, **mkw, num_warps=4))
    direct = launch.DirectLauncher(triton_tree._merge_kernel)
    h["merge_launch_direct"] = host_us(lambda: direct(grid, margs, mkw, 4))
    h["merge_launch_direct_runner"] = host_us(lambda: direct(grid, margs, mkw, 4, raw=False))
    h["torch_add_small"] = host_us(lambda: l_part.add_(0.0))
    h["torch_empty_x3"] = host_us(lambda: (torch.empty_like(q), torch.empty(B, 4, hq, D, device="cuda"),
                                           torch.empty(B, 4, hq, device="cuda")))
    for key, val in h.items():
        print(f"host {key:28s} {val:8.1f} us", flush=True)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(300):
        tree_attention(q, k, v, m, out=out, workspace=ws)
    prof.disable()
    torch.cuda.synchronize()
    stats = io.StringIO()
    pstats.Stats(prof, stream=stats).sort_stats("tottime").print_stats(14)
    print("\n".join(stats.getvalue().splitlines()[-24:]), flush=True)
    if not args.graph:
        with open(os.path.join(args.out, "launch_overhead.json"), "w") as f:
            json.dump(res, f, indent=1)
        return 0

    rows = [(32, 8, 16, 1024), (32, 8, 16, 4096), (32, 8, 16, 16384), (32, 8, 64, 1024), (32, 8, 64, 4096),
            (40, 40, 16, 1024), (40, 40, 16, 4096), (40, 40, 64, 1024)]
    split_default = worklist.MIN_SPLIT_TOKENS
    for hq, hkv, B, n in rows:
        q, k, v, segs, own_starts, _ = make_workload(hq, hkv, B, [(n, 1)], suffix)
        name = f"{hq}/{hkv} B{B} {n}"
        for variant, kw, split in (("overlap", {}, split_default),
                                   ("no_overlap", {"options": LaunchOptions(overlap=False)}, split_default),
                                   ("split256", {}, 256)):
            worklist.MIN_SPLIT_TOKENS = split
            m = build_tree_meta([1] * B, own_starts, [suffix] * B, segs, hq, hkv, D, "cuda")
            out = torch.empty_like(q)
            ws = (torch.empty(B, m.max_slots, hq, D, device="cuda"), torch.empty(B, m.max_slots, hq, device="cuda"))
            t = graph_per_layer(lambda: tree_attention(q, k, v, m, out=out, workspace=ws, **kw)) * 1e3  # noqa: B023
            res["graph_us"].setdefault(name, {})[variant] = t
            print(f"graph {name:22s} {variant:12s} {t:7.1f} us", flush=True)
        worklist.MIN_SPLIT_TOKENS = split_default
    with open(os.path.join(args.out, "launch_overhead.json"), "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
