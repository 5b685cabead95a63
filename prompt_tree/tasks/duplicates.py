"""Identical programs of one problem run once and share their verdict.

Sampling at temperature repeats itself, the more so on easy problems: two samples of one problem whose
programs are equal after stripping trailing whitespace (`program_key`) would get the same verdict, so only
the first runs; the others get its verdict with `duplicate_of` naming it (prompt_tree.tasks.results.VerdictRecord).
Only whitespace at the very end is stripped: trailing spaces inside the text may sit in a string literal,
and then the programs differ.

`DuplicateIndex` is the bookkeeping, thread-safe: claim() says whether a sample must run or copies from
another, finished() hands a verdict to the samples that waited for it. Seeded from a run directory's existing
verdicts, so duplicates of programs judged by an earlier invocation are not run again either.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Callable

from prompt_tree.tasks.results import GenerationRecord, VerdictRecord


def program_key(problem_id: str, code: str) -> tuple[str, str]:
    return (problem_id, code.rstrip())


def as_duplicate(verdict: VerdictRecord, sample_index: int) -> VerdictRecord:
    """`verdict` copied for another sample of the same problem; duplicate_of names the sample that ran."""
    origin = verdict.duplicate_of if verdict.duplicate_of is not None else verdict.sample_index
    return dataclasses.replace(verdict, sample_index=sample_index, duplicate_of=origin,
                               results=list(verdict.results))


class DuplicateIndex:
    def __init__(self, generations: dict, verdicts: dict):
        self._lock = threading.Lock()
        self._done: dict[tuple[str, str], VerdictRecord] = {}
        self._waiting: dict[tuple[str, str], list[int]] = {}
        for key, verdict in verdicts.items():
            gen = generations.get(key)
            if gen is not None:
                self._done.setdefault(program_key(gen.problem_id, gen.code), verdict)

    def claim(self, rec: GenerationRecord) -> VerdictRecord | None | bool:
        """True: run it (the first of its kind). False: an identical program is running; its verdict will be
        handed on by finished(). A VerdictRecord: copy this one (already judged)."""
        key = program_key(rec.problem_id, rec.code)
        with self._lock:
            if key in self._done:
                return as_duplicate(self._done[key], rec.sample_index)
            if key in self._waiting:
                self._waiting[key].append(rec.sample_index)
                return False
            self._waiting[key] = []
            return True

    def finished(self, rec: GenerationRecord, verdict: VerdictRecord,
                 record: Callable[[list[VerdictRecord]], None]) -> int:
        """`rec` ran and got `verdict`: record (through `record`) the copies for every sample that waited on it.
        Returns how many."""
        key = program_key(rec.problem_id, rec.code)
        with self._lock:
            self._done[key] = verdict
            waiting = self._waiting.pop(key, [])
        copies = [as_duplicate(verdict, i) for i in waiting]
        if copies:
            record(copies)
        return len(copies)
