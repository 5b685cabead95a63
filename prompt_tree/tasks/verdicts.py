"""One test's verdict from what its run did: the rules both sandboxes (warm and per-test) share.

APPS verdicts: True (passed), False (wrong answer), -1 (runtime error, timeout, memory limit), -2 (compile
error). `details` say why in a few words. Precedence for a standard-input test: an output over its cap is a
wrong answer (it was stopped, its end is unknown); then a timeout, a MemoryError, a signal or a non-zero exit
status is -1 (even after correct output); only a clean exit has its output compared.
"""
from __future__ import annotations

import json
import signal as _signal
from dataclasses import dataclass
from typing import Any

Verdict = Any  # True | False | -1 | -2
DETAIL_CHARS = 200
PASSED = "passed"


def short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."


def last_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@dataclass(frozen=True)
class ProcessEnd:
    """How a test's process ended, in the terms both sandboxes report."""

    exit_code: int | None
    signal: int | None = None
    timed_out: bool = False
    stderr_tail: str = ""

    def failure(self) -> str | None:
        """None for a clean exit (status 0), else why the test is -1."""
        if self.timed_out or self.signal == _signal.SIGXCPU:
            return "timeout"
        tail = self.stderr_tail[-2000:]
        if "MemoryError" in tail or "Cannot allocate memory" in tail:
            return "memory limit exceeded"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        if self.exit_code != 0:
            why = last_error_line(self.stderr_tail)
            return f"runtime error (exit {self.exit_code})" + (f": {why}" if why else "")
        return None


def stdin_verdict(end: ProcessEnd, over_cap: bool, matched: bool, got_head: str, want: str) -> tuple[Verdict, str]:
    if over_cap:
        return False, "wrong answer: output over the size cap"
    why = end.failure()
    if why is not None:
        return -1, short(why)
    if matched:
        return True, PASSED
    return False, short(f"wrong answer: got {got_head[:80]!r}, expected {want[:80]!r}")


def call_verdict(status: str, value: Any, error: str, expected: Any, matches) -> tuple[Verdict, str]:
    """status: 'ok' (value returned), 'unserializable', 'timeout', 'error' (the call raised or the child
    died: error says how). matches(value, expected) -> bool is the comparison."""
    if status == "ok":
        if matches(value, expected):
            return True, PASSED
        return False, short(f"wrong answer: got {_show(value)}, expected {_show(expected)}")
    if status == "unserializable":
        return False, short("wrong answer: " + error)
    if status == "timeout":
        return -1, "timeout"
    return -1, short("runtime error: " + error)


_SHOW_CHARS = 80
_SHOW_DEPTH = 20


def _show(x: Any) -> str:
    """At most 80 characters of a call-based value for a detail message, written as JSON would write it, read
    only as far as they reach. Never raises: json.dumps and repr both refuse an int of more than 4300 digits, and
    an unreduced factorial returned as a wrong answer once stopped the whole run."""
    out: list[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text)

    def walk(v: Any, depth: int) -> None:
        if size > _SHOW_CHARS:
            return
        if depth > _SHOW_DEPTH:
            emit("...")
        elif v is None or isinstance(v, bool):
            emit(json.dumps(v))
        elif isinstance(v, int):
            bits = v.bit_length()
            emit(str(v) if bits < 4000 else f"<int of about {int(bits * 0.30103)} digits>")
        elif isinstance(v, float):
            emit(json.dumps(v))
        elif isinstance(v, str):
            emit(json.dumps(v[:_SHOW_CHARS + 1]))
        elif isinstance(v, (list, tuple, dict)):
            items = v.items() if isinstance(v, dict) else v
            emit("{" if isinstance(v, dict) else "[")
            for i, item in enumerate(items):
                if size > _SHOW_CHARS:
                    break
                if i:
                    emit(", ")
                if isinstance(v, dict):
                    walk(item[0], depth + 1)
                    emit(": ")
                    walk(item[1], depth + 1)
                else:
                    walk(item, depth + 1)
            emit("}" if isinstance(v, dict) else "]")
        else:  # (the wire gives only the types above)
            emit(f"<{type(v).__name__}>")

    walk(x, 0)
    return "".join(out)[:_SHOW_CHARS]


def call_status_of(end: ProcessEnd, result: dict | None) -> tuple[str, Any, str]:
    """(status, value, error) of a call-based test from how its child ended and the result it wrote."""
    if end.timed_out or end.signal == _signal.SIGXCPU:
        return "timeout", None, ""
    if result is None:
        why = f"killed by signal {end.signal}" if end.signal else f"exited without a result (status {end.exit_code})"
        return "error", None, why
    status = result.get("status")
    if status in ("ok", "unserializable", "error"):
        return status, result.get("value"), str(result.get("error", ""))
    return "error", None, "malformed result"
