"""The warm interpreter inside one sandbox: compile the program once, run each test in a child forked from it.

Protocol on the control socket (prompt_tree.tasks.sandbox.wire), after the seal:

    runner -> host  {"ev": "body"}   (call-based: compiled, the module body starts; the host times it from here)
    runner -> host  {"ev": "ready"} | {"ev": "compile_error", "error"} | {"ev": "import_error", "error"}
                    | {"ev": "import_timeout"}                                   (call-based: the module body)
    host -> runner  {"op": "test", "i", "timeout", "cpu_s"} + fds
                        standard input: [stdin memfd, stdout pipe, stderr pipe]; call-based: [args memfd, result pipe]
                    {"op": "kill", "i"}                                          (stop test i now: over a cap)
    runner -> host  {"ev": "done", "i", "exit", "signal", "timeout", "killed", "cpu_s", "wall_s", "rss_kb"}

Each test's child gets its stdin, stdout and stderr straight from the host (the runner never sees the output,
and the expected output never enters the sandbox). Standard-input programs run as `python prog.py` would: a
fresh `__main__` module (the preamble's names in it, see prompt_tree.tasks.sandbox.preamble), SystemExit codes, the
traceback of an uncaught exception on stderr, non-daemon threads joined and atexit handlers run at the end.
Call-based programs: the module body runs once, here; each test's child builds a new `Solution()` (or takes the
module-level function), calls it, and writes the typed JSON of the return value (prompt_tree.tasks.sandbox.wire) to its
result pipe.

Between tests the runner kills every process the test left (`kill(-1)`: every process of the sandbox except
its init and the runner; in fallback mode without a private uid, the test's process group and every orphan
that came back to this subreaper) and deletes what the test wrote, so the next test starts from the state
right after compilation (call-based: right after the module body).

Stdlib only; runs in the sandbox after prompt_tree.tasks.sandbox.seal.
"""
from __future__ import annotations

import atexit
import fcntl
import io
import json
import linecache
import math
import os
import resource
import select
import signal
import sys
import threading
import time
import types

from prompt_tree.tasks.sandbox import wire
from prompt_tree.tasks.sandbox.wipe import empty_dir

PROGRAM_NAME = "prog.py"
_ERROR_CHARS = 300
_WAKE_MARGIN_S = 0.1  # a child that ended this soon after its deadline, seen late, is still a pass (_wait)
# Cleanup strategies between tests: "kill_all" = kill(-1), valid when every process this uid can signal is the
# sandbox's (a PID namespace, or a private host uid); "group" = fallback mode sharing the caller's uid.
CLEANUP_MODES = ("kill_all", "group")


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:_ERROR_CHARS]


def _vm_size_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 256 << 20  # no /proc: a generous guess at the interpreter's own mappings


class Runner:
    """One program's warm interpreter. `spec`: {"kind": "stdin" | "call", "fn_name", "source", "timeout",
    "memory_mb", "preamble"}; `names`: the preamble's names (already imported in the zygote)."""

    def __init__(self, sock, spec: dict, names: dict, workdir: str, cleanup: str, sys_path: list[str]):
        if cleanup not in CLEANUP_MODES:
            raise ValueError(f"cleanup must be one of {CLEANUP_MODES}, got {cleanup!r}")
        self.sock = sock
        self.spec = spec
        self.names = dict(names) if spec.get("preamble", True) else {}
        self.workdir = workdir
        self.cleanup_mode = cleanup
        self.sys_path = list(sys_path)
        self.keep_entries: set[str] | None = None  # what the run directory holds after the start
        self.keep_dir: tuple[int, dict] = (0o700, {})  # and its own mode and extended attributes (_dir_state)
        self.make_callable = None
        self.code = None

    # ------------------------------------------------------------------ start
    def serve(self) -> None:
        os.chdir(self.workdir)
        sys.path[:] = self.sys_path
        for name in [m for m in sys.modules if m == "prompt_tree" or m.startswith("prompt_tree.")]:
            del sys.modules[name]  # this code stays loaded; the program cannot find it by name
        source = self.spec["source"]
        try:
            self.code = compile(source, PROGRAM_NAME, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            self._send({"ev": "compile_error", "error": _short(exc)})
            return
        linecache.cache[PROGRAM_NAME] = (len(source), None, source.splitlines(True), PROGRAM_NAME)
        limit = _vm_size_bytes() + (int(self.spec["memory_mb"]) << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if self.spec["kind"] == "call":
            if not self._run_module_body():
                return
        self._cleanup(None)
        self.keep_entries = set(os.listdir(self.workdir))
        self.keep_dir = _dir_state(self.workdir)
        self._send({"ev": "ready"})
        while True:
            try:
                msg, fds = wire.recv_message(self.sock, max_fds=wire.MAX_FDS)
            except (OSError, wire.ProtocolError):
                return
            if msg is None:
                return  # the host is done (or gone): the init sees this process end and the namespace dies
            if msg.get("op") == "test":
                self._run_test(msg, fds)
            else:
                for fd in fds:
                    os.close(fd)

    def _run_module_body(self) -> bool:
        """Call-based: execute the module once, here (its prints go to /dev/null, as the runner's stdio)."""
        module = types.ModuleType("candidate")
        module.__dict__.update(self.names)
        module.__file__ = os.path.join(self.workdir, PROGRAM_NAME)
        sys.modules["candidate"] = module
        # The last word from this process before the program's code can change it: the kernel stamps the packet,
        # and the host times the body from that stamp (a body that patched time.monotonic once reported 6.4 s
        # as in time).
        self._send({"ev": "body"})
        t0 = time.monotonic()
        # The body's wall limit: SIGALRM's default action ends this process (a body that overrides the handler
        # meets the host's backstop instead); the host reads the silence after the limit as a timeout.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, float(self.spec["timeout"]))
        try:
            exec(self.code, module.__dict__)
        except BaseException as exc:  # noqa: B902 - SystemExit in a module body is APPS's compile error too
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._send({"ev": "import_error", "error": _short(exc)})
            return False
        signal.setitimer(signal.ITIMER_REAL, 0)
        if time.monotonic() - t0 > float(self.spec["timeout"]):
            self._send({"ev": "import_timeout"})
            return False
        fn_name = self.spec["fn_name"]
        cls = module.__dict__.get("Solution")
        if isinstance(cls, type) and hasattr(cls, fn_name):
            self.make_callable = lambda: getattr(cls(), fn_name)  # a new Solution() for every call
        elif callable(module.__dict__.get(fn_name)):
            self.make_callable = lambda: module.__dict__[fn_name]
        else:
            self._send({"ev": "import_error",
                        "error": f"no function {fn_name!r} (nor class Solution with it) defined"})
            return False
        return True

    # ------------------------------------------------------------------ one test
    def _run_test(self, msg: dict, fds: list[int]) -> None:
        i = msg.get("i")
        call = self.spec["kind"] == "call"
        if len(fds) != (2 if call else 3):
            for fd in fds:
                os.close(fd)
            self._send({"ev": "done", "i": i, "exit": None, "signal": None, "timeout": False, "killed": False,
                        "cpu_s": 0.0, "wall_s": 0.0, "rss_kb": 0, "error": "bad descriptors"})
            return
        timeout = float(msg["timeout"])
        cpu_s = int(msg["cpu_s"])
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                if call:
                    self._child_call(fds[0], fds[1], cpu_s)
                else:
                    self._child_stdin(fds[0], fds[1], fds[2], cpu_s)
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        timed_out, killed = self._wait(pid, t0 + timeout, i)
        _, status, usage = os.wait4(pid, 0)
        wall = time.monotonic() - t0
        self._cleanup(pid)
        self._send({
            "ev": "done", "i": i,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "timeout": timed_out, "killed": killed, "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
            "rss_kb": usage.ru_maxrss,
        })

    def _wait(self, pid: int, deadline: float, i) -> tuple[bool, bool]:
        """Until the child exits, its wall limit passes, or the host asks to stop it: (timed_out, killed)."""
        pidfd = os.pidfd_open(pid)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._kill(pid)
                    return True, False
                ready, _, _ = select.select([pidfd, self.sock], [], [], left)
                if pidfd in ready:
                    # well past the deadline already: this process was held (SIGSTOP from the test's child) while
                    # the child ran on, and its end in the meantime is still a timeout (the margin keeps a child
                    # that ended just in time a pass when this process wakes a little late)
                    return time.monotonic() > deadline + _WAKE_MARGIN_S, False
                if self.sock in ready:
                    try:
                        msg, fds = wire.recv_message(self.sock, max_fds=0)
                    except (OSError, wire.ProtocolError):
                        msg = None
                    if msg is None:  # host gone: stop the child, and this loop ends at the next recv
                        self._kill(pid)
                        return False, True
                    if msg.get("op") == "kill" and msg.get("i") == i:
                        self._kill(pid)
                        return False, True
        finally:
            os.close(pidfd)

    @staticmethod
    def _kill(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _cleanup(self, test_pid: int | None) -> None:
        """No process but this one (and the init) left, and the run directory as it was after the start."""
        if self.cleanup_mode == "kill_all":
            try:
                os.kill(-1, signal.SIGKILL)  # atomic against fork bombs: the kernel holds the task list
            except ProcessLookupError:
                pass
        else:
            if test_pid is not None:
                try:
                    os.killpg(test_pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self._kill_children()
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        if self.keep_entries is not None:
            self._wipe()

    def _kill_children(self) -> None:
        """Fallback mode: kill every child of this subreaper (orphans of the test come back here), repeatedly."""
        me = os.getpid()
        for _ in range(200):
            kids = []
            try:
                for tid in os.listdir(f"/proc/{me}/task"):
                    with open(f"/proc/{me}/task/{tid}/children") as f:
                        kids += [int(x) for x in f.read().split()]
            except OSError:
                return
            if not kids:
                return
            for k in kids:
                self._kill(k)
                try:
                    os.killpg(k, signal.SIGKILL)
                except OSError:
                    pass
            while True:
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break

    def _wipe(self) -> None:
        _restore_dir(self.workdir, self.keep_dir)
        extra = [n for n in os.listdir(self.workdir) if n not in self.keep_entries]
        if not extra:
            return
        if not self.keep_entries:
            empty_dir(self.workdir)
            return
        for name in extra:  # call-based: what the module body wrote stays
            path = os.path.join(self.workdir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                empty_dir(path)
                try:
                    os.rmdir(path)
                except OSError:
                    pass
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _send(self, msg: dict) -> None:
        try:
            wire.send_message(self.sock, msg)
        except OSError:
            pass  # the host is gone; the next recv ends the loop

    # ------------------------------------------------------------------ in the test's child
    def _enter_child(self, keep: dict[int, int], cpu_s: int) -> None:
        """keep: target fd -> source fd; every other fd above 2 is closed (the control socket included)."""
        # via high copies first: a source may sit on another entry's target
        high = {target: fcntl.fcntl(source, fcntl.F_DUPFD, 10) for target, source in keep.items()}
        for target, source in high.items():
            os.dup2(source, target)
        os.closerange(max(max(keep) + 1, 3), os.sysconf("SC_OPEN_MAX"))
        if self.cleanup_mode == "group":
            os.setpgid(0, 0)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))

    def _child_stdin(self, stdin_fd: int, out_fd: int, err_fd: int, cpu_s: int) -> None:
        self._enter_child({0: stdin_fd, 1: out_fd, 2: err_fd}, cpu_s)
        # The interpreter's own stdio objects, as `python prog.py` would make them (UTF-8, no newline translation)
        sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.open(0, "rb", closefd=False), encoding="utf-8",
                                                     errors="strict", newline="\n")
        sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.open(1, "wb", closefd=False), encoding="utf-8",
                                                       errors="strict", newline="\n")
        sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.open(2, "wb", closefd=False), encoding="utf-8",
                                                       errors="backslashreplace", newline="\n",
                                                       line_buffering=True)
        sys.argv = [PROGRAM_NAME]
        main = types.ModuleType("__main__")
        main.__dict__.update(self.names)
        main.__file__ = os.path.join(self.workdir, PROGRAM_NAME)
        sys.modules["__main__"] = main
        code = 0
        try:
            exec(self.code, main.__dict__)
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException as exc:  # noqa: B902 - report like the interpreter, minus this frame
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None
            sys.excepthook(type(exc), exc.with_traceback(tb), tb)
            code = 1
        code = _finish(code)
        os._exit(code)

    def _child_call(self, args_fd: int, result_fd: int, cpu_s: int) -> None:
        self._enter_child({3: result_fd, 4: args_fd}, cpu_s)
        with os.fdopen(4, "rb") as f:
            args = wire.decode_value(json.loads(f.read().decode("utf-8")))
        try:
            value = self.make_callable()(*args)
            try:
                text = json.dumps({"status": "ok", "value": wire.encode_value(value)})
            except (wire.Unencodable, ValueError, RecursionError) as exc:
                text = json.dumps({"status": "unserializable", "error": _short(exc)})
        except BaseException as exc:  # noqa: B902 - any failure of the call is this test's runtime error
            text = json.dumps({"status": "error", "error": _short(exc)})
        data = text.encode()
        try:
            while data:
                data = data[os.write(3, data):]
        except OSError:
            pass
        os._exit(0)


def _exit_code(exc: SystemExit) -> int:
    """The exit status `python prog.py` would have for this SystemExit."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int) and not isinstance(exc.code, bool):
        return exc.code & 0xFF
    if isinstance(exc.code, bool):
        return int(exc.code)
    try:
        print(exc.code, file=sys.stderr)
    except Exception:  # noqa: BLE001
        pass
    return 1


def _finish(code: int) -> int:
    """The interpreter's shutdown: join non-daemon threads, run atexit handlers, flush stdio."""
    try:
        threading._shutdown()  # waits for non-daemon threads, as Py_Finalize does
    except BaseException:  # noqa: B902
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: B902
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: B902 - a closed or broken stdout at exit: the interpreter exits 120
            if stream is sys.stdout and code == 0:
                code = 120
    return code


def cpu_limit_for(timeout: float) -> int:
    """RLIMIT_CPU of a test: the timeout rounded up to whole seconds, plus one (the wall limit is precise)."""
    return int(math.ceil(timeout)) + 1


def _dir_state(path: str) -> tuple[int, dict]:
    """(mode, {extended attribute: value}) of a directory itself: state that emptying it leaves behind (a
    counter kept in a user.* attribute of /tmp carried from test to test)."""
    try:
        names = os.listxattr(path)
    except OSError:  # a filesystem without them
        names = []
    return os.stat(path).st_mode & 0o7777, {n: os.getxattr(path, n) for n in names}


def _restore_dir(path: str, state: tuple[int, dict]) -> None:
    """Put the directory's own mode and extended attributes back as _dir_state found them."""
    mode, attrs = state
    os.chmod(path, mode)
    try:
        now = os.listxattr(path)
    except OSError:
        return
    for name in now:
        if name not in attrs:
            os.removexattr(path, name)
    for name, value in attrs.items():
        if name not in now or os.getxattr(path, name) != value:
            os.setxattr(path, name, value)
