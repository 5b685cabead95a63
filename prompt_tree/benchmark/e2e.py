"""Which rows the benchmark runs, in which order, and running them; e2e.json is re-saved after every row.

A row is one (model, workload, shape, batch, mode) measurement. Rows come most important first, so a time budget
cuts the least important ones: per model (llama3-8b before codellama-7b, as listed), workload 1 at the priority
prefixes x batches, then workload 2b, 2a, then the rest of workload 1. Within a batch, `none` runs first: every
other row's limit needs its measured no-attention time.

Workload 1 rows: the grid of prefixes x batches; a batch that does not fit a mode's memory is a skipped row.
Workload 2 rows, per mode: at the same batch (the largest every engine mode fits, so all compare at one batch),
and at the largest batch that fits the mode's own memory (whole problems while one fits, else samples of one).
Fit is predicted with the scheduler's cost model (`prompt_tree.engine.memory.plan_cost`, what `Engine.cost` returns)
against the engine's memory budget; the transformers baseline with its own prediction (hf_baseline).
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from dataclasses import asdict
from typing import Iterator

import torch

from prompt_tree.config import ModelConfig
from prompt_tree.engine.memory import available_memory, plan_cost
from prompt_tree.tree import PromptTree

from .e2e_rows import (ENGINE_ATTENTION, JSON_NAME, MD_NAME, MODE_READS, PRIORITY_BATCHES, PRIORITY_PREFIXES,
                       ROLE_GRID, ROLE_LARGEST, ROLE_LIMIT, ROLE_SAME, TIME_BUDGET_REASON, WORKLOAD_2_ORDER,
                       BenchConfig, BenchError, Cell, Row, _gib, _size, benchmark_config, largest_fitting,
                       resolve_bench_device, row_key)
from .hf_baseline import hf_generate, hf_model, hf_predicted_bytes, hf_unavailable_reason
from .limit import (attention_floor_seconds, decode_work, estimate_run_seconds, measure_ceilings,
                    physical_run_seconds)
from .workloads import (MAX_SEARCH_BATCH, HierarchicalShape, HierarchicalWorkload, sequence_prompts,
                        shared_prefix_tree, shrink, single_level)

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch.OutOfMemoryError: torch >= 2.5


class Planner:
    """The cells of one model, in priority order (a generator: workload 2's fit searches run when reached)."""

    def __init__(self, name: str, config: ModelConfig, dtype: torch.dtype, budget_bytes: int, bench: BenchConfig,
                 prefill_chunk_tokens: int):
        self.name, self.config, self.dtype, self.budget = name, config, dtype, budget_bytes
        self.bench, self.chunk = bench, prefill_chunk_tokens
        self.engine_modes = [m for m in ("none", "tree", "single", "flat") if m == "none" or m in bench.modes]
        self.hf = "hf" in bench.modes
        self.hf_reason = hf_unavailable_reason(config) if self.hf else None
        self._max_1: dict[int, int] = {}  # prefix -> largest workload-1 batch of the engine modes

    def cost(self, tree: PromptTree, new_tokens: int) -> int:
        return plan_cost(tree.flatten(), new_tokens, self.config, self.dtype, self.chunk).total

    def fits(self, tree: PromptTree, new_tokens: int) -> bool:
        return self.cost(tree, new_tokens) <= self.budget

    def hf_fits(self, batch: int, prompt_len: int, new_tokens: int) -> bool:
        return hf_predicted_bytes(self.config, self.dtype, batch, prompt_len, new_tokens) <= self.budget

    def misfit(self, needed: int) -> str:
        return f"does not fit: predicted {_size(needed)} > budget {_size(self.budget)}"

    def cells(self) -> Iterator[Cell]:
        b = self.bench
        first, rest = [], []
        if "1" in b.workloads:
            first = [(p, n) for p in PRIORITY_PREFIXES if p in b.prefixes for n in PRIORITY_BATCHES if n in b.batches]
            rest = [(p, n) for p in sorted(b.prefixes) for n in sorted(b.batches) if (p, n) not in first]
        for p, n in first:
            yield from self.shared_prefix_cells(p, n)
        for w in WORKLOAD_2_ORDER:
            if w in b.workloads:
                yield from self.hierarchical_cells(b.shapes[w])
        for p, n in rest:
            yield from self.shared_prefix_cells(p, n)

    # ----- workload 1

    def _max_batch_1(self, prefix: int) -> int:
        if prefix not in self._max_1:
            cfg, n, seed = self.config, self.bench.new_tokens_1, self.bench.seed
            self._max_1[prefix] = largest_fitting(
                list(range(1, MAX_SEARCH_BATCH + 1)),
                lambda k: self.fits(shared_prefix_tree(prefix, k, cfg.vocab_size, cfg.bos_token_id, seed), n))
        return self._max_1[prefix]

    def _max_batch_1_hf(self, prefix: int) -> int:
        n = self.bench.new_tokens_1
        return largest_fitting(list(range(1, MAX_SEARCH_BATCH + 1)), lambda k: self.hf_fits(k, prefix, n))

    def shared_prefix_cells(self, prefix: int, batch: int) -> Iterator[Cell]:
        cfg, n = self.config, self.bench.new_tokens_1
        tree = shared_prefix_tree(prefix, batch, cfg.vocab_size, cfg.bos_token_id, self.bench.seed)
        needed = self.cost(tree, n)

        def row(mode: str, max_batch: int | None) -> Row:
            return Row(model=self.name, workload="1", shape=f"prefix {prefix}", batch=batch, mode=mode, new_tokens=n,
                       prefix=prefix, roles=[ROLE_GRID], max_batch=max_batch)

        for mode in self.engine_modes:
            if mode == "single":
                continue  # one level: the single-level tree is the tree itself
            r = row(mode, self._max_batch_1(prefix))
            r.predicted_gib = _gib(needed)
            yield Cell(r, tree, self.misfit(needed) if needed > self.budget else None)
        if self.hf:
            hf_needed = hf_predicted_bytes(cfg, self.dtype, batch, prefix, n)
            reason = self.hf_reason or (self.misfit(hf_needed) if hf_needed > self.budget else None)
            r = row("hf", None if self.hf_reason else self._max_batch_1_hf(prefix))
            r.predicted_gib = _gib(hf_needed)
            yield Cell(r, tree, reason)

    # ----- workload 2

    def hierarchical_cells(self, shape: HierarchicalShape) -> Iterator[Cell]:
        cfg, n = self.config, shape.new_tokens
        wl = HierarchicalWorkload(shape, cfg.vocab_size, cfg.bos_token_id, self.bench.seed)

        def prompt_len(batch: int) -> int:  # the longest prompt among the batch's problems (hf pads to it)
            return shape.few_shot + max(wl.problem_length(i) for i in range(wl.num_problems(batch)))

        fit = {
            "shared": lambda k: self.fits(wl.tree(k), n),
            "single": lambda k: self.fits(single_level(wl.tree(k)), n),
            "hf": lambda k: self.hf_fits(k, prompt_len(k), n),
        }

        def largest(kind: str) -> int:
            return largest_fitting(wl.batch_candidates(fit[kind](min(shape.samples, shape.total_sequences))),
                                   fit[kind])

        shared_max = largest("shared")
        max_batch = {m: shared_max for m in ("none", "tree", "flat")}
        if "single" in self.engine_modes:
            max_batch["single"] = largest("single")
        if self.hf and not self.hf_reason:
            max_batch["hf"] = largest("hf")
        same = min(max_batch[m] for m in self.engine_modes)

        # (batch, mode) -> roles, in run order: the same batch first, then each mode's largest batch.
        plan: dict[tuple[int, str], list[str]] = {}

        def add(batch: int, mode: str, role: str) -> None:
            if batch > 0 and (batch, "none") not in plan:
                plan[(batch, "none")] = [ROLE_LIMIT]  # the limit of every row at this batch needs it
            plan.setdefault((batch, mode), [])
            if role not in plan[(batch, mode)]:
                plan[(batch, mode)].append(role)
            if mode == "none" and ROLE_LIMIT in plan[(batch, mode)] and role != ROLE_LIMIT:
                plan[(batch, mode)].remove(ROLE_LIMIT)

        for mode in self.engine_modes + (["hf"] if self.hf else []):
            add(same, mode, ROLE_SAME)
        for mode in ("none", "tree", "single", "flat", "hf"):
            if mode in max_batch and (mode == "none" or mode in self.bench.modes):
                add(max_batch[mode], mode, ROLE_LARGEST)
        for (batch, mode), roles in plan.items():
            r = Row(model=self.name, workload=shape.name, shape=shape.label, batch=batch, mode=mode, new_tokens=n,
                    problems=wl.num_problems(batch) if batch else 0, roles=roles, max_batch=max_batch.get(mode))
            if batch == 0:
                yield Cell(r, None, f"does not fit: not even one sequence fits the budget of {_size(self.budget)}")
                continue
            tree = wl.tree(batch)
            if mode == "hf":
                if self.hf_reason:
                    yield Cell(r, tree, self.hf_reason)
                    continue
                needed = hf_predicted_bytes(cfg, self.dtype, batch, prompt_len(batch), n)
            else:
                needed = self.cost(single_level(tree) if mode == "single" else tree, n)
            r.predicted_gib = _gib(needed)
            yield Cell(r, tree, self.misfit(needed) if needed > self.budget else None)


class Runner:
    """Runs the cells of every model, keeping e2e.json current (rows, not_run, the run's device and ceilings)."""

    def __init__(self, bench: BenchConfig, log=print):
        self.bench, self.log = bench, log
        self.json_path = os.path.join(bench.out, JSON_NAME)
        self.start = time.monotonic()
        self.results: dict = {}
        self.done: set = set()

    # ----- results file

    def _load(self) -> dict:
        if self.bench.resume and os.path.isfile(self.json_path):
            try:
                with open(self.json_path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise BenchError(f"--resume: cannot read {self.json_path}: {e}") from e
            if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
                raise BenchError(f"--resume: {self.json_path} has no rows list: not an e2e.json")
            self.done = {row_key(r) for r in data["rows"]}
            self.log(f"resume: {len(self.done)} rows already in {self.json_path}")
            return data
        return {"rows": [], "not_run": []}

    def save(self) -> None:
        from .report import write_markdown

        os.makedirs(self.bench.out, exist_ok=True)
        tmp = self.json_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.results, f, indent=1)
        os.replace(tmp, self.json_path)  # a run killed mid-write keeps the previous file
        write_markdown(self.results, os.path.join(self.bench.out, MD_NAME))

    def _add(self, row: Row) -> None:
        self.results["rows"].append(asdict(row))
        self.done.add(row.key())
        self.save()

    def _find(self, key: tuple) -> dict | None:
        return next((r for r in self.results["rows"] if row_key(r) == key), None)

    # ----- the run

    def run(self) -> dict:
        b = self.bench
        device, dtype = resolve_bench_device(b)
        self.device, self.dtype = device, dtype
        self.results = self._load()
        self.results["not_run"] = []
        self.results.update(_environment(device))
        if "none" not in b.modes:
            self.log("note: mode none runs as well: every row's limit needs its measured no-attention time")
        if "1" in b.workloads and "single" in b.modes:
            self.log("note: workload 1 has one level, where single = tree: no single rows for it")
        self.ceilings = b.ceilings or measure_ceilings(device)
        self.results.update(copy_bw_tbs=self.ceilings.copy_bytes_per_s / 1e12,
                            matmul_tflops=self.ceilings.matmul_flops_per_s / 1e12,
                            ceilings_assumed=b.ceilings is not None, date=time.strftime("%Y-%m-%d %H:%M"),
                            config=_config_dict(b))
        self.log(f"device {self.results['device']}, torch {self.results['torch']}, triton {self.results['triton']}; "
                 f"ceilings: copy {self.results['copy_bw_tbs']:.3g} TB/s, matmul {self.results['matmul_tflops']:.3g} "
                 f"TFLOP/s{' (assumed)' if b.ceilings else ''}")
        if not b.dry_run:
            self.save()
        for name in b.models:
            self._run_model(name)
        if not b.dry_run:
            self.save()
            from .report import write_plots

            for path in write_plots(self.results, b.out):
                self.log(f"wrote {path}")
            self.log(f"wrote {self.json_path} and {os.path.join(b.out, MD_NAME)}")
        return self.results

    def _run_model(self, name: str) -> None:
        b = self.bench
        config, extended = benchmark_config(name, b)
        if extended:
            self.results.setdefault("context_extended", {})[name] = config.max_position_embeddings
            self.log(f"{name}: context extended to {config.max_position_embeddings} positions for the longest "
                     f"sequence (random weights: no shape or cost changes)")
        elapsed = time.monotonic() - self.start
        if b.time_budget_s is not None and elapsed > b.time_budget_s:
            reason = f"{TIME_BUDGET_REASON}: {elapsed:.0f} s elapsed before the model was loaded"
            self.results["not_run"].append({"model": name, "workload": None, "shape": None, "batch": None,
                                            "mode": None, "reason": reason})
            self.log(f"later  {name}: {reason}")
            return
        engine = None
        if b.dry_run:
            weights = config.num_parameters() * torch.empty((), dtype=self.dtype).element_size()
            budget = b.memory_budget_bytes or max(0, available_memory(self.device) - weights)
            chunk = 8192
        else:
            from prompt_tree.engine import Engine

            self._free()
            t0 = time.perf_counter()
            engine = Engine.random(config, seed=b.seed, device=self.device, dtype=self.dtype,
                                   memory_budget_bytes=b.memory_budget_bytes)
            engine.eos_ids = ()  # every sequence runs to max_new_tokens
            self._free()
            budget, chunk = engine.budget_bytes(), engine.prefill_chunk_tokens
            self.log(f"{name}: random weights in {time.perf_counter() - t0:.1f} s; memory budget "
                     f"{_size(budget)} beyond the weights")
        self.hf = None
        planner = Planner(name, config, self.dtype, budget, b, chunk)
        for cell in planner.cells():
            self._produce(cell, engine, config)
        del engine
        self.hf = None
        self._free()

    def _free(self) -> None:
        """Give the previous row's memory back to the device (the next row's budget is measured free memory)."""
        if self.device.type == "cuda":
            gc.collect()  # reference cycles may still hold a KV pool or a graph's memory pool
            torch.cuda.empty_cache()

    def _produce(self, cell: Cell, engine, config: ModelConfig) -> None:
        row = cell.row
        label = f"{row.model} w{row.workload} {row.shape} batch {row.batch} {row.mode}"
        if row.key() in self.done:
            self.log(f"have   {label}")
            return
        if cell.skip:
            row.skipped = cell.skip
            self.log(f"skip   {label}: {cell.skip}")
            if not self.bench.dry_run:
                self._add(row)
            return
        estimate = self._estimate(cell, config)
        elapsed = time.monotonic() - self.start
        budget = self.bench.time_budget_s
        if budget is not None and elapsed + estimate > budget:
            reason = (f"{TIME_BUDGET_REASON}: {elapsed:.0f} s elapsed + ~{estimate:.0f} s predicted > "
                      f"{budget:.0f} s")
            self.results["not_run"].append({"model": row.model, "workload": row.workload, "shape": row.shape,
                                            "batch": row.batch, "mode": row.mode, "reason": reason})
            self.log(f"later  {label}: {reason}")
            return
        if self.bench.dry_run:
            self.log(f"plan   {label}: ~{estimate:.1f} s, predicted {_size(row.predicted_gib * 2**30)} "
                     f"(t = {elapsed + estimate:.0f} s)")
            self.start -= estimate  # a dry run advances the clock by its predictions
            return
        t0 = time.perf_counter()
        try:
            if row.mode == "hf":
                self._measure_hf(cell, engine, config)
            else:
                self._measure_engine(cell, engine)
        except _OOM as e:
            predicted = _size(row.predicted_gib * 2**30)
            row.skipped = f"out of memory despite the prediction ({predicted}): {str(e)[:160]}"
        except Exception as e:  # noqa: BLE001 - one failing row must not cost the rest of a 10-minute GPU call
            # Not a row: --resume retries it. The traceback goes to the log, where the failure can be read.
            traceback.print_exc()
            reason = f"error: {type(e).__name__}: {str(e)[:200]}"
            self.results["not_run"].append({"model": row.model, "workload": row.workload, "shape": row.shape,
                                            "batch": row.batch, "mode": row.mode, "reason": reason})
            self.log(f"failed {label}: {reason}")
            self.save()
            return
        finally:
            self._free()
        self._limit(cell, config)
        self._add(row)
        if row.skipped:
            self.log(f"skip   {label}: {row.skipped}")
        else:
            ratio = f"{row.measured_over_limit:.2f}" if row.measured_over_limit is not None else "-"
            peak = f"{row.peak_gib:.1f} GiB" if row.peak_gib is not None else "-"
            self.log(f"ran    {label}: {row.tokens_per_s:,.0f} tok/s, decode {row.seconds:.3g} s, prefill "
                     f"{row.prefill_s:.3g} s, peak {peak}, measured/limit {ratio} "
                     f"({time.perf_counter() - t0:.0f} s with warm-up; predicted ~{estimate:.0f} s)")

    # ----- measuring

    def _measure_engine(self, cell: Cell, engine) -> None:
        from prompt_tree.sampling import SamplingParams

        row = cell.row
        tree = single_level(cell.tree) if row.mode == "single" else cell.tree
        attention = ENGINE_ATTENTION[row.mode]
        # Warm-up on the same batch composition with short nodes: compiles this composition's Triton variants and
        # exercises graph capture, so the timed run pays neither.
        engine.generate(shrink(tree), SamplingParams(max_new_tokens=2, temperature=0.0), attention=attention,
                        progress=False)
        self._sync()
        result = engine.generate(tree, SamplingParams(max_new_tokens=row.new_tokens, temperature=0.0),
                                 attention=attention, progress=False)
        s = result.summary
        del result
        row.tokens_per_s = s.decode_tokens_per_second
        row.seconds = s.decode_seconds
        row.prefill_s = s.prefill_seconds
        row.peak_gib = _gib(s.peak_memory_bytes) if self.device.type == "cuda" else None
        row.kv_gib = _gib(s.kv_bytes)
        row.sub_batches = s.sub_batches
        row.generated_tokens = s.generated_tokens

    def _measure_hf(self, cell: Cell, engine, config: ModelConfig) -> None:
        row = cell.row
        if self.hf is None:
            self.hf = hf_model(engine.model, config)
            bos = config.bos_token_id or 0
            hf_generate(self.hf, [[bos, 1, 2, 3]] * 2, 2)  # warm-up: cuBLAS handles, allocator
        prompts = sequence_prompts(cell.tree.flatten())
        run = hf_generate(self.hf, prompts, row.new_tokens)
        row.tokens_per_s = run.decode_tokens_per_second
        row.seconds = run.decode_seconds
        row.prefill_s = run.prefill_seconds
        row.peak_gib = _gib(run.peak_memory_bytes)
        row.sub_batches = 1
        row.generated_tokens = sum(len(t) for t in run.token_ids)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ----- limit and estimates

    def _limit(self, cell: Cell, config: ModelConfig) -> None:
        row = cell.row
        work = decode_work(cell.tree.flatten(), row.new_tokens, config, self.dtype)
        row.attention_floor_s = attention_floor_seconds(work, self.ceilings)
        row.physical_s = physical_run_seconds(work, config, self.ceilings, attention=row.mode != "none")
        if row.seconds:
            row.measured_over_physical = row.seconds / row.physical_s
        none = self._find((row.model, row.workload, row.shape, row.batch, "none", row.new_tokens))
        none_s = row.seconds if row.mode == "none" else (none or {}).get("seconds")
        if none_s is not None:
            row.limit_s = none_s + row.attention_floor_s
            if row.seconds:
                row.measured_over_limit = row.seconds / row.limit_s

    def _estimate(self, cell: Cell, config: ModelConfig) -> float:
        row = cell.row
        tree = single_level(cell.tree) if row.mode == "single" else cell.tree
        plan = tree.flatten()
        reads = MODE_READS[row.mode]
        work = decode_work(plan, row.new_tokens, config, self.dtype, shared=reads == "shared")
        none = self._find((row.model, row.workload, row.shape, row.batch, "none", row.new_tokens))
        step = none["seconds"] / work.decode_steps if none and none.get("seconds") and work.decode_steps else None
        prefill_tokens = plan.kv_tokens_flat if row.mode == "hf" else plan.kv_tokens_shared
        once = estimate_run_seconds(config, self.dtype, work, prefill_tokens, self.ceilings, reads=reads,
                                    none_step_seconds=step, hf=row.mode == "hf")
        warmup = 0.0 if row.mode == "hf" else 0.05 * once + 1.0
        return once + warmup


def _environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    return {"device": name, "torch": torch.__version__, "triton": triton_version,
            "transformers": transformers_version}


def _config_dict(b: BenchConfig) -> dict:
    d = asdict(b)
    d["shapes"] = {k: asdict(v) for k, v in b.shapes.items()}
    d["ceilings"] = asdict(b.ceilings) if b.ceilings else None
    return d


def run_benchmark(bench: BenchConfig, log=None) -> dict:
    """Run (or, with dry_run, plan and time-estimate) the benchmark; returns the results dict of e2e.json."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    return Runner(bench, log).run()
