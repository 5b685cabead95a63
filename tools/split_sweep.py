"""Shared-split size against time on the small decode rows, plain (planned) calls and graph replay (GPU).

    python tools/split_sweep.py [--out DIR]

A plain call without overlap runs the shared kernel, then the own kernel (which merges): the shared kernel's
latency is exposed, and on a small row (B=16, 1K prefix: 16 programs at 512-token splits) it is a few long
programs on an otherwise idle GPU. This times prompt_tree.kernels.worklist.MIN_SPLIT_TOKENS in {512, 256, 128, 64} on
those rows, with FlashInfer's paged decode beside them when importable, all timed as prompt_tree.kernels.bench times
them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from prompt_tree.kernels import (LaunchOptions, build_tree_meta, plan_tree_attention, tree_attention, triton_tree,
                                 worklist)
from prompt_tree.kernels.bench import D, bench_ms, flashinfer_methods, graph_per_layer, make_workload


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--pdl", action="store_true", help="instead: programmatic dependent launch off/on "
                    "(prompt_tree.kernels.LaunchOptions.pdl) on one-stream calls, plain and under graph replay")
    args = ap.parse_args(argv)
    if args.pdl:
        return pdl_sweep(args.out)
    try:
        import flashinfer as fi
    except Exception:  # noqa: BLE001
        fi = None
    ws = torch.empty(128 * 1024 * 1024, dtype=torch.uint8, device="cuda") if fi else None
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": {}}
    default = worklist.MIN_SPLIT_TOKENS
    for hq, hkv, B, n in [(32, 8, 16, 1024), (32, 8, 16, 4096), (32, 8, 64, 1024), (40, 40, 16, 1024)]:
        q, k, v, segs, own_starts, shared = make_workload(hq, hkv, B, [(n, 1)], 256)
        name = f"{hq}/{hkv} B{B} {n}"
        row = res["rows"][name] = {}
        if fi is not None:
            fns = flashinfer_methods(fi, ws, q, k, v, [(n, 1)], B, 256, shared)
            row.update({f"{k_}_ms": bench_ms(f) for k_, f in fns.items()})
        try:
            for split in (512, 256, 128, 64):
                worklist.MIN_SPLIT_TOKENS = split
                m = build_tree_meta([1] * B, own_starts, [256] * B, segs, hq, hkv, D, "cuda")
                plan = plan_tree_attention(q, k, v, m)
                plain = bench_ms(lambda: plan.run(q, k, v))  # noqa: B023
                graph = graph_per_layer(lambda: tree_attention(q, k, v, m))  # noqa: B023
                row[f"split{split}"] = {"plain_ms": plain, "graph_ms": graph, "slots": m.max_slots,
                                        "shared_tiles": sum(c.tiles.shape[0] for c in m.shared_classes)}
                print(f"{name:18s} split {split:4d} plain {plain * 1e3:6.1f} us graph {graph * 1e3:6.1f} us "
                      f"slots {m.max_slots}", flush=True)
        finally:
            worklist.MIN_SPLIT_TOKENS = default
        print(name, {k_: round(v_ * 1e3, 1) for k_, v_ in row.items() if k_.endswith("_ms")}, flush=True)
    with open(os.path.join(args.out, "split_sweep.json"), "w") as f:
        json.dump(res, f, indent=1)
    return 0


def pdl_sweep(out_dir: str) -> int:
    """One-stream calls with PDL off and on (plain plan.run, graph replay), against the default two-stream graph."""
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": {}}
    for hq, hkv, B, n in [(32, 8, 16, 1024), (32, 8, 16, 4096), (32, 8, 16, 16384), (32, 8, 64, 1024),
                          (32, 8, 64, 4096), (40, 40, 16, 1024), (32, 8, 256, 4096), (32, 8, 1024, 1024)]:
        q, k, v, segs, own_starts, shared = make_workload(hq, hkv, B, [(n, 1)], 256)
        m = build_tree_meta([1] * B, own_starts, [256] * B, segs, hq, hkv, D, "cuda")
        name = f"{hq}/{hkv} B{B} {n}"
        row = res["rows"][name] = {"graph_two_streams_us": graph_per_layer(lambda: tree_attention(q, k, v, m)) * 1e3}
        ref = tree_attention(q, k, v, m, options=LaunchOptions(overlap=False)).clone()
        for on in (False, True):
            opts = LaunchOptions(overlap=False, pdl=on)
            if on and not any(ln.launch_pdl for ln in triton_tree.build_launches(q, k, v, m, options=opts).launches):
                print(f"{name}: PDL is not available here (needs Hopper and Triton >= 3.3)", flush=True)
            plan = plan_tree_attention(q, k, v, m, options=opts)
            if not torch.equal(plan.run(q, k, v), ref):
                raise AssertionError(f"{name}: PDL {on} changed the output")
            tag = "pdl" if on else "nopdl"
            row[f"plain_{tag}_us"] = bench_ms(lambda: plan.run(q, k, v)) * 1e3  # noqa: B023
            row[f"graph_one_stream_{tag}_us"] = graph_per_layer(
                lambda: tree_attention(q, k, v, m, options=opts)) * 1e3  # noqa: B023
        print(name, {k_: round(v_, 1) for k_, v_ in row.items()}, flush=True)
    with open(os.path.join(out_dir, "pdl_sweep.json"), "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
