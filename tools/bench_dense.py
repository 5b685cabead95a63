"""The dense decode step against its physical floor: unfused vs fused (vs torch.compile'd) on real model shapes.

    python tools/bench_dense.py docs/benchmarks/dense.json                      # GPU: llama3-8b, codellama-7b
    python tools/bench_dense.py /tmp/dense.json --models tiny --batches 1,4     # CPU smoke test

One step = the no-attention decode step: B sequences, one token each, at positions spread over [0, 4096), every
layer with the attention callback returning q (the engine's "none" mode), then the lm_head GEMM. Random weights
(std 0.02) in bf16 on a GPU, fp32 on CPU. Variants, all over the same weight tensors:
- unfused: prompt_tree.plain_model.PlainModel, the model as it was before the fusion (separate q/k/v and gate/up
  GEMMs, RoPE on copies, add and norm apart, fp32 logits);
- fused: LlamaModel with the Triton kernels of prompt_tree.fused_ops (logits_raw: lm_head in the model dtype);
- compiled: LlamaModel with DenseOptions(compile=True) (inductor; --no-compile skips it);
- skinny (asked for by name, or added by --gemm-table): fused, with the GEMMs that the tables shipped for this
  device (prompt_tree/gemm_tables/) or the --gemm-table file found faster than cuBLAS on
  prompt_tree.skinny_gemm's kernel (DenseOptions.gemm "auto"); fused and compiled use cuBLAS.
On CUDA each (variant, batch) step is captured in a CUDA graph and replayed; step_ms is the median of --steps
replays timed one by one with CUDA events. On CPU steps run eagerly, timed with perf_counter.

floor_ms = max(bytes / copy bandwidth, flops / matmul rate), the ceilings measured in this run (a 2 GiB bf16 copy,
counted as bytes read + written, and a bf16 8192^3 matmul: prompt_tree.benchmark.limit.measure_ceilings).
bytes: every weight read once (the embedding: only the B rows looked up; the lm_head whole) plus each GEMM's
input read and output written once in the model dtype. flops: 2 per multiply-add of every GEMM (the q/k/v,
o, gate/up and down projections of every layer, and the lm_head). Elementwise work is not counted: it is what
fusion removes. Each row also reports max|logits - unfused logits| / max|unfused logits| as a sanity check.
Prints a table last and writes JSON to the path given.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prompt_tree.benchmark.limit import Ceilings, measure_ceilings  # noqa: E402
from prompt_tree.config import get_preset, replace  # noqa: E402
from prompt_tree.loading import random_model, resolve_device_dtype  # noqa: E402
from prompt_tree.model import DenseOptions  # noqa: E402
from prompt_tree.plain_model import PlainModel  # noqa: E402
from prompt_tree.kernels import cuda_graph_path  # noqa: E402
from prompt_tree.skinny_gemm import registered  # noqa: E402

VARIANTS = ("unfused", "fused", "compiled", "skinny")
MAX_POSITION = 4096  # decode positions are drawn below this: RoPE angles of a realistic context


def no_attention(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The engine's "none" mode: the query stands in for the attention output (same shapes, no KV work)."""
    return q


def step_bytes_flops(config, batch: int, el: int) -> tuple[int, int]:
    """(bytes, flops) of one no-attention decode step's GEMMs at `batch` rows (see the module docstring)."""
    H, inter, V = config.hidden_size, config.intermediate_size, config.vocab_size
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    # (in features, out features) of every GEMM of a layer
    gemms = [(H, q + 2 * kv), (q, H), (H, 2 * inter), (inter, H)]
    weight_elems = config.num_layers * (sum(i * o for i, o in gemms) + (q + 2 * kv if config.qkv_bias else 0)
                                        + 2 * H) + H + V * H  # norms, final norm, lm_head
    act_elems = config.num_layers * sum(batch * (i + o) for i, o in gemms) + batch * (H + V) + batch * H  # + embed rows
    flops = 2 * batch * (config.num_layers * sum(i * o for i, o in gemms) + V * H)
    return (weight_elems + act_elems) * el, flops


def floor_ms(config, batch: int, el: int, ceilings: Ceilings) -> float:
    nbytes, flops = step_bytes_flops(config, batch, el)
    return 1e3 * max(nbytes / ceilings.copy_bytes_per_s, flops / ceilings.matmul_flops_per_s)


class Step:
    """One variant's decode step on static input buffers: ids, positions [B] int64 -> logits [B, V]."""

    def __init__(self, model, variant: str, batch: int, device: torch.device, seed: int):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.ids = torch.randint(0, model.config.vocab_size, (batch,), generator=gen).to(device)
        self.pos = torch.randint(0, MAX_POSITION, (batch,), generator=gen).to(device)
        self.variant = variant
        self.net = PlainModel.of(model) if variant == "unfused" else model
        self.graph = None
        self.out = None

    def __call__(self) -> torch.Tensor:
        hidden = self.net(self.ids, self.pos, no_attention)
        return self.net.logits(hidden) if self.variant == "unfused" else self.net.logits_raw(hidden)

    def capture(self) -> None:
        """Warm up on a side stream on the capture's launch path (Triton and inductor compile there; the skinny
        GEMM runs only on that path), then capture one step."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), cuda_graph_path():
            for _ in range(2):
                self()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self()

    def run(self) -> torch.Tensor:
        if self.graph is None:
            self.out = self()
        else:
            self.graph.replay()
        return self.out


def time_steps(step: Step, steps: int, cuda: bool) -> float:
    """Median ms of `steps` timed steps after 3 untimed ones."""
    for _ in range(3):
        step.run()
    times = []
    if cuda:
        torch.cuda.synchronize()
        for _ in range(steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step.run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(steps):
            t0 = time.perf_counter()
            step.run()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def kernel_times(step: Step, steps: int = 5) -> list[tuple[str, float]]:
    """GPU time per step of each kernel (ms, largest first) over `steps` eager steps under torch.profiler: where
    a step's time goes. Eager launches only add gaps between kernels, not kernel time."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    totals: dict[str, float] = {}
    for evt in prof.key_averages():
        us = getattr(evt, "self_device_time_total", None)
        us = getattr(evt, "self_cuda_time_total", 0.0) if us is None else us  # older torch
        if us > 0:
            totals[evt.key] = totals.get(evt.key, 0.0) + us / steps / 1e3
    return sorted(totals.items(), key=lambda kv: -kv[1])


def bench_model(name: str, args, device: torch.device, dtype: torch.dtype, ceilings: Ceilings) -> list[dict]:
    config = get_preset(name)
    if args.layers:
        config = replace(config, num_layers=args.layers)
    cuda = device.type == "cuda"
    model = random_model(config, seed=0, device=device, dtype=dtype)
    el = torch.empty((), dtype=dtype).element_size()
    rows = []
    reference: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for variant in args.variants:
            torch._dynamo.reset()  # recompiles are counted per function across models: start each one afresh
            model.set_dense_options(DenseOptions(compile=variant == "compiled", compile_backend=args.compile_backend,
                                                 gemm="auto" if variant == "skinny" else "cublas"))
            for batch in args.batches:
                step = Step(model, variant, batch, device, seed=batch)
                t0 = time.perf_counter()
                if cuda and not args.no_graphs:
                    step.capture()
                else:
                    step.run()  # warm-up (and compile) outside the timing
                setup_s = time.perf_counter() - t0
                ms = time_steps(step, args.steps, cuda)
                logits = step.run().float()
                ref = reference.setdefault(batch, logits)  # the first variant's (unfused unless skipped)
                diff = ((logits - ref).abs().max() / ref.abs().max()).item()
                fl = floor_ms(config, batch, el, ceilings)
                nbytes, flops = step_bytes_flops(config, batch, el)
                rows.append(dict(model=name, layers=config.num_layers, batch=batch, variant=variant, step_ms=ms,
                                 floor_ms=fl, over_floor=ms / fl, bytes=nbytes, flops=flops,
                                 setup_s=setup_s, rel_diff_vs_first=diff))
                if cuda and batch in args.profile:
                    kernels = kernel_times(step)
                    rows[-1]["kernels_ms"] = [[k[:120], round(t, 4)] for k, t in kernels[:12]]
                    print("  kernel ms/step: " + "; ".join(f"{t:.3f} {k[:70]}" for k, t in kernels[:12]))
                print(f"{name} {variant:8s} B={batch:5d}  {ms:8.3f} ms  floor {fl:7.3f}  x{ms / fl:5.2f}  "
                      f"(setup {setup_s:.1f} s, rel diff {diff:.2g})", flush=True)
                del step, logits
                if cuda:
                    torch.cuda.empty_cache()
    model.set_dense_options(DenseOptions())
    torch._dynamo.reset()
    del model
    if cuda:
        torch.cuda.empty_cache()
    return rows


def table(rows: list[dict], variants: tuple[str, ...]) -> str:
    """Markdown: one line per (model, batch), step ms per variant, the floor and each variant over the floor."""
    lines = ["| model | B | floor ms | " + " | ".join(f"{v} ms" for v in variants) + " | "
             + " | ".join(f"{v}/floor" for v in variants) + " |",
             "|---|---|---|" + "---|" * (2 * len(variants))]
    keys = sorted({(r["model"], r["batch"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for model, batch in keys:
        by = {r["variant"]: r for r in rows if (r["model"], r["batch"]) == (model, batch)}
        fl = next(iter(by.values()))["floor_ms"]
        cells = [f"{by[v]['step_ms']:.3f}" if v in by else "-" for v in variants]
        ratios = [f"{by[v]['over_floor']:.2f}" if v in by else "-" for v in variants]
        lines.append(f"| {model} | {batch} | {fl:.3f} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="path of the JSON results file to write")
    p.add_argument("--models", default=None,
                   help="comma-separated presets (default: llama3-8b,codellama-7b on a GPU, tiny on CPU)")
    p.add_argument("--batches", default=None,
                   help="comma-separated batch sizes (default: 32,128,512,1024,2048 on a GPU, 1,4 on CPU)")
    p.add_argument("--variants", default="unfused,fused,compiled", help=f"comma-separated, of {','.join(VARIANTS)}")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compiled variant (aot_eager: trace only, for smoke tests)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per row (median reported)")
    p.add_argument("--layers", type=int, default=None, help="override the number of layers (quick runs)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--no-graphs", action="store_true", help="time eager steps on CUDA instead of graph replays")
    p.add_argument("--gemm-table", default=None, metavar="JSON",
                   help="a GEMM table or tools/gemm_sweep.py's output, over the shipped tables: adds the skinny "
                        "variant")
    p.add_argument("--profile", default="", help="comma-separated batch sizes whose kernels to time with "
                                                   "torch.profiler (CUDA; adds kernels_ms to their rows)")
    args = p.parse_args(argv)
    device, dtype = resolve_device_dtype(args.device)
    gpu = device.type == "cuda"
    args.models = (args.models or ("llama3-8b,codellama-7b" if gpu else "tiny")).split(",")
    args.batches = [int(b) for b in (args.batches or ("32,128,512,1024,2048" if gpu else "1,4")).split(",")]
    variants = tuple(v for v in args.variants.split(",") if v)
    if args.gemm_table and "skinny" not in variants:
        variants += ("skinny",)
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant {bad[0]!r}; choose from {', '.join(VARIANTS)}")
    if args.no_compile:
        variants = tuple(v for v in variants if v != "compiled")
    args.variants = variants
    args.profile = [int(b) for b in args.profile.split(",") if b]
    if args.steps < 1 or any(b < 1 for b in args.batches) or (args.layers is not None and args.layers < 1):
        p.error("--steps, --batches and --layers must be positive")
    return args, device, dtype


def main(argv=None) -> int:
    args, device, dtype = parse_args(argv)
    if args.gemm_table:
        from prompt_tree.skinny_gemm import register_sweep

        name, count = register_sweep(args.gemm_table)
        print(f"gemm table: {count} shapes on the skinny kernel on {name}", flush=True)
    t0 = time.perf_counter()
    ceilings = measure_ceilings(device)
    print(f"ceilings: copy {ceilings.copy_bytes_per_s / 1e12:.3g} TB/s, "
          f"matmul {ceilings.matmul_flops_per_s / 1e12:.3g} TFLOP/s", flush=True)
    rows = []
    for name in args.models:
        rows += bench_model(name, args, device, dtype, ceilings)
    import triton

    result = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__, triton=triton.__version__, dtype=str(dtype).replace("torch.", ""),
        cuda_graphs=device.type == "cuda" and not args.no_graphs, steps=args.steps,
        compile_backend=args.compile_backend if "compiled" in args.variants else None,
        copy_bw_tbs=ceilings.copy_bytes_per_s / 1e12, matmul_tflops=ceilings.matmul_flops_per_s / 1e12,
        skinny_gemm=registered(), seconds=time.perf_counter() - t0, rows=rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\n{result['device']}, {result['dtype']}, torch {result['torch']}, triton {result['triton']}; "
          f"ceilings: copy {result['copy_bw_tbs']:.3g} TB/s, matmul {result['matmul_tflops']:.3g} TFLOP/s; "
          f"{result['seconds']:.0f} s")
    print(table(rows, args.variants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
