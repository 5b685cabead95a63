"""The APPS job under torchrun on CPU with gloo, 2 data-parallel groups of one rank each (tiny preset): the merged
records equal one process's exactly (data parallelism changes no arithmetic), an interrupted run resumes from its
group files, and a bad few-shot draw fails on every rank before --out is touched."""
from __future__ import annotations

import json
import os

from prompt_tree.parallel import part_paths
from tests.test_parallel import APPS, _records, _spawn


def _apps_worker(ctx, config_kwargs):
    from prompt_tree.tasks.dp_runner import run_apps_distributed
    from prompt_tree.tasks.runner import RunConfig

    run_apps_distributed(RunConfig(**config_kwargs), ctx, log=None)


def _apps_error_worker(ctx, config_kwargs, marker):
    from prompt_tree.tasks.dp_runner import run_apps_distributed
    from prompt_tree.tasks.runner import RunConfig

    try:
        run_apps_distributed(RunConfig(**config_kwargs), ctx, log=None)
    except ValueError as e:
        with open(f"{marker}.{ctx.rank}", "w") as f:
            f.write(str(e))


def test_dp2_apps_refuses_a_bad_few_shot_draw_before_touching_out(tmp_path):
    """Under torchrun, as in one process: too few few-shot examples fail on every rank, naming the fix, and
    --out is never created."""
    out, marker = str(tmp_path / "run"), str(tmp_path / "error")
    _spawn(_apps_error_worker, dict(APPS, out=out, few_shot=9), marker)
    for rank in (0, 1):
        msg = open(f"{marker}.{rank}").read()
        assert "asked for 9 few-shot examples" in msg and "--few-shot-source" in msg
    assert not os.path.exists(out)


def test_dp2_apps_equals_one_process_and_resumes_a_group(tmp_path):
    from prompt_tree.tasks.runner import RunConfig, run_apps

    single, dp = str(tmp_path / "single"), str(tmp_path / "dp")
    run_apps(RunConfig(out=single, **APPS), log=None)
    _spawn(_apps_worker, dict(APPS, out=dp))
    want_gens, want_vers = _records(single)
    gens, vers = _records(dp)
    assert len(want_gens) == len(want_vers) == 8
    assert gens == want_gens and vers == want_vers  # identical records, merged complete
    assert sorted(os.listdir(dp)) == ["config.json", "generations.jsonl", "summary.json", "verdicts.jsonl"]
    summary, want = (json.load(open(os.path.join(d, "summary.json"))) for d in (dp, single))
    assert summary["metrics"] == want["metrics"] and summary["generated"] == summary["executed"] == 8
    groups = summary["parallel"]["groups"]
    assert [g["problems"] for g in groups] == [2, 2] and sum(g["generated"] for g in groups) == 8

    # A run killed mid-way: nothing merged yet, each group's file holds what it finished. Group 1 finished one
    # completion and was torn mid-way through writing a second; group 0 finished all but a verdict.
    order = sorted(want_gens)
    g0, g1 = order[:4], order[4:]
    os.remove(os.path.join(dp, "summary.json"))
    for name, records in (("generations", want_gens), ("verdicts", want_vers)):
        os.remove(os.path.join(dp, f"{name}.jsonl"))
        keep0 = g0 if name == "generations" else g0[:3]
        for d, keys in ((0, keep0), (1, g1[:1])):
            with open(os.path.join(dp, f"{name}.rank{d}.jsonl"), "w") as f:
                f.writelines(json.dumps(records[k]) + "\n" for k in keys)
                if d == 1:
                    f.write('{"problem_id": "emb-')
    _spawn(_apps_worker, dict(APPS, out=dp))
    gens, vers = _records(dp)
    assert gens == want_gens and vers == want_vers
    summary = json.load(open(os.path.join(dp, "summary.json")))
    assert summary["this_invocation"] == {"generated": 3, "executed": 8 - 4, "resumed_generations": 5,
                                          "resumed_verdicts": 4}
    assert summary["metrics"] == want["metrics"] and not part_paths(os.path.join(dp, "generations.jsonl"))

    # Group files left by a torchrun run also count as done for a later single-process run.
    for name, records in (("generations", want_gens), ("verdicts", want_vers)):
        with open(os.path.join(dp, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(records[k]) + "\n" for k in order[:6])
        with open(os.path.join(dp, f"{name}.rank1.jsonl"), "w") as f:
            f.writelines(json.dumps(records[k]) + "\n" for k in order[6:])
    report = run_apps(RunConfig(out=dp, **APPS), log=None)
    assert (report.generated_now, report.executed_now) == (0, 0) and _records(dp) == (want_gens, want_vers)
