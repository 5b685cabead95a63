"""`prompt-tree apps` under torchrun: problems split across data-parallel groups, each group's model possibly
split over tensor-parallel ranks (prompt_tree.parallel).

    torchrun --nproc-per-node 4 -m prompt_tree.cli apps --tp 2 --model /models/CodeLlama-34b-hf ...

Per invocation:
1. rank 0 folds group files left by an interrupted run into the normal files, then checks (or, with --force,
   resets) the run directory exactly as one process does, and tells every rank which (problem, sample) pairs
   already have a completion and a verdict (ctx.share): no other rank reads --out;
2. every rank lists the missing pairs and the completions without a verdict, and splits the problems that have
   work left into dp groups by expected tokens (prompt tokens + missing samples x max_new_tokens; greedy
   largest-first), the same split on every rank;
3. each group generates its problems' missing samples (the sample tree is built over ALL selected problems, so
   the few-shot block is the one a single process draws). Its TP rank 0 appends completions and verdicts, as
   they come, to generations.rank<d>.jsonl and verdicts.rank<d>.jsonl and runs the checker pool; its other TP
   ranks compute the same tokens and write nothing;
4. rank 0 waits for every rank, merges the group files into generations.jsonl / verdicts.jsonl, and writes
   summary.json and the report as one process would.

Group files live in --out, which every node must then see (one node, or a shared filesystem), or with
--node-dir in a directory on each writer's own node; their records then travel to rank 0 through the rendezvous
store, at the start (an interrupted run's) and at the end (prompt_tree.tasks.node_files).

Resuming: a killed group keeps what its file holds; the next invocation folds it in at step 1 and generates only
what is missing, whatever the new number of groups.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

from prompt_tree.parallel.dp import expected_tokens, split_by_cost
from prompt_tree.tasks.execution import usable_cores
from prompt_tree.tasks.node_files import node_records, read_leftovers, remove_group_files, start_node_dir
from prompt_tree.tasks.results import RunLock, RunStore, fold_parts
from prompt_tree.tasks.run_config import (RunConfig, RunConfigError, draw_examples, preflight, run_identity, sampling_params,
                               select_problems)
from prompt_tree.tasks.run_summary import RunReport, add_history, build_summary, export_programs, format_report
from prompt_tree.tasks.runner import build_sample_tree, engine_options, generate_missing
from prompt_tree.tasks.verdict_pool import VerdictPool, default_check


def part_label(dp_rank: int) -> str:
    """The RunStore part of group dp_rank: its files are generations.rank<d>.jsonl, as dp.part_path names them."""
    return f"rank{dp_rank}"


def _node_writers(ctx) -> list[int]:
    """The group writers (TP rank 0 of each group) among this node's ranks, lowest first: torchrun numbers one
    node's processes consecutively, so they are rank - local_rank onwards."""
    first = ctx.env.rank - ctx.env.local_rank
    return [r for r in range(first, first + ctx.env.local_world_size) if r % ctx.layout.tp == 0]


def _default_workers(ctx) -> int:
    """Checker threads per group writer: the host's CPUs shared among the writers on it."""
    writers_here = max(1, ctx.env.local_world_size // ctx.layout.tp)
    return max(1, usable_cores() // writers_here)


def run_apps_distributed(config: RunConfig, ctx, *, check_fn: Callable | None = None,
                         log: Callable[[str], None] | None = print) -> RunReport | None:
    """This rank's part of the run (module docstring). Returns the report on rank 0, None on the others.
    Wrap it in prompt_tree.parallel.env.run_guarded so that a failure anywhere stops every rank with its name.
    Rank 0 holds the run directory's lock (prompt_tree.tasks.results.RunLock) from step 1 to the end."""
    held: list[RunLock] = []
    try:
        return _run_apps_distributed(config, ctx, held, check_fn=check_fn, log=log)
    finally:
        for lock in held:
            lock.release()


def _run_apps_distributed(config: RunConfig, ctx, held: list, *, check_fn: Callable | None = None,
                          log: Callable[[str], None] | None = print) -> RunReport | None:
    from prompt_tree.parallel.rank_engine import engine_for_rank
    from prompt_tree.tasks.extract import extract_code

    lay = ctx.layout
    if config.generations is not None:
        raise RunConfigError("generations: evaluating a generations file uses no model and is not split across "
                             "ranks; run it without torchrun")
    if config.tp != lay.tp:
        raise RunConfigError(f"tp: the config asks for {config.tp} but the process groups were built for {lay.tp}")
    main = lay.rank == 0
    log = (log or (lambda s: None)) if main else (lambda s: None)
    local = dataclasses.replace(config, progress=config.progress and main,
                                workers=config.workers or _default_workers(ctx))
    problems = select_problems(config)
    by_id = {p.problem_id: p for p in problems}
    if len(by_id) != len(problems):
        raise RunConfigError("problem ids must be unique")
    identity = run_identity(config, problems)
    params = sampling_params(config)
    # As in the one-process path: what can be checked fails before --out is touched (every rank checks the same).
    preflight(config)
    examples = draw_examples(config, problems)
    t_start = time.perf_counter()

    wanted = [(p.problem_id, i) for p in problems for i in range(config.samples)]
    writers = [lay.tp_ranks(d)[0] for d in range(lay.dp)]
    node_dir = config.node_dir
    # With --node-dir (prompt_tree.tasks.node_files) the node's first writer owns the directory: it locks it, sends rank 0
    # what an interrupted run left there (step 0), and clears it for the node's writers (step 3).
    node_leader = _node_writers(ctx)[0] if node_dir is not None and lay.is_writer else None
    if node_leader is not None:
        leftovers = {"generations": [], "verdicts": []}
        if lay.rank == node_leader:
            held.append(RunLock(node_dir))
            leftovers = read_leftovers(node_dir, identity, config.force)
        ctx.publish("apps/leftovers", leftovers)

    def prepare() -> dict:
        held.append(RunLock(config.out))  # rank 0 only: one writer process per run directory
        # Every writer has checked and locked its node directory before --out is checked (and, under --force,
        # reset): nothing is deleted before everything is validated.
        leftovers = ctx.wait_published("apps/leftovers", writers) if node_dir is not None else {}
        fold_parts(config.out)  # before the config check, so that the check sees those records too
        store = RunStore(config.out, identity, force=config.force)
        try:
            for rank, left in sorted(leftovers.items()):
                store.absorb(left, f"rank {rank}'s --node-dir")
        finally:
            store.close()  # fsynced: only now may a writer delete what it sent
        shared = {"generated": [list(k) for k in store.generations], "verdicts": [list(k) for k in store.verdicts],
                  "resumed": [len(store.generations), len(store.verdicts)]}
        if node_dir is not None:  # the nodes cannot read --out: the records of problems with work left travel
            done = {k for k in store.generations if k in store.verdicts}
            open_pids = {pid for pid, i in wanted if (pid, i) not in done}
            shared["records"] = {
                "generations": [dataclasses.asdict(g) for k, g in store.generations.items() if k[0] in open_pids],
                "verdicts": [dataclasses.asdict(v) for k, v in store.verdicts.items() if k[0] in open_pids]}
        return shared

    shared = ctx.share("apps/prepare", prepare)
    resumed = shared["resumed"]
    if main and any(resumed):
        log(f"resuming {config.out}: {resumed[0]} completions and {resumed[1]} verdicts already done")

    # Step 2, on every rank from rank 0's word: the work left and its split.
    generated = {(str(pid), int(i)) for pid, i in shared["generated"]}
    verdicts = {(str(pid), int(i)) for pid, i in shared["verdicts"]}
    missing: dict[str, list[int]] = {}
    unexecuted: dict[str, int] = {}
    for pid, i in wanted:
        if (pid, i) not in generated:
            missing.setdefault(pid, []).append(i)
        elif (pid, i) not in verdicts:
            unexecuted[pid] = unexecuted.get(pid, 0) + 1
    engine, prompt_tokens = None, {}
    if missing:
        if not config.random_model and not os.path.isdir(config.model):
            raise RunConfigError(f"model: {config.model!r} is not 'tiny', 'random:PRESET' or an existing "
                                 f"checkpoint directory")
        t0 = time.perf_counter()
        engine = engine_for_rank(config.model, ctx, dtype=config.dtype, seed=0, add_bos=config.bos)
        load_s = time.perf_counter() - t0
        if engine.tokenizer is None:
            raise RunConfigError(f"model: {config.model!r} has no tokenizer, and APPS prompts are text")
        tree, _ = build_sample_tree(problems, missing, config, examples)
        plan = engine.plan(tree, params)
        prompt_tokens = {pid: len(plan.node_tokens.get(pid, ())) for pid in missing}
    with_work = [p.problem_id for p in problems if p.problem_id in missing or p.problem_id in unexecuted]
    costs = [expected_tokens(prompt_tokens.get(pid, 0), len(missing.get(pid, ())), params.max_new_tokens)
             + unexecuted.get(pid, 0) for pid in with_work]
    mine = {with_work[i] for i in split_by_cost(costs, lay.dp)[lay.dp_rank]}
    my_missing = {pid: idx for pid, idx in missing.items() if pid in mine}
    my_wanted = [key for key in wanted if key[0] in mine]
    log(f"{len(with_work)} problems with work left, split over {lay.dp} data-parallel group(s) of {lay.tp} rank(s)")

    # Step 3: this group's share.
    info = {"dp_rank": lay.dp_rank, "problems": len(mine), "generated": 0, "executed": 0, "check_seconds": 0.0}
    if lay.is_writer:
        if node_dir is None:
            store = RunStore(config.out, identity, part=part_label(lay.dp_rank))
        else:  # leftovers are in --out now: the node's files start afresh, knowing what the run holds
            ready = f"apps/node_ready/{node_leader}"
            if lay.rank == node_leader:
                start_node_dir(node_dir, identity)
                ctx.announce(ready)
            else:
                ctx.wait_announced(ready, node_leader)
            store = RunStore(node_dir, identity, part=part_label(lay.dp_rank), merged=False)
            store.absorb(shared["records"], "rank 0", write=False)
        report = RunReport(summary={})
        executor = VerdictPool(store, by_id, local, sum(1 for key in my_wanted if key not in store.verdicts),
                             check_fn or default_check(config))
        ok = False
        try:
            for key in my_wanted:
                if key in store.generations and key not in store.verdicts:
                    executor.submit(store.generations[key])
            if my_missing:
                todo = [(pid, i) for pid, idx in my_missing.items() for i in idx]
                gen_info = generate_missing(local, params, problems, todo, store, executor, engine, extract_code,
                                             report, log, examples=examples)
                gen_info["load_s"] = load_s
                info["generation"] = gen_info
            executor.wait()
            ok = True
        finally:
            executor.shutdown(cancel=not ok)
            store.close()
        info.update(generated=report.generated_now, executed=executor.executed,
                    check_seconds=executor.check_seconds)
        if node_dir is not None:  # rank 0 merges what this group wrote; once it says so, the files may go
            ctx.publish("apps/records", node_records(node_dir, lay.dp_rank))
            if not main:  # polled, not a store get: the slowest group may end hours after this one
                ctx.wait_announced("apps/merged", 0)
                remove_group_files(node_dir, lay.dp_rank)
        ctx.publish("apps", info)
    elif my_missing:  # a TP peer: the same model calls as its writer, nothing recorded
        tree, _ = build_sample_tree(problems, my_missing, config, examples)
        engine.generate(tree, params, progress=False, **engine_options(config))
    if not main:
        return None

    # Step 4: rank 0 merges and reports.
    t_gen_end = time.perf_counter()
    if node_dir is not None:
        store = RunStore(config.out, identity)
        try:
            for rank, records in sorted(ctx.wait_published("apps/records", writers).items()):
                store.absorb(records, f"rank {rank}'s --node-dir")
        finally:
            store.close()
        ctx.announce("apps/merged")
        remove_group_files(node_dir, lay.dp_rank)
    ctx.wait_for_all()
    t_all_end = time.perf_counter()
    groups = ctx.collect("apps", writers)
    groups = [groups[r] for r in sorted(groups)]
    fold_parts(config.out)
    store = RunStore(config.out, identity)
    try:
        gen_info = _combine_generation(groups)
        summary = build_summary(config, problems, store, wanted, gen_info, timings={
            "total_s": time.perf_counter() - t_start,
            "generation_s": gen_info.get("wall_s", 0.0),
            "execution_s": sum(g["check_seconds"] for g in groups),
            "execution_after_generation_s": max(0.0, t_all_end - t_gen_end),
        })
        report = RunReport(summary=summary, generated_now=sum(g["generated"] for g in groups),
                           executed_now=sum(g["executed"] for g in groups), resumed_generations=resumed[0],
                           resumed_verdicts=resumed[1], out_dir=config.out)
        summary["this_invocation"] = {"generated": report.generated_now, "executed": report.executed_now,
                                      "resumed_generations": resumed[0], "resumed_verdicts": resumed[1]}
        summary["parallel"] = {"world_size": lay.world_size, "tp": lay.tp, "dp": lay.dp, "groups": groups,
                               "group_files": "--node-dir" if node_dir is not None else "--out"}
        store.write_summary(add_history(summary, store.read_summary()))
    finally:
        store.close()
    export_programs(config, problems, store, wanted, log)
    log(format_report(summary))
    return report


def _combine_generation(groups: list[dict]) -> dict:
    """The groups' generation numbers as one run's: they ran side by side, so wall time is the slowest group's."""
    gens = [g["generation"] for g in groups if g.get("generation")]
    if not gens:
        return {}
    wall = max(g["wall_s"] for g in gens)
    tokens = sum(g["tokens_now"] for g in gens)
    return {"wall_s": wall, "load_s": max(g.get("load_s", 0.0) for g in gens),
            "completions": sum(g["completions"] for g in gens), "tokens_now": tokens,
            "tokens_per_s": tokens / wall if wall > 0 else None}
