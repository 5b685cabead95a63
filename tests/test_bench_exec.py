"""The execution benchmark's arithmetic and a smoke run (numbers are never asserted: speed is measured in the
benchmark, not in tests)."""
from __future__ import annotations

import json
import random

from prompt_tree.tasks.apps import load_problems
from prompt_tree.tasks.bench_exec import fit_overhead, main
from prompt_tree.tasks.bench_programs import program_set


def test_the_overhead_fit_recovers_a_per_program_and_a_per_test_cost():
    programs = program_set(load_problems(limit=8), kinds=("reference", "compile"))
    rng = random.Random(0)
    own = [rng.uniform(0.0, 0.2) for _ in programs]
    a, b = 0.040, 0.003  # seconds per program, per test
    walls = [c + a + b * (0 if p.variant == "compile" else p.problem.num_tests) for p, c in zip(programs, own)]
    fit = fit_overhead(programs, walls, own)
    assert abs(fit["fit_ms_per_program"] - 40.0) < 0.01 and abs(fit["fit_ms_per_test"] - 3.0) < 0.001
    assert fit["fit_residual_ms_rms"] < 0.01 and fit["fit_programs"] == len(programs)


def test_a_small_benchmark_run_writes_its_rows_and_targets(tmp_path):
    out = str(tmp_path / "execution")
    assert main(["--runs", "1", "--limit", "2", "--methods", "floor,warm", "--no-main-job", "--out", out]) == 0
    result = json.load(open(out + ".json"))
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"floor", "warm"} and rows["warm"]["verdicts_differing_from_warm"] == 0
    assert rows["floor"]["verdicts_differing_from_warm"] == 0  # the floor judges as the sandbox does
    assert all(r["tests"] == rows["warm"]["tests"] > 0 for r in rows.values())
    assert "warm latency fit: ms per test (target <= 5)" in result["targets"]
    assert "| warm |" in open(out + ".md").read()
