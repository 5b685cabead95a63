"""Engine decode throughput, tree vs flat attention, on a random-weight model of a real shape (GPU).

    python examples/bench_engine.py [--preset llama3-8b] [--prefix 4096] [--batch 256] [--new 128]

One shared prefix of `--prefix` random token ids, `--batch` samples of `--new` greedy tokens (EOS disabled so
every sequence runs to length). A short warm-up generate first compiles the kernels and captures the graphs.
Also reports how many greedy tokens agree between tree and flat (same maths, different summation order: in
bf16 a near-tie between two logits can flip, after which the continuations legitimately differ).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from prompt_tree import Engine, PromptTree, SamplingParams


def run(engine, tree, params, attention):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = engine.generate(tree, params, attention=attention, progress=False)
    torch.cuda.synchronize()
    s = res.summary
    return res, dict(attention=attention, wall_s=time.perf_counter() - t0, prefill_s=s.prefill_seconds,
                     decode_s=s.decode_seconds, decode_tok_s=s.decode_tokens_per_second,
                     peak_gib=s.peak_memory_bytes / 2**30, kv_gib=s.kv_bytes / 2**30, steps=s.decode_steps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama3-8b")
    ap.add_argument("--prefix", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--out", default=os.environ.get("OUT", "docs/benchmarks"))
    args = ap.parse_args()
    import triton

    engine = Engine.random(args.preset, seed=0, device="cuda", dtype=torch.bfloat16)
    engine.eos_ids = ()  # run every sequence to max_new_tokens
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, engine.config.vocab_size, (args.prefix,), generator=g).tolist()
    tree = PromptTree()
    tree.root.add(prefix, samples=args.batch, key="prefix")
    # warm-up: compile kernels for both attention modes, capture graphs
    for att in ("tree", "flat"):
        engine.generate(tree, SamplingParams(max_new_tokens=3, temperature=0.0), attention=att, progress=False)
    params = SamplingParams(max_new_tokens=args.new, temperature=0.0)
    rows = []
    outs = {}
    for att in ("tree", "flat"):
        res, row = run(engine, tree, params, att)
        outs[att] = [c.token_ids for c in res["prefix"]]
        rows.append(row)
        print(json.dumps(row), flush=True)
    agree = sum(a == b for x, y in zip(outs["tree"], outs["flat"]) for a, b in zip(x, y))
    total = sum(len(x) for x in outs["tree"])
    first_div = [next((j for j, (a, b) in enumerate(zip(x, y)) if a != b), len(x))
                 for x, y in zip(outs["tree"], outs["flat"])]
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  preset=args.preset, prefix=args.prefix, batch=args.batch, new_tokens=args.new, rows=rows,
                  greedy_token_agreement=agree / total, mean_first_divergence=sum(first_div) / len(first_div),
                  identical_sequences=sum(d == args.new for d in first_div))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "engine.json"), "w") as f:
        json.dump(result, f, indent=1)
    tree_r, flat_r = rows
    print(f"\n{args.preset} prefix {args.prefix} batch {args.batch} new {args.new}: decode tok/s tree "
          f"{tree_r['decode_tok_s']:.0f} flat {flat_r['decode_tok_s']:.0f} (x{tree_r['decode_tok_s'] / flat_r['decode_tok_s']:.2f}); "
          f"greedy agreement {agree / total:.3f}, identical sequences {result['identical_sequences']}/{args.batch}")


if __name__ == "__main__":
    main()
