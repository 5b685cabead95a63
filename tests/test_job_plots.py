"""The job benchmark's plots: the batch trace keeps the step log's shape, and the PNGs are drawn from job.json."""
from __future__ import annotations

import json
import os

import pytest

from prompt_tree.benchmark import job
from prompt_tree.benchmark.job_plots import batch_trace, latest_groups, write_job_plots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_batch_trace_samples_the_step_log_evenly_and_keeps_its_ends():
    log = [(1000 - i, 2.0 + (i % 3)) for i in range(1000)]  # rows fall by one per step; ms 2, 3, 4, 2, ...
    trace = batch_trace(log, points=11)
    assert len(trace) == 11
    assert [p[1] for p in trace] == [1000 - round(i * 999 / 10) for i in range(11)]  # steps 0, 100, 200, ..., 999
    assert trace[-1][1] == 1
    cum = 0.0
    want = {}
    for i, (_, ms) in enumerate(log):
        cum += ms / 1e3
        want[i] = cum
    assert trace[0][0] == pytest.approx(want[0], abs=1e-4) and trace[-1][0] == pytest.approx(want[999], abs=1e-4)
    assert all(a[0] < b[0] for a, b in zip(trace, trace[1:]))
    assert batch_trace([]) == []
    assert batch_trace([(7, 1.5)], points=256) == [[0.0015, 7]]
    assert len(batch_trace(log[:5], points=256)) == 5  # fewer steps than points: every step


def test_latest_groups_take_each_groups_latest_run_with_two_engines():
    def row(engine, run, problems=40, **kw):
        return dict(model="m", shape="apps", lengths="lognormal", engine=engine, problems=problems, samples=128,
                    seconds=10.0, tokens_per_s=1.0, run=run, **kw)

    rows = [row("continuous-tree", 1), row("static-tree", 1), row("continuous-tree", 2), row("static-tree", 2),
            row("continuous-tree", 3),  # a lone engine: not a comparison
            row("continuous-tree", 2, problems=120), row("static-tree", 2, problems=120, skipped="out of memory")]
    groups = latest_groups(rows)
    assert [label for label, _ in groups] == ["m apps 40x128 lognormal (run 2)"]
    assert set(groups[0][1]) == {"continuous-tree", "static-tree"}


def test_job_plots_are_drawn_from_the_committed_job_json(tmp_path):
    pytest.importorskip("matplotlib")
    with open(os.path.join(ROOT, "docs", "benchmarks", "job.json"), encoding="utf-8") as f:
        results = json.load(f)
    label, engines = latest_groups(results["rows"])[0]
    engines["continuous-tree"]["batch_trace"] = [[0.1, 100], [0.2, 90]]  # the same dict as in results["rows"]
    paths = write_job_plots(results, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["job_throughput.png", "job_batch.png"]
    assert all(os.path.getsize(p) > 10_000 for p in paths)
    job.write(results, str(tmp_path), plots=True)
    md = (tmp_path / "job.md").read_text()
    assert "![job_throughput.png](job_throughput.png)" in md and "![job_batch.png](job_batch.png)" in md
