"""Launch-configuration sweep for the tree-attention kernels (GPU). One factor at a time from the current
defaults; prints time per layer (CUDA-graph replay) for each variant on representative decode workloads.

    python -m prompt_tree.kernels.tune [--out DIR] [--only 8,9]      (--only: indices into WORKLOADS)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from prompt_tree.kernels import LaunchOptions, build_tree_meta, tree_attention, triton_tree, worklist
from prompt_tree.kernels.bench import graph_per_layer, make_workload

WORKLOADS = [  # hq, hkv, B, levels, suffix
    (32, 8, 16, [(16384, 1)], 256),
    (32, 8, 64, [(1024, 1)], 256),
    (32, 8, 64, [(16384, 1)], 256),
    (32, 8, 256, [(16384, 1)], 256),
    (32, 8, 1024, [(16384, 1)], 256),
    (40, 40, 16, [(1024, 1)], 256),
    (40, 40, 1024, [(16384, 1)], 256),
    (32, 8, 1024, [(8192, 1), (256, 128)], 128),
    (32, 8, 1024, [(4096, 1)], 256),  # the step benchmark's llama3-8b tree row (prefix 4096)
    (32, 8, 1024, [(2400, 1), (500, 8)], 256),  # the APPS job: few-shot block, 8 problems of 128 samples
]


def variants():
    yield "base", {}
    for cfg in [(32, 4, 3), (32, 4, 2), (64, 4, 2), (32, 2, 2), (32, 2, 3), (16, 2, 2), (32, 1, 2), (16, 1, 2),
                (16, 1, 3), (64, 2, 2)]:
        yield f"own16={cfg}", {"own": (16, cfg)}
    for cfg in [(64, 8, 4), (64, 8, 5), (64, 8, 2), (32, 8, 3), (32, 4, 3)]:
        yield f"sh128={cfg}", {"shared": (128, cfg)}
    yield "overlap_sharedfirst", {"overlap": True}
    yield "overlap_sf+own(32,4,2)", {"overlap": True, "own": (16, (32, 4, 2))}
    yield "overlap_sf+own(64,4,2)+sh(64,8,4)", {"overlap": True, "own": (16, (64, 4, 2)), "shared": (128, (64, 8, 4))}
    yield "overlap_sf+own(32,2,2)", {"overlap": True, "own": (16, (32, 2, 2))}
    yield "overlap_sf+own(16,1,2)", {"overlap": True, "own": (16, (16, 1, 2))}
    yield "waves=1", {"waves": 1}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--only", default=None, help="comma-separated indices into WORKLOADS (default: all)")
    args = ap.parse_args(argv)
    chosen = WORKLOADS if args.only is None else [WORKLOADS[int(i)] for i in args.only.split(",")]
    base_shared, base_own = dict(triton_tree.SHARED_CFG), dict(triton_tree.OWN_CFG)
    base_waves, base_min = worklist.TARGET_WAVES, worklist.MIN_SPLIT_TOKENS
    data = {}
    for hq, hkv, B, levels, suffix in chosen:
        q, k, v, segs, own_starts, _ = make_workload(hq, hkv, B, levels, suffix)
        name = f"{hq}/{hkv} B{B} " + "+".join(f"{n}x{g}" for n, g in levels)
        ref = None
        for vname, var in variants():
            triton_tree.SHARED_CFG.clear(); triton_tree.SHARED_CFG.update(base_shared)
            triton_tree.OWN_CFG.clear(); triton_tree.OWN_CFG.update(base_own)
            worklist.TARGET_WAVES = var.get("waves", base_waves)
            worklist.MIN_SPLIT_TOKENS = var.get("minsplit", base_min)
            if "own" in var:
                triton_tree.OWN_CFG[var["own"][0]] = var["own"][1]
            if "shared" in var:
                triton_tree.SHARED_CFG[var["shared"][0]] = var["shared"][1]
            m = build_tree_meta([1] * B, own_starts, [suffix] * B, segs, hq, hkv, 128, "cuda")
            out = torch.empty_like(q)
            ws = (torch.empty(B, max(m.max_slots, 1), hq, 128, device="cuda"),
                  torch.empty(B, max(m.max_slots, 1), hq, device="cuda"))
            opts = LaunchOptions(overlap=var.get("overlap", False))
            fn = lambda: tree_attention(q, k, v, m, out=out, workspace=ws, options=opts)  # noqa: B023,E731
            try:
                o = fn().float()
                if ref is None:
                    ref = o.clone()
                err = ((o - ref).norm() / ref.norm()).item()
                t = graph_per_layer(fn) * 1e3
            except Exception as e:  # noqa: BLE001 - a config that does not compile is reported
                print(name, vname, "failed", repr(e)[:120], flush=True)
                t, err = float("nan"), float("nan")
            data.setdefault(vname, {})[name] = t
            print(f"{name:28s} {vname:22s} {t:8.1f} us  err {err:.1e}", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    names = [f"{hq}/{hkv} B{B} " + "+".join(f"{n}x{g}" for n, g in lv) for hq, hkv, B, lv, _ in chosen]
    print("\nvariant                " + " ".join(f"{n[:14]:>14s}" for n in names))
    for vname, row in data.items():
        print(f"{vname:22s} " + " ".join(f"{row.get(n, float('nan')):14.1f}" for n in names))
    json.dump(data, open(os.path.join(args.out, "tune.json"), "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
