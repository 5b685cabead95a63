"""Host time of one decode-batch rebuild (`GenerationRun._rebuild`: rows, page table, attention metadata, the
bucket's buffers) at the GSM8K job's composition, on any machine; with `--admit`, of one admission attempt
(`Scheduler.admit`) there instead.

A rebuild drains the pipeline, so the device idles for all of it: in the GSM8K job on an H100 (64 x 1024,
docs/benchmarks/h100_s20/) 146 rebuilds took 3.4 s of 112.8 s. This times the steady case, a batch rebuilt into
a bucket whose metadata capacity is already set (the engine's path with CUDA graphs: one metadata build on the
host, one copy), over a tree of a few-shot root, `--problems` problems and `--samples` samples each, every sample
holding `--generated` tokens of suffix.

    PYTHONPATH=$PWD python3 tools/rebuild_host.py --problems 4 --samples 1024 --out /tmp/rebuild.json

An admission attempt follows every step that finishes a sample while units wait (8.7 ms a step on the H100 host
in the job above, the largest part of the loop's host work). `--admit` runs `--problems` problems with
`--max-rows` of them decoding, each row at a random generated count up to 2 x `--generated`, and times two
attempts that admit nothing: `full` (no row free) and `pages` (64 rows finished, the pages too few for a slice).
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

from prompt_tree.config import get_preset, replace  # noqa: E402
from prompt_tree.engine import Engine  # noqa: E402
from prompt_tree.engine.run import GenerationRun  # noqa: E402
from prompt_tree.engine.sequence import SeqState  # noqa: E402
from prompt_tree.sampler import Sampler  # noqa: E402
from prompt_tree.sampling import SamplingParams  # noqa: E402
from prompt_tree.tree import PromptTree  # noqa: E402


def build_run(problems: int, samples: int, generated: int, max_rows: int | None = None) -> GenerationRun:
    config = replace(get_preset("tiny"), num_layers=1)
    eng = Engine.random(config, cuda_graphs=False)
    eng.eos_ids = ()
    rng = random.Random(0)
    tree = PromptTree()
    shots = tree.root.add([rng.randrange(config.vocab_size) for _ in range(300)], key="shots")
    for p in range(problems):
        shots.add([rng.randrange(config.vocab_size) for _ in range(rng.randrange(60, 140))], key=f"q{p}") \
            .add([], samples=samples, key=f"s{p}")
    params = SamplingParams(max_new_tokens=512, temperature=0.8, top_p=0.95, seed=1)
    run = GenerationRun(eng, eng.plan(tree, params), params, "tree", max_rows or problems * samples,
                        lambda c: None, Sampler(params, eng.device), None)
    run.runner.use_graphs = True  # buckets and a reused metadata capacity, as on a GPU (nothing is captured here)
    run.scheduler.padded = run.opts.bucket  # and admission padded to them, as the engine sets it there
    run.scheduler.admit()
    while run.prefill_queue:
        run._prefill_once()
    if run.first_pending:
        run._take_first_tokens(wait=True)
    run._rebuild()
    for s in run.rows:  # suffixes as mid-run: `generated` tokens each, their pages held
        s.tokens.extend([1] * (generated - s.generated))
        run.blocks.ensure_suffix(s, s.generated)
    return run


def admit_cases(run: GenerationRun, generated: int, repeats: int) -> dict:
    """Median ms of an admission attempt that admits nothing: every row busy ("full"), then 64 rows finished
    with the free pages held elsewhere so that no slice fits ("pages")."""
    sched, rng = run.scheduler, random.Random(1)
    for s in run.rows:  # mid-run: unequal generated counts
        s.tokens.extend([1] * rng.randrange(2 * generated))
        run.blocks.ensure_suffix(s, s.generated)
    out = {}
    for case in ("full", "pages"):
        held = []
        if case == "pages":
            for s in run.rows[:64]:
                s.state = SeqState.FINISHED
                sched.finished(s)
            held = run.blocks.pool.alloc_run(run.blocks.free_pages)  # the pages taken by something else
        times = []
        for _ in range(repeats):
            sched.dirty = True
            t0 = time.perf_counter()
            admitted = sched.admit()
            times.append(time.perf_counter() - t0)
            if admitted:
                raise AssertionError(f"case {case}: the attempt admitted a unit (the composition is off)")
        run.blocks.pool.free(held)
        out[case] = statistics.median(times) * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--generated", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--admit", action="store_true", help="time an admission attempt, not a rebuild")
    ap.add_argument("--max-rows", type=int, default=4096, help="with --admit: the rows decoding")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "problems": args.problems, "samples": args.samples, "generated": args.generated,
            "torch": torch.__version__, "python": platform.python_version()}
    if args.admit:
        with torch.inference_mode():
            run = build_run(args.problems, args.samples, args.generated, max_rows=args.max_rows)
            if not run.scheduler.waiting:
                raise SystemExit("--admit needs units waiting: more --problems x --samples than --max-rows")
            ms = admit_cases(run, args.generated, args.repeats)
        out = dict(base, rows=len(run.rows), waiting_units=len(run.scheduler.waiting),
                   admit_ms_median=ms, note="host time of one admission attempt that admits nothing "
                                            "(tools/rebuild_host.py --admit)")
        print(f"rows {out['rows']}, {out['waiting_units']} units waiting: admit full {ms['full']:.3f} ms, "
              f"pages {ms['pages']:.3f} ms (medians)")
    else:
        with torch.inference_mode():
            run = build_run(args.problems, args.samples, args.generated)
            run._rebuild()  # the bucket's capacity now fits this composition
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                run._rebuild()
                times.append(time.perf_counter() - t0)
        ms = sorted(1e3 * t for t in times)
        out = dict(base, rows=len(run.rows), bucket=run.batch.rows, rebuild_ms_median=statistics.median(ms),
                   rebuild_ms_min=ms[0], rebuild_ms_max=ms[-1],
                   note="host time of one decode-batch rebuild into a bucket with metadata capacity "
                        "(tools/rebuild_host.py)")
        print(f"rows {out['rows']} (bucket {out['bucket']}): rebuild {out['rebuild_ms_median']:.2f} ms median "
              f"({out['rebuild_ms_min']:.2f}-{out['rebuild_ms_max']:.2f})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
