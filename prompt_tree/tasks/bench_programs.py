"""The execution benchmark's programs (prompt_tree.tasks.bench_exec) and the parity tests' (tests/test_checker_parity.py):
each embedded problem's reference solution and variants of it that fail in each way a verdict can.

Variants keep the reference's own work (they wrap it rather than replace it), so a wrong answer costs what a
right one does:
- wrong: standard input: the reference, then one extra line of output; call-based: the reference's value
  wrapped in a list with a marker.
- runtime: standard input: the reference, then exit status 3; call-based: the reference, then a raise.
- timeout: an endless loop before the reference (costs the whole limit on every test).
- compile: the reference with a syntax error appended (no test runs).
- duplicate: the reference with trailing whitespace (the job runs it once, prompt_tree.tasks.duplicates).
"""
from __future__ import annotations

from dataclasses import dataclass

from prompt_tree.tasks.problem import Problem

VARIANTS = ("reference", "wrong", "runtime", "timeout", "compile", "duplicate")
# Limits per test: the job's default, and a short one for the endless-loop variant, which costs its whole limit on
# every test in any method (so that one kind of program does not dominate the benchmark).
TIMEOUT_S = 4.0
LOOP_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Program:
    problem: Problem
    variant: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.problem.problem_id}:{self.variant}"


def _wrap_call(reference: str, fn_name: str, body: str) -> str:
    """Redefine fn_name (a method of Solution or a function) to run the reference, then `body` with `r` bound."""
    if "class Solution" in reference:
        return (f"{reference}\n\n_PtReference = Solution\n\n\nclass Solution(_PtReference):\n"
                f"    def {fn_name}(self, *args, **kwargs):\n"
                f"        r = super().{fn_name}(*args, **kwargs)\n        {body}\n")
    return (f"{reference}\n\n_pt_reference = {fn_name}\n\n\ndef {fn_name}(*args, **kwargs):\n"
            f"    r = _pt_reference(*args, **kwargs)\n    {body}\n")


def variant(problem: Problem, kind: str) -> Program:
    """One program of `problem` (see the module docstring for the kinds)."""
    if kind not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {kind!r}")
    if not problem.solutions:
        raise ValueError(f"problem {problem.problem_id!r} has no reference solution")
    ref = problem.solutions[0]
    call = problem.call_based
    if kind == "reference":
        code = ref
    elif kind == "wrong":
        code = _wrap_call(ref, problem.fn_name, "return [r, 'pt-wrong']") if call else ref + "\nprint('pt-wrong')\n"
    elif kind == "runtime":
        code = _wrap_call(ref, problem.fn_name, "raise ValueError('pt-runtime')") if call else \
            ref + "\nraise SystemExit(3)\n"
    elif kind == "timeout":
        code = (_wrap_call(ref, problem.fn_name, "while True: pass") if call else "while True:\n    pass\n" + ref)
    elif kind == "compile":
        code = ref + "\ndef pt_broken(:\n"
    else:
        code = ref.rstrip() + "\n\n   \n\t\n"
    return Program(problem, kind, code)


def program_set(problems: list[Problem], kinds=VARIANTS, timeout_every: int = 1) -> list[Program]:
    """Every problem's programs of the given kinds; the costly timeout variant only for every
    `timeout_every`-th problem."""
    out = []
    for i, p in enumerate(problems):
        for kind in kinds:
            if kind == "timeout" and i % timeout_every:
                continue
            out.append(variant(p, kind))
    return out
