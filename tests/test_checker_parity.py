"""The warm sandbox's verdicts equal the per-test sandbox's on every embedded problem's reference solution and
its wrong variants (prompt_tree.tasks.bench_programs: wrong answer, runtime error, compile error; a timeout on one
problem of each kind). The reference must pass everywhere; the variants are wrong by construction and must
fail with their own code on every test."""
import pytest

from prompt_tree.tasks.apps import load_problems
from prompt_tree.tasks.bench_programs import variant
from prompt_tree.tasks.checker import check

PROBLEMS = load_problems()
TIMEOUT_PROBLEMS = {next(p.problem_id for p in PROBLEMS if not p.call_based),
                    next(p.problem_id for p in PROBLEMS if p.call_based)}
EXPECTED = {"wrong": {False}, "runtime": {-1}, "compile": {-2}, "timeout": {-1}}


@pytest.mark.parametrize("problem", PROBLEMS, ids=[p.problem_id for p in PROBLEMS])
def test_warm_and_per_test_verdicts_agree(problem):
    kinds = ["reference", "wrong", "runtime", "compile"]
    if problem.problem_id in TIMEOUT_PROBLEMS:
        kinds.append("timeout")
    for kind in kinds:
        program = variant(problem, kind)
        # preamble off on both sides (its names are tested in test_checker_apps): the per-test sandbox then
        # skips ~25 ms of imports per interpreter
        # the limit must not bind a correct program even on a loaded machine (the per-test sandbox's interpreter
        # starts inside it); the endless loop gets a short one
        timeout = 1.0 if kind == "timeout" else 4.0
        warm = check(problem, program.code, timeout=timeout, sandbox="warm", preamble=False)
        per_test = check(problem, program.code, timeout=timeout, sandbox="per-test", preamble=False)
        assert warm.results == per_test.results, (kind, warm.details, per_test.details)
        if kind == "reference":
            assert warm.passed, warm.details
        else:
            assert set(warm.results) == EXPECTED[kind], (kind, warm.results, warm.details[:1])
