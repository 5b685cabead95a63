"""The sampling job as users run it: `prompt-tree bench --workloads job`.

Shapes (prompts are random token ids of these lengths; problem lengths vary by +-10%):
- apps: the paper's APPS setup -- a 2400-token few-shot block shared by P problems of ~500 tokens, 128 samples
  each, at most 512 new tokens;
- gsm8k: the Large Language Monkeys GSM8K setup -- a ~900-token few-shot block, P problems of ~120 tokens, 1024
  samples each, at most 512 new tokens (llama-3.2-1b).

Every row samples (T=0.8, top-p 0.95, the APPS stop strings, a real BPE tokenizer). A random-weight model never
ends on its own, so each sample gets a length budget drawn from one distribution -- the benchmark's only device;
the scheduler never sees it (it predicts lengths from the samples finished so far):
- fixed: every sample at the cap;
- lognormal: median 180, sigma 0.6, capped at 512;
- mix: 15% at the cap, the rest lognormal with median 150, sigma 0.6.
A random-weight model's logits are flat (the sampler's worst case); `logits` "peaked" runs the same rows with an
output head shaped like a trained model's (bench_logits).

Engines: continuous-tree (the default engine), static-tree (batching="static": sub-batches reserving the cap,
lockstep), continuous-flat (attention="flat": no sharing in attention, what vLLM does), and `ideal`: the job's
decode tokens at the largest batch memory allows, at the step time measured in the continuous-tree run (a line
fitted to its (batch, step time) pairs), i.e. a batch that never drains.
"""
from __future__ import annotations

import json
import math
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ..config import get_preset
from ..engine import Engine
from ..engine.memory import kv_bytes_per_token
from ..sampling import SamplingParams
from ..skinny_gemm import registered
from ..tree import PromptTree
from .bench_logits import logits_context
from .bench_tokenizer import bench_tokenizer
from .job_plots import batch_trace, write_job_plots
from .step import APPS_STOPS

CAP = 512


@dataclass(frozen=True)
class JobShape:
    name: str
    few_shot: int
    problem: int
    problems: int
    samples: int
    max_new: int = CAP


SHAPES = {"apps": JobShape("apps", 2400, 500, 120, 128), "gsm8k": JobShape("gsm8k", 900, 120, 128, 1024)}
DEFAULT_MODELS = {"apps": ("llama3-8b", "codellama-7b"), "gsm8k": ("llama-3.2-1b",)}
LENGTHS = ("fixed", "lognormal", "mix")
ENGINES = {"continuous-tree": ("continuous", "tree"), "static-tree": ("static", "tree"),
           "continuous-flat": ("continuous", "flat")}


def draw_length(kind: str, rng: random.Random, cap: int = CAP) -> int:
    """One sample's length budget (tokens, 1..cap) from the named distribution."""
    if kind == "fixed":
        return cap
    if kind == "lognormal":
        return max(1, min(cap, round(math.exp(math.log(180) + 0.6 * rng.gauss(0, 1)))))
    if kind == "mix":
        if rng.random() < 0.15:
            return cap
        return max(1, min(cap, round(math.exp(math.log(150) + 0.6 * rng.gauss(0, 1)))))
    raise ValueError(f"unknown length distribution {kind!r}; choose from {', '.join(LENGTHS)}")


def job_tree(shape: JobShape, vocab: int, seed: int = 0) -> PromptTree:
    rng = random.Random(seed)
    tree = PromptTree()
    shots = tree.root.add([rng.randrange(vocab) for _ in range(shape.few_shot)], key="shots")
    for p in range(shape.problems):
        n = max(1, round(shape.problem * rng.uniform(0.9, 1.1)))
        shots.add([rng.randrange(vocab) for _ in range(n)], samples=shape.samples, key=f"p{p}")
    return tree


def budgets(shape: JobShape, kind: str, seed: int = 0) -> dict:
    rng = random.Random(f"{seed}:{kind}")
    return {(f"p{p}", s): draw_length(kind, rng, shape.max_new)
            for p in range(shape.problems) for s in range(shape.samples)}


@dataclass
class JobRow:
    model: str
    shape: str
    lengths: str
    engine: str
    problems: int
    samples: int
    logits: str = "flat"  # the model's distributions (bench_logits): "flat" as drawn, "peaked" like a trained model's
    seconds: float | None = None  # wall time, first prefill to last token, one-off CUDA-graph captures included
    capture_seconds: float | None = None  # of which captures (each padded batch size's graph, once)
    seconds_no_captures: float | None = None  # seconds - capture_seconds: the job once its graphs exist
    tokens_per_s: float | None = None  # generated tokens / seconds
    generated_tokens: int | None = None
    mean_budget: float | None = None
    mean_batch: float | None = None
    kv_occupancy: float | None = None
    preemptions: int | None = None
    captures: int | None = None
    decode_steps: int | None = None
    prefill_s: float | None = None
    prefill_calls: int | None = None
    rebuilds: int | None = None  # decode batches built (joins and compactions; each drains the pipeline)
    rebuild_s: float | None = None  # their host time
    host_s: float | None = None  # device idle between back-to-back decode steps (host work not hidden)
    host_gaps: dict | None = None  # those gaps' quantiles and the host's parts at the late steps (host_profile)
    decode_device_s: float | None = None  # the decode steps' device time (CUDA events), summed
    kv_bytes: int | None = None  # the KV pool this run had (pages; budget minus workspace): what occupancy divides by
    max_rows: int | None = None  # the most rows a decode step could have (memory and graph buckets)
    budget_bytes: int | None = None  # the engine's memory budget for the run; workspace_bytes: its non-KV share
    workspace_bytes: int | None = None
    capture_log: list | None = None  # [padded rows, eager-step s, capture s, Triton compiles] per graph capture
    prefill_compiles: list | None = None  # Triton kernels compiled inside prefill calls (their time is in prefill_s)
    step_bins: list | None = None  # [rows from, rows to, steps, median step ms] per 128 live rows (step_profile)
    batch_trace: list | None = None  # [decode device s so far, live rows] at up to 256 steps (job_plots.batch_trace)
    skipped: str | None = None


def _ideal(row: JobRow, pairs: list, shape: JobShape, config, dtype, kv_bytes: int, mean_len: float,
           max_rows: int) -> JobRow:
    """The ideal row: every decode step at the largest batch memory allows, at the measured step time."""
    per_token = kv_bytes_per_token(config, dtype)
    shared = shape.few_shot + shape.problems * shape.problem
    live_per_seq = mean_len / 2 + shape.problem / shape.samples  # a sample's suffix is half done on average
    b = int(min(max_rows, max(1, (kv_bytes / per_token - shared) / live_per_seq)))
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(set(xs)) >= 2:
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        step = my + slope * (b - mx)
    else:
        step = ys[0] if ys else float("nan")
    tokens = row.generated_tokens or 0
    row.mean_batch = float(b)
    row.kv_bytes, row.max_rows = kv_bytes, max_rows
    row.seconds = tokens / b * step / 1e3
    row.tokens_per_s = tokens / row.seconds if row.seconds else None
    return row


WARM_STEPS = 24
WARM_TAIL = 8


def warm_up(eng: Engine, shape: JobShape, attention: str, seed: int) -> None:
    """An untimed miniature of the job before each engine's run: two problems of the shape's lengths with all
    their samples, whose budgets of 1..WARM_STEPS tokens drain the batch through the small graph buckets. It
    compiles the Triton kernels the run will specialize (prefill of the shape's nodes, first tokens, decode at
    large and small batches), so no engine pays another's compile time: the JIT cache is per process, and
    without this the engine measured first paid it for both (job.json run 4: 4.5 s of its captures).
    max_new_tokens is the job's: it sets the page table's width and the suffix capacity, which decide the own
    segments' KV splits at small batches. With the miniature's own cap (24) no row could split, and the job's
    small buckets compiled the split kernels inside their captures (job.json run 5: 1.0 s at 16 rows on
    llama3-8b, 0.9 s at 4 rows on codellama-7b). A third problem has a sample count that is no multiple of 16
    (slices of any size are admitted; in job.json run 11 continuous codellama-7b's prefill calls took 1.6 s
    against 0.3 s in run 9, and rows now list the kernels compiled inside prefill as prefill_compiles)."""
    small = job_tree(JobShape("w", shape.few_shot, shape.problem, 2, shape.samples, shape.max_new),
                     eng.config.vocab_size, seed + 1)
    # and a problem whose sample count is no multiple of 16, as slices of a unit are: Triton specializes integer
    # arguments on divisibility by 16, so whole units alone left the slices' specializations to the job
    rng = random.Random(seed + 2)
    small.node("shots").add([rng.randrange(eng.config.vocab_size) for _ in range(shape.problem)],
                            samples=max(1, shape.samples - 3), key="p2")
    eng.generate(small, SamplingParams(max_new_tokens=shape.max_new, temperature=0.8, top_p=0.95, stop=APPS_STOPS),
                 attention=attention, progress=False,
                 length_budget=lambda k, s: min(shape.max_new, warm_budget(k, s, shape.samples)))


def warm_budget(key: str, sample: int, samples: int) -> int:
    """The miniature's budgets: 1..WARM_STEPS by sample, and the last WARM_TAIL samples of its first problem
    a token longer each, so that the batch drains through the buckets down to one row (job.json run 6: the
    8-row bucket, never reached by the miniature, compiled the own-split kernels inside the job, 0.9 s)."""
    tail = sample - (samples - WARM_TAIL)
    if key == "p0" and tail >= 0:
        return WARM_STEPS + 1 + tail
    return 1 + sample % WARM_STEPS


def step_profile(log: list, width: int = 128) -> list:
    """(live rows, device ms) per step -> [rows from, rows to, steps, median ms] per `width` rows of batch."""
    bins: dict = {}
    for rows, ms in log:
        bins.setdefault(rows // width, []).append(ms)
    return [[k * width, (k + 1) * width - 1, len(v), statistics.median(v)] for k, v in sorted(bins.items())]


def write(results: dict, out: str, plots: bool = False) -> None:
    """job.json and job.md, rewritten whole (a killed run keeps its rows); with plots, the PNGs of job_plots."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "job.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    lines = [f"# The sampling job ({results['device']}, torch {results['torch']}, triton {results['triton']})", "",
             "Sampled (T=0.8, top-p 0.95, APPS stop strings, real BPE tokenizer), length budgets per sample from "
             "the named distribution. seconds: wall time from the first prefill to the last token, CUDA-graph "
             "captures included (their count and seconds listed; `no captures` is seconds less them). tokens/s is "
             "over seconds.",
             "", "| model | shape | lengths | engine | problems x samples | seconds | no captures | tokens/s "
             "| mean batch | kv occupancy | preemptions | captures (s) |", "|---" * 12 + "|"]
    if results.get("note"):
        lines[4:4] = [results["note"], ""]

    def f(x, d=1):
        return "-" if x is None else f"{x:,.{d}f}"

    for r in results["rows"]:
        cap = "-" if r["captures"] is None else f"{r['captures']} ({f(r['capture_seconds'])})"
        run = f" (run {r['run']}, sampler {r.get('sampler', '?')})" if r.get("run") else ""  # merged files
        run += ", peaked logits" if r.get("logits") == "peaked" else ""
        lines.append(f"| {r['model']} | {r['shape']} | {r['lengths']} | {r['engine']}{run} | {r['problems']} x "
                     f"{r['samples']} | {f(r['seconds'])} | {f(r.get('seconds_no_captures'))} | "
                     f"{f(r['tokens_per_s'], 0)} | {f(r['mean_batch'], 0)} | "
                     f"{f(r['kv_occupancy'], 2)} | {r['preemptions'] if r['preemptions'] is not None else '-'} | "
                     f"{cap}{' ' + r['skipped'] if r.get('skipped') else ''} |")
    pngs = write_job_plots(results, out) if plots else []
    lines += [""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in pngs]
    with open(os.path.join(out, "job.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def resolved_shape(shape_name: str, problems: int | None, samples: int | None, max_new: int | None) -> JobShape:
    """SHAPES[shape_name] with the counts a run was given in place of its own."""
    shape = SHAPES[shape_name]
    return JobShape(shape.name, shape.few_shot, shape.problem, problems or shape.problems, samples or shape.samples,
                    max_new or shape.max_new)


def row_groups(lengths, logits) -> list[tuple[str, str]]:
    """(length distribution, logit shape) of each group of rows one model runs, in run order; each group runs
    every engine asked for."""
    return [(k, lg) for k in lengths for lg in logits]


def run_job_benchmark(shapes, models_of, lengths, engines, out: str, device: str = "cuda", dtype: str = "bf16",
                      problems: int | None = None, samples: int | None = None, max_new: int | None = None,
                      memory_budget_bytes: int | None = None, time_budget_s: float | None = None,
                      seed: int = 0, logits: tuple[str, ...] = ("flat",), log=print) -> dict:
    """logits: each (lengths, engine) row once per logit shape (bench_logits), all on one engine per batching."""
    import triton

    dev = torch.device(device)
    start = time.monotonic()
    results = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
               "torch": torch.__version__, "triton": triton.__version__, "skinny_gemm": registered(),
               "rows": [], "not_run": []}
    path = os.path.join(out, "job.json")
    if os.path.exists(path):  # resume: keep measured rows
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        results["rows"] = [r for r in old.get("rows", []) if not r.get("skipped")]
    done = {(r["model"], r["shape"], r["lengths"], r["engine"], r["problems"], r["samples"], r.get("logits", "flat"))
            for r in results["rows"]}
    for shape_name in shapes:
        shape = resolved_shape(shape_name, problems, samples, max_new)
        for model in models_of(shape_name):
            config = get_preset(model)
            tok, tok_name = bench_tokenizer(config.vocab_size)
            results.setdefault("tokenizers", {})[model] = tok_name
            eng_cache = {}
            tree = job_tree(shape, config.vocab_size, seed)
            for kind, lg in row_groups(lengths, logits):
                budget = budgets(shape, kind, seed)
                mean_budget = statistics.fmean(budget.values())
                tree_run = None  # (step pairs, KV bytes, max rows) of this row group's continuous-tree run
                for name in engines:
                    row = JobRow(model, shape.name, kind, name, shape.problems, shape.samples, logits=lg,
                                 mean_budget=mean_budget)
                    key = (model, shape.name, kind, name, shape.problems, shape.samples, lg)
                    if key in done:
                        continue
                    # ideal is arithmetic on the continuous-tree run's step times, so it comes before the time
                    # budget, which no row that costs no device time waits on (session 11: codellama-7b 120 x 128
                    # lost its ideal row to the budget after static-tree ran)
                    if name == "ideal":
                        tree_row = next((r for r in results["rows"] if r["model"] == model and r["lengths"] == kind
                                         and r["engine"] == "continuous-tree" and r["shape"] == shape.name
                                         and r.get("logits", "flat") == lg), None)
                        if tree_row is None or not tree_run or not tree_run[0]:
                            row.skipped = "needs the continuous-tree row of the same run (on a GPU: step times)"
                        else:
                            row.generated_tokens = tree_row["generated_tokens"]
                            pairs, kv_bytes, max_rows, run_dtype = tree_run
                            _ideal(row, pairs, shape, config, run_dtype, kv_bytes,
                                   tree_row["generated_tokens"] / (shape.problems * shape.samples), max_rows)
                        results["rows"].append(asdict(row))
                        write(results, out)
                        continue
                    if time_budget_s is not None and time.monotonic() - start > time_budget_s:
                        results["not_run"].append(asdict(row))
                        continue
                    batching, attention = ENGINES[name]
                    if batching not in eng_cache:
                        eng_cache.clear()
                        if dev.type == "cuda":
                            torch.cuda.empty_cache()
                        eng_cache[batching] = Engine.random(config, device=dev, dtype=dtype, tokenizer=tok,
                                                            memory_budget_bytes=memory_budget_bytes,
                                                            batching=batching)
                    eng = eng_cache[batching]
                    eng.eos_ids = ()
                    params = SamplingParams(max_new_tokens=shape.max_new, temperature=0.8, top_p=0.95,
                                            stop=APPS_STOPS, seed=seed)
                    try:
                        with logits_context(lg, eng.model, config.eos_token_ids, seed):
                            warm_up(eng, shape, attention, seed)
                            res = eng.generate(tree, params, attention=attention, progress=False,
                                               length_budget=lambda k, s: budget[(k, s)], step_log=True)
                    except torch.cuda.OutOfMemoryError as e:
                        row.skipped = f"out of memory: {str(e)[:120]}"
                        results["rows"].append(asdict(row))
                        write(results, out)
                        continue
                    sm = res.summary
                    row.seconds, row.capture_seconds = sm.seconds, sm.capture_seconds
                    row.seconds_no_captures = sm.seconds - sm.capture_seconds
                    row.capture_log = [list(c) for c in sm.capture_log]
                    row.prefill_compiles = list(sm.prefill_compiles)
                    row.generated_tokens = sm.generated_tokens
                    row.tokens_per_s = sm.tokens_per_second
                    row.mean_batch, row.kv_occupancy = sm.mean_batch, sm.kv_occupancy
                    row.preemptions, row.captures = sm.preemptions, sm.captures
                    row.decode_steps, row.prefill_s, row.host_s = sm.decode_steps, sm.prefill_seconds, sm.host_seconds
                    row.prefill_calls, row.rebuilds, row.rebuild_s = sm.prefill_calls, sm.rebuilds, sm.rebuild_seconds
                    row.kv_bytes, row.max_rows = sm.kv_bytes, sm.max_rows
                    row.host_gaps = sm.host_gaps or None
                    row.budget_bytes, row.workspace_bytes = sm.budget_bytes, sm.workspace_bytes
                    if res.step_log:
                        row.decode_device_s = sum(ms for _, ms in res.step_log) / 1e3
                        row.step_bins = step_profile(res.step_log)
                        row.batch_trace = batch_trace(res.step_log)
                    if name == "continuous-tree":
                        tree_run = (res.step_log, sm.kv_bytes, sm.max_rows, eng.dtype)
                    del res
                    results["rows"].append(asdict(row))
                    log(f"{model} {shape.name} {kind} {lg} {name}: {row.seconds:.1f} s, {row.tokens_per_s:,.0f} tok/s, "
                        f"batch {row.mean_batch:.0f}, occupancy {row.kv_occupancy:.2f}, preemptions "
                        f"{row.preemptions}, captures {row.captures}")
                    write(results, out)
            eng_cache.clear()
    write(results, out, plots=True)
    return results
