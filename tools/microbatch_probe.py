"""Would two micro-batches on two streams hide decode attention under the GEMMs? A probe, not the engine (GPU).

Issue 15's tree rows at batch >= 128 miss 1.25x their physical limit because attention runs after the GEMMs that
feed it: docs/benchmarks.md, "Where the decode step's remaining time goes", bounds a sequential step by the `none`
step plus attention at its own floor. The limit itself lets the memory-bound attention hide under compute-bound
GEMMs. The only way to get there with whole-GPU kernels is NanoFlow's nano-batching: split the batch in two and
let half A's attention run while half B's GEMMs do (two streams, one CUDA graph). This measures what that would
buy before the engine is touched.

One decoder layer as the engine's step runs it, with cuBLAS GEMMs (torch) and our tree-attention op: qkv, tree
attention (one shared prefix of P tokens read once per group, an own suffix per row), o + residual, gate/up, SiLU
x up, down + residual. Norms and RoPE are left out (under 0.4 ms of a whole step, docs/benchmarks.md). L layers
with their own weights and KV (so nothing stays in L2 across layers) are replayed in one CUDA graph; times are
per layer. Variants, in one run:

  gemm       the layer without attention (the `none` step's share)
  attn       attention alone, the engine's launch (shared and own kernels overlapped on a side stream)
  full       the layer on the whole batch, one stream (attention as the engine launches it)
  split_seq  two halves one after the other on one stream (what splitting alone costs: weights read twice)
  split_2s   two halves on two streams in one graph (the nano-batching step)
  split_2p   the same, half A's stream at high priority
  green      (--green-sms N) the halves on two SM partitions (CUDA green contexts): N SMs and the rest
  green_off  the same, half B starting once half A's first qkv GEMM is done

    python tools/microbatch_probe.py [--models llama3-8b,codellama-7b] [--batches 128,512,1024] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from prompt_tree.kernels import LaunchOptions, Segment, build_tree_meta, cuda_graph_path, tree_attention
from prompt_tree.kernels.bench import bench_ms, ceilings

D = 128
DT = torch.bfloat16
SHAPES = {  # hidden, q heads, kv heads, ffn
    "llama3-8b": (4096, 32, 8, 14336),
    "codellama-7b": (4096, 32, 32, 11008),
}
ONE_STREAM = LaunchOptions(overlap=False)  # inside a micro-batch: one stream (PDL), the halves give the overlap


class Layer:
    """One layer's weights and KV pool: [S, Hkv, D] holding the shared prefix (slots 0..P-1) and B own suffixes.
    shape: (hidden, q heads, kv heads, ffn), SHAPES[model] unless given (the CPU test's tiny one)."""

    def __init__(self, model: str, batch: int, prefix: int, own: int, device="cuda", dtype=DT, shape=None):
        hidden, hq, hkv, ffn = SHAPES[model] if shape is None else shape
        self.hq, self.hkv, self.ffn = hq, hkv, ffn
        s = hidden ** -0.5
        self.w_qkv = torch.randn((hq + 2 * hkv) * D, hidden, dtype=dtype, device=device) * s
        self.w_o = torch.randn(hidden, hq * D, dtype=dtype, device=device) * s
        self.w_gu = torch.randn(2 * ffn, hidden, dtype=dtype, device=device) * s
        self.w_d = torch.randn(hidden, ffn, dtype=dtype, device=device) * ffn ** -0.5
        slots = prefix + batch * own
        self.k = torch.randn(slots, hkv, D, dtype=dtype, device=device)
        self.v = torch.randn(slots, hkv, D, dtype=dtype, device=device)


def metas(layer: Layer, batch: int, prefix: int, own: int, parts: int):
    """The tree metadata of each of `parts` equal slices of the batch: every row sees the prefix and its own
    suffix (row b's at slots prefix + b * own ...)."""
    per = batch // parts
    out = []
    for p in range(parts):
        starts = [prefix + (p * per + b) * own for b in range(per)]
        out.append(build_tree_meta([1] * per, starts, [own] * per, [Segment(0, prefix, 0, per)], layer.hq, layer.hkv,
                                   D, layer.k.device))
    return out


def run_layer(layer: Layer, x: torch.Tensor, meta, attention: bool, options: LaunchOptions | None,
              after_qkv: torch.cuda.Event | None = None) -> torch.Tensor:
    """x [n, hidden] -> [n, hidden]; after_qkv: recorded once the qkv GEMM is issued (the other half's start)."""
    n = x.shape[0]
    qkv = x @ layer.w_qkv.t()  # [n, (hq + 2 hkv) D]
    if after_qkv is not None:
        after_qkv.record()
    q = qkv[:, :layer.hq * D].reshape(n, layer.hq, D)
    if attention:
        o = tree_attention(q, layer.k, layer.v, meta, **({} if options is None else {"options": options}))
    else:
        o = q
    h = x + o.reshape(n, -1) @ layer.w_o.t()
    gu = h @ layer.w_gu.t()
    return h + (F.silu(gu[:, :layer.ffn]) * gu[:, layer.ffn:]) @ layer.w_d.t()


def graph_ms(issue, layers: int) -> float:
    """Warm `issue` up on the graph path, capture it once, and time the replay (ms per layer)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), cuda_graph_path():
        issue()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        issue()
    ms = bench_ms(g.replay) / layers
    del g
    return ms


_GREEN_CONTEXTS: list = []  # a green context is destroyed with its Python object, and its streams with it


def green_streams(sms_a: int):
    """Two streams on disjoint SM partitions (CUDA green contexts, torch >= 2.11): sms_a SMs and the rest."""
    from torch.cuda.green_contexts import GreenContext
    total = torch.cuda.get_device_properties(0).multi_processor_count
    _GREEN_CONTEXTS.extend(GreenContext.create(num_sms=n, device_id=0) for n in (sms_a, total - sms_a))
    return tuple(g.Stream() for g in _GREEN_CONTEXTS[-2:])


def measure(model: str, batch: int, prefix: int, own: int, layers: int, green=None) -> dict:
    hidden = SHAPES[model][0]
    stack = [Layer(model, batch, prefix, own) for _ in range(layers)]
    full_meta = [metas(ly, batch, prefix, own, 1)[0] for ly in stack]
    half_meta = [metas(ly, batch, prefix, own, 2) for ly in stack]
    x = torch.randn(batch, hidden, dtype=DT, device="cuda") * 0.1
    half = batch // 2
    hi = torch.cuda.Stream(priority=-1)
    sa, sb = torch.cuda.Stream(), torch.cuda.Stream()

    def chain(xs, ms, attention=True, options=None):
        for ly, m in zip(stack, ms):
            xs = run_layer(ly, xs, m, attention, options)
        return xs

    def two_streams(a_stream, b_stream=sb, offset=False):
        """Half A on a_stream, half B on b_stream; offset: B starts once A's first qkv GEMM is done, so that
        (with equal halves) one half's attention tends to meet the other's GEMMs."""
        cur = torch.cuda.current_stream()
        a_stream.wait_stream(cur)
        b_stream.wait_stream(cur)
        xa, xb = x[:half], x[half:]
        start = torch.cuda.Event() if offset else None
        for i, (ly, (ma, mb)) in enumerate(zip(stack, half_meta)):  # layer by layer: both halves in flight
            with torch.cuda.stream(a_stream):
                xa = run_layer(ly, xa, ma, True, ONE_STREAM, start if i == 0 else None)
            with torch.cuda.stream(b_stream):
                if i == 0 and start is not None:
                    b_stream.wait_event(start)
                xb = run_layer(ly, xb, mb, True, ONE_STREAM)
        cur.wait_stream(a_stream)
        cur.wait_stream(b_stream)
        return xa, xb

    def attn_only():
        for ly, m in zip(stack, full_meta):
            tree_attention(x.reshape(batch, ly.hq, D), ly.k, ly.v, m)  # hidden == hq * D in both shapes

    row = {"model": model, "batch": batch, "prefix": prefix, "own": own, "layers": layers}
    variants = {
        "gemm": lambda: chain(x, full_meta, attention=False),
        "attn": attn_only,
        "full": lambda: chain(x, full_meta),
        "full_1s": lambda: chain(x, full_meta, options=ONE_STREAM),
        "split_seq": lambda: (chain(x[:half], [m[0] for m in half_meta], options=ONE_STREAM),
                              chain(x[half:], [m[1] for m in half_meta], options=ONE_STREAM)),
        "split_2s": lambda: two_streams(sa),
        "split_2p": lambda: two_streams(hi),
    }
    if green:  # SM partitions: each half confined to its own green context (NanoFlow's nano-batches)
        ga, gb = green
        variants["green"] = lambda: two_streams(ga, gb)
        variants["green_off"] = lambda: two_streams(ga, gb, offset=True)
    # the halves compute what the whole batch does (same rows, same weights): a wrong split would show here
    with cuda_graph_path():
        ref = chain(x, full_meta).float()
        xa, xb = two_streams(sa)
        torch.cuda.synchronize()
        got = torch.cat([xa, xb]).float()
    row["split_rel_err"] = ((got - ref).norm() / ref.norm()).item()
    if not torch.isfinite(got).all():
        row["split_rel_err"] = float("nan")
    for name, fn in variants.items():
        try:
            row[name] = graph_ms(fn, layers)
        except Exception as e:  # noqa: BLE001 - report and go on with the other variants
            print(f"{model} B{batch} {name} failed: {e!r}"[:300], flush=True)
            row[name] = float("nan")
        print(f"{model:13s} B{batch:5d} {name:10s} {row[name]:.4f} ms/layer", flush=True)
    stack.clear()  # the next row's layers need the memory (the closures above still hold the list)
    torch.cuda.empty_cache()
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llama3-8b,codellama-7b")
    ap.add_argument("--batches", default="128,512,1024")
    ap.add_argument("--prefix", type=int, default=4096)
    ap.add_argument("--own", type=int, default=136, help="own-suffix tokens per row (the step benchmark's)")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--green-sms", type=int, default=0,
                    help="also run the halves on two SM partitions, this many SMs for half A (0: off)")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    args = ap.parse_args(argv)
    green = green_streams(args.green_sms) if args.green_sms else None
    import triton
    bw, tf = ceilings()
    doc = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "date": time.strftime("%Y-%m-%d"), "copy_bw_tbs": bw / 1e12, "matmul_tflops": tf / 1e12, "rows": []}
    print(f"# {doc['device']}, torch {doc['torch']}, triton {doc['triton']}: copy {bw / 1e12:.2f} TB/s, "
          f"matmul {tf / 1e12:.0f} TFLOP/s", flush=True)
    for model in args.models.split(","):
        for b in (int(v) for v in args.batches.split(",")):
            doc["rows"].append(measure(model, b, args.prefix, args.own, args.layers, green))
            with open(os.path.join(args.out, "microbatch_probe.json"), "w") as f:
                json.dump(doc, f, indent=1)
    names = ["gemm", "attn", "full", "full_1s", "split_seq", "split_2s", "split_2p"] + \
        (["green", "green_off"] if green else [])
    print("\n| model | B | " + " | ".join(names) + " | best split / full | max(gemm, attn) / full | split err |")
    print("|---|---|" + "---|" * (len(names) + 3))
    for r in doc["rows"]:
        best = min(r[n] for n in names if n.startswith(("split_2", "green")))
        print(f"| {r['model']} | {r['batch']} | " + " | ".join(f"{r[n]:.3f}" for n in names) +
              f" | {best / r['full']:.3f} | {max(r['gemm'], r['attn']) / r['full']:.3f} | {r['split_rel_err']:.1e} |")


if __name__ == "__main__":
    sys.exit(main())
