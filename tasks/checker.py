"""Judge a candidate program against an APPS problem's tests, in the sandbox of `tasks.execution`.

Per-test verdicts follow APPS: True (passed), False (wrong answer), -1 (runtime error, timeout, memory limit),
-2 (compile error). Choices, and why:

- Compile error = `compile(code)` fails (a syntax error): every test is -2 and nothing runs. For call-based
  problems APPS also counts the module failing to execute, or not defining `fn_name`, as a compile error (-2);
  a module body that runs past the time limit is -1.
- All tests run, even after a failure (APPS's stdin path stops at the first one): the test-case average needs
  every verdict, and a sandboxed run costs milliseconds.
- The sandbox sees only the inputs; the expected outputs stay here, so a program cannot read or forge them.
- Standard-input problems: one sandboxed process per test. A non-zero exit status is a runtime error (-1).
  Output comparison (`stdout_matches`): whitespace-separated tokens must agree one to one (line breaks and
  blank lines do not matter, as after APPS's strip/split steps); two tokens agree if equal as strings, or, when
  either is not an integer literal, if both parse as floats within 1e-6 absolute-or-relative (|a-b| <=
  1e-6·max(1, |a|, |b|), the tolerance most Codeforces / AtCoder statements set). Integer tokens compare exactly:
  APPS's np.allclose would accept 1000000 for 1000001, which no problem means. APPS also accepts outputs whose
  lines hold the same tokens in another order (a set comparison); we do not, as that accepts wrong answers.
- Call-based problems: one sandboxed process for all tests. A driver imports the code once, then forks a
  child per test (fresh state, its own time limit, killable even inside a C call), calls `Solution().fn_name`
  if the code defines such a class, else the module-level `fn_name`, and sends the return value back as JSON
  (tuples become lists). Verdict True when value == expected or (expected is a one-element list and value ==
  expected[0]), APPS's convention for wrapped outputs; comparison is exact, as in APPS.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tasks.execution import RunResult, run_program, sandbox_mode
from tasks.problem import Problem

Verdict = Any  # True | False | -1 | -2
FLOAT_TOLERANCE = 1e-6  # absolute-or-relative, see the module docstring
_DETAIL_CHARS = 200  # error messages are kept this short
_MIN_OUTPUT_CAP = 16 << 20


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the candidate program): the verdicts would be meaningless."""


@dataclass
class CheckResult:
    """Verdicts of one program on one problem. results[i] in {True, False, -1, -2}; details[i] says why in a
    few words ('passed', 'wrong answer', 'timeout', 'runtime error: ZeroDivisionError: ...', ...)."""

    results: list[Verdict]
    details: list[str] = field(default_factory=list)
    wall_time: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r is True for r in self.results)

    @property
    def compile_error(self) -> bool:
        return bool(self.results) and all(r == -2 for r in self.results)

    @property
    def first_error(self) -> str | None:
        """The first test's detail that is not 'passed', or None when all passed."""
        return next((d for r, d in zip(self.results, self.details) if r is not True), None)

    @property
    def fraction_passed(self) -> float:
        return sum(r is True for r in self.results) / len(self.results) if self.results else 0.0


# ------------------------------------------------------------------ output comparison
_INT_RE = re.compile(r"[+-]?\d+\Z")


def _tokens_match(a: str, b: str) -> bool:
    if a == b:
        return True
    if _INT_RE.match(a) and _INT_RE.match(b):
        return False  # integers compare exactly (no float closeness for 1000000 vs 1000001)
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if math.isnan(x) or math.isnan(y):
        return False
    return math.isclose(x, y, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)


def expected_text(expected: Any) -> str:
    """APPS gives an expected stdout as a string or as a list of lines."""
    if isinstance(expected, list):
        return "\n".join(str(x) for x in expected)
    if not isinstance(expected, str):
        raise TypeError(f"expected output of a standard-input test must be a str or list of lines, "
                        f"got {type(expected).__name__}")
    return expected


def stdout_matches(actual: str, expected: Any) -> bool:
    """Lenient stdout comparison (see the module docstring)."""
    got, want = actual.split(), expected_text(expected).split()
    return len(got) == len(want) and all(_tokens_match(a, b) for a, b in zip(got, want))


def _listify(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_listify(v) for v in x]
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    return x


def return_value_matches(value: Any, expected: Any) -> bool:
    """APPS call-based comparison: equal after tuples -> lists, or equal to the only item of a wrapped output."""
    value, expected = _listify(value), _listify(expected)
    if value == expected:
        return True
    return isinstance(expected, list) and len(expected) == 1 and value == expected[0]


# ------------------------------------------------------------------ judging
def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def _last_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _syntax_error(code: str) -> str | None:
    try:
        compile(code, "<candidate>", "exec")
    except (SyntaxError, ValueError) as exc:  # ValueError: source with NUL bytes
        return f"{type(exc).__name__}: {exc}"
    return None


def _stdin_text(inp: Any) -> str:
    if isinstance(inp, list):  # some APPS records give the input as a list of lines
        return "\n".join(str(x) for x in inp) + "\n"
    if not isinstance(inp, str):
        raise TypeError(f"input of a standard-input test must be a str or list of lines, got {type(inp).__name__}")
    return inp


def _runtime_verdict(res: RunResult) -> str | None:
    """None if the run completed normally, else why it counts as -1."""
    if res.error:
        raise SandboxError(res.error)
    if res.timed_out:
        return "timeout"
    if res.memory_exceeded:
        return "memory limit exceeded"
    if res.signal is not None:
        return f"killed by signal {res.signal}"
    if res.returncode != 0:
        why = _last_error_line(res.stderr)
        return f"runtime error (exit {res.returncode})" + (f": {why}" if why else "")
    return None


def _check_stdin(problem: Problem, code: str, timeout: float, memory_mb: int, sandbox: str | None):
    results, details = [], []
    for inp, exp in zip(problem.inputs, problem.outputs):
        want = expected_text(exp)
        res = run_program(code, _stdin_text(inp), timeout, memory_mb, sandbox=sandbox,
                          max_output_bytes=max(_MIN_OUTPUT_CAP, 2 * len(want) + 1024))
        if res.output_truncated and not res.error:
            results.append(False)
            details.append("wrong answer: output over the size cap")
            continue
        why = _runtime_verdict(res)
        if why is not None:
            results.append(-1)
            details.append(_short(why))
        elif stdout_matches(res.stdout, want):
            results.append(True)
            details.append("passed")
        else:
            results.append(False)
            details.append(_short(f"wrong answer: got {res.stdout[:80]!r}, expected {want[:80]!r}"))
    return results, details


# The call-based driver, run as the sandboxed program. stdin: JSON {fn_name, inputs, timeout}; the candidate is
# candidate.py beside it. stdout: one JSON line per event; the candidate's own prints go to /dev/null.
_DRIVER_SOURCE = r'''
import json, os, resource, select, signal, sys, time, traceback, types

spec = json.loads(sys.stdin.read())
results_fd = os.dup(1)
devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(devnull, 1)
os.dup2(devnull, 0)
sys.stdin = open(os.devnull)

def emit(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(results_fd, data):]

def short(exc):
    return ("%s: %s" % (type(exc).__name__, exc))[:300]

def listify(x):
    if isinstance(x, (list, tuple)):
        return [listify(v) for v in x]
    if isinstance(x, dict):
        return {k: listify(v) for k, v in x.items()}
    return x

timeout = spec["timeout"]
cpu_s = int(timeout) + 2

# The module body runs here, once, watched by a forked watchdog: a timer signal cannot stop a loop inside C code.
watchdog = os.fork()
if watchdog == 0:
    time.sleep(timeout)
    os.kill(os.getppid(), signal.SIGKILL)
    os._exit(0)
mod = types.ModuleType("candidate")
mod.__file__ = os.path.abspath("candidate.py")
sys.modules["candidate"] = mod
try:
    with open("candidate.py") as f:
        src = f.read()
    exec(compile(src, "candidate.py", "exec"), mod.__dict__)
    error = None
except BaseException as exc:
    error = short(exc)
os.kill(watchdog, signal.SIGKILL)
os.waitpid(watchdog, 0)
sys.stdout.flush()
if error is not None:
    emit({"event": "import_error", "error": error}); sys.exit(0)

fn_name = spec["fn_name"]
cls = mod.__dict__.get("Solution")
if isinstance(cls, type) and hasattr(cls, fn_name):
    make = lambda: getattr(cls(), fn_name)
elif callable(mod.__dict__.get(fn_name)):
    make = lambda: mod.__dict__[fn_name]
else:
    emit({"event": "import_error", "error": "no function %r (nor class Solution with it) defined" % fn_name})
    sys.exit(0)
emit({"event": "imported"})

for i, args in enumerate(spec["inputs"]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
            value = make()(*args)
            try:
                payload = {"status": "ok", "value": listify(value)}
                text = json.dumps(payload)
            except (TypeError, ValueError) as exc:
                text = json.dumps({"status": "unserializable", "error": "return value of type %s: %s"
                                   % (type(value).__name__, exc)})
        except BaseException as exc:
            text = json.dumps({"status": "error", "error": short(exc)})
        data = text.encode()
        try:
            while data:
                data = data[os.write(w, data):]
        except OSError:
            pass
        os._exit(0)
    os.close(w)
    chunks, deadline, timed_out = [], time.monotonic() + timeout, False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([r], [], [], left)
        if ready:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(r)
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _, status = os.waitpid(pid, 0)
    if timed_out:
        emit({"event": "test", "i": i, "status": "timeout"})
        continue
    try:
        rec = json.loads(b"".join(chunks).decode())
    except ValueError:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        why = "killed by signal %s" % sig if sig else "exited without a result (status %s)" % status
        if sig == signal.SIGXCPU:
            emit({"event": "test", "i": i, "status": "timeout"}); continue
        rec = {"status": "error", "error": why}
    rec.update(event="test", i=i)
    emit(rec)
'''


def _check_call(problem: Problem, code: str, timeout: float, memory_mb: int, sandbox: str | None):
    n = problem.num_tests
    spec = {"fn_name": problem.fn_name, "inputs": [list(a) if isinstance(a, (list, tuple)) else [a]
                                                    for a in problem.inputs], "timeout": timeout}
    # budget: the module body and each test get `timeout` each, plus the fork/IPC overhead
    total = timeout * (n + 1) + 1.0 + 0.05 * n
    res = run_program(_DRIVER_SOURCE, json.dumps(spec), total, memory_mb, files={"candidate.py": code},
                      cpu_time=total, sandbox=sandbox, max_output_bytes=_MIN_OUTPUT_CAP * 4)
    if res.error:
        raise SandboxError(res.error)
    events = []
    for line in res.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            break  # a line cut by the output cap or by a kill: what came before is still good
    results: list[Verdict] = [-1] * n
    details = ["not run: " + (_runtime_verdict(res) or "driver ended early")] * n
    for ev in events:
        if ev.get("event") == "import_error":
            return [-2] * n, [_short("compile error: " + ev["error"])] * n
        if ev.get("event") != "test":
            continue
        i, status = ev["i"], ev["status"]
        if status == "ok":
            ok = return_value_matches(ev["value"], problem.outputs[i])
            results[i] = ok
            details[i] = "passed" if ok else _short(f"wrong answer: got {json.dumps(ev['value'])[:80]}, "
                                                    f"expected {json.dumps(problem.outputs[i])[:80]}")
        elif status == "unserializable":
            results[i], details[i] = False, _short("wrong answer: " + ev["error"])
        elif status == "timeout":
            results[i], details[i] = -1, "timeout"
        else:
            results[i], details[i] = -1, _short("runtime error: " + ev["error"])
    if not any(ev.get("event") == "imported" for ev in events):
        # the driver died in the module body: its watchdog's SIGKILL means the body ran out of time
        why = "timeout (module body)" if res.signal == 9 or res.timed_out else (_runtime_verdict(res) or "no result")
        details = [_short(why)] * n
    return results, details


def check(problem: Problem, code: str, timeout: float = 4.0, memory_mb: int = 1024, *,
          sandbox: str | None = None) -> CheckResult:
    """Run `code` on every test of `problem` and return the verdicts (see the module docstring).

    timeout: wall seconds per test; memory_mb: address-space limit; sandbox: see `tasks.execution.run_program`.
    Raises SandboxError if the sandbox itself fails, ValueError for a problem without tests.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"check: problem must be a tasks.problem.Problem, got {type(problem).__name__}")
    if not isinstance(code, str):
        raise TypeError(f"check: code must be a str, got {type(code).__name__}")
    if problem.num_tests == 0 or len(problem.inputs) != len(problem.outputs):
        raise ValueError(f"problem {problem.problem_id!r}: needs >= 1 test and as many outputs as inputs "
                         f"(got {len(problem.inputs)} inputs, {len(problem.outputs)} outputs)")
    t0 = time.monotonic()
    n = problem.num_tests
    syntax = _syntax_error(code)
    if syntax is not None:
        return CheckResult([-2] * n, [_short("compile error: " + syntax)] * n, time.monotonic() - t0)
    run = _check_call if problem.call_based else _check_stdin
    results, details = run(problem, code, timeout, memory_mb, sandbox)
    return CheckResult(results, details, time.monotonic() - t0)


def check_many(pairs, workers: int | None = None, timeout: float = 4.0, memory_mb: int = 1024, *,
               sandbox: str | None = None) -> list[CheckResult]:
    """Check many (problem, code) pairs in parallel (workers: threads, default the CPU count); results in order."""
    pairs = list(pairs)
    sandbox_mode(sandbox)  # detect the sandbox once, before the threads start
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda pc: check(pc[0], pc[1], timeout, memory_mb, sandbox=sandbox), pairs))
