"""Paged against contiguous own segments, and capacity-padded against exact metadata, on decode rows (GPU).

    python tools/paged_sweep.py OUT.json [--quick]

One decode step of one layer, CUDA-graph replayed (32 layers captured back to back, median time per layer, as
prompt_tree/kernels/bench.py times ours_graph), bf16, head dim 128. The tree has 2 levels: a 1536-token root shared by
all B sequences, then one 512-token node per group of 16 sequences (a 2048-token shared prefix on every path); each
sequence's own suffix holds `suffix` tokens. Columns (microseconds):
  contiguous  own suffixes in one contiguous slot range each (the PAGED=False kernel)
  paged16/32  the same data in pages of 16 / 32 slots, page ids shuffled over the pool (a fragmented pool)
  cap         paged16 with metadata padded to a capacity of 1.5x what the batch needs (no-op tiles and slots)
  exact_3/4   paged16 for 3/4 of the batch (whole groups), unpadded; bucket: that 3/4 batch padded to B with padding
              sequences and capacity metadata (what the engine replays: one graph per bucket)
Every variant's output is checked bit for bit against contiguous (bucket and exact_3/4 against each other on the
real rows; padding rows must be exactly 0). Prints a table last and writes the JSON to OUT.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch

from prompt_tree.kernels import MetaCapacity, Segment, build_tree_meta, required_capacity, tree_attention
from prompt_tree.kernels.bench import graph_per_layer

D = 128
DT = torch.bfloat16
ROOT, GROUP_NODE, GROUP = 1536, 512, 16


def tree(batch: int) -> tuple[list[Segment], int]:
    """The 2-level tree's segments and the first free slot after them."""
    segs = [Segment(0, ROOT, 0, batch)]
    cursor = ROOT
    for lo in range(0, batch, GROUP):
        segs.append(Segment(cursor, GROUP_NODE, lo, min(lo + GROUP, batch)))
        cursor += GROUP_NODE
    return segs, cursor


def row(hq: int, hkv: int, batch: int, suffix: int, rng: random.Random) -> dict:
    segs, shared = tree(batch)
    gen = torch.Generator(device="cuda").manual_seed(batch * 7 + suffix)
    n_kv = shared + batch * suffix
    k = torch.randn(n_kv, hkv, D, device="cuda", dtype=DT, generator=gen)
    v = torch.randn(n_kv, hkv, D, device="cuda", dtype=DT, generator=gen)
    q = torch.randn(batch, hq, D, device="cuda", dtype=DT, generator=gen)
    starts = [shared + b * suffix for b in range(batch)]
    metas = {"contiguous": build_tree_meta([1] * batch, starts, [suffix] * batch, segs, hq, hkv, D, "cuda")}
    caches = {"contiguous": (k, v)}
    pages16 = None
    for page in (16, 32):
        first = -(-shared // page)
        n_pages = batch * (-(-suffix // page))
        ids = list(range(first, first + n_pages))
        rng.shuffle(ids)
        per = -(-suffix // page)
        pages = [ids[b * per:(b + 1) * per] for b in range(batch)]
        pos = torch.arange(suffix, device="cuda")
        table = torch.tensor(pages, device="cuda")
        dst = (table[:, pos // page] * page + pos % page).reshape(-1)  # [B * suffix], sequence-major
        kp = torch.empty(((first + n_pages) * page, hkv, D), device="cuda", dtype=DT)
        vp = torch.empty_like(kp)
        kp[:shared], vp[:shared] = k[:shared], v[:shared]
        kp[dst], vp[dst] = k[shared:], v[shared:]
        metas[f"paged{page}"] = build_tree_meta([1] * batch, None, [suffix] * batch, segs, hq, hkv, D, "cuda",
                                                own_pages=pages, page_size=page)
        caches[f"paged{page}"] = (kp, vp)
        if page == 16:
            pages16 = pages
    exact = metas["paged16"]
    metas["cap"] = build_tree_meta([1] * batch, None, [suffix] * batch, segs, hq, hkv, D, "cuda",
                                   own_pages=pages16, page_size=16, own_splits=exact.own_splits,
                                   capacity=required_capacity(exact).grow(1.5))
    caches["cap"] = caches["paged16"]
    # 3/4 of the batch (whole groups), exact and padded to the bucket of B
    real = batch * 3 // 4 // GROUP * GROUP
    segs_r = [Segment(0, ROOT, 0, real)] + [s for s in segs[1:] if s.seq_hi <= real]
    exact_r = build_tree_meta([1] * real, None, [suffix] * real, segs_r, hq, hkv, D, "cuda",
                              own_pages=pages16[:real], page_size=16)
    need = required_capacity(build_tree_meta([1] * batch, None, [suffix] * real + [0] * (batch - real), segs_r,
                                             hq, hkv, D, "cuda", own_pages=pages16[:real] + [[]] * (batch - real),
                                             page_size=16, own_splits=exact_r.own_splits))
    cap = MetaCapacity(batch, batch, need.shared_tiles, need.own_tiles, need.max_slots, need.max_pages).grow(1.25)
    metas["bucket"] = build_tree_meta([1] * batch, None, [suffix] * real + [0] * (batch - real), segs_r, hq, hkv, D,
                                      "cuda", own_pages=pages16[:real] + [[]] * (batch - real), page_size=16,
                                      own_splits=exact_r.own_splits, capacity=cap)
    metas["exact_3/4"] = exact_r
    caches["bucket"] = caches["exact_3/4"] = caches["paged16"]

    out: dict = {"hq": hq, "hkv": hkv, "B": batch, "suffix": suffix, "own_splits": exact.own_splits, "us": {}}
    results = {}
    for name, meta in metas.items():
        kc, vc = caches[name]
        qx = q[:real] if name == "exact_3/4" else q
        o = torch.empty_like(qx)
        slots = max(meta.max_slots, 1)
        ws = (torch.empty(qx.shape[0], slots, hq, D, device="cuda"), torch.empty(qx.shape[0], slots, hq, device="cuda"))
        fn = lambda: tree_attention(qx, kc, vc, meta, out=o, workspace=ws)  # noqa: E731, B023
        results[name] = fn().clone()
        out["us"][name] = graph_per_layer(fn) * 1e3
    base = results["contiguous"]
    for name in ("paged16", "paged32", "cap"):
        if not torch.equal(results[name], base):
            raise AssertionError(f"{name} differs from contiguous ({hq}/{hkv} B={batch} suffix {suffix})")
    if not (torch.equal(results["bucket"][:real], results["exact_3/4"]) and torch.all(results["bucket"][real:] == 0)):
        raise AssertionError(f"bucket differs from exact ({hq}/{hkv} B={batch} suffix {suffix})")
    del k, v, caches, metas
    torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="JSON output path")
    ap.add_argument("--quick", action="store_true", help="B 32 and 256 only")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("tools/paged_sweep.py needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    rng = random.Random(0)
    t0 = time.time()
    rows = []
    for hq, hkv in ((32, 8), (32, 32)):
        for batch in ((32, 256) if args.quick else (32, 256, 1024)):
            for suffix in (128, 512):
                rows.append(row(hq, hkv, batch, suffix, rng))
                r = rows[-1]
                print(f"{hq}/{hkv} B={batch} suffix={suffix}: " + " ".join(f"{k}={v:.1f}" for k, v in r["us"].items()),
                      flush=True)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  date=time.strftime("%Y-%m-%d"), seconds=round(time.time() - t0, 1), rows=rows)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    names = list(rows[0]["us"])
    print(f"\n{result['device']}, torch {result['torch']}, triton {result['triton']}: us per layer (graph replay)")
    print(f"{'q/kv':>6} {'B':>5} {'suffix':>6} " + " ".join(f"{n:>10}" for n in names) + "  paged16/contig  bucket/exact")
    for r in rows:
        u = r["us"]
        print(f"{r['hq']}/{r['hkv']:<3} {r['B']:>5} {r['suffix']:>6} " + " ".join(f"{u[n]:10.1f}" for n in names)
              + f"  {u['paged16'] / u['contiguous']:14.3f}  {u['bucket'] / u['exact_3/4']:12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
