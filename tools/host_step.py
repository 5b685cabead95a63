"""Host time of the engine's decode loop per step, on any machine: everything the host does around a step
(page growth, staging the page table and kill mask, reading the outputs, appending tokens, stop strings on the
incremental matcher, finishes) with the device's step itself taken out.

The model is a tiny random one with the vocabulary of a real tokenizer (so the stop matcher sees real BPE
tokens); on a CPU its step runs inside `ModelRunner.enqueue`, which is timed and subtracted. On a GPU the same
loop runs under the step and host_ms in docs/benchmarks/step.json is what it does not hide.

    PYTHONPATH=$PWD python3 tools/host_step.py --batch 1024 --steps 24 --out docs/benchmarks/host_step_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prompt_tree.benchmark.bench_tokenizer import bench_tokenizer  # noqa: E402
from prompt_tree.benchmark.step import APPS_STOPS  # noqa: E402
from prompt_tree.config import get_preset, replace  # noqa: E402
from prompt_tree.engine import Engine  # noqa: E402
from prompt_tree.engine.run import GenerationRun  # noqa: E402
from prompt_tree.engine.model_runner import ModelRunner  # noqa: E402
from prompt_tree.sampler import Sampler  # noqa: E402
from prompt_tree.sampling import SamplingParams  # noqa: E402
from prompt_tree.stops import StopMatcher  # noqa: E402
from prompt_tree.tree import PromptTree  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=32000, help="32000: a byte-level BPE trained here; 128256: Llama 3")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok, tok_name = bench_tokenizer(args.vocab)
    config = replace(get_preset("tiny"), vocab_size=tok.vocab_size, num_layers=1)
    eng = Engine.random(config, tokenizer=tok, cuda_graphs=False)
    eng.eos_ids = ()
    rng = random.Random(0)
    tree = PromptTree()
    tree.root.add([rng.randrange(tok.vocab_size) for _ in range(64)], key="p").add([], samples=args.batch, key="s")
    results = {}
    for name, params in (("sampled+stops", SamplingParams(max_new_tokens=args.steps + 40, temperature=0.8,
                                                          top_p=0.95, stop=APPS_STOPS, seed=1)),
                         ("greedy", SamplingParams(max_new_tokens=args.steps + 40, temperature=0.0))):
        stops = StopMatcher(params.stop, tok) if params.stop else None
        run = GenerationRun(eng, eng.plan(tree, params), params, "tree", args.batch, lambda c: None,
                            Sampler(params, eng.device), stops)
        device_s = [0.0]
        orig = ModelRunner.enqueue

        def timed(self, *a, **k):
            t0 = time.perf_counter()
            try:
                return orig(self, *a, **k)
            finally:
                device_s[0] += time.perf_counter() - t0

        ModelRunner.enqueue = timed
        try:
            with torch.inference_mode():
                run.scheduler.admit()
                while run.prefill_queue:
                    run._prefill_once()
                run._rebuild()
                per_step = []
                for k in range(args.steps):
                    device_s[0] = 0.0
                    t0 = time.perf_counter()
                    run._ensure_pages()
                    step = run._enqueue()
                    if run.pending is not None:
                        run._process(*run.pending)
                    run.pending = step
                    per_step.append(time.perf_counter() - t0 - device_s[0])
        finally:
            ModelRunner.enqueue = orig
        host = sorted(per_step[2:])
        results[name] = {"host_ms_median": 1e3 * statistics.median(host), "host_ms_max": 1e3 * host[-1]}
        print(f"{name}: host {results[name]['host_ms_median']:.2f} ms per step (median), "
              f"{results[name]['host_ms_max']:.2f} max, batch {args.batch}")
    out = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "batch": args.batch,
           "tokenizer": tok_name, "stops": list(APPS_STOPS), "torch": torch.__version__, "results": results,
           "note": "host work of the engine loop per decode step, the device step excluded (tools/host_step.py)"}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
