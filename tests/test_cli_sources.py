"""The apps command's messages about its inputs: a source file that cannot be read names itself and what to do,
a path that does not exist is not taken for a hub dataset, warnings read as messages (not tracebacks), and an
export path that cannot be written is refused before the run, also as root."""
import json
import os

import pytest

from prompt_tree.cli import main
from prompt_tree.tasks.bigcode import export_path_problem
from prompt_tree.tasks.sources import ProblemFormatError, load_problems

FAST = ["--no-progress", "--workers", "1", "--max-new-tokens", "4"]


def _record(pid: str) -> dict:
    return {"problem_id": pid, "question": "Add.", "input_output": json.dumps({"inputs": ["1 2\n"], "outputs": ["3"]}),
            "difficulty": "introductory", "solutions": "[]", "starter_code": ""}


@pytest.mark.parametrize("name, data, says", [
    ("broken.json", b'{"data": [}', "not valid JSON"),
    ("latin.jsonl", json.dumps(_record("0")).replace("Add.", "Add \xe9.").encode("latin-1"), "not UTF-8 text"),
])
def test_an_unreadable_source_file_names_itself(tmp_path, name, data, says):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ProblemFormatError, match=rf"{path}: {says}"):
        load_problems(str(path))


def test_a_missing_folder_is_not_taken_for_a_hub_dataset(tmp_path, capsys):
    assert main(["apps", "--source", "no_such_dir/", "--out", str(tmp_path / "r")] + FAST) == 2
    err = capsys.readouterr().err
    assert "is not 'embedded', not an existing file or folder" in err and "HFValidationError" not in err, err


def test_a_skipped_record_is_a_one_line_warning(tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(_record("0")) + "\n" + json.dumps({"problem_id": "1"}) + "\n")
    assert main(["apps", "--source", str(path), "--samples", "1", "--out", str(tmp_path / "r")] + FAST) == 0
    err = capsys.readouterr().err
    assert "prompt-tree apps: warning: " in err and "skipped 1 malformed record" in err, err
    assert "run_config.py" not in err and "problems = load_problems" not in err, err  # no file:line, no source line


def test_an_export_path_that_cannot_be_written_is_refused_first(tmp_path):
    assert export_path_problem(str(tmp_path / "sub" / "out.json")) is None  # missing parents are made
    if os.path.isdir("/proc"):
        # root passes os.access here; only a real write shows that no file can be made in /proc
        assert "not writable" in export_path_problem("/proc/pt_export.json")
