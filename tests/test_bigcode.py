"""bigcode-evaluation-harness generations files: export, load, and the errors for files that do not fit."""
import json

import pytest

from prompt_tree.tasks.bigcode import GenerationsFileError, export_bigcode, load_bigcode
from prompt_tree.tasks.problem import Problem


def problems(n):
    return [Problem(problem_id=f"p{i}", question=f"q{i}", inputs=["1"], outputs=["1"]) for i in range(n)]


def test_round_trip_keeps_problem_and_sample_order(tmp_path):
    ps = problems(3)
    programs = {"p2": ["c", "c2"], "p0": ["a"], "p1": ["b", "b2", "b3\n'é'"]}
    path = str(tmp_path / "sub" / "gens.json")
    export_bigcode(path, ps, programs)
    # the harness's format: a plain list in problem order
    assert json.load(open(path)) == [["a"], ["b", "b2", "b3\n'é'"], ["c", "c2"]]
    assert load_bigcode(path, ps) == programs


def test_export_refuses_gaps(tmp_path):
    with pytest.raises(GenerationsFileError, match="p1"):
        export_bigcode(str(tmp_path / "g.json"), problems(2), {"p0": ["a"]})


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"p0": ["a"]}', "expected a JSON list"),
        ('[["a"], "b"]', "entry 1 must be a list"),
        ('[["a"], [1]]', "entry 1 must be a list"),
        ("[[\"a\"]", "not valid JSON"),
        ('[["a"], []]', "no programs for problem"),
    ],
)
def test_malformed_files(tmp_path, content, match):
    path = tmp_path / "g.json"
    path.write_text(content)
    with pytest.raises(GenerationsFileError, match=match):
        load_bigcode(str(path), problems(2))


def test_problem_count_must_match_selection(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps([["a"], ["b"], ["c"]]))
    with pytest.raises(GenerationsFileError, match="holds 3 problem.*but 2 are selected.*--limit"):
        load_bigcode(str(path), problems(2))


def test_missing_file(tmp_path):
    with pytest.raises(GenerationsFileError, match="does not exist"):
        load_bigcode(str(tmp_path / "nope.json"), problems(1))
