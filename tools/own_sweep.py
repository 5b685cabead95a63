"""The decode own-suffix kernel alone, against the bytes it must read (GPU).

    python tools/own_sweep.py OUT.json [--quick]

Why: in the job's profile (docs/benchmarks/profile_step_h200.log) the own kernel reads its 18.8 GB per step at
about 2.8 TB/s, but there it runs beside the shared kernel on a second stream, so its duration includes the
SMs it shares. Here it runs alone: no shared segment, each sequence's suffix in 16-token pages shuffled over the
pool (what the engine's block manager produces), one query token per sequence, bf16, head dim 128, 32 layers
captured back to back in one CUDA graph (time per layer, as prompt_tree/kernels/bench.py's ours_graph).

Per row it prints the default launch configuration and every variant of triton_tree.OWN_CFG[16] (BLOCK_N,
num_warps, num_stages) and of the own split count, each as us per layer and as TB/s of KV read, beside the
same run's copy bandwidth (read + write of 2 GiB) and read bandwidth (a bf16 sum over the KV pool). Every
variant's output is checked to be finite and within bf16 rounding of the default's (max_diff in the JSON).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch

from prompt_tree.kernels import build_tree_meta, tree_attention, triton_tree
from prompt_tree.kernels.bench import bench_ms, ceilings, graph_per_layer

D = 128
DT = torch.bfloat16
PAGE = 16
CONFIGS = [(16, 1, 2), (16, 1, 3), (16, 1, 4), (16, 2, 3), (32, 1, 2), (32, 1, 3), (32, 2, 3), (32, 4, 3),
           (64, 2, 3), (64, 4, 2), (64, 4, 3), (64, 4, 4), (128, 4, 3), (128, 8, 3)]
SPLITS = (2, 4)


def row(hq: int, hkv: int, batch: int, suffix: int, rng: random.Random) -> dict:
    per = -(-suffix // PAGE)
    ids = list(range(batch * per))
    rng.shuffle(ids)
    pages = [ids[b * per:(b + 1) * per] for b in range(batch)]
    gen = torch.Generator(device="cuda").manual_seed(batch * 31 + suffix)
    kp = torch.randn(batch * per * PAGE, hkv, D, device="cuda", dtype=DT, generator=gen)
    vp = torch.randn_like(kp)
    q = torch.randn(batch, hq, D, device="cuda", dtype=DT, generator=gen)
    kv_bytes = 2 * batch * suffix * hkv * D * 2
    read_ms = bench_ms(lambda: kp.sum(dtype=torch.float32))
    out = {"hq": hq, "hkv": hkv, "B": batch, "suffix": suffix, "kv_mb": kv_bytes / 1e6,
           "read_tbs": kp.numel() * 2 / (read_ms * 1e-3) / 1e12, "us": {}, "tbs": {}, "max_diff": {}}
    base_cfg = triton_tree.OWN_CFG[16]
    ref = None
    variants = [("default", base_cfg, None)] + [(f"cfg{c}", c, None) for c in CONFIGS if c != base_cfg] \
        + [(f"splits{s}", base_cfg, s) for s in SPLITS]
    for name, cfg, splits in variants:
        triton_tree.OWN_CFG[16] = cfg
        try:
            meta = build_tree_meta([1] * batch, None, [suffix] * batch, [], hq, hkv, D, "cuda", own_pages=pages,
                                   page_size=PAGE, own_splits=splits)
            o = torch.empty_like(q)
            slots = max(meta.max_slots, 1)
            ws = (torch.empty(batch, slots, hq, D, device="cuda"), torch.empty(batch, slots, hq, device="cuda"))
            fn = lambda: tree_attention(q, kp, vp, meta, out=o, workspace=ws)  # noqa: E731, B023
            res = fn().float()
            if not torch.isfinite(res).all():
                raise AssertionError("non-finite output")
            # Another BLOCK_N, warp count or split count sums the fp32 partials in another order before the
            # bf16 rounding: the outputs (averages of N(0, 1) values, |o| < 1 here) may differ by about one bf16
            # ulp at 1 (2**-7); 2e-2 allows two and a half of them and no real error.
            ref = res.clone() if ref is None else ref
            diff = (res - ref).abs().max().item()
            out["max_diff"][name] = diff
            if diff > 2e-2:
                raise AssertionError(f"output differs from the default's by {diff:.3g}, beyond bf16 rounding")
            us = graph_per_layer(fn) * 1e3
        except Exception as e:  # noqa: BLE001 - a variant that fails is reported, the sweep goes on
            print(f"  {name}: failed {e!r:.160}", flush=True)
            us = float("nan")
        finally:
            triton_tree.OWN_CFG[16] = base_cfg
        out["us"][name] = us
        out["tbs"][name] = kv_bytes / (us * 1e-6) / 1e12
    del kp, vp
    torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="JSON output path")
    ap.add_argument("--quick", action="store_true", help="two rows only")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("tools/own_sweep.py needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    t0 = time.time()
    bw, tf = ceilings()
    rng = random.Random(0)
    shapes = [(32, 8, 1024, 136), (32, 32, 1024, 256)] if args.quick else \
        [(hq, hkv, b, s) for hq, hkv in ((32, 8), (32, 32)) for b in (128, 1024) for s in (136, 512)]
    rows = []
    for hq, hkv, b, s in shapes:
        rows.append(row(hq, hkv, b, s, rng))
        r = rows[-1]
        best = min((v, k) for k, v in r["us"].items() if v == v)
        print(f"{hq}/{hkv} B={b} own={s}: default {r['us']['default']:.1f} us ({r['tbs']['default']:.2f} TB/s), "
              f"best {best[1]} {best[0]:.1f} us ({r['kv_mb'] / best[0]:.2f} TB/s); read {r['read_tbs']:.2f}",
              flush=True)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  date=time.strftime("%Y-%m-%d"), copy_bw_tbs=bw / 1e12, matmul_tflops=tf / 1e12,
                  default_cfg=list(triton_tree.OWN_CFG[16]), seconds=round(time.time() - t0, 1), rows=rows)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    names = list(rows[0]["us"])
    print(f"\n{result['device']}, torch {result['torch']}, triton {result['triton']}; copy {bw / 1e12:.2f} TB/s. "
          "TB/s of KV read per variant (us per layer in the JSON):")
    print(f"{'variant':>16} " + " ".join(f"{r['hq']}/{r['hkv']} B{r['B']} s{r['suffix']}".rjust(17) for r in rows))
    for n in names:
        print(f"{n:>16} " + " ".join(f"{r['tbs'][n]:17.2f}" for r in rows))
    print(f"{'read (sum)':>16} " + " ".join(f"{r['read_tbs']:17.2f}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
