"""The decode step of the real job against its physical floor: `prompt-tree bench --workloads step`.

A row is one (model, batch, prefix, mode, sampling): `batch` sequences share one `prefix`-token prompt and have
each generated `suffix` tokens; the engine's own loop (GenerationRun: page growth, graph replay, the host reading
step t while the device runs step t+1) then runs `steps` decode steps. Measured per row:

- step_ms: the median device time of one step (CUDA events around each graph replay);
- host_ms: the device's idle time between consecutive steps (host work the overlap did not hide), mean;
- physical_ms: limit.physical_step_seconds at the row's mean lengths, with the ceilings measured in this run.

sampling "greedy" is argmax without stop strings; "sampled" is T=0.8, top-p 0.95 and the APPS stop strings with
a real BPE tokenizer (bench_tokenizer), on the random model's flat logits or, with logits "peaked", on an output
head shaped like a trained model's (bench_logits). EOS is off so every row runs its steps. Rows are written to step.json
and step.md after each one.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ..config import get_preset
from ..engine import Engine
from ..engine.run import GenerationRun
from ..sampler import Sampler, resolve_backend
from ..sampling import SamplingParams
from ..skinny_gemm import registered
from ..stops import StopMatcher
from ..tree import PromptTree
from .bench_logits import logits_context
from .bench_tokenizer import bench_tokenizer
from .limit import Ceilings, measure_ceilings, physical_step_seconds

APPS_STOPS = ("\nQUESTION:", "\nANSWER:", "\n\n\n\n")
BATCHES = (32, 128, 512, 1024, 2048)
PREFIXES = (1024, 4096, 16384)
MODES = ("none", "tree", "flat")
SAMPLINGS = ("greedy", "sampled")
SUFFIX = 128
WARMUP_STEPS = 3
STEPS = 16


@dataclass
class StepRow:
    model: str
    batch: int
    prefix: int
    mode: str
    sampling: str
    engine: str = "after"
    sampler: str | None = None  # the Sampler backend of a sampled row ("triton": split rows; "triton-row")
    logits: str = "flat"  # the model's distributions (bench_logits): "flat" as drawn, "peaked" like a trained model's
    suffix: int = SUFFIX
    step_ms: float | None = None
    step_p10_ms: float | None = None  # the spread of the timed steps: a composition change or a stall shows here
    step_p90_ms: float | None = None
    rows: float | None = None  # mean live rows of the timed steps (== batch unless rows ended)
    padded_rows: int | None = None  # the graph bucket the steps replayed
    host_ms: float | None = None
    physical_ms: float | None = None
    step_over_physical: float | None = None
    skipped: str | None = None


def sampling_params(sampled: bool, max_new: int) -> SamplingParams:
    if sampled:
        return SamplingParams(max_new_tokens=max_new, temperature=0.8, top_p=0.95, stop=APPS_STOPS, seed=1)
    return SamplingParams(max_new_tokens=max_new, temperature=0.0)


def physical_ms(config, dtype_bytes: int, batch: int, prefix: int, suffix: int, mode: str, ceilings: Ceilings,
                steps: int = STEPS) -> float:
    """The row's step floor at its mean suffix length over the timed steps (KV read once whatever the mode)."""
    mean_suffix = suffix + steps / 2
    kv = 0 if mode == "none" else int(prefix + batch * mean_suffix)
    keys = 0 if mode == "none" else int(batch * (prefix + mean_suffix))
    return 1e3 * physical_step_seconds(config, dtype_bytes, batch, ceilings, kv_tokens_read=kv, keys_attended=keys)


def measure_row(engine: Engine, batch: int, prefix: int, mode: str, sampled: bool, suffix: int = SUFFIX,
                steps: int = STEPS, seed: int = 0, sampler_backend: str = "auto", problems: int = 0,
                problem_len: int = 500, suffixes: list[int] | None = None, around_steps=None) -> dict:
    """One row through the engine's own decode loop -> the StepRow fields it measures (step_ms, host_ms, ...).

    problems: 0 -- `batch` samples directly under the prefix; n > 0 -- the prefix, then n problem nodes of
    `problem_len` tokens with batch / n samples each (the job's two shared levels). suffixes: each sequence's
    tokens generated so far (default: all `suffix`). around_steps: a context manager entered around the timed
    steps only (tools/profile_step.py's profiler)."""
    rng = random.Random(seed)
    vocab = engine.config.vocab_size
    tree = PromptTree()
    shared = tree.root.add([rng.randrange(vocab) for _ in range(prefix)], key="prefix")
    if problems:
        if batch % problems:
            raise ValueError(f"batch {batch} is not a multiple of problems {problems}")
        for p in range(problems):
            shared.add([rng.randrange(vocab) for _ in range(problem_len)], samples=batch // problems, key=f"p{p}")
    else:
        shared.add([], samples=batch, key="samples")
    suffixes = [suffix] * batch if suffixes is None else list(suffixes)
    if len(suffixes) != batch or min(suffixes) < 1:
        raise ValueError(f"suffixes must be {batch} lengths >= 1, got {len(suffixes)} (min {min(suffixes)})")
    params = sampling_params(sampled, max(suffixes) + WARMUP_STEPS + steps + 4)
    stops = StopMatcher(params.stop, engine.tokenizer) if params.stop else None
    run = GenerationRun(engine, engine.plan(tree, params), params, mode, batch, lambda c: None,
                        Sampler(params, engine.device, backend=sampler_backend), stops)
    with torch.inference_mode():
        run.runner.kv.normal_()  # never time on zeros; prefill overwrites the prefix
        run.scheduler.admit()
        while run.prefill_queue:
            run._prefill_once()
        if run.scheduler.waiting:  # a row that decodes fewer rows than it names would be a false number
            raise ValueError(f"only {len(run.scheduler.active)} of {batch} sequences were admitted at once "
                             f"(memory budget?)")
        for s, n in zip(run.ready, suffixes):  # as if each had generated n tokens (their KV: the random pool)
            for _ in range(n - 1):
                t = rng.randrange(vocab)
                s.tokens.append(t)
                s.logprobs.append(0.0)
                if stops is not None:
                    stops.push(s, t)
        run._rebuild()
        walls = []

        def one_step():
            t0 = time.perf_counter()
            run._ensure_pages()
            step = run._enqueue()
            if run.pending is not None:
                run._process(*run.pending)
            run.pending = step
            walls.append(time.perf_counter() - t0)

        for _ in range(WARMUP_STEPS):
            one_step()
        run.runner.sync()
        run.runner.times.clear()
        with around_steps() if around_steps is not None else contextlib.nullcontext():
            for _ in range(steps):
                one_step()
            run._drain()
            run.runner.sync()
    r = run.runner
    padded = engine.options.bucket(batch) if r.use_graphs else batch
    r.release()
    if r.record_times:  # device time per replay (CUDA events), and the device's idle gaps between them
        timed = [a for a in r.times if a is not None]
        ms = sorted(a.start.elapsed_time(a.end) for a in timed)
        rows = statistics.fmean(a.rows for a in timed)
        gaps, n = r.idle_gaps()
        host = 1e3 * gaps / max(1, n)
    else:  # wall time per step; live rows and host time are not separable there
        ms, rows, host = sorted(1e3 * w for w in walls[WARMUP_STEPS:]), None, 0.0
    return dict(step_ms=statistics.median(ms), step_p10_ms=ms[len(ms) // 10], step_p90_ms=ms[(9 * len(ms)) // 10],
                rows=rows, padded_rows=padded, host_ms=host)


def write(results: dict, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "step.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    lines = [f"# Decode step ({results['device']}, torch {results['torch']}, triton {results['triton']})", "",
             f"Ceilings measured in the same run: copy {results['copy_bw_tbs']:.2f} TB/s, bf16 matmul "
             f"{results['matmul_tflops']:.0f} TFLOP/s. Each row: `batch` sequences sharing a `prefix`-token prompt, "
             f"{SUFFIX} generated tokens each, {STEPS} timed steps of the engine's own loop.", "",
             "| model | engine | batch | prefix | mode | sampling | step ms (p10-p90) | live rows | host ms | physical ms "
             "| step / physical |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    if results.get("note"):
        lines[4:4] = [results["note"], ""]

    def f(x, d=3):
        return "-" if x is None else f"{x:.{d}f}"

    for r in results["rows"]:
        run = f" (run {r['run']})" if r.get("run") else ""  # merged files
        tags = [t for t in (r.get("sampler"), "peaked logits" if r.get("logits") == "peaked" else None) if t]
        sampler = f" ({', '.join(tags)})" if tags else ""
        lines.append(f"| {r['model']} | {r['engine']}{run} | {r['batch']} | {r['prefix']} | {r['mode']} "
                     f"| {r['sampling']}{sampler} "
                     f"| {f(r['step_ms'])} ({f(r.get('step_p10_ms'), 2)}-{f(r.get('step_p90_ms'), 2)}) "
                     f"| {f(r.get('rows'), 0)} | {f(r['host_ms'])} | {f(r['physical_ms'])} | "
                     f"{f(r['step_over_physical'], 2)}{' (' + r['skipped'] + ')' if r.get('skipped') else ''} |")
    with open(os.path.join(out, "step.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def sampling_variants(samplings, sampler_backends, logits) -> list[tuple[str, str, str]]:
    """(sampling, backend, logit shape) of one (model, prefix, batch, mode) cell's rows, in run order: each sampled
    row once per backend and logit shape, greedy rows once, with the default backend on flat logits (argmax reads
    the row once whatever its shape)."""
    return [(sm, b, lg) for sm in samplings for b in (sampler_backends if sm == "sampled" else ("auto",))
            for lg in (logits if sm == "sampled" else ("flat",))]


def run_step_benchmark(models, batches, prefixes, modes, samplings, out: str, device: str = "cuda",
                       dtype: str = "bf16", time_budget_s: float | None = None, ceilings: Ceilings | None = None,
                       memory_budget_bytes: int | None = None, steps: int = STEPS, suffix: int = SUFFIX,
                       sampler_backends: tuple[str, ...] = ("auto",), logits: tuple[str, ...] = ("flat",),
                       log=print) -> dict:
    """sampler_backends, logits: the variants of each cell's rows (sampling_variants; bench_logits)."""
    import triton

    dev = torch.device(device)
    start = time.monotonic()
    ceilings = ceilings or measure_ceilings(dev)
    results = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
               "torch": torch.__version__, "triton": triton.__version__, "skinny_gemm": registered(),
               "copy_bw_tbs": ceilings.copy_bytes_per_s / 1e12, "matmul_tflops": ceilings.matmul_flops_per_s / 1e12,
               "rows": [], "not_run": []}
    for name in models:
        config = get_preset(name)
        tok, tok_name = bench_tokenizer(config.vocab_size)
        results.setdefault("tokenizers", {})[name] = tok_name
        engine = Engine.random(config, device=dev, dtype=dtype, tokenizer=tok,
                               memory_budget_bytes=memory_budget_bytes)
        engine.eos_ids = ()
        el = torch.empty((), dtype=engine.dtype).element_size()
        for prefix in prefixes:
            for batch in batches:
                for mode in modes:
                    for sampling, backend, shape in sampling_variants(samplings, sampler_backends, logits):
                        row = StepRow(name, batch, prefix, mode, sampling, suffix=suffix, logits=shape,
                                      sampler=resolve_backend(backend, dev) if sampling == "sampled" else None)
                        if time_budget_s is not None and time.monotonic() - start > time_budget_s:
                            results["not_run"].append(asdict(row))
                            continue
                        row.physical_ms = physical_ms(config, el, batch, prefix, suffix, mode, ceilings, steps)
                        try:
                            with logits_context(shape, engine.model, config.eos_token_ids):
                                measured = measure_row(engine, batch, prefix, mode, sampling == "sampled", suffix,
                                                       steps, sampler_backend=backend)
                            for k, v in measured.items():
                                setattr(row, k, v)
                            row.step_over_physical = row.step_ms / row.physical_ms
                        except (torch.cuda.OutOfMemoryError, ValueError) as e:  # does not fit: a skipped row
                            row.skipped = f"{type(e).__name__}: {str(e)[:120]}"
                        finally:
                            if dev.type == "cuda":
                                torch.cuda.empty_cache()
                        results["rows"].append(asdict(row))
                        log(f"{name} B{batch} P{prefix} {mode} {sampling} {row.sampler or ''} {shape}: step {row.step_ms} "
                            f"ms (p10 "
                            f"{row.step_p10_ms}, p90 {row.step_p90_ms}, rows {row.rows}) host {row.host_ms} ms "
                            f"physical {row.physical_ms:.3f} ms")
                        write(results, out)
        del engine
    write(results, out)
    return results
