"""Judge a candidate program against an APPS problem's tests.

    check(problem, code)                       # warm sealed sandbox, APPS preamble, every test
    check(problem, code, fail_fast=True)       # stop at the first test that does not pass
    check(problem, code, sandbox="per-test")   # a fresh sandboxed interpreter per test (the old way)

Per-test verdicts follow APPS: True (passed), False (wrong answer), -1 (runtime error, timeout, memory limit),
-2 (compile error). Choices, and why:

- Compile error = `compile(code)` fails (a syntax error): every test is -2 and nothing runs. For call-based
  problems APPS also counts the module failing to execute, or not defining `fn_name`, as a compile error (-2);
  a module body that runs past the time limit is -1.
- All tests run, even after a failure (APPS's stdin path stops at the first one): the test-case average needs
  every verdict. `fail_fast=True` stops at the first failure instead (pass@k is the same; the verdict list is
  then shorter than the tests and the test-case average is partial, see prompt_tree.tasks.metrics).
- The sandbox sees only the inputs; the expected outputs stay here, so a program cannot read or forge them.
- The APPS preamble (prompt_tree.tasks.sandbox.preamble) is in every program's namespace unless preamble=False.
- Comparison rules: prompt_tree.tasks.compare (stdout tokens with 1e-6 float tolerance, call-based values after tuple ->
  list, int dict keys restored). Verdict precedence: prompt_tree.tasks.verdicts.
- sandbox="warm" (default, prompt_tree.tasks.check_warm): one sealed sandbox per program, one fork per test.
  sandbox="per-test" (prompt_tree.tasks.check_per_test): an interpreter per standard-input test, the driver per call-based
  program. isolation: "auto" | "namespace" | "userns" | "fallback" (prompt_tree.tasks.sandbox.config; env PT_SANDBOX).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

from prompt_tree.tasks.check_per_test import check_per_test
from prompt_tree.tasks.check_warm import check_warm
from prompt_tree.tasks.execution import usable_cores
from prompt_tree.tasks.problem import Problem
from prompt_tree.tasks.sandbox.config import SandboxConfig
from prompt_tree.tasks.sandbox.detect import resolve_isolation
from prompt_tree.tasks.sandbox.zygote_host import SandboxError  # noqa: F401 - part of this module's API
from prompt_tree.tasks.verdicts import Verdict, short

SANDBOXES = ("warm", "per-test")


@dataclass
class CheckResult:
    """Verdicts of one program on one problem. results[i] in {True, False, -1, -2}; details[i] says why in a
    few words ('passed', 'wrong answer', 'timeout', 'runtime error: ZeroDivisionError: ...', ...).
    num_tests: the problem's test count; results is shorter only after fail_fast stopped early."""

    results: list[Verdict]
    details: list[str] = field(default_factory=list)
    wall_time: float = 0.0
    num_tests: int | None = None

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r is True for r in self.results) and not self.partial

    @property
    def partial(self) -> bool:
        """Did fail_fast leave tests unrun?"""
        return self.num_tests is not None and len(self.results) < self.num_tests

    @property
    def compile_error(self) -> bool:
        return bool(self.results) and all(r == -2 for r in self.results)

    @property
    def first_error(self) -> str | None:
        """The first test's detail that is not 'passed', or None when all passed."""
        return next((d for r, d in zip(self.results, self.details) if r is not True), None)

    @property
    def fraction_passed(self) -> float:
        n = self.num_tests if self.num_tests is not None else len(self.results)
        return sum(r is True for r in self.results) / n if n else 0.0


def _syntax_error(code: str) -> str | None:
    try:
        compile(code, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
        return f"{type(exc).__name__}: {exc}"  # ValueError: source with NUL bytes
    return None


@lru_cache(maxsize=64)
def _config(memory_mb: int, isolation: str | None) -> SandboxConfig:
    return SandboxConfig(isolation=isolation, memory_mb=memory_mb)


def check(problem: Problem, code: str, timeout: float = 4.0, memory_mb: int = 1024, *, sandbox: str = "warm",
          isolation: str | None = None, preamble: bool = True, fail_fast: bool = False) -> CheckResult:
    """Run `code` on the tests of `problem` and return the verdicts (see the module docstring).

    timeout: wall seconds per test; memory_mb: address space the program may use; sandbox: 'warm' or
    'per-test'; isolation: see prompt_tree.tasks.sandbox.config (None: env PT_SANDBOX, else 'auto'); preamble: the APPS
    names in the program's namespace; fail_fast: stop at the first test that does not pass.
    Raises SandboxError if the sandbox itself cannot work here, ValueError / TypeError for bad arguments.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"check: problem must be a prompt_tree.tasks.problem.Problem, got {type(problem).__name__}")
    if not isinstance(code, str):
        raise TypeError(f"check: code must be a str, got {type(code).__name__}")
    if problem.num_tests == 0 or len(problem.inputs) != len(problem.outputs):
        raise ValueError(f"problem {problem.problem_id!r}: needs >= 1 test and as many outputs as inputs "
                         f"(got {len(problem.inputs)} inputs, {len(problem.outputs)} outputs)")
    if sandbox not in SANDBOXES:
        raise ValueError(f"check: sandbox must be one of {SANDBOXES}, got {sandbox!r}")
    if not (timeout > 0):
        raise ValueError(f"check: timeout must be > 0 seconds, got {timeout!r}")
    t0 = time.monotonic()
    n = problem.num_tests
    syntax = _syntax_error(code)
    if syntax is not None:
        verdicts = [-2] if fail_fast else [-2] * n
        return CheckResult(verdicts, [short("compile error: " + syntax)] * len(verdicts), time.monotonic() - t0, n)
    if sandbox == "warm":
        config = _config(memory_mb, isolation)
        results, details = check_warm(problem, code, float(timeout), config, resolve_isolation(config),
                                      preamble=preamble, fail_fast=fail_fast)
    else:
        results, details = check_per_test(problem, code, float(timeout), memory_mb, isolation,
                                          preamble=preamble, fail_fast=fail_fast)
    if fail_fast:
        for i, r in enumerate(results):
            if r is not True:
                results, details = results[: i + 1], details[: i + 1]
                break
    return CheckResult(results, details, time.monotonic() - t0, n)


def check_many(pairs, workers: int | None = None, timeout: float = 4.0, memory_mb: int = 1024, **kwargs) -> list[CheckResult]:
    """Check many (problem, code) pairs in parallel (workers: threads, default the usable cores); results in
    order. kwargs go to every `check` call."""
    pairs = list(pairs)
    with ThreadPoolExecutor(max_workers=workers or usable_cores()) as pool:
        return list(pool.map(lambda pc: check(pc[0], pc[1], timeout, memory_mb, **kwargs), pairs))
