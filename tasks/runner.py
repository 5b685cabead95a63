"""The APPS main job: sample completions for every (problem, sample) pair, execute them, report pass@k.

Resumable: every completion and every verdict is appended to the run directory as it is produced
(tasks.results), and a run started again on the same directory generates only the (problem, sample) pairs that
have no completion and executes only the completions that have no verdict.

Sample identity: the engine draws a sequence's noise from (seed, node key, sample index) only, never from the
rest of the batch. Each sample therefore gets its own tree node — a 0-token child of its problem's node, keyed
"<problem_id>#<sample index>" and asking for one sample — so sample i of a problem is the same draw whether it is
generated with all its siblings or alone in a resumed run. The child adds no tokens (the KV pool stores nothing
for it); the problem's prompt is still shared by all its samples, and the few-shot block by all problems.

Execution overlaps generation: each finished completion is handed to a thread pool of checker workers (each runs
its program in a sandboxed subprocess) while decoding continues. Programs identical to one already judged for the
same problem are not run again (tasks.duplicates); the run directory is locked for the whole invocation.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from tasks.duplicates import DuplicateIndex
from tasks.execution import usable_cores
from tasks.problem import Problem
from tasks.results import GenerationRecord, RunLock, RunStore, VerdictRecord, fold_parts, jsonable
from tasks.run_limits import check_run_size

SAMPLE_KEY_SEP = "#"
# max_new_tokens when none is given: the paper's 512 for real checkpoints; the random tiny model writes noise, so
# a short budget keeps the default CPU run (33 problems x 16 samples) within a few minutes.
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_MAX_NEW_TOKENS_TINY = 64
# The RunConfig fields that decide what a run's files contain: a resume must agree on all of them. The others
# (workers, device, attention, batching, tp, progress, out, export) change how fast, not what.
IDENTITY_FIELDS = (
    "model", "source", "split", "difficulty", "limit", "samples", "few_shot", "few_shot_source", "instruction",
    "max_new_tokens", "temperature", "top_p", "top_k", "seed", "timeout", "memory_mb", "dtype", "bos", "chat",
)
# Execution settings that change verdicts; a config.json from before them ran without the preamble and
# every test (tasks.results.CONFIG_FIELD_DEFAULTS).
IDENTITY_FIELDS += ("preamble", "fail_fast")
# A config.json written before few_shot_source existed lacks it and meant the embedded set (tasks.results fills
# in tasks.results.CONFIG_FIELD_DEFAULTS before comparing, so such runs resume as before).
DEFAULT_FEW_SHOT_SOURCE = "embedded"


class RunConfigError(ValueError):
    """A run configuration that cannot work; the message names the field and how to fix it."""


@dataclass(frozen=True)
class RunConfig:
    """One APPS evaluation. Validated on construction (RunConfigError names the field)."""

    model: str = "tiny"  # "tiny" | "random:PRESET" | a local checkpoint directory
    source: str = "embedded"  # "embedded" | a local path | a hub dataset name
    split: str = "test"
    difficulty: str | None = None
    limit: int | None = None
    samples: int = 16
    k: tuple[int, ...] = (1, 5, 10)
    few_shot: int = 2
    few_shot_source: str = DEFAULT_FEW_SHOT_SOURCE  # the few-shot examples are drawn from its train split
    instruction: str | None = None
    bos: bool | None = None  # None: the checkpoint's BOS rule (prompt_tree.bos); True / False: --bos / --no-bos
    chat: bool = False  # render the prompts through the checkpoint's chat template (tasks.prompts.build_tree)
    max_new_tokens: int | None = None  # None: DEFAULT_MAX_NEW_TOKENS (tiny / random models: ..._TINY)
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0
    seed: int = 0
    timeout: float = 4.0  # seconds per test
    memory_mb: int = 1024
    workers: int | None = None  # checker threads; None: the CPUs this process may use
    preamble: bool = True  # the APPS preamble's names in every program (tasks.sandbox.preamble)
    fail_fast: bool = False  # stop a program's tests at its first failure (pass@k unchanged)
    sandbox: str = "warm"  # "warm" | "per-test" (tasks.checker)
    isolation: str | None = None  # None: env PT_SANDBOX, else "auto" (tasks.sandbox.config)
    device: str | None = None
    dtype: str | None = None
    attention: str = "tree"  # "tree" | "flat"
    max_batch_sequences: int | None = None
    tp: int = 1  # tensor-parallel ranks per model (under torchrun: tasks.dp_runner)
    out: str = "runs/apps"
    force: bool = False
    generations: str | None = None  # evaluate this bigcode-format file instead of generating
    export_bigcode: str | None = None
    progress: bool = True

    def __post_init__(self):
        def fail(name, why):
            raise RunConfigError(f"{name}: {why} (got {getattr(self, name)!r})")

        def pos_int(x):
            return isinstance(x, int) and not isinstance(x, bool) and x >= 1

        if not pos_int(self.samples):
            fail("samples", "must be an int >= 1")
        ks = tuple(self.k)
        if not ks or not all(pos_int(k) for k in ks):
            fail("k", "must be one or more ints >= 1, e.g. 1,5,10")
        object.__setattr__(self, "k", tuple(sorted(set(ks))))
        if self.limit is not None and not (isinstance(self.limit, int) and self.limit >= 1):
            fail("limit", "must be an int >= 1 or None")
        if not (isinstance(self.few_shot, int) and self.few_shot >= 0):
            fail("few_shot", "must be an int >= 0")
        if not (isinstance(self.few_shot_source, str) and self.few_shot_source):
            fail("few_shot_source", "must name a problem source ('embedded', a local path or a hub dataset)")
        if self.max_new_tokens is not None and not pos_int(self.max_new_tokens):
            fail("max_new_tokens", "must be an int >= 1 or None (the default for the model)")
        if not (self.timeout > 0):
            fail("timeout", "must be > 0 seconds")
        if not pos_int(self.memory_mb):
            fail("memory_mb", "must be an int >= 1")
        if self.workers is not None and not pos_int(self.workers):
            fail("workers", "must be an int >= 1 or None")
        if self.attention not in ("tree", "flat"):
            fail("attention", "must be 'tree' or 'flat'")
        if self.sandbox not in ("warm", "per-test"):
            fail("sandbox", "must be 'warm' or 'per-test'")
        if self.isolation not in (None, "auto", "namespace", "userns", "fallback"):
            fail("isolation", "must be one of auto, namespace, userns, fallback (or None: env PT_SANDBOX)")
        if self.max_batch_sequences is not None and not pos_int(self.max_batch_sequences):
            fail("max_batch_sequences", "must be an int >= 1 or None")
        if not pos_int(self.tp):
            fail("tp", "must be an int >= 1")
        if not self.out:
            fail("out", "must name a directory")
        if self.bos not in (None, True, False) or self.chat not in (True, False):
            fail("bos" if self.bos not in (None, True, False) else "chat", "must be a bool (bos: or None)")
        if self.chat and self.bos:
            fail("bos", "--bos cannot go with --chat: the chat template writes its own special tokens (Llama "
                        "3.1's starts with bos_token); leave --bos out")
        # temperature / top_p / top_k are validated by SamplingParams when the run builds them (one place).

    @property
    def random_model(self) -> bool:
        from prompt_tree.config import random_preset

        return random_preset(self.model) is not None

    @property
    def resolved_max_new_tokens(self) -> int:
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return DEFAULT_MAX_NEW_TOKENS_TINY if self.random_model else DEFAULT_MAX_NEW_TOKENS


def sample_key(problem_id: str, sample_index: int) -> str:
    return f"{problem_id}{SAMPLE_KEY_SEP}{sample_index}"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_identity(config: RunConfig, problems: Sequence[Problem]) -> dict:
    """The JSON-safe dict stored as config.json and compared on resume."""
    ident: dict[str, Any] = {name: getattr(config, name) for name in IDENTITY_FIELDS}
    ident["max_new_tokens"] = config.resolved_max_new_tokens
    ident["problem_ids"] = [p.problem_id for p in problems]
    if config.generations is None:
        ident["tokenization"] = tokenization_of(config)
    if config.generations is not None:
        # Programs come from a file: the model and sampling settings did not make them, the file did.
        for name in ("model", "few_shot", "few_shot_source", "instruction", "max_new_tokens", "temperature",
                     "top_p", "top_k", "seed", "samples", "dtype"):
            ident.pop(name)
        ident["generations_file_sha256"] = file_sha256(config.generations)
    return ident


def tokenization_of(config: RunConfig) -> str:
    """Which tokenization rule the run's prompts get, in words (prompt_tree.bos / prompt_tree.chat), from the
    model's tokenizer alone: config.json records it, and the generation checks the engine tokenizes so. A
    checkpoint without a chat template fails here under --chat, before anything is written."""
    from prompt_tree.config import ModelConfig, get_preset, random_preset
    from prompt_tree.tokenize import PromptEncoder
    from prompt_tree.tokenizer import load_tokenizer, random_model_tokenizer

    check_model(config)
    preset = random_preset(config.model)
    if preset is not None:
        tokenizer = random_model_tokenizer(get_preset(preset))
    else:  # as prompt_tree.loading loads it: the BOS id of config.json's model config
        model_config = ModelConfig.from_hf(os.path.join(config.model, "config.json"))
        tokenizer = load_tokenizer(config.model, bos_id=model_config.bos_token_id)
    encoder = PromptEncoder(tokenizer, add_bos=config.bos)
    if config.chat:
        encoder.chat_template()
    else:
        encoder.bos.ids()  # a rule that wants an unknown BOS fails now, naming --no-bos
    return encoder.describe(config.chat)


def select_problems(config: RunConfig) -> list[Problem]:
    from tasks.apps import load_problems

    problems = load_problems(config.source, split=config.split, difficulty=config.difficulty, limit=config.limit)
    if not problems:
        raise RunConfigError(
            f"no problems selected from source {config.source!r} (split {config.split!r}, difficulty "
            f"{config.difficulty!r}, limit {config.limit!r}); check the source and the filters"
        )
    return problems


def check_model(config: RunConfig) -> None:
    """Refuse a model the run cannot generate with, before any weights are built or any file is written: an
    unknown preset, a preset without a tokenizer (APPS prompts are text; only byte-vocabulary presets such as
    'tiny' get one), or a checkpoint directory that does not exist. Raises RunConfigError naming --model."""
    from prompt_tree.config import ConfigError, get_preset, random_preset
    from prompt_tree.tokenizer import random_model_tokenizer

    preset = random_preset(config.model)
    if preset is not None:
        try:
            model_config = get_preset(preset)
        except ConfigError as e:
            raise RunConfigError(f"--model {config.model}: {e}") from None
        if random_model_tokenizer(model_config) is None:
            raise RunConfigError(
                f"--model {config.model}: preset {preset!r} has no tokenizer (only byte-vocabulary presets such as "
                f"'tiny' get one), and APPS prompts are text; use --model tiny or a checkpoint directory"
            )
    elif not os.path.isdir(config.model):
        raise RunConfigError(
            f"--model {config.model!r} is not 'tiny', 'random:PRESET' or an existing checkpoint directory"
        )


def check_export_path(config: RunConfig) -> None:
    """Refuse an --export-bigcode path that could not be written at the end of the run (checked before it)."""
    from tasks.bigcode import export_path_problem

    if config.export_bigcode is not None:
        why = export_path_problem(config.export_bigcode)
        if why:
            raise RunConfigError(f"--export-bigcode {config.export_bigcode!r}: {why}")


def preflight(config: RunConfig, generating: bool = True) -> None:
    """The checks that need neither problems nor a model's weights: the model and its tokenization rule (a chat
    template, a BOS the rule wants) when generating, and the export path."""
    if generating:
        check_model(config)
        tokenization_of(config)
    check_export_path(config)


def load_engine(config: RunConfig):
    """The engine the config names: "tiny" or "random:PRESET" (random weights, seed 0, so the same model every
    run), or a local checkpoint directory."""
    from prompt_tree import Engine

    check_model(config)  # before building anything
    return Engine.load(config.model, device=config.device, dtype=config.dtype, seed=0, add_bos=config.bos)


def draw_examples(config: RunConfig, problems: Sequence[Problem]) -> list[Problem]:
    """The run's few-shot examples: config.few_shot drawn with config.seed from the train split of
    config.few_shot_source, the problems under evaluation excluded. ValueError if there are not enough."""
    from tasks.prompts import draw_few_shot

    return draw_few_shot(config.few_shot, seed=config.seed, source=config.few_shot_source,
                         exclude=[p.problem_id for p in problems])


def build_sample_tree(problems: Sequence[Problem], missing: dict[str, list[int]], config: RunConfig,
                      examples: Sequence[Problem] | None = None):
    """The prompt tree for the missing samples: build_tree over ALL selected problems (so the few-shot draw, which
    excludes the problems under evaluation, is the same in every run), then each problem node asks for no samples
    itself and gets one 0-token child per missing sample (see the module docstring); problems without missing
    samples are dropped. examples: the few-shot examples if already drawn (draw_examples), else drawn here.
    Returns (tree, child key -> (problem_id, sample_index))."""
    from prompt_tree import PromptTree
    from tasks.apps import build_tree

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


@dataclass
class RunReport:
    """What one invocation did (not the whole run's history): counts of work done now, timings, the summary."""

    summary: dict
    generated_now: int = 0
    executed_now: int = 0
    resumed_generations: int = 0
    resumed_verdicts: int = 0
    out_dir: str = ""


class _Executor:
    """Checks programs on a thread pool as they arrive and appends each verdict as it is known."""

    def __init__(self, store: RunStore, problems: dict[str, Problem], config: RunConfig, total: int, check_fn):
        self.store = store
        self.problems = problems
        self.config = config
        self.check_fn = check_fn
        workers = config.workers or usable_cores()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apps-check")
        self.futures: list[Future] = []
        self.lock = threading.Lock()
        self.executed = 0
        self.duplicates = 0  # verdicts copied from an identical program instead of running it
        self.check_seconds = 0.0  # summed over programs (sandbox time, across workers)
        self.dedupe = DuplicateIndex(store.generations, store.verdicts)
        self.errors: list[BaseException] = []
        self.total = total
        self.bar = None  # made at the first submit, so that it appears once there is something to execute

    def submit(self, rec: GenerationRecord) -> None:
        if rec.key in self.store.verdicts:
            return
        if self.bar is None and self.config.progress and self.total > 0:
            from tqdm.auto import tqdm

            # position 1: the engine's generation bar holds line 0 while both run
            self.bar = tqdm(total=self.total, desc="execute", unit="prog", file=sys.stderr, dynamic_ncols=True,
                            position=1)
        claim = self.dedupe.claim(rec)
        if claim is True:
            self.futures.append(self.pool.submit(self._check, rec))
        elif claim is not False:  # judged already: copy the verdict
            self._record_copies([claim])

    def _record_copies(self, copies: list[VerdictRecord]) -> None:
        written = self.store.add_verdicts(copies)
        with self.lock:
            self.duplicates += len(written)
            if self.bar is not None:
                self.bar.update(len(written))

    def _check(self, rec: GenerationRecord) -> None:
        try:
            t0 = time.perf_counter()
            result = self.check_fn(self.problems[rec.problem_id], rec.code, timeout=self.config.timeout,
                                   memory_mb=self.config.memory_mb)
            dt = time.perf_counter() - t0
            verdict = VerdictRecord(rec.problem_id, rec.sample_index, jsonable(list(result.results)),
                                    bool(result.passed), getattr(result, "first_error", None),
                                    tests=getattr(result, "num_tests", None))
            self.store.add_verdicts([verdict])
            with self.lock:
                self.executed += 1
                self.check_seconds += dt
                if self.bar is not None:
                    self.bar.update(1)
            self.dedupe.finished(rec, verdict, self._record_copies)
        except BaseException as e:  # surfaced by wait(); a checker crash must not pass silently
            with self.lock:
                self.errors.append(e)
            raise

    def wait(self) -> None:
        for f in self.futures:
            f.exception()  # wait for each; errors collected in _check
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} program check(s) failed: {self.errors[0]!r}") from self.errors[0]

    def shutdown(self, cancel: bool) -> None:
        self.pool.shutdown(wait=True, cancel_futures=cancel)
        if self.bar is not None:
            self.bar.close()


def sampling_params(config: RunConfig):
    """The engine's SamplingParams for the run; it stops where the next question or answer block would begin (the
    same stops the extractor cuts at); a chat answer ends with its turn (the end-of-turn token is an EOS id)."""
    from prompt_tree import SamplingParams
    from tasks.extract import CHAT_STOPS, DEFAULT_STOPS

    return SamplingParams(
        max_new_tokens=config.resolved_max_new_tokens, temperature=config.temperature, top_p=config.top_p,
        top_k=config.top_k, stop=tuple(CHAT_STOPS if config.chat else DEFAULT_STOPS), seed=config.seed,
    )


def _default_check(config: RunConfig | None = None):
    """tasks.checker.check with the config's execution settings bound (check_fn's interface stays
    (problem, code, timeout=, memory_mb=))."""
    from functools import partial

    from tasks.checker import check

    if config is None:
        return check
    return partial(check, sandbox=config.sandbox, isolation=config.isolation, preamble=config.preamble,
                   fail_fast=config.fail_fast)


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
    loading config.model. check_fn(problem, code, timeout=, memory_mb=) -> CheckResult: default tasks.checker.check.
    Files written under config.out: config.json, generations.jsonl, verdicts.jsonl, summary.json; and
    config.export_bigcode when set.
    """
    from tasks.bigcode import load_bigcode

    log = log or (lambda s: None)
    if config.tp != 1:
        raise RunConfigError(f"tp: {config.tp} ranks per model need torchrun (prompt-tree apps --tp under torchrun, "
                             f"or tasks.dp_runner.run_apps_distributed); run_apps is one process")
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
        if config.force and from_file is None and engine is None:
            engine = load_engine(config)  # --force deletes old results: first make sure the new model loads
        return _run_locked(config, problems, by_id, from_file, wanted, params, examples, engine, check_fn, log)
    finally:
        run_lock.release()


def _run_locked(config, problems, by_id, from_file, wanted, params, examples, engine, check_fn, log) -> RunReport:
    from tasks.bigcode import export_bigcode
    from tasks.extract import extract_code

    if os.path.isdir(config.out):  # records of a torchrun run's groups (tasks.dp_runner) count as done too

        fold_parts(config.out)
    store = RunStore(config.out, run_identity(config, problems), force=config.force)
    report = RunReport(summary={}, resumed_generations=store.resumed_generations,
                       resumed_verdicts=store.resumed_verdicts, out_dir=config.out)
    if store.resumed_generations or store.resumed_verdicts:
        log(f"resuming {config.out}: {store.resumed_generations} completions and {store.resumed_verdicts} verdicts "
            f"already done of {len(wanted)}")
    to_execute = sum(1 for key in wanted if key not in store.verdicts)
    executor = _Executor(store, by_id, config, to_execute, check_fn or _default_check(config))
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
            gen_info = _generate_missing(config, params, problems, wanted, store, executor, engine, extract_code,
                                         report, log, examples=examples)
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
    store.write_summary(summary)
    report.summary = summary
    if config.export_bigcode:
        programs: dict[str, list[str]] = {}
        for pid, i in wanted:  # problem-major, sample order
            programs.setdefault(pid, []).append(store.generations[(pid, i)].code)
        export_bigcode(config.export_bigcode, problems, programs)
        log(f"wrote bigcode-format generations to {config.export_bigcode}")
    log(format_report(summary))
    return report


def _generate_missing(config, params, problems, wanted, store, executor, engine, extract_code, report, log,
                      examples=None) -> dict:
    missing: dict[str, list[int]] = {}
    for pid, i in wanted:
        if (pid, i) not in store.generations:
            missing.setdefault(pid, []).append(i)
    if not missing:
        return {}
    t0 = time.perf_counter()
    if engine is None:
        engine = load_engine(config)
    load_s = time.perf_counter() - t0
    tree, keymap = build_sample_tree(problems, missing, config, examples)
    plan = engine.plan(tree.flatten(engine.tokenizer, add_bos=config.bos), params)
    recorded = store.config.get("tokenization")
    if recorded is not None and plan.tokenization != recorded:
        raise RuntimeError(f"the engine's tokenizer tokenizes by {plan.tokenization!r}, but the run (config.json) "
                           f"records {recorded!r}; the engine does not match --model {config.model!r}")
    if config.chat:  # the answer's code, from its fenced block, with no base-model stops to cut at
        from tasks.extract import extract_answer_code

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
                             **_engine_options(config))
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


def _engine_options(config: RunConfig) -> dict:
    opts = {}
    if config.attention != "tree":
        opts["attention"] = config.attention
    if config.max_batch_sequences is not None:
        opts["max_batch_sequences"] = config.max_batch_sequences
    return opts


def jsonable_dict(d) -> dict:
    """A JSON-safe copy of a mapping or dataclass (the engine's GenerationSummary)."""
    if hasattr(d, "as_dict"):
        d = d.as_dict()
    elif not isinstance(d, dict):
        d = asdict(d)
    return json.loads(json.dumps(d, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


def build_summary(config: RunConfig, problems, store: RunStore, wanted, gen_info: dict, timings: dict) -> dict:
    """summary.json: pass@k overall and per difficulty (tasks.metrics), counts, throughput and timings."""
    from tasks.metrics import summarize

    records = per_problem_records(problems, store, wanted)
    metrics = summarize(records, list(config.k))
    wanted_set = set(wanted)
    tokens = sum(g.tokens or 0 for g in store.generations.values() if g.key in wanted_set)
    summary = {
        "config": dict(run_identity(config, problems), k=list(config.k)),
        "problems": len(problems),
        "samples": len(wanted),
        "generated": sum(1 for key in wanted if key in store.generations),
        "executed": sum(1 for key in wanted if key in store.verdicts),
        "duplicates": sum(1 for key in wanted if key in store.verdicts and store.verdicts[key].duplicate_of is not None),
        "tokens_generated": tokens,
        "metrics": metrics,
        "timings": timings,
    }
    if gen_info:
        summary["generation"] = gen_info
    return summary


def per_problem_records(problems, store: RunStore, wanted) -> list[dict]:
    """One record per problem for tasks.metrics.summarize: problem_id, difficulty, and each sample's per-test
    verdicts. A problem without any verdict (a failed run) is left out rather than counted as failing."""
    by_pid: dict[str, list[int]] = {}
    for pid, i in wanted:
        by_pid.setdefault(pid, []).append(i)
    out = []
    for p in problems:
        keys = [(p.problem_id, i) for i in by_pid.get(p.problem_id, [])]
        results = [store.verdicts[key].results for key in keys if key in store.verdicts]
        if results:
            out.append({"problem_id": p.problem_id, "difficulty": p.difficulty, "results": results,
                        "tests": p.num_tests})
    return out


def format_report(summary: dict) -> str:
    from tasks.metrics import format_table

    lines = [format_table(summary["metrics"])]
    t = summary["timings"]
    gen = summary.get("generation", {})
    lines.append(
        f"problems {summary['problems']}, samples {summary['samples']}, tokens {summary['tokens_generated']}"
        + (f", {gen['tokens_per_s']:.1f} tokens/s" if gen.get("tokens_per_s") else "")
    )
    lines.append(
        f"time: generation {t['generation_s']:.1f}s, execution {t['execution_s']:.1f}s summed over programs "
        f"({t['execution_after_generation_s']:.1f}s after generation ended), total {t['total_s']:.1f}s"
    )
    return "\n".join(lines)
