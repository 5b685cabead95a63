"""The execution benchmark's floor (prompt_tree.tasks.bench_exec): programs judged with no sandbox at all, by a
single-threaded worker process that compiles each program once and forks a child per test, running it with the
warm runner's own child code (prompt_tree.tasks.sandbox.runner). What is left is the programs' own time, one fork per test
and the comparison: any sandbox costs at least this.

Protocol: `worker_main(spec_path)` prints "ready", then answers each program index read from stdin with one
JSON line: {"verdicts", "cpu_s"}, cpu_s being the CPU time of the program's processes (their rusage), the
benchmark's measure of the programs' own time.
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys
import tempfile
import time
import types

from prompt_tree.tasks.compare import TokenStream, call_arguments, expected_text, expected_value, return_value_matches
from prompt_tree.tasks.sandbox import wire
from prompt_tree.tasks.sandbox.preamble import preamble_namespace
from prompt_tree.tasks.sandbox.runner import Runner, cpu_limit_for
from prompt_tree.tasks.verdicts import ProcessEnd, call_status_of, call_verdict, stdin_verdict


def worker_main(spec_path: str) -> None:
    with open(spec_path) as f:
        programs = json.load(f)
    names = preamble_namespace(with_numpy=True)
    workdir = tempfile.mkdtemp(prefix="pt_floor_")
    os.chdir(workdir)
    print("ready", flush=True)
    for line in sys.stdin:
        prog = programs[int(line)]
        cpu[0] = 0.0
        verdicts = judge(prog, names, workdir)
        print(json.dumps({"verdicts": verdicts, "cpu_s": cpu[0]}), flush=True)


cpu = [0.0]  # CPU seconds of the current program's processes (summed by _wait)


def judge(prog: dict, names: dict, workdir: str) -> list:
    n = len(prog["inputs"])
    try:
        code = compile(prog["code"], "prog.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return [-2] * n
    if prog["call"]:
        return _judge_call(prog, code, names)
    runner = Runner(None, {"kind": "stdin", "preamble": True}, names, workdir, "group", list(sys.path))
    runner.code = code
    return [_stdin_test(runner, prog, i) for i in range(n)]


def _wait(pid: int, fds: list[int], timeout: float):
    """Read fds until the child exits or the limit passes; returns (bytes per fd, timed_out, status)."""
    bufs = {fd: bytearray() for fd in fds}
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(pid)
    open_fds = list(fds)
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select(open_fds + [pidfd], [], [], left)
            for fd in ready:
                if fd == pidfd:
                    continue
                chunk = os.read(fd, 1 << 16)
                if chunk:
                    bufs[fd] += chunk
                else:
                    open_fds.remove(fd)
            if pidfd in ready and not open_fds:
                break
            if pidfd in ready:  # exited: what is buffered is all there is
                for fd in open_fds:
                    os.set_blocking(fd, False)
                    try:
                        while chunk := os.read(fd, 1 << 16):
                            bufs[fd] += chunk
                    except BlockingIOError:
                        pass
                break
    finally:
        os.close(pidfd)
    _, status, usage = os.wait4(pid, 0)  # includes the descendants it waited for (call-based: every call)
    cpu[0] += usage.ru_utime + usage.ru_stime
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    return bufs, timed_out, status


def _end(status: int, timed_out: bool, stderr: str = "") -> ProcessEnd:
    return ProcessEnd(os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                      os.WTERMSIG(status) if os.WIFSIGNALED(status) else None, timed_out, stderr)


def _stdin_test(runner: Runner, prog: dict, i: int):
    data = prog["inputs"][i]
    data = ("\n".join(data) + "\n") if isinstance(data, list) else data
    stdin_fd = os.memfd_create("stdin")
    os.write(stdin_fd, data.encode())
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            runner._child_stdin(stdin_fd, out_w, err_w, cpu_limit_for(prog["timeout"]))
        finally:
            os._exit(70)
    for fd in (stdin_fd, out_w, err_w):
        os.close(fd)
    bufs, timed_out, status = _wait(pid, [out_r, err_r], prog["timeout"])
    os.close(out_r)
    os.close(err_r)
    want = expected_text(prog["outputs"][i])
    stream = TokenStream(want)
    stream.feed(bytes(bufs[out_r]))
    end = _end(status, timed_out, bytes(bufs[err_r][-4096:]).decode(errors="replace"))
    return stdin_verdict(end, False, stream.matches(), "", want)[0]


def _judge_call(prog: dict, code, names: dict) -> list:
    """One child runs the module body, then forks a grandchild per call (a new Solution() each)."""
    n = len(prog["inputs"])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            _call_host(prog, code, names, w)
        finally:
            os._exit(0)
    os.close(w)
    bufs, _, _ = _wait(pid, [r], prog["timeout"] * (n + 1) + 1.0)
    os.close(r)
    events = [json.loads(line) for line in bytes(bufs[r]).decode().splitlines() if line]
    if events and events[0].get("import_error"):
        return [-2] * n
    out = []
    for i in range(n):
        ev = events[i + 1] if i + 1 < len(events) else {"status": "error", "error": "no result"}
        end = ProcessEnd(ev.get("exit"), ev.get("signal"), bool(ev.get("timeout")))
        result = ev.get("result")
        if isinstance(result, dict) and "value" in result:
            result["value"] = wire.decode_value(result["value"])
        status, value, error = call_status_of(end, result)
        out.append(call_verdict(status, value, error, expected_value(prog["outputs"][i]), return_value_matches)[0])
    return out


def _call_host(prog: dict, code, names: dict, w: int) -> None:
    def emit(obj):
        os.write(w, (json.dumps(obj) + "\n").encode())

    module = types.ModuleType("candidate")
    module.__dict__.update(names)
    try:
        exec(code, module.__dict__)
        fn = prog["fn_name"]
        cls = module.__dict__.get("Solution")
        make = (lambda: getattr(cls(), fn)) if isinstance(cls, type) and hasattr(cls, fn) else \
            (lambda: module.__dict__[fn])
        make  # noqa: B018
    except BaseException as exc:  # noqa: B902
        emit({"import_error": str(exc)})
        return
    emit({"imported": True})
    for args in prog["inputs"]:
        rr, rw = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(rr)
            try:
                value = make()(*call_arguments(args))
                try:
                    text = json.dumps({"status": "ok", "value": wire.encode_value(value)})
                except (wire.Unencodable, ValueError) as exc:
                    text = json.dumps({"status": "unserializable", "error": str(exc)})
            except BaseException as exc:  # noqa: B902
                text = json.dumps({"status": "error", "error": f"{type(exc).__name__}: {exc}"})
            os.write(rw, text.encode())
            os._exit(0)
        os.close(rw)
        bufs, timed_out, status = _wait(child, [rr], prog["timeout"])
        os.close(rr)
        end = _end(status, timed_out)
        try:
            result = json.loads(bytes(bufs[rr])) if bufs[rr] else None
        except ValueError:
            result = None
        emit({"exit": end.exit_code, "signal": end.signal, "timeout": timed_out, "result": result})
