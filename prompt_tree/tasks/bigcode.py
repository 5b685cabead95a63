"""bigcode-evaluation-harness's generations format: a JSON list, one entry per problem in problem order, each a
list of program strings (the harness's `--save_generations` output for APPS, which its `--load_generations_path`
reads back). Here: export a run's extracted programs to it, and load such a file to evaluate without generating.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Mapping, Sequence

from prompt_tree.tasks.problem import Problem
from prompt_tree.tasks.results import write_json_atomic


class GenerationsFileError(ValueError):
    """A generations file that does not fit the selected problems; the message says what and how to fix it."""


def export_bigcode(path: str, problems: Sequence[Problem], programs: Mapping[str, Sequence[str]]) -> None:
    """Write programs[problem_id] (in sample order) for each problem, in the order of `problems`.

    A problem missing from `programs` is an error (the harness pairs list i with problem i, so a gap would shift
    every later problem onto the wrong tests).
    """
    missing = [p.problem_id for p in problems if p.problem_id not in programs]
    if missing:
        raise GenerationsFileError(
            f"cannot export: no programs for {len(missing)} problem(s) (first: {missing[:5]}); finish the run first"
        )
    out = [list(programs[p.problem_id]) for p in problems]
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    write_json_atomic(path, out, indent=None, ensure_ascii=False)


def export_path_problem(path: str) -> str | None:
    """Why export_bigcode could not write `path` (checked before a run, so that it does not fail at the end), or
    None. Missing parent directories are fine (they are created) as long as the nearest existing one is a
    writable directory."""
    if os.path.isdir(path):
        return "is a directory; pass the path of a .json file to write"
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    if not os.path.isdir(parent):
        return f"{parent!r} is a file, not a directory; pass a path in a directory"
    try:  # a real write: access() lets root "write" anywhere, /proc and /sys included, and the run then failed
        with tempfile.TemporaryFile(dir=parent):  # at its very end
            pass
    except OSError as e:
        return f"directory {parent!r} is not writable ({e.strerror or e}); pass a path in a directory you can write"
    return None


def load_bigcode(path: str, problems: Sequence[Problem]) -> dict[str, list[str]]:
    """Read a bigcode-format file and pair list i with problems[i]: returns problem_id -> programs.

    Raises GenerationsFileError if the file is not a JSON list of lists of strings, or holds a different number
    of entries than there are selected problems (select the same problems: --source/--split/--difficulty/--limit
    as the run that wrote it).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise GenerationsFileError(f"generations file {path!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise GenerationsFileError(f"generations file {path!r} is not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise GenerationsFileError(
            f"generations file {path!r}: expected a JSON list (one list of programs per problem), got "
            f"{type(data).__name__}"
        )
    for i, entry in enumerate(data):
        if not isinstance(entry, list) or not all(isinstance(s, str) for s in entry):
            raise GenerationsFileError(
                f"generations file {path!r}: entry {i} must be a list of program strings, got {str(entry)[:80]!r}"
            )
    if len(data) != len(problems):
        raise GenerationsFileError(
            f"generations file {path!r} holds {len(data)} problem(s) but {len(problems)} are selected; entries pair "
            f"with problems by position, so select the same problems as the run that wrote it "
            f"(--source, --split, --difficulty, --limit)"
        )
    empty = [problems[i].problem_id for i, entry in enumerate(data) if not entry]
    if empty:
        raise GenerationsFileError(
            f"generations file {path!r}: no programs for problem(s) {empty[:5]}; every problem needs at least one"
        )
    return {p.problem_id: list(entry) for p, entry in zip(problems, data)}
