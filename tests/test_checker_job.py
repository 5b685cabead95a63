"""The checker inside the main job: duplicates run once, --fail-fast, the run directory's lock, --force that
validates before deleting, absurd sizes refused with the numbers."""
import json
import os
import threading

import pytest

from prompt_tree.cli import main
from prompt_tree.tasks.apps import load_problems
from prompt_tree.tasks.duplicates import DuplicateIndex, program_key
from prompt_tree.tasks.results import GenerationRecord, RunDirError, RunLock, VerdictRecord, read_jsonl
from prompt_tree.tasks.run_limits import RunSizeError, check_run_size
from prompt_tree.tasks.runner import RunConfig, run_apps

FAST = ["--no-progress", "--workers", "2"]


class CountingCheck:
    def __init__(self):
        from prompt_tree.tasks.checker import check

        self.check, self.calls, self.lock = check, [], threading.Lock()

    def __call__(self, problem, code, **kw):
        with self.lock:
            self.calls.append((problem.problem_id, code))
        return self.check(problem, code, **kw)


def _gens_file(tmp_path, programs):
    path = tmp_path / "gens.json"
    path.write_text(json.dumps(programs))
    return str(path)


def _verdicts(out):
    return {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(f"{out}/verdicts.jsonl")}


def test_duplicates_run_once_and_say_so(tmp_path):
    problems = load_problems(limit=2)
    a, b = (p.solutions[0] for p in problems)
    programs = [[a, a + "\n\n  \t\n", "print(-1)\n", a], [b, "print(-1)\n", b + " "]]
    check = CountingCheck()
    config = RunConfig(limit=2, generations=_gens_file(tmp_path, programs), out=str(tmp_path / "run"),
                       progress=False, workers=2)
    report = run_apps(config, problems=problems, check_fn=check, log=None)
    distinct = {(p.problem_id, c.rstrip()) for p, row in zip(problems, programs) for c in row}
    assert {(pid, c.rstrip()) for pid, c in check.calls} == distinct
    assert len(check.calls) == len(distinct) == 4  # a, print(-1) for problem 0; b, print(-1) for problem 1
    vers = _verdicts(config.out)
    pa, pb = (p.problem_id for p in problems)
    assert [vers[(pa, i)]["duplicate_of"] for i in range(4)] == [None, 0, None, 0]
    assert [vers[(pb, i)]["duplicate_of"] for i in range(3)] == [None, None, 0]
    assert vers[(pa, 1)]["results"] == vers[(pa, 0)]["results"] and vers[(pa, 1)]["passed"] is True
    assert report.executed_now == 7 and report.summary["duplicates"] == 3
    # resuming finds them done; nothing runs again
    again = CountingCheck()
    run_apps(config, problems=problems, check_fn=again, log=None)
    assert again.calls == []


def test_duplicate_index_copies_from_earlier_verdicts_and_waits_for_running_ones():
    gen = lambda pid, i, code: GenerationRecord(pid, i, code, code, "stop")  # noqa: E731
    done = VerdictRecord("p", 0, [True], True, None, duplicate_of=None, tests=1)
    index = DuplicateIndex({("p", 0): gen("p", 0, "x = 1\n")}, {("p", 0): done})
    copy = index.claim(gen("p", 5, "x = 1"))
    assert isinstance(copy, VerdictRecord) and copy.sample_index == 5 and copy.duplicate_of == 0
    assert index.claim(gen("q", 0, "x = 1")) is True  # another problem: its own run
    assert index.claim(gen("q", 1, "x = 1\n")) is False  # same as the running one: waits
    recorded = []
    assert index.finished(gen("q", 0, "x = 1"), VerdictRecord("q", 0, [False], False, "wrong"), recorded.extend) == 1
    assert [(v.sample_index, v.duplicate_of, v.results) for v in recorded] == [(1, 0, [False])]
    # whitespace inside the program is not stripped: it may be inside a string literal
    assert program_key("p", "s = 'a  '\n") != program_key("p", "s = 'a'\n")


def test_fail_fast_keeps_pass_at_k_and_marks_the_average_partial(tmp_path):
    problems = load_problems(limit=2)
    programs = [[p.solutions[0], "print(-12345)\n"] for p in problems]
    path = _gens_file(tmp_path, programs)
    full = run_apps(RunConfig(limit=2, generations=path, out=str(tmp_path / "full"), progress=False, workers=2),
                    problems=problems, log=None).summary
    fast = run_apps(RunConfig(limit=2, generations=path, out=str(tmp_path / "fast"), progress=False, workers=2,
                              fail_fast=True), problems=problems, log=None).summary
    g_full, g_fast = full["metrics"]["groups"]["all"], fast["metrics"]["groups"]["all"]
    assert g_full["pass_at_k"] == g_fast["pass_at_k"] and g_full["strict_accuracy"] == g_fast["strict_accuracy"]
    assert g_fast["test_case_average_partial"] and not g_full["test_case_average_partial"]
    assert g_fast["test_case_average"] <= g_full["test_case_average"]
    vers = _verdicts(str(tmp_path / "fast"))
    wrong = vers[(problems[0].problem_id, 1)]
    assert len(wrong["results"]) < wrong["tests"] == problems[0].num_tests
    assert fast["config"]["fail_fast"] is True  # part of the run's identity: a resume must agree


def test_second_process_on_one_run_directory_is_refused(tmp_path, capsys):
    out = str(tmp_path / "run")
    with RunLock(out):
        with pytest.raises(RunDirError, match=rf"{out} is in use by another prompt-tree process \(pid {os.getpid()}\)"):
            RunLock(out)
        assert main(["apps", "--limit", "1", "--samples", "1", "--max-new-tokens", "4", "--out", out] + FAST) == 2
        assert f"pid {os.getpid()}" in capsys.readouterr().err
    with RunLock(out):  # released: the next process gets it
        pass


def test_force_validates_the_model_before_deleting(tmp_path, capsys):
    problems = load_problems(limit=1)
    path = _gens_file(tmp_path, [[problems[0].solutions[0]]])
    out = str(tmp_path / "run")
    run_apps(RunConfig(limit=1, generations=path, out=out, progress=False, workers=1), problems=problems, log=None)
    before = open(f"{out}/verdicts.jsonl").read()
    not_a_model = tmp_path / "empty_checkpoint"
    not_a_model.mkdir()  # exists, so the cheap check passes, but nothing in it loads
    code = main(["apps", "--limit", "1", "--samples", "1", "--model", str(not_a_model), "--force", "--out", out]
                + FAST)
    assert code != 0
    assert open(f"{out}/verdicts.jsonl").read() == before  # nothing deleted


def test_absurd_sizes_are_refused_with_the_numbers(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["apps", "--samples", "1000000000", "--out", str(out)] + FAST) == 2
    err = capsys.readouterr().err
    assert "--samples 1,000,000,000 x 33 problems = 33,000,000,000 completions" in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(RunSizeError, match="GiB"):
        check_run_size(10, 10, 512, available=1 << 16)
    check_run_size(120, 128, 512, available=8 << 30)  # the paper's run fits in 8 GiB


def test_force_with_a_prompt_too_long_for_the_context_deletes_nothing(tmp_path, capsys):
    """--force deletes the old run only once the new one can start: a --max-new-tokens that no prompt fits in
    the context used to empty the old run's files before the error."""
    out = str(tmp_path / "run")
    base = ["apps", "--limit", "1", "--samples", "1", "--out", out] + FAST
    assert main(base + ["--max-new-tokens", "4"]) == 0
    before = {name: open(f"{out}/{name}").read() for name in ("generations.jsonl", "verdicts.jsonl", "summary.json")}
    capsys.readouterr()
    assert main(base + ["--max-new-tokens", "4090", "--force"]) == 2
    err = capsys.readouterr().err
    assert "context" in err and "Traceback" not in err, err
    assert {name: open(f"{out}/{name}").read() for name in before} == before  # nothing deleted
    assert main(base + ["--max-new-tokens", "6", "--force"]) == 0  # a run that fits still starts afresh
    assert open(f"{out}/generations.jsonl").read() != before["generations.jsonl"]


def test_a_k_above_the_samples_is_said_before_the_run(tmp_path, capsys):
    """pass@k needs k samples of each problem: a --k above --samples is reported as '-', as
    bigcode-evaluation-harness skips it, and the command says so before it generates."""
    out = str(tmp_path / "run")
    assert main(["apps", "--limit", "1", "--samples", "2", "--k", "1,2,5", "--max-new-tokens", "4", "--out", out]
                + FAST) == 0
    err = capsys.readouterr().err
    assert "warning: --k 5 exceeds --samples 2" in err, err
    metrics = json.load(open(f"{out}/summary.json"))["metrics"]["groups"]["all"]
    assert metrics["pass_at_k"]["5"] is None and metrics["pass_at_k"]["2"] is not None


def test_the_report_of_a_resumed_run_says_which_tokens_this_invocation_made():
    from prompt_tree.tasks.run_summary import add_history, format_report

    metrics = {"ks": [1], "groups": {"all": {"problems": 1, "samples": 2, "correct_samples": 0, "strict_accuracy": 0.0,
                                             "test_case_average": 0.0, "test_case_average_partial": False,
                                             "pass_at_k": {"1": 0.0}, "pass_at_k_problems": {"1": 1}}}}
    timings = {"total_s": 2.0, "generation_s": 1.0, "execution_s": 0.5, "execution_after_generation_s": 0.1}
    base = {"problems": 1, "samples": 2, "metrics": metrics, "timings": timings, "tokens_generated": 288}
    whole = dict(base, generation={"tokens_now": 288, "tokens_per_s": 20.0})
    part = dict(base, generation={"tokens_now": 192, "tokens_per_s": 20.0})
    assert "tokens 288, 20.0 tokens/s" in format_report(whole)
    assert "tokens 288 (192 by this invocation, at 20.0 tokens/s)" in format_report(part)
    assert "generated by an earlier invocation" in format_report(dict(base))
    # a summary from before the history was kept counts as one invocation
    old = dict(whole, this_invocation={"generated": 2})
    merged = add_history(dict(base, this_invocation={"generated": 0}), old)
    assert [inv.get("generation") for inv in merged["invocations"]] == [whole["generation"], None]
