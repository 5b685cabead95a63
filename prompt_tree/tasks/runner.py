"""The APPS main job: sample completions for every (problem, sample) pair, execute them, report pass@k.

Resumable: every completion and every verdict is appended to the run directory as it is produced
(prompt_tree.tasks.results), and a run started again on the same directory generates only the (problem, sample) pairs that
have no completion and executes only the completions that have no verdict.

Sample identity: the engine draws a sequence's noise from (seed, node key, sample index) only, never from the
rest of the batch. Each sample therefore gets its own tree node — a 0-token child of its problem's node, keyed
"<problem_id>#<sample index>" and asking for one sample — so sample i of a problem is the same draw whether it is
generated with all its siblings or alone in a resumed run. The child adds no tokens (the KV pool stores nothing
for it); the problem's prompt is still shared by all its samples, and the few-shot block by all problems.

Execution overlaps generation: each finished completion is handed to a thread pool of checker workers (each runs
its program in a sandboxed subprocess) while decoding continues. Programs identical to one already judged for the
same problem are not run again (prompt_tree.tasks.duplicates); the run directory is locked for the whole invocation.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

from prompt_tree.tasks.problem import Problem
from prompt_tree.tasks.results import GenerationRecord, RunLock, RunStore, fold_parts
from prompt_tree.tasks.run_config import (  # noqa: F401 - RunConfig and RunConfigError: the runner's API, as the README shows
    RunConfig, RunConfigError, check_model, draw_examples, preflight, run_identity, sampling_params, select_problems,
)
from prompt_tree.tasks.run_limits import check_run_size
from prompt_tree.tasks.run_summary import (RunReport, add_history, build_summary, export_programs, format_report,
                                           jsonable_dict)
from prompt_tree.tasks.verdict_pool import VerdictPool, default_check

SAMPLE_KEY_SEP = "#"


def sample_key(problem_id: str, sample_index: int) -> str:
    return f"{problem_id}{SAMPLE_KEY_SEP}{sample_index}"


def load_engine(config: RunConfig):
    """The engine the config names: "tiny" or "random:PRESET" (random weights, seed 0, so the same model every
    run), or a local checkpoint directory."""
    from prompt_tree import Engine

    check_model(config)  # before building anything
    return Engine.load(config.model, device=config.device, dtype=config.dtype, seed=0, add_bos=config.bos)


def build_sample_tree(problems: Sequence[Problem], missing: dict[str, list[int]], config: RunConfig,
                      examples: Sequence[Problem] | None = None):
    """The prompt tree for the missing samples: build_tree over ALL selected problems (so the few-shot draw, which
    excludes the problems under evaluation, is the same in every run), then each problem node asks for no samples
    itself and gets one 0-token child per missing sample (see the module docstring); problems without missing
    samples are dropped. examples: the few-shot examples if already drawn (draw_examples), else drawn here.
    Returns (tree, child key -> (problem_id, sample_index))."""
    from prompt_tree import PromptTree
    from prompt_tree.tasks.apps import build_tree

    few_shot = list(examples) if examples is not None else config.few_shot
    base = build_tree(problems, samples=1, few_shot=few_shot, instruction=config.instruction, seed=config.seed,
                      few_shot_source=config.few_shot_source, chat=config.chat)
    pids = {p.problem_id for p in problems}
    nodes = base.to_dict()["nodes"]
    out_nodes, keymap = [], {}
    for entry in nodes:
        if entry["key"] in pids:
            todo = missing.get(entry["key"], [])
            if not todo:
                continue
            out_nodes.append(dict(entry, samples=0))
            for i in todo:
                key = sample_key(entry["key"], i)
                keymap[key] = (entry["key"], i)
                out_nodes.append({"key": key, "parent": entry["key"], "prompt": "", "samples": 1})
        else:
            out_nodes.append(entry)  # shared instruction / few-shot nodes
    if not keymap:
        raise ValueError("build_sample_tree: no missing samples; there is nothing to generate")
    tree = PromptTree.from_dict({"nodes": out_nodes})  # shared nodes stay: some problem below them has samples
    return tree, keymap


def run_apps(
    config: RunConfig,
    *,
    problems: Sequence[Problem] | None = None,
    engine: Any = None,
    check_fn: Callable | None = None,
    log: Callable[[str], None] | None = print,
) -> RunReport:
    """Run (or resume) the evaluation `config` describes; returns what this invocation did and the summary.

    problems: use these instead of loading config.source (tests). engine: an Engine to generate with instead of
    loading config.model. check_fn(problem, code, timeout=, memory_mb=) -> CheckResult: default prompt_tree.tasks.checker.check.
    Files written under config.out: config.json, generations.jsonl, verdicts.jsonl, summary.json; and
    config.export_bigcode when set.
    """
    from prompt_tree.tasks.bigcode import load_bigcode

    log = log or (lambda s: None)
    if config.tp != 1:
        raise RunConfigError(f"tp: {config.tp} ranks per model need torchrun (prompt-tree apps --tp under torchrun, "
                             f"or prompt_tree.tasks.dp_runner.run_apps_distributed); run_apps is one process")
    if config.node_dir is not None:
        raise RunConfigError(f"node_dir: {config.node_dir!r} is for torchrun runs over several nodes (each node's "
                             f"group files); one process writes --out directly: drop --node-dir")
    problems = list(problems) if problems is not None else select_problems(config)
    by_id = {p.problem_id: p for p in problems}
    if len(by_id) != len(problems):
        raise RunConfigError("problem ids must be unique")
    from_file = load_bigcode(config.generations, problems) if config.generations is not None else None
    per_problem = max((len(v) for v in from_file.values()), default=0) if from_file is not None else config.samples
    check_run_size(len(problems), per_problem, config.resolved_max_new_tokens)  # before any per-sample list
    if from_file is not None:
        wanted = [(p.problem_id, i) for p in problems for i in range(len(from_file[p.problem_id]))]
    else:
        wanted = [(p.problem_id, i) for p in problems for i in range(config.samples)]

    params = sampling_params(config) if from_file is None else None  # bad values fail before --out is touched
    # Everything else that can be checked fails before --out is touched and before a model is built too.
    preflight(config, generating=from_file is None and engine is None)
    examples = draw_examples(config, problems) if from_file is None else None
    run_lock = RunLock(config.out)  # one writer per run directory, until this invocation ends
    try:
        planned = None
        if config.force and from_file is None:
            # --force deletes old results: first make sure the new run can start, i.e. the model loads and the
            # plan of every sample (what the deletion leaves missing) builds: its prompts tokenize and fit
            # max_new_tokens in the model's context. A prompt too long for --max-new-tokens once emptied the
            # old run before the error.
            engine = engine if engine is not None else load_engine(config)
            everything = by_problem(wanted)
            planned = (everything,) + plan_samples(config, params, problems, everything, engine, examples)
        return _run_locked(config, problems, by_id, from_file, wanted, params, examples, engine, check_fn, log,
                           planned)
    finally:
        run_lock.release()


def by_problem(keys) -> dict[str, list[int]]:
    """{problem id: [sample index, ...]} of (problem id, sample index) keys, in their order."""
    out: dict[str, list[int]] = {}
    for pid, i in keys:
        out.setdefault(pid, []).append(i)
    return out


def plan_samples(config, params, problems, missing: dict, engine, examples) -> tuple:
    """(plan, keymap) of the samples `missing` lists ({problem id: [sample index]}): the tree of their
    prompts, tokenized by the engine and checked against its context (Engine.plan)."""
    tree, keymap = build_sample_tree(problems, missing, config, examples)
    return engine.plan(tree.flatten(engine.tokenizer, add_bos=config.bos), params), keymap


def _run_locked(config, problems, by_id, from_file, wanted, params, examples, engine, check_fn, log,
                planned=None) -> RunReport:
    from prompt_tree.tasks.extract import extract_code

    if os.path.isdir(config.out):  # records of a torchrun run's groups (prompt_tree.tasks.dp_runner) count as done too

        fold_parts(config.out)
    store = RunStore(config.out, run_identity(config, problems), force=config.force)
    report = RunReport(summary={}, resumed_generations=store.resumed_generations,
                       resumed_verdicts=store.resumed_verdicts, out_dir=config.out)
    if store.resumed_generations or store.resumed_verdicts:
        log(f"resuming {config.out}: {store.resumed_generations} completions and {store.resumed_verdicts} verdicts "
            f"already done of {len(wanted)}")
    to_execute = sum(1 for key in wanted if key not in store.verdicts)
    executor = VerdictPool(store, by_id, config, to_execute, check_fn or default_check(config))
    gen_info: dict[str, Any] = {}
    t_start = time.perf_counter()
    ok = False
    try:
        # Completions of an earlier invocation that never got their verdict.
        for key in wanted:
            if key in store.generations and key not in store.verdicts:
                executor.submit(store.generations[key])
        if from_file is not None:
            for pid, i in wanted:
                if (pid, i) not in store.generations:
                    code = from_file[pid][i]
                    rec = GenerationRecord(pid, i, completion=code, code=code, finish_reason="file", tokens=None)
                    store.add_generations([rec])
                    executor.submit(rec)
        else:
            gen_info = generate_missing(config, params, problems, wanted, store, executor, engine, extract_code,
                                         report, log, examples=examples, planned=planned)
        t_gen_end = time.perf_counter()
        executor.wait()
        ok = True
    finally:
        executor.shutdown(cancel=not ok)
        store.close()
    t_end = time.perf_counter()
    report.executed_now = executor.executed + executor.duplicates

    summary = build_summary(config, problems, store, wanted, gen_info, timings={
        "total_s": t_end - t_start,
        "generation_s": gen_info.get("wall_s", 0.0),
        "execution_s": executor.check_seconds,
        "execution_after_generation_s": t_end - t_gen_end,
    })
    summary["this_invocation"] = {"generated": report.generated_now, "executed": report.executed_now,
                                  "duplicates": executor.duplicates,
                                  "resumed_generations": report.resumed_generations,
                                  "resumed_verdicts": report.resumed_verdicts}
    store.write_summary(add_history(summary, store.read_summary()))
    report.summary = summary
    export_programs(config, problems, store, wanted, log)
    log(format_report(summary))
    return report


def generate_missing(config, params, problems, wanted, store, executor, engine, extract_code, report, log,
                      examples=None, planned=None) -> dict:
    """Generate the samples of `wanted` that the store lacks, submitting each to the executor as it ends.
    planned: (missing, plan, keymap) built beforehand (run_apps with --force), used if it plans these samples."""
    missing = by_problem(key for key in wanted if key not in store.generations)
    if not missing:
        return {}
    t0 = time.perf_counter()
    if engine is None:
        engine = load_engine(config)
    load_s = time.perf_counter() - t0
    if planned is not None and planned[0] == missing:
        plan, keymap = planned[1:]
    else:
        plan, keymap = plan_samples(config, params, problems, missing, engine, examples)
    recorded = store.config.get("tokenization")
    if recorded is not None and plan.tokenization != recorded:
        raise RuntimeError(f"the engine's tokenizer tokenizes by {plan.tokenization!r}, but the run (config.json) "
                           f"records {recorded!r}; the engine does not match --model {config.model!r}")
    if config.chat:  # the answer's code, from its fenced block, with no base-model stops to cut at
        from prompt_tree.tasks.extract import extract_answer_code

        extract_code = extract_answer_code
    n_missing = sum(len(v) for v in missing.values())
    log(f"generating {n_missing} completions for {len(missing)} problems (max {params.max_new_tokens} new tokens)")

    tokens_now = [0]

    def on_complete(key, sample_index, completion):
        pid, i = keymap[key]  # each sample is its own node asking for one sample (sample_index is 0)
        rec = GenerationRecord(pid, i, completion=completion.text, code=extract_code(completion.text),
                               finish_reason=str(completion.finish_reason), tokens=len(completion.token_ids))
        if store.add_generations([rec]):
            report.generated_now += 1
            tokens_now[0] += rec.tokens
        executor.submit(rec)

    t1 = time.perf_counter()
    result = engine.generate(plan, params, progress=config.progress, on_complete=on_complete,
                             **engine_options(config))
    wall = time.perf_counter() - t1
    unreported = [key for key in keymap if keymap[key] not in store.generations]
    if unreported:
        raise RuntimeError(
            f"the engine returned without reporting {len(unreported)} completion(s) through on_complete "
            f"(first: {unreported[:3]}); they were not recorded"
        )
    info = {"wall_s": wall, "load_s": load_s, "completions": n_missing, "tokens_now": tokens_now[0],
            "tokens_per_s": tokens_now[0] / wall if wall > 0 else None}
    engine_summary = getattr(result, "summary", None)
    if engine_summary:
        info["engine"] = jsonable_dict(engine_summary)
    return info


def engine_options(config: RunConfig) -> dict:
    opts = {}
    if config.attention != "tree":
        opts["attention"] = config.attention
    if config.max_batch_sequences is not None:
        opts["max_batch_sequences"] = config.max_batch_sequences
    return opts


