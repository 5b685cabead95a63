"""The run's checker pool: programs are judged on worker threads as their completions arrive, and each verdict is
appended to the run directory as soon as it is known. Identical programs of a problem are judged once
(prompt_tree.tasks.duplicates)."""
from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from prompt_tree.tasks.duplicates import DuplicateIndex
from prompt_tree.tasks.execution import usable_cores
from prompt_tree.tasks.problem import Problem
from prompt_tree.tasks.results import GenerationRecord, RunStore, VerdictRecord, jsonable
from prompt_tree.tasks.run_config import RunConfig

class VerdictPool:
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


def default_check(config: RunConfig | None = None):
    """prompt_tree.tasks.checker.check with the config's execution settings bound (check_fn's interface stays
    (problem, code, timeout=, memory_mb=))."""
    from functools import partial

    from prompt_tree.tasks.checker import check

    if config is None:
        return check
    return partial(check, sandbox=config.sandbox, isolation=config.isolation, preamble=config.preamble,
                   fail_fast=config.fail_fast)
