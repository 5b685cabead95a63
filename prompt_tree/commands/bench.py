"""`prompt-tree bench`: end-to-end decode throughput of tree / single / flat / none / transformers on one GPU.

    prompt-tree bench --models llama3-8b --time-budget-s 480 --out $OUT
    prompt-tree bench --quick                                   # a smoke run of a minute or two on a GPU
    prompt-tree bench --models tiny --device cpu --dtype fp32 --prefixes 16 --batches 2 --new-tokens 4 \\
        --preset-override '{"2a": {"few_shot": 32, "problem": 8, "samples": 3, "problems": 2}}'

Writes e2e.json (re-saved after every row; --resume skips rows already there), e2e.md and PNG plots into --out.
The logic lives in prompt_tree.benchmark; this module parses and checks the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

# --quick: a small grid for smoke runs (about a minute of measurements on an H100, plus warm-ups).
QUICK = {"models": ("llama3-8b",), "prefixes": (1024, 4096), "batches": (32, 256), "new_tokens_1": 32,
         "2a": {"problems": 2, "new_tokens": 64}, "2b": {"problems": 16, "new_tokens": 64}}
_SHAPE_FIELDS = ("few_shot", "problem", "samples", "new_tokens", "problems")
EXTRA_WORKLOADS = ("step", "job")  # their own modules and JSON files


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=None,
                   help="comma-separated model presets with random weights (default llama3-8b,codellama-7b; "
                        "'tiny' for CPU smoke tests)")
    p.add_argument("--workloads", default="1,2a,2b",
                   help="comma-separated: 1 (one shared prefix), 2a and 2b (few-shot -> problems -> samples), step "
                        "(one decode step of the real job against its physical floor: step.json) and job (the "
                        "sampling job with realistic lengths, per engine: job.json)")
    p.add_argument("--job-shapes", default="apps", help="job workload shapes: apps, gsm8k (comma-separated)")
    p.add_argument("--lengths", default="lognormal,fixed,mix",
                   help="job workload length distributions: fixed, lognormal, mix")
    p.add_argument("--engines", default="continuous-tree,static-tree,continuous-flat,ideal",
                   help="job workload engines: continuous-tree, static-tree, continuous-flat, ideal")
    p.add_argument("--problems", type=int, default=None, help="job workload: problems per shape (default: the shape's)")
    p.add_argument("--samples", type=int, default=None, help="job workload: samples per problem (default: the shape's)")
    p.add_argument("--sampling", default="greedy,sampled", help="step workload: greedy, sampled")
    p.add_argument("--steps", type=int, default=None, help="step workload: timed steps per row (default 16)")
    p.add_argument("--logits", default="flat",
                   help="step and job workloads: the random model's distributions, flat (as drawn) and/or peaked "
                        "(an output head shaped like a trained model's: prompt_tree/benchmark/bench_logits.py)")
    p.add_argument("--sampler-backends", default="auto",
                   help="step workload: Sampler backends of the sampled rows, comma-separated (auto, torch, triton, "
                        "triton-row); each sampled row is measured once per backend")
    p.add_argument("--prefixes", default=None, help="workload 1 prefix lengths (default 1024,2048,4096,8192,16384)")
    p.add_argument("--batches", default=None, help="workload 1 batch sizes (default 32,128,512,1024,2048)")
    p.add_argument("--modes", default="tree,single,flat,none,hf",
                   help="comma-separated: tree (all levels shared), single (only the last level shared: the "
                        "few-shot block copied per problem), flat (every sequence reads its whole path), none "
                        "(attention skipped: the upper bound; always measured, the limit needs it), hf "
                        "(transformers generate)")
    p.add_argument("--problems-2a", type=int, default=None, help="problems P in workload 2a (default 32)")
    p.add_argument("--new-tokens", type=int, default=None, help="override the new tokens of every workload")
    p.add_argument("--out", default=os.environ.get("OUT") or "docs/benchmarks",
                   help="output folder (default $OUT if set, else docs/benchmarks)")
    p.add_argument("--time-budget-s", type=float, default=None,
                   help="do not start a row predicted to end after this many seconds from the start (listed as "
                        "not run; run again with --resume to do them)")
    p.add_argument("--resume", action="store_true", help="keep the rows of an existing e2e.json and skip them")
    p.add_argument("--quick", action="store_true",
                   help="a small grid for smoke runs: llama3-8b, prefixes 1024,4096, batches 32,256, fewer problems "
                        "and new tokens (explicit flags still win)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (tests, with --models tiny)")
    p.add_argument("--dtype", default="bf16", help="bf16 (default), fp16, fp32")
    p.add_argument("--preset-override", default=None, metavar="JSON",
                   help='override workload shapes, e.g. \'{"1": {"new_tokens": 4}, "2a": {"few_shot": 32, '
                        '"problem": 8, "samples": 3, "new_tokens": 4, "problems": 2}}\' (tests)')
    p.add_argument("--memory-budget-gib", type=float, default=None,
                   help="memory a batch may use beyond the weights (default: free device memory)")
    p.add_argument("--ceilings", default=None, metavar="TBS,TFLOPS",
                   help="assume copy bandwidth (TB/s) and matmul rate (TFLOP/s) instead of measuring them")
    p.add_argument("--dry-run", action="store_true",
                   help="no weights, no runs, no files: print the rows in order (those of workloads 1, 2a and 2b "
                        "with predicted memory and seconds)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite e2e.md and the plots from the e2e.json in --out, then exit")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and prompt tokens")
    p.add_argument("--gemm-table", default=None, metavar="JSON",
                   help="a GEMM table or tools/gemm_sweep.py's output: run the decode GEMMs it found faster than "
                        "cuBLAS on prompt_tree.skinny_gemm's kernel (DenseOptions.gemm 'auto'), over the tables "
                        "shipped in prompt_tree/gemm_tables/; 'none': cuBLAS everywhere, the shipped tables off "
                        "(the baseline). Recorded as skinny_gemm")


def _list(text: str, what: str, cast=str) -> tuple:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ValueError(f"--{what} is empty")
    try:
        return tuple(cast(x) for x in items)
    except ValueError:
        raise ValueError(f"--{what} must be comma-separated numbers, got {text!r}") from None


def _shapes(overrides: dict, new_tokens: int | None, problems_2a: int | None) -> tuple[dict, int]:
    from prompt_tree.benchmark.workloads import DEFAULT_2A, DEFAULT_2B, NEW_TOKENS_1

    shapes, new_1 = {"2a": DEFAULT_2A, "2b": DEFAULT_2B}, NEW_TOKENS_1
    for key, changes in overrides.items():
        if key not in ("1", "2a", "2b") or not isinstance(changes, dict):
            raise ValueError(f"--preset-override: keys are '1', '2a', '2b', each with an object, got {key!r}")
        allowed = ("new_tokens",) if key == "1" else _SHAPE_FIELDS
        bad = [k for k in changes if k not in allowed]
        if bad:
            raise ValueError(f"--preset-override: workload {key} has no field {bad[0]!r}; fields: {', '.join(allowed)}")
        if key == "1":
            new_1 = changes.get("new_tokens", new_1)
        else:
            shapes[key] = dataclasses.replace(shapes[key], **changes)
    if problems_2a is not None:
        shapes["2a"] = dataclasses.replace(shapes["2a"], problems=problems_2a)
    if new_tokens is not None:
        new_1 = new_tokens
        shapes = {k: dataclasses.replace(v, new_tokens=new_tokens) for k, v in shapes.items()}
    return shapes, new_1


def config_from_args(args: argparse.Namespace):
    """A checked BenchConfig from the parsed flags (ValueError with the flag's name for bad input)."""
    from prompt_tree.benchmark.limit import Ceilings
    from prompt_tree.benchmark.e2e_rows import WORKLOADS, BenchConfig
    from prompt_tree.benchmark.workloads import BATCHES, PREFIXES

    overrides: dict = {}
    if args.quick:
        overrides = {k: dict(QUICK[k]) for k in ("2a", "2b")}
        overrides["1"] = {"new_tokens": QUICK["new_tokens_1"]}
    if args.preset_override is not None:
        try:
            given = json.loads(args.preset_override)
        except json.JSONDecodeError as e:
            raise ValueError(f"--preset-override is not valid JSON: {e}") from None
        if not isinstance(given, dict):
            raise ValueError("--preset-override must be a JSON object")
        for key, changes in given.items():
            if isinstance(changes, dict) and isinstance(overrides.get(key), dict):
                overrides[key] = {**overrides[key], **changes}
            else:
                overrides[key] = changes
    # every count flag here, whichever workload reads it: a bad value is refused before anything runs (--steps 0
    # used to become the default silently)
    for name in ("problems_2a", "new_tokens", "steps", "problems", "samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.time_budget_s is not None and not args.time_budget_s > 0:
        raise ValueError(f"--time-budget-s must be positive seconds, got {args.time_budget_s}")
    workloads = _list(args.workloads, "workloads")
    known = (*WORKLOADS, *EXTRA_WORKLOADS)
    bad = [w for w in workloads if w not in known]
    if bad:  # here, not in BenchConfig: it knows the decode grid's workloads only
        raise ValueError(f"--workloads: {bad[0]!r} is not one of {', '.join(known)}")
    shapes, new_1 = _shapes(overrides, args.new_tokens, args.problems_2a)
    ceilings = None
    if args.ceilings is not None:
        parts = _list(args.ceilings, "ceilings", float)
        if len(parts) != 2 or not all(x > 0 for x in parts):
            raise ValueError(f"--ceilings takes two positive numbers, TB/s,TFLOP/s, got {args.ceilings!r}")
        ceilings = Ceilings(parts[0] * 1e12, parts[1] * 1e12)
    if args.memory_budget_gib is not None and not args.memory_budget_gib > 0:
        raise ValueError(f"--memory-budget-gib must be positive, got {args.memory_budget_gib}")
    quick = args.quick
    default_models = QUICK["models"] if quick else ("llama3-8b", "codellama-7b")
    return BenchConfig(
        models=_list(args.models, "models") if args.models is not None else default_models,
        workloads=tuple(w for w in workloads if w not in EXTRA_WORKLOADS) or ("1",),
        prefixes=(_list(args.prefixes, "prefixes", int) if args.prefixes is not None
                  else QUICK["prefixes"] if quick else PREFIXES),
        batches=(_list(args.batches, "batches", int) if args.batches is not None
                 else QUICK["batches"] if quick else BATCHES),
        modes=_list(args.modes, "modes"),
        new_tokens_1=new_1, shapes=shapes, out=args.out, time_budget_s=args.time_budget_s, device=args.device,
        dtype=args.dtype, resume=args.resume, dry_run=args.dry_run,
        memory_budget_bytes=int(args.memory_budget_gib * 2**30) if args.memory_budget_gib else None,
        ceilings=ceilings, seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    if args.report_only:
        from prompt_tree.benchmark.report import write_markdown, write_plots
        from prompt_tree.benchmark.e2e_rows import JSON_NAME, MD_NAME

        path = os.path.join(args.out, JSON_NAME)
        try:
            with open(path, encoding="utf-8") as f:
                results = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"prompt-tree bench: cannot read {path}: {e}", file=sys.stderr)
            return 2
        write_markdown(results, os.path.join(args.out, MD_NAME))
        for p in write_plots(results, args.out):
            print(f"wrote {p}", file=sys.stderr)
        return 0
    from prompt_tree.benchmark.e2e import run_benchmark
    from prompt_tree.benchmark.e2e_rows import BenchError, resolve_bench_device

    if args.gemm_table == "none":
        from prompt_tree.skinny_gemm import clear_tables

        clear_tables()
        print("--gemm-table none: every GEMM on cuBLAS (the shipped tables are off)", file=sys.stderr)
    elif args.gemm_table:
        from prompt_tree.skinny_gemm import register_sweep

        try:
            name, count = register_sweep(args.gemm_table)
        except ValueError as e:
            print(f"prompt-tree bench: {e}", file=sys.stderr)
            return 2
        print(f"--gemm-table: {count} GEMM shapes on the skinny kernel on {name}", file=sys.stderr)

    try:
        bench = config_from_args(args)
        asked = _list(args.workloads, "workloads")
        extras = [w for w in asked if w in EXTRA_WORKLOADS]
        if extras:
            resolve_bench_device(bench)  # BenchError (a ValueError) naming the way out, as the decode grid's
        # every workload's flags checked before the first one runs (a bad --engines used to wait for step's end)
        planned = [(w, _extra_arguments(w, args, bench)) for w in extras]
        for w, kwargs in planned:
            if bench.dry_run:
                _print_extra_plan(w, kwargs)
            else:
                _run_extra(w, kwargs)
        if len(extras) == len(asked):
            return 0
    except ValueError as e:
        print(f"prompt-tree bench: {e}", file=sys.stderr)
        return 2
    try:
        run_benchmark(bench)
    except BenchError as e:  # a device that is not there, an unreadable e2e.json on --resume
        print(f"prompt-tree bench: {e}", file=sys.stderr)
        return 2
    return 0


def _logit_shapes(args: argparse.Namespace) -> tuple[str, ...]:
    from prompt_tree.benchmark.bench_logits import LOGIT_SHAPES

    shapes = _list(args.logits, "logits")
    bad = [x for x in shapes if x not in LOGIT_SHAPES]
    if bad:
        raise ValueError(f"--logits: {bad[0]!r} is not one of {', '.join(LOGIT_SHAPES)}")
    return shapes


def _extra_arguments(workload: str, args: argparse.Namespace, bench) -> dict:
    """The keyword arguments of step.run_step_benchmark or job.run_job_benchmark, checked (ValueError naming the
    flag); nothing is built or run here."""
    if workload == "step":
        from prompt_tree.benchmark import step
        from prompt_tree.sampler import BACKENDS, resolve_backend

        modes = tuple(m for m in bench.modes if m in step.MODES) or step.MODES
        samplings = _list(args.sampling, "sampling")
        bad = [x for x in samplings if x not in step.SAMPLINGS]
        if bad:
            raise ValueError(f"--sampling: {bad[0]!r} is not one of {', '.join(step.SAMPLINGS)}")
        backends = tuple(args.sampler_backends.split(","))
        bad = [x for x in backends if x not in BACKENDS]
        if bad:
            raise ValueError(f"--sampler-backends: {bad[0]!r} is not one of {', '.join(BACKENDS)}")
        if "sampled" in samplings:
            for b in backends:  # one this device cannot run (triton on a CPU) fails now, not after the rows before it
                try:
                    resolve_backend(b, bench.device)
                except ValueError as e:
                    raise ValueError(f"--sampler-backends: {e}") from None
        return dict(models=bench.models, batches=bench.batches if args.batches else step.BATCHES,
                    prefixes=bench.prefixes if args.prefixes else step.PREFIXES, modes=modes, samplings=samplings,
                    out=bench.out, device=bench.device, dtype=bench.dtype, time_budget_s=bench.time_budget_s,
                    ceilings=bench.ceilings, memory_budget_bytes=bench.memory_budget_bytes,
                    steps=step.STEPS if args.steps is None else args.steps, sampler_backends=backends,
                    logits=_logit_shapes(args))
    from prompt_tree.benchmark import job

    shapes = _list(args.job_shapes, "job-shapes")
    lengths = _list(args.lengths, "lengths")
    engines = _list(args.engines, "engines")
    for name, values, allowed in (("job-shapes", shapes, job.SHAPES), ("lengths", lengths, job.LENGTHS),
                                  ("engines", engines, (*job.ENGINES, "ideal"))):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"--{name}: {bad[0]!r} is not one of {', '.join(allowed)}")
    if "ideal" in engines and "continuous-tree" not in engines:
        raise ValueError("--engines: ideal needs continuous-tree in the same run (its measured step times)")
    engines = tuple(e for e in engines if e != "ideal") + (("ideal",) if "ideal" in engines else ())

    def models_of(shape):
        return bench.models if args.models is not None else job.DEFAULT_MODELS[shape]

    return dict(shapes=shapes, models_of=models_of, lengths=lengths, engines=engines, out=bench.out,
                device=bench.device, dtype=bench.dtype, problems=args.problems, samples=args.samples,
                max_new=args.new_tokens, memory_budget_bytes=bench.memory_budget_bytes,
                time_budget_s=bench.time_budget_s, seed=args.seed, logits=_logit_shapes(args))


def _run_extra(workload: str, kwargs: dict) -> None:
    """The step and job workloads (their own JSON files in --out)."""
    if workload == "step":
        from prompt_tree.benchmark import step

        step.run_step_benchmark(**kwargs)
    else:
        from prompt_tree.benchmark import job

        job.run_job_benchmark(**kwargs)


def _print_extra_plan(workload: str, kw: dict) -> None:
    """--dry-run of the step and job workloads: their rows in the order a run takes them, on stderr as the decode
    grid's plan; no weights, no runs, no files. The rows come from the functions the runs loop over
    (step.sampling_variants; job.resolved_shape, job.row_groups), so the plan follows a change there."""
    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if workload == "step":
        from prompt_tree.benchmark.step import SUFFIX, WARMUP_STEPS, sampling_variants
        from prompt_tree.sampler import resolve_backend

        rows = [(name, batch, prefix, mode, sm, b, lg) for name in kw["models"] for prefix in kw["prefixes"]
                for batch in kw["batches"] for mode in kw["modes"]
                for sm, b, lg in sampling_variants(kw["samplings"], kw["sampler_backends"], kw["logits"])]
        log(f"step: {len(rows)} rows, each {kw['steps']} timed decode steps after {WARMUP_STEPS} warm-up ones, "
            f"{SUFFIX} tokens generated per sequence; a run writes {os.path.join(kw['out'], 'step.json')} and step.md")
        for name, batch, prefix, mode, sm, b, lg in rows:
            tags = [t for t in (resolve_backend(b, kw["device"]) if sm == "sampled" else None,
                                "peaked logits" if lg == "peaked" else None) if t]
            tagged = f"{sm} ({', '.join(tags)})" if tags else sm  # as step.md names the row
            log(f"plan   step {name} batch {batch} prefix {prefix} {mode} {tagged}")
        return
    from prompt_tree.benchmark.job import resolved_shape, row_groups

    path = os.path.join(kw["out"], "job.json")
    log(f"job: a run writes {path}, job.md and its plots (measured rows already in {path} are kept, not run again)")
    for shape_name in kw["shapes"]:
        s = resolved_shape(shape_name, kw["problems"], kw["samples"], kw["max_new"])
        log(f"job {shape_name}: few-shot {s.few_shot} -> {s.problems} problems x ~{s.problem} -> {s.samples} "
            f"samples, at most {s.max_new} new tokens each")
        for model in kw["models_of"](shape_name):
            for kind, lg in row_groups(kw["lengths"], kw["logits"]):
                for engine in kw["engines"]:
                    peaked = ", peaked logits" if lg == "peaked" else ""
                    log(f"plan   job {model} {shape_name} {s.problems} x {s.samples} {kind} lengths {engine}{peaked}")
