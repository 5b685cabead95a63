"""The execution benchmark's arithmetic and a smoke run (numbers are never asserted: speed is measured in the
benchmark, not in tests)."""
from __future__ import annotations

import json
import os
import random

import pytest

from prompt_tree.cli import main as cli_main
from prompt_tree.tasks import bench_exec
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


@pytest.fixture
def nothing_measured(monkeypatch):
    """Fail the test if bench-exec loads problems, measures a method or times the main job."""
    def refuse(*args, **kwargs):
        raise AssertionError("bench-exec went on although its arguments were refused")

    for name in ("load_problems", "one_run", "main_job"):
        monkeypatch.setattr(bench_exec, name, refuse)


@pytest.mark.parametrize("flags, message", [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--limit", "0"], "--limit must be >= 1, got 0"),
    (["--limit", "-2"], "--limit must be >= 1, got -2"),
    (["--runs", "0"], "--runs must be >= 1, got 0"),
    (["--methods", "bare,fast"], "--methods: 'fast' is not one of floor, bare, per-test, warm, warm+dedupe"),
    (["--methods", ","], "--methods is empty"),
    (["--methods", "warm,warm"], "--methods: 'warm' is given twice"),
    (["--out", "afile/execution"], "--out 'afile/execution': cannot write into"),
    (["--out", "adir"], "--out 'adir' names a directory"),
])
def test_bad_values_are_refused_before_anything_runs_or_is_written(tmp_path, monkeypatch, capsys, nothing_measured,
                                                                   flags, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    assert cli_main(["bench-exec", "--no-main-job", *flags]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("prompt-tree bench-exec: error: ") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]  # no runs/ made
    assert not list((tmp_path / "adir").iterdir())


def test_the_default_out_is_under_the_current_directory_not_the_checkout(tmp_path, monkeypatch):
    """The committed docs/benchmarks/execution.* are rewritten only by an explicit --out (a smoke run once
    overwrote them). Measuring and writing are stubbed: this checks where the files would go, and never writes
    into a checkout even on code that would."""
    row = {"method": "bare", "programs": 1, "tests": 2, "seconds": 1.0, "tests_per_s": 2.0,
           "tests_per_s_without_endless_loops": 2.0, "programs_per_s_per_core": 1.0, "cpu_s": 1.0}
    written = []
    monkeypatch.setattr(bench_exec, "one_run", lambda *a, **k: [dict(row)])
    monkeypatch.setattr(bench_exec, "plot", lambda result, out: written.append(out))
    results = []
    monkeypatch.setattr(bench_exec, "write_outputs", lambda result, out: (written.append(out), results.append(result)))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["bench-exec", "--no-main-job", "--limit", "1", "--methods", "bare", "--runs", "1"]) == 0
    assert {os.path.abspath(p) for p in written} == {str(tmp_path / "runs" / "bench-exec" / "execution")}
    assert (tmp_path / "runs" / "bench-exec").is_dir()  # made before the run, as the check of --out
    # the command recorded in execution.md repeats the run, its default --out spelled out
    assert results[0]["command"] == ("prompt-tree bench-exec --runs 1 --methods bare --limit 1 "
                                     "--out runs/bench-exec/execution --no-main-job")
