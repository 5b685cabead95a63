"""APPS loaders and the embedded problem set: every source format, malformed records, filters, and the data itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from prompt_tree.tasks.sources import (
    DIFFICULTIES,
    MalformedProblemWarning,
    ProblemFormatError,
    _rows_via_datasets,
    load_problems,
    parse_records,
)
from prompt_tree.tasks.problem import Problem

REPO = Path(__file__).resolve().parents[1]


def _raw(split="test"):
    name = "embedded.jsonl" if split == "test" else "train.jsonl"
    with open(REPO / "prompt_tree" / "tasks" / "data" / name) as f:
        return [json.loads(line) for line in f if line.strip()]


def _same(a: list[Problem], b: list[Problem]):
    assert [vars(p) for p in a] == [vars(p) for p in b]


# ---------------------------------------------------------------------------------------- the embedded set


def test_embedded_set_shape():
    problems = load_problems()
    assert len(problems) >= 30
    assert len({p.problem_id for p in problems}) == len(problems)
    for d in DIFFICULTIES:
        assert sum(p.difficulty == d for p in problems) >= 5, d
    stdin = [p for p in problems if not p.call_based]
    plain = [p for p in problems if p.call_based and "class Solution" not in p.starter_code]
    methods = [p for p in problems if p.call_based and p.starter_code.startswith("class Solution:\n    def ")]
    assert len(stdin) >= 10 and len(plain) >= 5 and len(methods) >= 5
    for p in problems:
        assert p.num_tests >= 5 and len(p.outputs) == p.num_tests, p.problem_id
        assert p.solutions, p.problem_id
        if p.call_based:
            assert f"def {p.fn_name}(" in p.starter_code, p.problem_id
            assert all(isinstance(args, list) for args in p.inputs)
        else:
            assert p.starter_code == "" and all(isinstance(x, str) for x in p.inputs + p.outputs)
    # both APPS conventions for call-based outputs: wrapped in a one-element list, and bare
    wrapped = [p for p in problems if p.call_based and all(isinstance(o, list) and len(o) == 1 for o in p.outputs)]
    bare = [p for p in problems if p.call_based and any(not isinstance(o, list) for o in p.outputs)]
    assert len(wrapped) >= 3 and len(bare) >= 3


def test_embedded_records_use_the_apps_column_format():
    for record in _raw("test") + _raw("train"):
        assert set(record) == {"problem_id", "question", "solutions", "input_output", "difficulty", "url", "starter_code"}
        assert isinstance(record["solutions"], str) and isinstance(json.loads(record["solutions"]), list)
        io = json.loads(record["input_output"])
        assert set(io) <= {"inputs", "outputs", "fn_name"}


def test_train_split_is_separate():
    train = load_problems(split="train")
    test_ids = {p.problem_id for p in load_problems()}
    assert len(train) >= 4 and all(p.solutions for p in train)
    assert not test_ids & {p.problem_id for p in train}
    assert any(p.call_based for p in train) and any(not p.call_based for p in train)


def _check_all(pairs):
    """Run check(problem, code) for many pairs; the checker runs subprocesses, so two threads keep both cores busy."""
    from prompt_tree.tasks.checker import check

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda pc: check(*pc), pairs))


def test_every_reference_solution_passes_all_its_tests():
    problems = load_problems() + load_problems(split="train")
    results = _check_all([(p, p.solutions[0]) for p in problems])
    failed = [(p.problem_id, r.results) for p, r in zip(problems, results) if not r.passed]
    assert not failed
    for p, r in zip(problems, results):
        assert len(r.results) == p.num_tests and all(v is True for v in r.results), p.problem_id


def _wrong_program(p: Problem) -> str:
    if not p.call_based:
        return "print(-123456789)\n"
    head = p.starter_code if p.starter_code.endswith("\n") else p.starter_code + "\n"
    return head + "        return 'wrong'\n" if "class Solution" in head else head + "    return 'wrong'\n"


def test_wrong_solutions_fail():
    problems = load_problems()
    pairs = [(p, _wrong_program(p)) for p in problems]
    # subtler mistakes on a few problems: an off-by-one and a swapped answer
    by_id = {p.problem_id: p for p in problems}
    pairs.append((by_id["emb-003"], "input()\nt = list(map(int, input().split()))\nprint(max(t) - min(t) + 1)\n"))
    pairs.append((by_id["emb-008"], by_id["emb-008"].solutions[0].replace("[first[target - x], j]", "[j, first[target - x]]")))
    pairs.append((by_id["emb-025"], by_id["emb-025"].solutions[0].replace("upsets += seen - le", "upsets += le")))
    results = _check_all(pairs)
    assert not [p.problem_id for (p, _), r in zip(pairs, results) if r.passed]


# ---------------------------------------------------------------------------------------- source formats


def test_jsonl_json_parquet_and_folder_sources_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = _raw()
    expected = load_problems()
    (tmp_path / "apps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "apps.json").write_text(json.dumps(records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "apps.parquet")
    for name in ("apps.jsonl", "apps.json", "apps.parquet"):
        _same(load_problems(tmp_path / name), expected)
        _same(load_problems(str(tmp_path / name)), expected)

    # the original APPS layout, with integer-named folders under <dir>/test
    root = tmp_path / "APPS"
    for i, r in enumerate(records):
        d = root / "test" / f"{i:04d}"
        d.mkdir(parents=True)
        (d / "question.txt").write_text(r["question"])
        (d / "input_output.json").write_text(r["input_output"])
        (d / "solutions.json").write_text(r["solutions"])
        (d / "metadata.json").write_text(json.dumps({"difficulty": r["difficulty"], "url": r["url"]}))
        if r["starter_code"]:
            (d / "starter_code.py").write_text(r["starter_code"])
    got = load_problems(root)
    assert [p.problem_id for p in got] == [f"{i:04d}" for i in range(len(records))]
    for g, e in zip(got, expected):
        g.problem_id = e.problem_id
    _same(got, expected)
    assert len(load_problems(root / "test", limit=3)) == 3


def test_integer_ids_and_line_list_stdin_tests_are_normalised(tmp_path):
    record = {"problem_id": 17, "question": "q\n", "solutions": "[]", "difficulty": "interview", "url": "u",
              "starter_code": "", "input_output": json.dumps({"inputs": [["1 2", "3"]], "outputs": [["6"]]})}
    (p,) = parse_records([record], "test")
    assert p.problem_id == "17" and p.inputs == ["1 2\n3"] and p.outputs == ["6"] and p.solutions == []


def test_hub_path_reads_parquet_through_datasets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = _raw()
    # the hub parquet conversion stores problem_id as an integer column
    for i, r in enumerate(records):
        r["problem_id"] = i
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    rows = _rows_via_datasets(str(path), "test", cache_dir=str(tmp_path / "cache"))
    got = parse_records(rows, "local parquet via datasets")
    expected = load_problems()
    assert [p.problem_id for p in got] == [str(i) for i in range(len(records))]
    for g, e in zip(got, expected):
        g.problem_id = e.problem_id
    _same(got, expected)


def test_unreachable_hub_name_says_what_was_tried():
    code = "from prompt_tree.tasks.apps import load_problems\nload_problems('nobody-here/no-such-apps', split='train')\n"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "could not load hub dataset 'nobody-here/no-such-apps' (split 'train'); tried:" in r.stderr
    assert "datasets.load_dataset('nobody-here/no-such-apps', split='train')" in r.stderr
    assert "refs%2Fconvert%2Fparquet/all/train/*.parquet" in r.stderr
    assert "pass a local path" in r.stderr


def test_missing_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an existing file or folder"):
        load_problems(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="not an existing file or folder"):
        load_problems("data/apps.jsonl")
    with pytest.raises(FileNotFoundError):
        load_problems("no_slash_name")


def test_unknown_file_type_and_empty_folder(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ProblemFormatError, match="unknown file type '.csv'"):
        load_problems(tmp_path / "x.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProblemFormatError, match="found no problems"):
        load_problems(empty)


# ---------------------------------------------------------------------------------------- malformed records

_GOOD_IO = json.dumps({"inputs": ["1\n"] * 5, "outputs": ["1\n"] * 5})
_MALFORMED = {
    "bad-json": ({"input_output": '{"inputs": [1,'}, "input_output is not valid JSON"),
    "bad-solutions": ({"solutions": "[unclosed"}, "solutions is not valid JSON"),
    "lengths": ({"input_output": json.dumps({"inputs": ["1"] * 5, "outputs": ["1"] * 4})},
                "inputs and outputs differ in length: 5 vs 4"),
    "no-tests": ({"input_output": json.dumps({"inputs": [], "outputs": []})}, "no tests"),
    "empty-io": ({"input_output": ""}, "no tests"),
    "call-args": ({"input_output": json.dumps({"inputs": [5], "outputs": [5], "fn_name": "f"})},
                  "test input #0 is int; call-based inputs are lists of arguments"),
    "no-question": ({"question": ""}, "question is missing or empty"),
}


def _record(pid, **over):
    r = {"problem_id": pid, "question": "Q\n", "solutions": json.dumps(["print(1)"]), "input_output": _GOOD_IO,
         "difficulty": "introductory", "url": "", "starter_code": ""}
    r.update(over)
    return r


def _malformed_file(tmp_path):
    records = [_record("ok-1")] + [_record(pid, **over) for pid, (over, _) in _MALFORMED.items()]
    records += [_record("ok-1"), _record("ok-2")]  # a duplicate id is malformed too
    lines = [json.dumps(r) for r in records]
    lines.insert(3, "{this line is not json")
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_records_are_skipped_with_one_warning_naming_each(tmp_path):
    path = _malformed_file(tmp_path)
    with pytest.warns(MalformedProblemWarning) as caught:
        problems = load_problems(path)
    assert [p.problem_id for p in problems] == ["ok-1", "ok-2"]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"skipped {len(_MALFORMED) + 2} malformed record(s)" in message
    for pid, (_, why) in _MALFORMED.items():
        assert f"problem_id {pid!r}: {why}" in message
    assert "line 4 of mixed.jsonl: not valid JSON" in message
    assert "problem_id 'ok-1': duplicate problem_id" in message


def test_strict_rejects_the_first_malformed_record(tmp_path):
    path = _malformed_file(tmp_path)
    with pytest.raises(ProblemFormatError, match="problem_id 'bad-json': input_output is not valid JSON"):
        load_problems(path, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean source warns about nothing
        assert len(load_problems(strict=True)) >= 30


# ---------------------------------------------------------------------------------------- filters


def test_difficulty_and_limit_filters():
    everything = load_problems()
    for d in DIFFICULTIES:
        got = load_problems(difficulty=d)
        assert got and all(p.difficulty == d for p in got)
        assert [p.problem_id for p in got] == [p.problem_id for p in everything if p.difficulty == d]
    two = load_problems(difficulty=["introductory", "competition"])
    assert {p.difficulty for p in two} == {"introductory", "competition"}
    assert [p.problem_id for p in load_problems(limit=4)] == [p.problem_id for p in everything[:4]]
    assert [p.problem_id for p in load_problems(difficulty="competition", limit=2)] == [
        p.problem_id for p in everything if p.difficulty == "competition"][:2]
    assert load_problems(limit=0) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"difficulty": "easy"}, "unknown difficulty"),
    ({"difficulty": []}, "unknown difficulty"),
    ({"limit": -1}, "limit must be"),
    ({"limit": 2.5}, "limit must be"),
    ({"split": "validation"}, "split must be one of"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_problems(**kwargs)


def test_folder_of_split_files_picks_the_split(tmp_path):
    train, test = _raw("train"), _raw("test")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "contest-test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    assert [p.problem_id for p in load_problems(tmp_path, split="train")] == [r["problem_id"] for r in train]
    assert [p.problem_id for p in load_problems(tmp_path, split="test")] == [r["problem_id"] for r in test]
    one = tmp_path / "one"
    one.mkdir()
    (one / "question.txt").write_text("Q\n")
    (one / "input_output.json").write_text(_GOOD_IO)
    (p,) = load_problems(one)
    assert p.problem_id == "one" and p.num_tests == 5 and p.difficulty == "introductory"
