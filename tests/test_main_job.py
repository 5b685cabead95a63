"""`prompt-tree apps` end to end on CPU: the tiny model, reference programs through --generations, export."""
import json
import math

import pytest

from prompt_tree.cli import main
from prompt_tree.tasks.apps import load_problems
from prompt_tree.tasks.results import read_jsonl

FAST = ["--no-progress", "--workers", "2"]


def _verdicts(out):
    return {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(f"{out}/verdicts.jsonl")}


def _pass_at(summary, k, group="all"):
    return summary["metrics"]["groups"][group]["pass_at_k"][str(k)]


def test_main_job_on_the_tiny_model(tmp_path, capsys):
    out = str(tmp_path / "apps")
    argv = ["apps", "--limit", "3", "--samples", "2", "--max-new-tokens", "16", "--k", "1,2", "--out", out, *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "pass@1" in printed and "tokens/s" in printed and "generation" in printed
    config = json.load(open(f"{out}/config.json"))
    assert config["model"] == "tiny" and config["samples"] == 2 and len(config["problem_ids"]) == 3
    gens = read_jsonl(f"{out}/generations.jsonl")
    vers = _verdicts(out)
    assert len(gens) == 6 and len(vers) == 6
    assert {(g["problem_id"], g["sample_index"]) for g in gens} == set(vers)
    assert all(0 < g["tokens"] <= 16 and g["finish_reason"] in ("length", "stop", "eos") for g in gens)
    problems = {p.problem_id: p for p in load_problems(limit=3)}
    for v in vers.values():
        assert len(v["results"]) == problems[v["problem_id"]].num_tests or v["results"] in ([-1], [-2])
        assert v["passed"] == (bool(v["results"]) and all(r is True for r in v["results"]))
    summary = json.load(open(f"{out}/summary.json"))
    assert summary["problems"] == 3 and summary["samples"] == summary["generated"] == summary["executed"] == 6
    assert summary["tokens_generated"] == sum(g["tokens"] for g in gens)
    # pass@k from the verdicts, by the unbiased estimator written out here (n = c + f samples, c passing):
    # 1 - C(f, k) / C(n, k), averaged over the problems
    by_problem: dict = {}
    for (pid, _), v in vers.items():
        by_problem.setdefault(pid, []).append(v["passed"])
    for k in (1, 2):
        expected = sum(1 - math.comb(len(p) - sum(p), k) / math.comb(len(p), k) for p in by_problem.values()) / 3
        assert _pass_at(summary, k) == pytest.approx(expected, abs=1e-12)
    t = summary["timings"]
    assert t["generation_s"] > 0 and t["execution_s"] > 0 and t["total_s"] >= t["generation_s"]

    # the same command again: everything is done, nothing is redone
    assert main(argv) == 0
    again = json.load(open(f"{out}/summary.json"))
    assert again["this_invocation"]["generated"] == 0 and again["this_invocation"]["executed"] == 0
    assert again["metrics"] == summary["metrics"]
    # ... and the invocation that generated keeps its throughput in the history
    first, second = again["invocations"]
    assert first["generation"] == summary["generation"] and first["generation"]["tokens_per_s"] > 0
    assert second["this_invocation"]["generated"] == 0 and "generation" not in second
    assert first["timings"] == summary["timings"] and second["timings"] == again["timings"]

    # a different setting into the same directory is refused, naming the field
    assert main(["apps", "--limit", "3", "--samples", "4", "--max-new-tokens", "16", "--out", out, *FAST]) == 2
    assert "samples: 2 -> 4" in capsys.readouterr().err


WRONG = "print(-12345)\n"


def _reference_file(tmp_path, problems, n_good):
    """The first n_good problems get their reference solution twice, the rest two wrong programs."""
    data = [[p.solutions[0]] * 2 if j < n_good else [WRONG, "raise SystemExit(1)\n"] for j, p in enumerate(problems)]
    path = tmp_path / "gens.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_reference_solutions_pass_and_wrong_ones_fail(tmp_path, capsys):
    problems = load_problems(limit=6)  # stdin and call-based problems both
    assert {p.call_based for p in problems} == {True, False}
    path = _reference_file(tmp_path, problems, n_good=4)
    out, exported = str(tmp_path / "eval"), str(tmp_path / "export.json")
    argv = ["apps", "--limit", "6", "--generations", path, "--k", "1,2", "--out", out, "--export-bigcode", exported]
    assert main(argv + FAST) == 0
    vers = _verdicts(out)
    assert len(vers) == 12
    for j, p in enumerate(problems):
        for i in range(2):
            assert vers[(p.problem_id, i)]["passed"] is (j < 4), (p.problem_id, vers[(p.problem_id, i)])
    summary = json.load(open(f"{out}/summary.json"))
    assert _pass_at(summary, 1) == pytest.approx(4 / 6) and _pass_at(summary, 2) == pytest.approx(4 / 6)

    # export round trip: the exported file is the input, and evaluating it gives the same verdicts
    assert json.load(open(exported)) == json.load(open(path))
    out2 = str(tmp_path / "eval2")
    assert main(["apps", "--limit", "6", "--generations", exported, "--out", out2] + FAST) == 0
    assert _verdicts(out2) == vers


def test_generations_file_must_match_the_selected_problems(tmp_path, capsys):
    path = _reference_file(tmp_path, load_problems(limit=3), n_good=3)
    code = main(["apps", "--limit", "2", "--generations", path, "--out", str(tmp_path / "x")] + FAST)
    assert code == 2
    assert "holds 3 problem(s) but 2 are selected" in capsys.readouterr().err


def test_exported_tiny_model_generations_evaluate_to_the_same_verdicts(tmp_path):
    out, exported = str(tmp_path / "gen"), str(tmp_path / "gen.json")
    assert main(["apps", "--limit", "2", "--samples", "2", "--max-new-tokens", "12", "--out", out,
                 "--export-bigcode", exported] + FAST) == 0
    codes = {(g["problem_id"], g["sample_index"]): g["code"] for g in read_jsonl(f"{out}/generations.jsonl")}
    pids = [p.problem_id for p in load_problems(limit=2)]
    assert json.load(open(exported)) == [[codes[(pid, i)] for i in range(2)] for pid in pids]
    out2 = str(tmp_path / "eval")
    assert main(["apps", "--limit", "2", "--generations", exported, "--out", out2] + FAST) == 0
    assert _verdicts(out2) == _verdicts(out)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--samples", "0"], "samples: must be an int >= 1"),
        (["--k", "1,0"], "--k expects ints >= 1"),
        (["--temperature", "-1"], "temperature"),
        (["--model", "/no/such/checkpoint"], "not 'tiny', 'random:PRESET' or an existing checkpoint directory"),
        (["--difficulty", "easy"], "invalid choice"),
        (["--node-dir", "/tmp/pt-node"], "is for torchrun runs over several nodes"),
    ],
)
def test_bad_flags_fail_with_a_message_naming_them(tmp_path, capsys, flags, message):
    out = tmp_path / "x"
    try:
        code = main(["apps", "--limit", "1", "--out", str(out), *FAST, *flags])
    except SystemExit as e:  # argparse rejects some flags itself
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    # a bad sampling value is caught before the run directory is touched
    if "--temperature" in flags:
        assert not out.exists()
