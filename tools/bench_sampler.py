"""Sort-based reference sampler against the sorting-free one, on the CPU (torch path) or a GPU
(Triton kernel), over batch x vocabulary x sampling settings. Prints a table and writes JSON.

Logits are "peaked" by default, shaped like a language model's: a Gaussian tail (sd 1) plus 1-40 tokens lifted by
12-20 nats, enough to outweigh the tail's total mass (128k * e^0.5 ~ e^12), so the APPS setting (T 0.8, top-p
0.95) keeps about 1-40 tokens; "flat" logits (sd 1, no lifted tokens) put most of the vocabulary in the nucleus
and exercise the fallback. Every timed call is also checked: rows whose token differs from the reference's for
the same uniform are counted (`differ`), and each of them is recomputed in fp64 on the CPU
(tests/sampler_oracle.py): `unexplained` counts the differing rows that fp64 does not find decided within float
rounding (it should be 0). On a GPU each row also has the floor of one read of the logits at the copy bandwidth
measured in the same run (`floor_ms`) and the time of a CUDA-graph replay of the call (`graph_ms`: what the engine
pays, with no host launch cost; `ours_ms` is a plain call), and each backend (`--backends`: the split kernel
"triton", the one-program-per-row kernel "triton-row", the "torch" path) is timed on the same logits.

    PYTHONPATH=$PWD python3 tools/bench_sampler.py --out sampler_cpu.json          # CPU, torch path
    PYTHONPATH=$PWD python3 tools/bench_sampler.py --device cuda --out sampler_h200.json
    PROMPT_TREE_CODE=/path/to/old/checkout python3 tools/bench_sampler.py ...   # the previous version, same bench
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# PROMPT_TREE_CODE: another checkout's root (a previous version) to time instead of this one's prompt_tree
sys.path.insert(0, os.environ.get("PROMPT_TREE_CODE", REPO))
sys.path.insert(0, os.path.join(REPO, "tests"))  # sampler_oracle: the fp64 ambiguity check

from prompt_tree.benchmark.limit import measure_ceilings  # noqa: E402
from prompt_tree.sampler import Sampler  # noqa: E402
from prompt_tree.sampling import SamplingParams, sample_reference  # noqa: E402

SETTINGS = {
    "apps": dict(temperature=0.8, top_p=0.95),
    "topk50_topp0.9": dict(temperature=0.7, top_k=50, top_p=0.9),
    "minp0.05": dict(temperature=1.0, min_p=0.05),
    "greedy": dict(temperature=0.0),
}


def make_logits(B: int, V: int, dist: str, device, dtype, seed: int = 0) -> torch.Tensor:
    """[B, V] logits; see the module docstring for the two shapes."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    if dist == "flat":
        x = torch.randn(B, V, generator=g)
    else:
        x = torch.randn(B, V, generator=g)
        top = torch.randint(1, 41, (B,), generator=g)
        for b in range(B):
            idx = torch.randint(0, V, (int(top[b]),), generator=g)
            x[b, idx] += 12 + 8 * torch.rand(len(idx), generator=g)
    return x.to(device=device, dtype=dtype)


def timed(fn, device, repeats: int) -> float:
    """Median seconds of fn() (CUDA: events around each call after a warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def graph_timed(fn, repeats: int) -> float:
    """Median seconds of one replay of fn() captured in a CUDA graph (how the engine runs the sampler: no host
    launch cost)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return timed(graph.replay, torch.device("cuda"), repeats)


def unexplained(logits, params, ids, step, ours, ref) -> int:
    """Differing rows that the fp64 oracle does not find decided within rounding."""
    from sampler_oracle import ambiguous_rows

    rows = (ours != ref).nonzero().flatten()
    if not len(rows) or params.greedy:
        return int(len(rows))
    amb = ambiguous_rows(logits[rows].cpu(), params, ids[rows].cpu(), step[rows].cpu())
    return int((~amb).sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 128, 1024], help="batch sizes")
    ap.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256], help="vocabulary sizes")
    ap.add_argument("--settings", nargs="+", default=["apps", "topk50_topp0.9", "minp0.05"],
                    choices=sorted(SETTINGS), help="sampling settings")
    ap.add_argument("--dist", nargs="+", default=["peaked"], choices=["peaked", "flat"], help="logit shapes")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="logits dtype")
    ap.add_argument("--repeats", type=int, default=0, help="timed calls per row (0: 3 on the CPU, 20 on a GPU)")
    ap.add_argument("--backends", default=None,
                    help="comma-separated Sampler backends (default: triton,triton-row on a GPU, torch on the CPU)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    repeats = args.repeats or (20 if device.type == "cuda" else 3)
    backends = (args.backends or ("triton,triton-row" if device.type == "cuda" else "torch")).split(",")
    bw = measure_ceilings(device).copy_bytes_per_s if device.type == "cuda" else None
    rows = []
    print(f"{'setting':16} {'dist':6} {'B':>5} {'V':>7} {'backend':>10} {'sort ms':>9} {'ours ms':>9} "
          f"{'graph ms':>9} {'floor ms':>9} {'speedup':>8} {'differ':>6} {'unexpl':>6}")
    for dist in args.dist:
        for V in args.vocab:
            for B in args.batch:
                logits = make_logits(B, V, dist, device, dtype)
                ids = torch.arange(B, device=device) * 7919
                step = torch.full((B,), 3, dtype=torch.int64, device=device)
                floor_ms = B * V * logits.element_size() / bw * 1e3 if bw else None
                for name in args.settings:
                    params = SamplingParams(seed=1, **SETTINGS[name])
                    ref = sample_reference(logits, params, ids, step)[0]
                    t_ref = timed(lambda: sample_reference(logits, params, ids, step), device,
                                  max(1, repeats // (4 if B * V > 2**26 and device.type == "cpu" else 1)))
                    for backend in backends:
                        sampler = Sampler(params, device, backend=backend)
                        ours = sampler(logits, ids, step)[0]
                        t_ours = timed(lambda: sampler(logits, ids, step), device, repeats)  # noqa: B023
                        t_graph = (graph_timed(lambda: sampler(logits, ids, step), repeats)  # noqa: B023
                                   if device.type == "cuda" and backend != "torch" else None)
                        row = dict(setting=name, params=SETTINGS[name], dist=dist, batch=B, vocab=V,
                                   dtype=args.dtype, backend=sampler.backend, sort_ms=t_ref * 1e3,
                                   ours_ms=t_ours * 1e3, graph_ms=t_graph * 1e3 if t_graph else None,
                                   floor_ms=floor_ms, speedup=t_ref / t_ours,
                                   differ=int((ours != ref).sum()),
                                   unexplained=unexplained(logits, params, ids, step, ours, ref))
                        rows.append(row)
                        print(f"{name:16} {dist:6} {B:5d} {V:7d} {backend:>10} {row['sort_ms']:9.2f} "
                              f"{row['ours_ms']:9.3f} {row['graph_ms'] or 0:9.3f} {floor_ms or 0:9.3f} "
                              f"{row['speedup']:8.1f} {row['differ']:6d} "
                              f"{row['unexplained']:6d}", flush=True)
    meta = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else
                (platform.processor() or platform.machine()), threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(),
                copy_bw_tbs=bw / 1e12 if bw else None)
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        pass
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(meta, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
