"""Judge one program in the per-test sandbox (prompt_tree.tasks.execution.run_program): a fresh sandboxed interpreter per
standard-input test, one per call-based program. Kept for comparison with the warm sandbox and as its
fallback (`sandbox="per-test"`); its verdicts follow the same rules (prompt_tree.tasks.verdicts, prompt_tree.tasks.compare).

- Standard input: prog.py is a small launcher that puts the preamble's names (prompt_tree.tasks.sandbox.preamble) into a
  fresh __main__ and runs the candidate, compiled on its own as "prog.py" (its own line numbers, its
  `from __future__` lines first). numpy is imported only if the candidate's text mentions `np`.
- Call-based: one process for all tests. A driver imports the candidate once, then forks a child per test
  (fresh state, its own time limit, killable even inside a C call), calls `Solution().fn_name` if the code
  defines such a class, else the module-level `fn_name`, and writes the typed JSON of the return value
  (prompt_tree.tasks.sandbox.wire) as one line. Lines are checked here: a program may print anything on that channel.
"""
from __future__ import annotations

import inspect
import json
import sysconfig

from prompt_tree.tasks import execution
from prompt_tree.tasks.compare import call_arguments, expected_text, expected_value, return_value_matches, stdout_matches
from prompt_tree.tasks.problem import Problem
from prompt_tree.tasks.sandbox import preamble as preamble_module
from prompt_tree.tasks.sandbox import wire as wire_module
from prompt_tree.tasks.sandbox.zygote_host import SandboxError
from prompt_tree.tasks.verdicts import ProcessEnd, call_verdict, short, stdin_verdict

MIN_OUTPUT_CAP = 16 << 20
_WIRE_SOURCE = inspect.getsource(wire_module)
_PREAMBLE_SOURCE = inspect.getsource(preamble_module)
# The interpreter runs without the site module (-S: no .pth file runs, ~40 ms less per start); the
# site-packages directories go on sys.path explicitly, so numpy stays importable.
_SITE_DIRS = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})

_LAUNCHER = r'''
import os, sys, types
sys.dont_write_bytecode = True  # no __pycache__ beside the candidate
sys.path.insert(0, os.getcwd())
import pt_preamble
del sys.path[0]
pt_preamble.site_builtins()
with open("candidate.py", encoding="utf-8", errors="surrogateescape") as _f:
    _src = _f.read()
_main = types.ModuleType("__main__")
if USE_PREAMBLE:
    _main.__dict__.update(pt_preamble.preamble_namespace(with_numpy=pt_preamble.may_use_numpy(_src)))
_main.__file__ = os.path.abspath("prog.py")
sys.modules["__main__"] = _main
sys.argv[:] = ["prog.py"]
del pt_preamble, os, types, _f
exec(compile(_src, "prog.py", "exec", dont_inherit=True), _main.__dict__)
'''

# The call-based driver. stdin: JSON {fn_name, inputs (wire values), timeout, preamble}; the candidate is
# candidate.py beside it. stdout: one JSON line per event; the candidate's own prints go to /dev/null.
_DRIVER = r'''
import json, os, resource, select, signal, sys, time, types
sys.dont_write_bytecode = True  # no __pycache__ beside the candidate
sys.path.insert(0, os.getcwd())
import pt_preamble, pt_wire
del sys.path[0]
pt_preamble.site_builtins()

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

timeout = spec["timeout"]
cpu_s = int(timeout) + 2

with open("candidate.py", encoding="utf-8", errors="surrogateescape") as f:
    src = f.read()
mod = types.ModuleType("candidate")
if spec["preamble"]:
    mod.__dict__.update(pt_preamble.preamble_namespace(with_numpy=pt_preamble.may_use_numpy(src)))
mod.__file__ = os.path.abspath("candidate.py")
sys.modules["candidate"] = mod
# The module body runs here, once, watched by a forked watchdog: a timer signal cannot stop a loop inside C code.
watchdog = os.fork()
if watchdog == 0:
    time.sleep(timeout)
    os.kill(os.getppid(), signal.SIGKILL)
    os._exit(0)
try:
    exec(compile(src, "prog.py", "exec", dont_inherit=True), mod.__dict__)
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

for i, wired in enumerate(spec["inputs"]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
            value = make()(*pt_wire.decode_value(wired))
            try:
                text = json.dumps({"status": "ok", "value": pt_wire.encode_value(value)})
            except (pt_wire.Unencodable, ValueError, RecursionError) as exc:
                text = json.dumps({"status": "unserializable", "error": short(exc)})
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
        if not isinstance(rec, dict):
            raise ValueError("not an object")
    except ValueError:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if sig == signal.SIGXCPU:
            emit({"event": "test", "i": i, "status": "timeout"}); continue
        why = "killed by signal %s" % sig if sig else "exited without a result (status %s)" % status
        rec = {"status": "error", "error": why}
    rec.update(event="test", i=i)
    emit(rec)
'''


def _launcher(preamble: bool) -> str:
    return f"USE_PREAMBLE = {bool(preamble)!r}\nimport sys\nsys.path += {_SITE_DIRS!r}\n" + _LAUNCHER


def _driver() -> str:
    return f"import sys\nsys.path += {_SITE_DIRS!r}\n" + _DRIVER


def check_per_test(problem: Problem, code: str, timeout: float, memory_mb: int, isolation: str | None, *,
                   preamble: bool, fail_fast: bool) -> tuple[list, list[str]]:
    run = _check_call if problem.call_based else _check_stdin
    return run(problem, code, timeout, memory_mb, isolation, preamble, fail_fast)


def _check_stdin(problem, code, timeout, memory_mb, isolation, preamble, fail_fast):
    results, details = [], []
    files = {"candidate.py": code, "pt_preamble.py": _PREAMBLE_SOURCE}
    launcher = _launcher(preamble)
    for inp, exp in zip(problem.inputs, problem.outputs):
        want = expected_text(exp)
        cap = max(MIN_OUTPUT_CAP, 2 * len(want.encode()) + 1024)
        res = execution.run_program(launcher, _stdin_text(inp), timeout, memory_mb, sandbox=isolation,
                                    files=files, max_output_bytes=cap, site=False)
        if res.error:
            raise SandboxError(res.error)
        end = ProcessEnd(res.returncode, res.signal, res.timed_out, res.stderr)
        verdict, detail = stdin_verdict(end, res.output_truncated, stdout_matches(res.stdout, want),
                                        res.stdout[:200], want)
        results.append(verdict)
        details.append(detail)
        if fail_fast and verdict is not True:
            break
    return results, details


def _stdin_text(inp) -> str:
    if isinstance(inp, list):  # some APPS records give the input as a list of lines
        return "\n".join(str(x) for x in inp) + "\n"
    if not isinstance(inp, str):
        raise TypeError(f"input of a standard-input test must be a str or list of lines, got {type(inp).__name__}")
    return inp


def _check_call(problem, code, timeout, memory_mb, isolation, preamble, fail_fast):
    n = problem.num_tests
    spec = {"fn_name": problem.fn_name, "timeout": timeout, "preamble": bool(preamble),
            "inputs": [wire_module.encode_value(call_arguments(a)) for a in problem.inputs]}
    # budget: the module body and each test get `timeout` each, plus the fork/IPC overhead
    total = timeout * (n + 1) + 1.0 + 0.05 * n
    res = execution.run_program(_driver(), json.dumps(spec), total, memory_mb, cpu_time=total, sandbox=isolation,
                                files={"candidate.py": code, "pt_preamble.py": _PREAMBLE_SOURCE,
                                       "pt_wire.py": _WIRE_SOURCE}, max_output_bytes=MIN_OUTPUT_CAP * 4, site=False)
    if res.error:
        raise SandboxError(res.error)
    events = []
    for line in res.stdout.splitlines():
        try:
            ev = json.loads(line)
        except (ValueError, RecursionError):
            break  # a line cut by the output cap or by a kill: what came before is still good
        if not isinstance(ev, dict):
            break
        events.append(ev)
    results: list = [-1] * n
    end = ProcessEnd(res.returncode, res.signal, res.timed_out, res.stderr)
    details = [short("not run: " + (end.failure() or "driver ended early"))] * n
    imported = False
    seen = set()
    for ev in events:
        kind = ev.get("event")
        if kind == "import_error" and not imported:
            return [-2] * n, [short(f"compile error: {ev.get('error', '')}")] * n
        if kind == "imported":
            imported = True
            continue
        i = ev.get("i")
        # only the driver's own, well-formed events in order count (the candidate cannot write to this
        # channel, its stdout is /dev/null; still, nothing here may raise)
        if kind != "test" or not imported or not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n \
                or i in seen or i != len(seen):
            break
        seen.add(i)
        status = ev.get("status")
        value = None
        if status == "ok":
            try:
                value = wire_module.decode_value(ev.get("value"))
            except wire_module.ProtocolError:
                status, ev["error"] = "error", "malformed result"
        results[i], details[i] = call_verdict(status if status in ("ok", "unserializable", "timeout") else "error",
                                              value, str(ev.get("error", "")), expected_value(problem.outputs[i]),
                                              return_value_matches)
    if not imported:
        # the driver died in the module body: its watchdog's SIGKILL means the body ran out of time
        why = "timeout (module body)" if res.signal == 9 or res.timed_out else (end.failure() or "no result")
        details = [short(why)] * n
    if fail_fast:
        for i, r in enumerate(results):
            if r is not True:
                return results[: i + 1], details[: i + 1]
    return results, details
