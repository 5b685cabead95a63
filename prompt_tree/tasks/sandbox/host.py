"""The host side of the warm sandbox: `WarmSandbox`, one program's sealed sandbox driven test by test (the
zygote it forks from is managed in zygote_host.py).

Everything that comes back from a sandbox is treated as hostile: a packet that is not the expected one, a
report for another test, a descriptor, a flood, silence past the limit or a closed socket all end the same way
- the sandbox is killed, the current test and every later one fail (-1), and nothing is raised. Only a sandbox
that cannot be built at all (before any program code ran) raises SandboxError: then no verdict would mean
anything.

Threads: any number of checker threads may run sandboxes at once; each WarmSandbox belongs to one thread. The
zygote's request socket is shared under a lock (a request is one small packet).
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from prompt_tree.tasks.sandbox import wire
from prompt_tree.tasks.sandbox.config import SandboxConfig
from prompt_tree.tasks.sandbox.preamble import may_use_numpy
from prompt_tree.tasks.sandbox.zygote_host import SandboxError, zygote_for
from prompt_tree.tasks.sandbox.processes import kill_uid, read_some, release_uid, take_uid
from prompt_tree.tasks.sandbox.runner import cpu_limit_for
from prompt_tree.tasks.sandbox.wipe import remove_tree

# A test's report may come this long after its wall limit (the runner's kill, reap and clean-up on a loaded
# machine) before the host gives up on the sandbox.
BACKSTOP_S = 2.0
START_TIMEOUT_S = 30.0  # zygote queue + seal, on a machine shared with other jobs
COMPILE_SLACK_S = 5.0  # compiling (and a module body past its timeout) may take this long before "ready"
_SILENT = "no answer within the limit"
RESULT_CAP = 16 << 20  # bytes of one call-based result at most (callers pass less: check_warm sizes it)
# The runner's timer is not the host's to trust. Call-based programs run their module body in the runner, so
# its timers and reports are the program's: a body that replaced the runner's wait loop ran a 5.5 s call to a
# pass under a 4 s limit. A standard-input test's child runs as the runner's uid and can stop it: one that sent
# it SIGSTOP, and SIGCONT from a grandchild once it had printed, passed after 3.4 s under 2 s. So the host also
# times every test itself, from sending it to the report, and a report later than the limit plus this slack is
# a timeout whatever it says (the slack covers the runner's kill, reap and clean-up after the limit). The
# interval is the shorter of the kernel's timestamp of the report (which a busy host thread reading it late
# does not move) and the monotonic time it was read (which a clock step does not move): `_since`. The module
# body is timed the same way, from the runner's stamped "body" packet, sent before any of the program's code.
REPORT_SLACK_S = 0.5
MAX_FILE_MB = 16  # RLIMIT_FSIZE in the sandbox (the run directory's tmpfs holds several such files)
GRACE_S = 1.0  # a healthy runner ends within milliseconds of its socket closing; past this it is killed
_STDERR_TAIL = 4096
# A test whose pipes the host cannot make fails alone (-1), rather than raising out of check(): where every
# sandbox runs as the caller's uid (userns), programs share that uid's pipe and descriptor quotas with the host.
_NO_PIPES = "the host could not make this test's pipes"
_HEAD = 256


# ---------------------------------------------------------------------------------------------- one program
@dataclass
class TestRun:
    """What one test did. broken: the sandbox failed (died, broke the protocol, went silent) during this test;
    every later test of the program fails too."""

    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    killed: bool = False  # stopped by the host (an output cap)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    max_rss_kb: int = 0
    stdout_bytes: int = 0
    stdout_head: bytes = b""
    stdout_over_cap: bool = False
    stderr_tail: str = ""
    stderr_over_cap: bool = False
    result: bytes = b""  # call-based: the result pipe's content
    broken: str | None = None


@dataclass
class Started:
    """How the start went: ok, or why every test fails (compile_error / import_error -> -2, others -1)."""

    ok: bool
    compile_error: str | None = None
    import_error: str | None = None
    import_timeout: bool = False
    broken: str | None = None
    warnings: tuple[str, ...] = ()


class WarmSandbox:
    """One program in its own sealed sandbox: `start()` compiles it (call-based: runs its module body), then
    `run_stdin` / `call` run one test each in a fresh fork. `close()` (or the with-block's end) kills
    everything the sandbox holds and returns only when it is gone."""

    def __init__(self, source: str, kind: str, fn_name: str | None, timeout: float, *, isolation: str,
                 config: SandboxConfig, preamble: bool = True):
        if kind not in ("stdin", "call"):
            raise ValueError(f"kind must be 'stdin' or 'call', got {kind!r}")
        if isolation not in ("namespace", "userns", "fallback"):
            raise ValueError(f"isolation must be resolved to namespace/userns/fallback, got {isolation!r}")
        self.source, self.kind, self.fn_name, self.timeout = source, kind, fn_name, float(timeout)
        self.isolation, self.config, self.preamble = isolation, config, preamble
        self.sock: socket.socket | None = None
        self.pidfd: int | None = None
        self.uid: int | None = None
        self.workdir: str | None = None
        self.broken: str | None = None
        self.warnings: tuple[str, ...] = ()
        self.last_sent_at = 0.0  # time.time() when the sandbox sent the last packet read (wire.recv_stamped)
        self.last_read = 0.0  # time.monotonic() when that packet was read here
        self._test_sent = (0.0, 0.0)  # (time.time(), time.monotonic()) when the current test was sent

    def __enter__(self) -> WarmSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ start
    def start(self) -> Started:
        zygote = zygote_for(self.isolation, self.config, numpy=may_use_numpy(self.source))
        if os.geteuid() == 0 and (self.isolation == "namespace" or
                                  (self.isolation == "fallback" and self.config.zygote_run_as("fallback") is None)):
            self.uid = take_uid()
        if self.isolation == "fallback":
            self.workdir = tempfile.mkdtemp(prefix="pt_warm_")
            owner = self.uid if self.uid is not None else self.config.zygote_run_as("fallback")
            if owner is not None:
                os.chown(self.workdir, owner, owner)
            os.chmod(self.workdir, 0o700)
        cfg = self.config
        # a file may not exceed MAX_FILE_MB: with max_open_files, that bounds what pipes and files can hold
        limits = {"memory_mb": cfg.memory_mb, "nproc": cfg.max_processes,
                  "fsize_bytes": min(cfg.tmp_mb, MAX_FILE_MB) << 20,
                  "nofile": cfg.max_open_files, "tmp_mb": cfg.tmp_mb, "tmp_inodes": cfg.tmp_inodes}
        spec = {"kind": self.kind, "fn_name": self.fn_name, "timeout": self.timeout, "memory_mb": cfg.memory_mb,
                "preamble": self.preamble}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        source_fd = os.memfd_create("program", os.MFD_CLOEXEC)
        try:
            _write_all(source_fd, self.source.encode("utf-8", errors="surrogateescape"))
            zygote.spawn({"op": "spawn", "mode": self.isolation, "uid": self.uid, "limits": limits, "spec": spec,
                          "workdir": self.workdir}, [theirs.fileno(), source_fd])
        finally:
            theirs.close()
            os.close(source_fd)
        deadline = time.monotonic() + START_TIMEOUT_S
        msg, fds = self._recv(deadline, max_fds=1)
        if msg is None or msg.get("ev") != "init" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise SandboxError(f"the sandbox did not start ({self.isolation}): "
                               f"{(msg or {}).get('error') or 'no answer from it'}")
        self.pidfd = fds[0]
        wire.enable_timestamps(self.sock)
        msg, _ = self._recv(deadline)
        if msg is None or msg.get("ev") != "sealed":
            raise SandboxError(f"the sandbox could not seal itself ({self.isolation}): "
                               f"{(msg or {}).get('error') or 'it ended'}")
        self.warnings = tuple(str(w) for w in msg.get("warnings", ())[:5])
        # From here on the program's own code may have run (call-based module body): nothing it sends is trusted.
        # Compiling takes milliseconds; the module body gets the per-test timeout, as in APPS.
        t_sealed = time.monotonic()
        deadline = t_sealed + COMPILE_SLACK_S + (self.timeout if self.kind == "call" else 0.0)
        msg, _ = self._recv(deadline)
        body_at = None  # call-based: when the body started (the "body" packet's stamp, and when it was read)
        if self.kind == "call" and (msg or {}).get("ev") == "body":
            body_at = (self.last_sent_at, self.last_read)
            msg, _ = self._recv(deadline)
        # a module body that ran out of time: killed by its own timer (the socket closes) or silent. Either
        # way every test is -1; only the detail depends on this guess, hence the margin for message latency.
        silent = msg is None and time.monotonic() - t_sealed >= 0.9 * self.timeout
        ev = (msg or {}).get("ev")
        if ev == "ready" and self.kind == "call" and \
                (body_at is None or self._since(body_at) > self.timeout + REPORT_SLACK_S):
            ev = "import_timeout"  # the body outran its limit and said it did not (see REPORT_SLACK_S)
        if ev == "ready":
            return Started(True, warnings=self.warnings)
        self._kill()
        if ev == "compile_error":
            return Started(False, compile_error=str(msg.get("error", ""))[:300], warnings=self.warnings)
        if self.kind == "call" and (ev == "import_timeout" or silent):
            return Started(False, import_timeout=True, warnings=self.warnings)
        if ev == "import_error" and self.kind == "call":
            return Started(False, import_error=str(msg.get("error", ""))[:300], warnings=self.warnings)
        why = self.broken or f"unexpected message {json.dumps(msg)[:80]}"
        self.broken = why
        return Started(False, broken=why, warnings=self.warnings)

    def _recv(self, deadline: float, max_fds: int = 0):
        """The next packet before `deadline`, or (None, []) on silence, end or a broken packet (self.broken)."""
        left = deadline - time.monotonic()
        if left <= 0:
            self.broken = self.broken or _SILENT
            return None, []
        self.sock.settimeout(left)
        try:
            if max_fds:
                msg, fds = wire.recv_message(self.sock, max_fds=max_fds)
                self.last_sent_at = time.time()
            else:
                (msg, self.last_sent_at), fds = wire.recv_stamped(self.sock), []
            self.last_read = time.monotonic()
        except socket.timeout:
            self.broken = self.broken or _SILENT
            return None, []
        except (OSError, wire.ProtocolError) as exc:
            self.broken = self.broken or f"bad packet ({exc})"
            return None, []
        if msg is None:
            self.broken = self.broken or "the sandbox ended"
        return msg, fds

    # ------------------------------------------------------------------ tests
    def run_stdin(self, index: int, stdin: bytes, timeout: float, on_stdout: Callable[[bytes], None],
                  stdout_cap: int) -> TestRun:
        """Run test `index` with `stdin`; every chunk of stdout goes to on_stdout as it arrives. Past
        stdout_cap bytes on stdout or on stderr the test is stopped (stdout_over_cap / stderr_over_cap)."""
        if self.broken:
            return TestRun(broken=self.broken)
        fds = _test_fds("stdin", 2)
        if isinstance(fds, TestRun):
            return fds
        stdin_fd, (out_r, out_w), (err_r, err_w) = fds
        try:
            _write_all(stdin_fd, stdin)
            os.lseek(stdin_fd, 0, os.SEEK_SET)
            sent = self._send_test(index, timeout, [stdin_fd, out_w, err_w])
        finally:
            for fd in (stdin_fd, out_w, err_w):
                os.close(fd)
        run = TestRun()
        try:
            if sent:
                self._collect(index, timeout, run, {out_r: "out", err_r: "err"}, on_stdout, stdout_cap)
            else:
                run.broken = self.broken
        finally:
            os.close(out_r)
            os.close(err_r)
        return run

    def call(self, index: int, args_wire, timeout: float, result_cap: int = RESULT_CAP) -> TestRun:
        """Call the function with `args_wire` (wire.encode_value of the argument list); run.result holds
        the child's JSON result. A result over `result_cap` bytes (at most RESULT_CAP) stops the test
        (stdout_over_cap): the host parses what it reads, so a program must not choose how much."""
        if self.broken:
            return TestRun(broken=self.broken)
        fds = _test_fds("args", 1)
        if isinstance(fds, TestRun):
            return fds
        args_fd, (res_r, res_w) = fds
        try:
            _write_all(args_fd, json.dumps(args_wire).encode())
            os.lseek(args_fd, 0, os.SEEK_SET)
            sent = self._send_test(index, timeout, [args_fd, res_w])
        finally:
            os.close(args_fd)
            os.close(res_w)
        run = TestRun()
        try:
            if sent:
                self._collect(index, timeout, run, {res_r: "result"}, None, min(result_cap, RESULT_CAP))
            else:
                run.broken = self.broken
        finally:
            os.close(res_r)
        return run

    def _send_test(self, index: int, timeout: float, fds: list[int]) -> bool:
        try:
            wire.send_message(self.sock, {"op": "test", "i": index, "timeout": timeout,
                                          "cpu_s": cpu_limit_for(timeout)}, fds)
            self._test_sent = (time.time(), time.monotonic())  # after the send: a stall here only shortens it
            return True
        except OSError:
            self.broken = "the sandbox ended"
            self._kill()
            return False

    def _collect(self, index: int, timeout: float, run: TestRun, pipes: dict[int, str], on_stdout, cap: int):
        """Read the test's pipes and wait for its report; enforce the caps and the backstop."""
        deadline = time.monotonic() + timeout + BACKSTOP_S
        sel = selectors.DefaultSelector()
        for fd in pipes:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        sel.register(self.sock, selectors.EVENT_READ)
        stderr_tail = bytearray()
        err_bytes = 0
        result = bytearray()
        kill_sent = False
        report = None
        last_look = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    if last_look:
                        self.broken = "no report within the time limit"
                        break
                    # once more without waiting: a report may have come while this thread was held up (a busy
                    # host, the GIL) and must not be read as silence
                    last_look, left = True, 0
                for key, _ in sel.select(timeout=left):
                    fd = key.fd
                    if fd == self.sock.fileno():
                        msg, _ = self._recv(time.monotonic() + 1.0)  # readable: a packet (or the end) is there
                        if msg is None:
                            break
                        if msg.get("ev") != "done" or msg.get("i") != index:
                            self.broken = f"unexpected message {json.dumps(msg)[:80]}"
                            break
                        report = msg
                        continue
                    chunk = read_some(fd)
                    if not chunk:
                        sel.unregister(fd)
                        continue
                    kind = pipes[fd]
                    if kind == "out":
                        room = cap - run.stdout_bytes
                        if len(run.stdout_head) < _HEAD:
                            run.stdout_head += chunk[:_HEAD - len(run.stdout_head)]
                        if len(chunk) > room:
                            chunk = chunk[:max(room, 0)]
                            run.stdout_over_cap = True
                        run.stdout_bytes += len(chunk)
                        if chunk:
                            on_stdout(chunk)
                    elif kind == "err":
                        err_bytes += len(chunk)
                        stderr_tail += chunk
                        del stderr_tail[:-_STDERR_TAIL]
                        if err_bytes > cap:
                            run.stderr_over_cap = True
                    else:
                        result += chunk
                        if len(result) > cap:
                            run.stdout_over_cap = True
                    if (run.stdout_over_cap or run.stderr_over_cap) and not kill_sent:
                        kill_sent = True
                        try:
                            wire.send_message(self.sock, {"op": "kill", "i": index})
                        except OSError:
                            pass
                        for fd2 in list(sel.get_map()):
                            if fd2 != self.sock.fileno():
                                sel.unregister(fd2)  # stop reading: the child is being killed
                if self.broken or report is not None:
                    break
            if report is not None and not self.broken:
                # the test's processes are gone (the runner reaped them): what the pipes hold is all there is
                for fd, kind in pipes.items():
                    if kill_sent:
                        break
                    while True:
                        chunk = read_some(fd)
                        if not chunk:
                            break
                        if kind == "out":
                            room = cap - run.stdout_bytes
                            if len(run.stdout_head) < _HEAD:
                                run.stdout_head += chunk[:_HEAD - len(run.stdout_head)]
                            if len(chunk) > room:
                                chunk, run.stdout_over_cap = chunk[:max(room, 0)], True
                            run.stdout_bytes += len(chunk)
                            if chunk:
                                on_stdout(chunk)
                            if run.stdout_over_cap:
                                break
                        elif kind == "err":
                            stderr_tail += chunk
                            del stderr_tail[:-_STDERR_TAIL]
                        else:
                            result += chunk
                            if len(result) > cap:
                                run.stdout_over_cap = True
                                break
        finally:
            sel.close()
        run.stderr_tail = bytes(stderr_tail).decode("utf-8", errors="replace")
        run.result = bytes(result)
        if self.broken or report is None:
            run.broken = self.broken or "no report"
            self._kill()
            return
        _fill(run, report)
        if run.broken:
            self.broken = run.broken
            self._kill()
            return
        if self._since(self._test_sent) > timeout + REPORT_SLACK_S:
            run.timed_out = True  # see REPORT_SLACK_S

    def _since(self, then: tuple[float, float]) -> float:
        """Seconds from `then` (time.time(), time.monotonic()) to the last packet read: the shorter of the
        kernel's stamp of its sending (CLOCK_REALTIME, which a clock step moves) and the monotonic time it was
        read (later than its sending when this thread is held up). Neither can be shortened by the sandbox."""
        return min(self.last_sent_at - then[0], self.last_read - then[1])

    # ------------------------------------------------------------------ end
    def _kill(self, graceful: bool = False) -> None:
        """Kill the sandbox's init (in fallback mode: the runner and its group) and wait until it is gone.
        graceful: first close the control socket and give the runner GRACE_S to end by itself (then the
        kernel accounts its CPU time to the zygote; a killed init's children are reaped unaccounted)."""
        if graceful and self.pidfd is not None and self.sock is not None:
            self.sock.close()
            self.sock = None
            if _pidfd_exited(self.pidfd, GRACE_S):
                os.close(self.pidfd)
                self.pidfd = None
        if self.pidfd is not None:
            alive = not _pidfd_exited(self.pidfd, 0)
            if alive and self.isolation == "fallback":
                _killpg_of_pidfd(self.pidfd)
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except OSError:
                pass
            _pidfd_exited(self.pidfd, 10.0)
            os.close(self.pidfd)
            self.pidfd = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        try:
            self._kill(graceful=self.broken is None)
        finally:
            if self.isolation == "fallback":
                if self.uid is not None:
                    kill_uid(self.uid)  # anything of the private uid that left the runner's group
                if self.workdir is not None:
                    remove_tree(self.workdir)
                    self.workdir = None
            release_uid(self.uid)
            self.uid = None


# what a report's numbers may be: the runner may be the program's (call-based), and an int of 400 digits where
# a float belongs once raised OverflowError out of check() and stopped the whole run
_REPORT_RANGES = {"exit": (0, 255), "signal": (1, 128), "cpu_s": (0, 1e7), "wall_s": (0, 1e7), "rss_kb": (0, 1 << 40)}


def _fill(run: TestRun, report: dict) -> None:
    """Copy the runner's report into run, taking only well-typed values in range (the runner may be the
    program's); a report with a value out of its range breaks the sandbox (this program's verdicts only)."""
    def num(key, kind, default):
        v = report.get(key)
        if v is None or isinstance(v, bool) or not isinstance(v, kind):
            return default
        lo, hi = _REPORT_RANGES[key]
        if not lo <= v <= hi:  # (a comparison, never a conversion: it holds for any int, and NaN fails it)
            run.broken = f"report with {key} out of range"
            return default
        return v

    run.exit_code = num("exit", int, None)
    run.signal = num("signal", int, None)
    run.timed_out = report.get("timeout") is True
    run.killed = report.get("killed") is True
    run.cpu_s = float(num("cpu_s", (int, float), 0.0))
    run.wall_s = float(num("wall_s", (int, float), 0.0))
    run.max_rss_kb = int(num("rss_kb", int, 0))
    if run.exit_code is None and run.signal is None and not run.timed_out and not run.killed:
        run.broken = run.broken or "report without an exit status"


def _test_fds(memfd_name: str, pipes: int):
    """A test's memfd and `pipes` pipes: (memfd, (r, w), ...), or a TestRun that fails this test alone when the
    host cannot make them (_NO_PIPES); what was made by then is closed."""
    made: list[int] = []
    try:
        made.append(os.memfd_create(memfd_name, os.MFD_CLOEXEC))
        pairs = []
        for _ in range(pipes):
            r, w = os.pipe()
            made += [r, w]
            pairs.append((r, w))
        return (made[0], *pairs)
    except OSError as e:
        for fd in made:
            os.close(fd)
        return TestRun(broken=f"{_NO_PIPES} ({e.strerror or e})")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]




def _pidfd_exited(pidfd: int, timeout: float) -> bool:
    sel = selectors.DefaultSelector()
    try:
        sel.register(pidfd, selectors.EVENT_READ)
        return bool(sel.select(timeout=timeout))
    finally:
        sel.close()


def _killpg_of_pidfd(pidfd: int) -> None:
    """Fallback: the runner leads its own session, so its pid is its group; kill the group while the pidfd
    says the runner is alive (its pid cannot have been reused then)."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            pid = next(int(line.split()[1]) for line in f if line.startswith("Pid:"))
        if pid > 0:
            os.killpg(pid, signal.SIGKILL)
    except (OSError, StopIteration, ValueError):
        pass

