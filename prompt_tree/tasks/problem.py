"""The APPS problem record, shared by the loaders, the prompt builder and the checker."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    """One APPS-format problem.

    inputs / outputs: one entry per test. For standard-input problems each is a string (the whole stdin /
    expected stdout). For call-based problems (fn_name set) each input is the list of positional arguments and
    each output is the expected return value (APPS often wraps it in a one-element list).
    """

    problem_id: str
    question: str
    solutions: list[str] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    fn_name: str | None = None
    difficulty: str = "introductory"
    starter_code: str = ""
    url: str = ""

    @property
    def call_based(self) -> bool:
        return self.fn_name is not None

    @property
    def num_tests(self) -> int:
        return len(self.inputs)
