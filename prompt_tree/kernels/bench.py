"""Side-by-side decode-attention benchmark on one GPU: ours against the peers and the hardware floor.

    python -m prompt_tree.kernels.bench [--quick] [--out DIR]

Measured in one run, one decode step of one layer (B sequences, 1 query token each, head dim 128, bf16):
  ours        plan.run of prompt_tree.kernels.plan_tree_attention, plain launches (planned outside the timing, as the
              FlashInfer wrappers' plan()); ours_op: the op tree_attention, host work redone every call
  ours_graph  tree_attention under CUDA-graph replay (32 layers captured back to back, time per layer)
  ours_flat   our kernels with no sharing (every sequence reads its whole path: vLLM's paged prefix cache)
  hydra_torch the paper's recipe: torch flash attention with LSE per level + a torch merge
  fi_decode   FlashInfer paged decode (prefix pages shared in memory, read per sequence), when importable
  fi_cascade  FlashInfer MultiLevelCascadeAttentionWrapper (one level per tree level), when importable
  floor       max(bytes read once / copy bandwidth, flops / matmul rate), both measured in this run
Every method's output is checked against ours (relative error printed). Writes attention.json, attention.md and
attention.png into --out (default $OUT or docs/benchmarks).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

from prompt_tree.kernels import Segment, build_tree_meta, cuda_graph_path, plan_tree_attention, tree_attention
from prompt_tree.kernels.reference import merge_states

D = 128
DT = torch.bfloat16
PAGE = 16


def bench_ms(fn) -> float:
    import triton

    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def ceilings():
    n = 1024**3  # 2 GiB of bf16
    a = torch.empty(n, dtype=DT, device="cuda").normal_()
    b = torch.empty_like(a)
    ms = bench_ms(lambda: b.copy_(a))
    bw = 2 * a.numel() * 2 / (ms * 1e-3)
    del a, b
    m = 8192
    x = torch.randn(m, m, dtype=DT, device="cuda")
    y = torch.randn(m, m, dtype=DT, device="cuda")
    ms = bench_ms(lambda: x @ y)
    return bw, 2 * m**3 / (ms * 1e-3)


def make_workload(hq, hkv, B, levels, suffix, seed=0):
    """levels: [(length, groups)], outermost first; groups divide B evenly. Returns tensors and the tree."""
    torch.manual_seed(seed)
    segs, cursor = [], 0
    for length, groups in levels:
        per = B // groups
        for gi in range(groups):
            segs.append(Segment(cursor, length, gi * per, (gi + 1) * per))
            cursor += length
    shared = cursor
    own_starts = [shared + b * suffix for b in range(B)]
    S = shared + B * suffix
    k = torch.randn(S, hkv, D, dtype=DT, device="cuda")
    v = torch.randn(S, hkv, D, dtype=DT, device="cuda")
    q = torch.randn(B, hq, D, dtype=DT, device="cuda")
    return q, k, v, segs, own_starts, shared


def floor_ms(hq, hkv, B, levels, suffix, bw, tf):
    kv_tokens = sum(length * groups for length, groups in levels) + B * suffix
    kv_bytes = 2 * hkv * D * 2 * kv_tokens
    qo_bytes = 2 * B * hq * D * 2
    flops = 4 * B * hq * D * (sum(length for length, _ in levels) + suffix)
    return max((kv_bytes + qo_bytes) / bw * 1e3, flops / tf * 1e3)


def hydra_torch(q, k, v, segs, levels, B, suffix, shared):
    """The paper's recipe: per level one batched flash-attention call with LSE (equal groups), then a merge."""
    hq, hkv = q.shape[1], k.shape[1]
    g = hq // hkv
    per_level, cursor = [], 0
    for length, groups in levels:
        per = B // groups
        qs = q.view(groups, per, hkv, g, D).permute(0, 2, 1, 3, 4).reshape(groups, hkv, per * g, D)
        ks = k[cursor:cursor + groups * length].view(groups, length, hkv, D).permute(0, 2, 1, 3)
        vs = v[cursor:cursor + groups * length].view(groups, length, hkv, D).permute(0, 2, 1, 3)
        per_level.append((qs, ks.contiguous(), vs.contiguous(), groups, per))
        cursor += groups * length
    qsuf = q.view(B, hkv, g, D)
    ksuf = k[shared:].view(B, suffix, hkv, D).permute(0, 2, 1, 3).contiguous()
    vsuf = v[shared:].view(B, suffix, hkv, D).permute(0, 2, 1, 3).contiguous()

    def run():
        outs, lses = [], []
        for qs, ks, vs, groups, per in per_level:
            o, lse = torch.ops.aten._scaled_dot_product_flash_attention(qs, ks, vs, 0.0, False, False)[:2]
            outs.append(o.view(groups, hkv, per, g, D).permute(0, 2, 1, 3, 4).reshape(B, hq, D))
            lses.append(lse.view(groups, hkv, per, g).permute(0, 2, 1, 3).reshape(B, hq))
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention(qsuf, ksuf, vsuf, 0.0, False, False)[:2]
        outs.append(o.reshape(B, hq, D))
        lses.append(lse.reshape(B, hq))
        return merge_states(outs, lses)[0].to(DT)  # the torch merge of the recipe: the reference one

    return run


def flashinfer_methods(fi, ws, q, k, v, levels, B, suffix, shared):
    hq, hkv = q.shape[1], k.shape[1]
    g = hq // hkv
    i32 = dict(dtype=torch.int32, device="cuda")
    S = k.shape[0]
    if any(length % PAGE for length, _ in levels) or suffix % PAGE:
        return {}
    cache = torch.stack([k, v], 1).view(S // PAGE, PAGE, 2, hkv, D).permute(0, 2, 1, 3, 4).contiguous()
    # page p holds slots p*PAGE .. p*PAGE+PAGE-1: node and suffix ranges map to page ranges directly
    methods = {}
    level_pages, cursor = [], 0
    for length, groups in levels:
        npg = length // PAGE
        level_pages.append([torch.arange(cursor // PAGE + gi * npg, cursor // PAGE + (gi + 1) * npg, **i32)
                            for gi in range(groups)])
        cursor += groups * length
    nsp = suffix // PAGE
    suf_pages = torch.arange(shared // PAGE, S // PAGE, **i32).view(B, nsp)
    per_seq = []
    for b in range(B):
        parts = []
        for li, (length, groups) in enumerate(levels):
            parts.append(level_pages[li][b // (B // groups)])
        parts.append(suf_pages[b])
        per_seq.append(torch.cat(parts))
    full_idx = torch.cat(per_seq)
    indptr = torch.tensor([0] + [len(x) for x in per_seq], **i32).cumsum(0, dtype=torch.int32)
    last = torch.full((B,), PAGE, **i32)
    try:
        dec = fi.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD", use_tensor_cores=(g > 1))
        dec.plan(indptr, full_idx, last, hq, hkv, D, PAGE, data_type=DT, q_data_type=DT)
        methods["fi_decode"] = lambda: dec.run(q, cache)
    except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
        print("fi_decode failed:", repr(e)[:200], flush=True)
    try:
        n_lv = len(levels) + 1
        cas = fi.MultiLevelCascadeAttentionWrapper(n_lv, ws, "NHD")
        qo, kvp, idx, lastp = [], [], [], []
        for li, (length, groups) in enumerate(levels):
            per = B // groups
            qo.append(torch.arange(0, B + 1, per, **i32))
            kvp.append(torch.arange(0, groups + 1, **i32) * (length // PAGE))
            idx.append(torch.cat(level_pages[li]))
            lastp.append(torch.full((groups,), PAGE, **i32))
        qo.append(torch.arange(0, B + 1, **i32))
        kvp.append(torch.arange(0, B + 1, **i32) * nsp)
        idx.append(suf_pages.reshape(-1).contiguous())
        lastp.append(last)
        cas.plan(qo, kvp, idx, lastp, hq, hkv, D, PAGE, q_data_type=DT, kv_data_type=DT)
        methods["fi_cascade"] = lambda: cas.run(q, cache)
    except Exception as e:  # noqa: BLE001
        print("fi_cascade failed:", repr(e)[:200], flush=True)
    return methods


def graph_per_layer(fn, layers=32) -> float:
    """Capture `layers` back-to-back calls in one CUDA graph; return replay time per call (ms)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), cuda_graph_path():  # ours warms up on the path the capture takes
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(layers):
            fn()
    return bench_ms(g.replay) / layers


def configs(quick: bool):
    rows = []
    for hq, hkv in [(32, 8), (40, 40)]:
        for B in ([16, 256, 1024] if quick else [16, 64, 256, 1024]):
            for Np in ([1024, 16384] if quick else [1024, 4096, 16384]):
                rows.append((hq, hkv, B, [(Np, 1)], 256))
    for levels, suffix in [([(2048, 1), (512, 16)], 256), ([(4096, 1), (1024, 64)], 256),
                           ([(8192, 1), (256, 128)], 128)]:
        rows.append((32, 8, 1024, levels, suffix))
    return rows


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", flush=True)
        return
    names = ["ours_graph", "ours", "ours_op", "ours_flat", "hydra_torch", "fi_decode", "fi_cascade"]
    labels = [f"{r['hq']}/{r['hkv']} B{r['B']} " + "+".join(f"{n}x{gr}" for n, gr in r["levels"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(10, len(rows) * 0.45), 5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ys = [(r["peers"].get(name) if name not in ("ours",) else r["ours_ms"]) for r in rows]
        ys = [y / r["floor_ms"] if y else float("nan") for y, r in zip(ys, rows)]
        ax.bar([x + i * width for x in range(len(rows))], ys, width, label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("time / floor (log)")
    ax.set_xticks([x + 0.4 for x in range(len(rows))])
    ax.set_xticklabels(labels, rotation=70, fontsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller grid")
    ap.add_argument("--out", default=os.environ.get("OUT", "docs/benchmarks"), help="output folder")
    ap.add_argument("--no-flashinfer", action="store_true", help="skip the FlashInfer peers")
    ap.add_argument("--graph-peers", action="store_true",
                    help="also time every peer under CUDA-graph replay (as ours_graph), to compare like with like")
    ap.add_argument("--max-floor-ms", type=float, default=None, help="only the rows whose floor is below this")
    ap.add_argument("--name", default="attention", help="output file stem (default: %(default)s)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("prompt_tree.kernels.bench needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    os.makedirs(args.out, exist_ok=True)
    dev_name = torch.cuda.get_device_name()
    print("device", dev_name, "torch", torch.__version__, "triton", triton.__version__, flush=True)
    bw, tf = ceilings()
    print(f"ceilings: copy {bw / 1e12:.2f} TB/s (read+write), bf16 matmul {tf / 1e12:.0f} TFLOP/s", flush=True)
    fi = None
    if not args.no_flashinfer:
        try:
            import flashinfer as fi  # noqa: F811

            print("flashinfer", fi.__version__, flush=True)
        except Exception as e:  # noqa: BLE001
            print("flashinfer unavailable:", repr(e)[:200], flush=True)
    ws = torch.empty(512 * 1024 * 1024, dtype=torch.uint8, device="cuda") if fi else None
    rows = []
    for hq, hkv, B, levels, suffix in configs(args.quick):
        row = dict(hq=hq, hkv=hkv, B=B, levels=[list(x) for x in levels], suffix=suffix,
                   floor_ms=floor_ms(hq, hkv, B, levels, suffix, bw, tf), peers={}, relerr={})
        if args.max_floor_ms is not None and row["floor_ms"] >= args.max_floor_ms:
            continue
        if args.graph_peers:
            row["peers_graph"] = {}
        t0 = time.time()
        try:
            q, k, v, segs, own_starts, shared = make_workload(hq, hkv, B, levels, suffix)
            meta = build_tree_meta([1] * B, own_starts, [suffix] * B, segs, hq, hkv, D, "cuda")
            out = torch.empty_like(q)
            ws_ours = (torch.empty(B, max(meta.max_slots, 1), hq, D, device="cuda"),
                       torch.empty(B, max(meta.max_slots, 1), hq, device="cuda"))
            ours = lambda: tree_attention(q, k, v, meta, out=out, workspace=ws_ours)  # noqa: E731
            ref = ours().float().clone()
            # Plain launches as the peers' plain rows are timed: plan (metadata, buffers) outside, run inside.
            plan = plan_tree_attention(q, k, v, meta, out=out, workspace=ws_ours)
            ours_plan = lambda: plan.run(q, k, v)  # noqa: E731
            if not torch.equal(ours_plan(), ours()):
                raise AssertionError("plan.run differs from tree_attention")
            row["ours_ms"] = bench_ms(ours_plan)
            row["peers"]["ours_op"] = bench_ms(ours)  # the op, redoing the host work every call
            row["peers"]["ours_graph"] = graph_per_layer(ours)
            row["launches"] = meta.num_launches
            meta_flat = build_tree_meta([1] * B, own_starts, [suffix] * B, segs, hq, hkv, D, "cuda", share=False)
            flat = lambda: tree_attention(q, k, v, meta_flat)  # noqa: E731
            methods = {"ours_flat": flat, "hydra_torch": hydra_torch(q, k, v, segs, levels, B, suffix, shared)}
            if fi is not None:
                methods.update(flashinfer_methods(fi, ws, q, k, v, levels, B, suffix, shared))
            for name, fn in methods.items():
                try:
                    o = fn()
                    row["relerr"][name] = ((o.float() - ref).norm() / ref.norm()).item()
                    row["peers"][name] = bench_ms(fn)
                    if args.graph_peers:
                        try:
                            row["peers_graph"][name] = graph_per_layer(fn)
                        except Exception as e:  # noqa: BLE001 - a peer that cannot be captured is reported
                            print(f"{name} under a CUDA graph failed: {repr(e)[:160]}", flush=True)
                            row["peers_graph"][name] = None
                except torch.OutOfMemoryError:
                    row["peers"][name] = None
                    torch.cuda.empty_cache()
            del q, k, v, out, ws_ours
        except torch.OutOfMemoryError:
            row["oom"] = True
        torch.cuda.empty_cache()
        rows.append(row)
        shape = "+".join(f"{n}x{g}" for n, g in levels)
        peers = " ".join(f"{n}={t:.3f}" for n, t in row["peers"].items() if t)
        print(f"{hq}/{hkv} B={B} {shape} sfx={suffix} floor={row['floor_ms']:.3f} ours={row.get('ours_ms', 0):.3f} "
              f"{peers} err={ {k: f'{v:.1e}' for k, v in row['relerr'].items()} } ({time.time() - t0:.0f}s)",
              flush=True)
        result = dict(device=dev_name, torch=torch.__version__, triton=triton.__version__,
                      flashinfer=getattr(fi, "__version__", None), copy_bw_tbs=bw / 1e12, matmul_tflops=tf / 1e12,
                      date=time.strftime("%Y-%m-%d"), rows=rows)
        with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
            json.dump(result, f, indent=1)
    md = os.path.join(args.out, f"{args.name}.md")
    write_markdown(result, md)
    if args.graph_peers:
        write_graph_peers_markdown(result, md)
    else:
        plot([r for r in rows if "ours_ms" in r], os.path.join(args.out, f"{args.name}.png"))
    print(open(md).read())
    return 0


def _row_head(r) -> str:
    """The first cells of a table row: heads, batch, levels, suffix, floor."""
    levels = " + ".join(f"{n}x{g}" for n, g in r["levels"])
    return f"| {r['hq']}/{r['hkv']} | {r['B']} | {levels} | {r['suffix']} | {r['floor_ms']:.3f}"


def write_graph_peers_markdown(result, path):
    """Append a like-with-like table: every method under CUDA-graph replay (32 calls captured, time per call)."""
    names = ["hydra_torch", "fi_decode", "fi_cascade"]
    lines = ["", "## Every method under CUDA-graph replay", "",
             "The peers above are plain launches; here each is captured like ours_graph (32 calls in one graph), "
             "which removes their launch overhead too. Times in ms.", "",
             "| q/kv | B | levels | suffix | floor | ours_graph | " + " | ".join(f"{n}_graph" for n in names)
             + " | best peer (graph) / ours_graph |", "|---|---|---|---|---|---|" + "---|" * len(names) + "---|"]
    for r in result["rows"]:
        if "ours_ms" not in r:
            continue
        pg = {k: v for k, v in r.get("peers_graph", {}).items() if v}
        best = min(pg.values()) if pg else float("nan")
        cells = [f"{pg[n]:.3f}" if n in pg else "-" for n in names]
        lines.append(_row_head(r) + f" | {r['peers']['ours_graph']:.3f} | " + " | ".join(cells)
                     + f" | {best / r['peers']['ours_graph']:.2f} |")
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")


def write_markdown(result, path):
    names = ["ours_graph", "ours_op", "ours_flat", "hydra_torch", "fi_decode", "fi_cascade"]
    lines = [f"# Decode attention, one layer ({result['device']}, torch {result['torch']}, triton {result['triton']}, "
             f"flashinfer {result['flashinfer']}, {result['date']})", "",
             f"Ceilings measured in the same run: copy {result['copy_bw_tbs']:.2f} TB/s (read+write), bf16 matmul "
             f"{result['matmul_tflops']:.0f} TFLOP/s. Times in ms (median of triton.testing.do_bench); ours_graph is "
             "per layer from 32 layers replayed in one CUDA graph. ours is a plain call of a plan "
             "(prompt_tree.kernels.plan_tree_attention: planned once outside the timing, run per call, as "
             "FlashInfer's wrappers are timed); ours_op calls the op prompt_tree.kernels.tree_attention, which redoes "
             "the host work every call.", "",
             "| q/kv | B | levels (len x groups) | suffix | floor | ours | " + " | ".join(names)
             + " | ours_graph/floor | ours/floor | best peer / ours_graph | best peer / ours |",
             "|---|---|---|---|---|---|" + "---|" * len(names) + "---|---|---|---|"]
    ratios: dict[str, list[float]] = {"ours_graph": [], "ours": []}
    for r in result["rows"]:
        if "ours_ms" not in r:
            continue
        ours, graph = r["ours_ms"], r["peers"].get("ours_graph") or float("nan")
        peers = {k: v for k, v in r["peers"].items() if v and not k.startswith("ours")}
        best = min(peers.values()) if peers else float("nan")
        cells = [f"{r['peers'][n]:.3f}" if r["peers"].get(n) else "-" for n in names]
        lines.append(_row_head(r) + f" | {ours:.3f} | " + " | ".join(cells)
                     + f" | {graph / r['floor_ms']:.2f} | {ours / r['floor_ms']:.2f} | {best / graph:.2f} | "
                     f"{best / ours:.2f} |")
        if r["floor_ms"] >= 0.1:
            ratios["ours_graph"].append(graph / r["floor_ms"])
            ratios["ours"].append(ours / r["floor_ms"])
    if ratios["ours"]:
        gm = {k: math.exp(sum(math.log(x) for x in v) / len(v)) for k, v in ratios.items()}
        lines += ["", f"Geometric mean of time / floor over the {len(ratios['ours'])} rows with floor >= 0.1 ms: "
                      f"ours_graph {gm['ours_graph']:.2f} (how the engine decodes: every step replays a CUDA graph), "
                      f"ours with plain launches {gm['ours']:.2f} (adds Python launch overhead per call)."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
