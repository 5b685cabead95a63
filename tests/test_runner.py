"""The run loop: per-sample tree, sample identity across batching and resumes, resume after an interruption."""
import json
import threading

import pytest

from prompt_tree.tasks.apps import build_tree, load_problems
from prompt_tree.tasks.prompts import FEW_SHOT_KEY, format_question
from prompt_tree.tasks.results import RunDirError, read_jsonl
from prompt_tree.tasks.runner import RunConfig, build_sample_tree, run_apps, sample_key

SMALL = dict(limit=3, samples=3, max_new_tokens=12, progress=False, workers=2, timeout=2.0)


@pytest.fixture(scope="module")
def engine():
    from prompt_tree import Engine

    return Engine.random("tiny", seed=0, device="cpu")


@pytest.fixture(scope="module")
def problems():
    return load_problems("embedded", limit=3)


def test_sample_tree_holds_exactly_the_missing_samples(problems):
    missing = {problems[0].problem_id: [0, 2], problems[2].problem_id: [1]}
    tree, keymap = build_sample_tree(problems, missing, RunConfig(**SMALL))
    assert keymap == {sample_key(pid, i): (pid, i) for pid, idx in missing.items() for i in idx}
    assert problems[1].problem_id not in tree  # nothing missing: not in the tree
    for pid in missing:
        node = tree.node(pid)
        assert node.samples == 0 and node.prompt == format_question(next(p for p in problems if p.problem_id == pid))
        assert [c.key for c in node.children] == [sample_key(pid, i) for i in missing[pid]]
        assert all(c.prompt == "" and c.samples == 1 for c in node.children)
    assert tree.num_samples == 3
    # the few-shot block is the one drawn for the whole selection, whatever is missing
    full = build_tree(problems, samples=1, few_shot=2, seed=0)
    assert tree.node(FEW_SHOT_KEY).prompt == full.node(FEW_SHOT_KEY).prompt


def test_sample_prompts_equal_the_plain_tree_prompts(problems):
    """A sample node adds no token: its sequence's prompt is its problem's prompt in the plain build_tree."""
    from prompt_tree.tokenizer import ByteTokenizer

    tok = ByteTokenizer()
    missing = {p.problem_id: [0, 1] for p in problems}
    tree, keymap = build_sample_tree(problems, missing, RunConfig(**SMALL))
    plain = build_tree(problems, samples=1).flatten(tokenizer=tok)
    plain_prompt = {key: plain.prompt_ids(i) for i, (key, _) in enumerate(plain.sequences)}
    plan = tree.flatten(tokenizer=tok)
    assert plan.num_sequences == 2 * len(problems)
    for i, (key, s) in enumerate(plan.sequences):
        assert s == 0
        assert plan.prompt_ids(i) == plain_prompt[keymap[key][0]]


def test_sample_is_the_same_draw_alone_or_in_a_full_batch(engine, problems):
    from prompt_tree import SamplingParams

    cfg = RunConfig(**SMALL)
    params = SamplingParams(max_new_tokens=12, temperature=0.8, top_p=0.95, seed=3)
    full_missing = {p.problem_id: list(range(3)) for p in problems}
    tree, keymap = build_sample_tree(problems, full_missing, cfg)
    full = {keymap[k]: c[0].token_ids for k, c in engine.generate(tree, params, progress=False).items()}
    part_missing = {problems[0].problem_id: [2], problems[2].problem_id: [0, 1]}
    tree, keymap = build_sample_tree(problems, part_missing, cfg)
    for batch in (None, 1):
        part = engine.generate(tree, params, progress=False, max_batch_sequences=batch)
        for k, c in part.items():
            assert c[0].token_ids == full[keymap[k]]
    # and the samples of one problem are not all the same draw
    assert len({tuple(full[(problems[0].problem_id, i)]) for i in range(3)}) > 1


class Interrupting:
    """Wraps an engine; raises from on_complete after `after` completions, as a kill mid-run would stop it."""

    def __init__(self, engine, after=None):
        self.engine, self.after, self.calls = engine, after, []

    def generate(self, tree, params, on_complete=None, **kw):
        def cb(key, index, completion):
            if self.after is not None and len(self.calls) >= self.after:
                raise KeyboardInterrupt("simulated kill")
            self.calls.append(key)
            on_complete(key, index, completion)

        return self.engine.generate(tree, params, on_complete=cb, **kw)

    def __getattr__(self, name):  # plan, tokenizer, ...: the wrapped engine's
        return getattr(self.engine, name)


class CountingCheck:
    def __init__(self):
        from prompt_tree.tasks.checker import check

        self.check, self.calls, self.lock = check, [], threading.Lock()

    def __call__(self, problem, code, **kw):
        with self.lock:
            self.calls.append(problem.problem_id)
        return self.check(problem, code, **kw)


def _records(out):
    gens = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(f"{out}/generations.jsonl")}
    vers = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(f"{out}/verdicts.jsonl")}
    return gens, vers


def test_resume_after_interruption_matches_uninterrupted_run_without_repeating_work(engine, problems, tmp_path):
    total = 3 * 3
    ref_out, out = str(tmp_path / "ref"), str(tmp_path / "run")
    run_apps(RunConfig(out=ref_out, **SMALL), problems=problems, engine=engine, log=None)

    first_engine, first_check = Interrupting(engine, after=4), CountingCheck()
    with pytest.raises(KeyboardInterrupt):
        run_apps(RunConfig(out=out, **SMALL), problems=problems, engine=first_engine, check_fn=first_check,
                 log=None)
    gens1, vers1 = _records(out)
    assert len(gens1) == 4 and len(vers1) <= 4
    # the kill also came before some verdicts were written: keep only the first two
    with open(f"{out}/verdicts.jsonl") as f:
        kept = f.readlines()[:2]
    with open(f"{out}/verdicts.jsonl", "w") as f:
        f.writelines(kept)
    # a kill in the middle of a write leaves a torn line: the resumed run must shrug it off
    with open(f"{out}/generations.jsonl", "a") as f:
        f.write('{"problem_id": "emb-00')

    second_engine, second_check = Interrupting(engine), CountingCheck()
    report = run_apps(RunConfig(out=out, **SMALL), problems=problems, engine=second_engine, check_fn=second_check,
                      log=None)
    # no repeated work: the second run generated exactly what was missing and executed each program once overall
    assert len(second_engine.calls) == total - 4 == report.generated_now
    assert not set(second_engine.calls) & set(first_engine.calls)
    assert len(second_check.calls) == total - 2 == report.executed_now
    assert report.resumed_generations == 4 and report.resumed_verdicts == 2

    ref_gens, ref_vers = _records(ref_out)
    gens, vers = _records(out)
    assert gens == ref_gens and vers == ref_vers and len(gens) == total
    summary = json.load(open(f"{out}/summary.json"))
    ref_summary = json.load(open(f"{ref_out}/summary.json"))
    assert summary["metrics"] == ref_summary["metrics"]
    assert summary["generated"] == summary["executed"] == total

    # a third start finds everything done: no generation, no execution
    third_check = CountingCheck()
    report = run_apps(RunConfig(out=out, **SMALL), problems=problems, engine=Interrupting(engine, after=0),
                      check_fn=third_check, log=None)
    assert report.generated_now == 0 and report.executed_now == 0 and third_check.calls == []


def test_resume_into_a_different_config_is_refused(engine, problems, tmp_path):
    out = str(tmp_path / "run")
    cfg = dict(SMALL, samples=1, limit=1)
    run_apps(RunConfig(out=out, **cfg), problems=problems[:1], engine=engine, log=None)
    with pytest.raises(RunDirError, match=r"samples: 1 -> 2(.|\n)*temperature: 0.8 -> 0.5"):
        run_apps(RunConfig(out=out, **dict(cfg, samples=2, temperature=0.5)), problems=problems[:1], engine=engine,
                 log=None)
    # --force starts afresh with the new settings
    report = run_apps(RunConfig(out=out, force=True, **dict(cfg, samples=2)), problems=problems[:1], engine=engine,
                      log=None)
    assert report.generated_now == 2 and report.resumed_generations == 0
