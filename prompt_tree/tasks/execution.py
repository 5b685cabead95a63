"""The per-test sandbox: run one untrusted Python program per call in its own sandboxed process tree, every
limit enforced, nothing left behind. The checker's default is the warm sandbox (prompt_tree.tasks.sandbox), one sealed
sandbox per program and one fork per test; this one (`check(..., sandbox="per-test")`) starts an interpreter
per test and shows the program the host's filesystem read-only (not sealed): kept for comparison, as a
fallback, and for `run_program` / `run_many` users.

Layout of one run (namespace mode, the default where it works):

    this process ──Popen──▶ unshare --pid --net --mount --ipc --fork --kill-child --mount-proc
                               └─▶ init (pid 1 of a new PID namespace; prompt_tree/tasks/per_test_init.py, runs as root)
                                     ├ remounts every mount read-only except the run's temporary directory
                                     └─fork─▶ program: rlimits, setuid to a fresh unprivileged uid, exec python -I prog.py

- The init enforces the wall-clock limit itself (SIGALRM → SIGKILL of the program) and reports the program's
  exit status and rusage on a private pipe. When the init exits, the kernel kills everything left in its PID
  namespace (detached daemons, fork bombs) and the init's exit completes only once they are gone.
- Each run gets its own uid (random, from a range no real user has) so RLIMIT_NPROC counts only that run's
  processes: root ignores RLIMIT_NPROC, and a uid shared by parallel runs would let one fork bomb starve the others.
- No network (an empty network namespace), a read-only filesystem except the temporary directory.
- stdout / stderr are read incrementally; past `max_output_bytes` the run is killed and marked truncated.
- stdin comes from a file holding the input: a program that reads more gets EOF, it never blocks.

Fallback mode (no namespaces: not root, or `unshare` missing or refused), chosen once per process with a
warning: a new session (process group), the same rlimits, the init as a child subreaper that kills every
descendant left when the program ends, and, when root, a private uid whose processes are killed at the end.
Force a mode with `sandbox="namespace" | "fallback"` or the environment variable PT_SANDBOX.
"""
from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prompt_tree.tasks.per_test_init import INIT_SOURCE
from prompt_tree.tasks.sandbox.processes import (
    count_own_processes, drain, kill_group, kill_uid, read_some, release_uid, send_signal, take_uid,
)
from prompt_tree.tasks.sandbox.wipe import remove_tree

# The program gets this long beyond its wall limit for the sandbox's own start (unshare, the init) before this
# process kills the whole tree itself; the init's own timer is the limit that normally fires.
_BACKSTOP_SLACK_S = 5.0
_MODES = ("auto", "namespace", "fallback")
# PT_SANDBOX is shared with the warm sandbox (prompt_tree.tasks.sandbox.config), whose "userns" mode this per-test sandbox
# does not have: there it means "auto" (namespaces as root, else the fallback).
_ALIASES = {"userns": "auto"}



@dataclass
class RunResult:
    """What one program run did. `returncode` is the program's exit code (None if a signal killed it, then
    `signal` says which); `timed_out` covers the wall clock and the CPU limit; `error` is set only when the
    sandbox itself failed (the program's own failures are in returncode / signal / stderr)."""

    stdout: str
    stderr: str
    returncode: int | None
    signal: int | None = None
    timed_out: bool = False
    memory_exceeded: bool = False
    output_truncated: bool = False
    wall_time: float = 0.0
    cpu_time: float | None = None
    max_rss_mb: float | None = None
    sandbox: str = "namespace"
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The program ran to completion and exited with status 0."""
        return (self.returncode == 0 and not self.timed_out and not self.output_truncated
                and self.error is None)


@dataclass
class RunJob:
    """Arguments of one `run_program` call, for `run_many`."""

    code: str
    stdin: str | bytes = ""
    timeout: float = 4.0
    memory_mb: int = 1024
    files: dict[str, str | bytes] = field(default_factory=dict)


# ---------------------------------------------------------------- sandbox mode, detected once per process
_mode_lock = threading.Lock()
_mode_cache: dict[str, str] = {}


def _unshare_cmd() -> list[str] | None:
    exe = shutil.which("unshare")
    if exe is None:
        return None
    return [exe, "--pid", "--net", "--mount", "--ipc", "--fork", "--kill-child", "--mount-proc"]


def sandbox_mode(requested: str | None = None) -> str:
    """'namespace' or 'fallback'. `requested` (or env PT_SANDBOX) in {'auto', 'namespace', 'fallback'};
    'auto' probes a trivial namespace run once and caches the answer, warning if it falls back."""
    req = requested or os.environ.get("PT_SANDBOX", "auto")
    req = _ALIASES.get(req, req)
    if req not in _MODES:
        raise ValueError(f"sandbox mode {req!r} is not one of {_MODES} (argument sandbox= or env PT_SANDBOX)")
    if req != "auto":
        if req == "fallback":
            with _mode_lock:
                if "warned_forced" not in _mode_cache:
                    _mode_cache["warned_forced"] = "1"
                    warnings.warn("sandbox: fallback mode forced: programs run with process groups and rlimits "
                                  "only (no PID/network/mount namespaces)" + _fallback_caveat(),
                                  RuntimeWarning, stacklevel=3)
        return req
    with _mode_lock:
        if "auto" not in _mode_cache:
            reason = _probe_namespace()
            if reason is None:
                _mode_cache["auto"] = "namespace"
            else:
                _mode_cache["auto"] = "fallback"
                warnings.warn(f"sandbox: Linux namespaces unavailable ({reason}); falling back to process "
                              "groups and rlimits: detached children and file writes are less contained"
                              + _fallback_caveat(), RuntimeWarning, stacklevel=3)
        return _mode_cache["auto"]


def _fallback_caveat() -> str:
    if fallback_limits_processes():
        return ""
    return ("; running as root with the interpreter out of other uids' reach, programs keep uid 0, so "
            "RLIMIT_NPROC does not apply (fork bombs are only killed at the end)")


def _probe_namespace() -> str | None:
    """None if a namespace run works here, else why not."""
    if sys.platform != "linux":
        return f"platform {sys.platform}"
    if os.geteuid() != 0:
        return "not running as root"
    if _unshare_cmd() is None:
        return "`unshare` (util-linux) not found"
    res = _run(_Spec("print(6 * 7)", b"", 10.0, 256, 1 << 20, {}, 16), namespace=True)
    if res.error or res.stdout.strip() != "42":
        return f"probe run failed: error={res.error!r} rc={res.returncode} stderr={res.stderr[-300:]!r}"
    return None


def _take_uid() -> int | None:
    """A private uid for the program when root (setuid needs it); None otherwise."""
    return take_uid() if os.geteuid() == 0 else None


# ---------------------------------------------------------------- one run
@dataclass
class _Spec:
    code: str
    stdin: bytes
    timeout: float
    memory_mb: int
    max_output_bytes: int
    files: dict[str, str | bytes]
    max_processes: int
    cpu_time: float | None = None
    site: bool = True


def run_program(code: str, stdin: str | bytes = "", timeout: float = 4.0, memory_mb: int = 1024, *,
                files: dict[str, str | bytes] | None = None, max_output_bytes: int = 16 << 20,
                max_processes: int = 32, cpu_time: float | None = None,
                sandbox: str | None = None, site: bool = True) -> RunResult:
    """Run Python source `code` as `python -I prog.py` in a fresh sandbox and return what it did.

    timeout: wall-clock seconds for the program (CPU time is limited to about the same); memory_mb: address
    space; files: extra files written next to prog.py (names relative, no '..'); max_output_bytes: cap on each
    of stdout and stderr (the run is killed past it); max_processes: processes/threads the program may have at
    once; cpu_time: CPU seconds per process (default: the timeout rounded up, plus one; the wall timer is the
    precise limit); sandbox: 'auto' (default, env PT_SANDBOX), 'namespace' or 'fallback'; site=False runs
    `python -I -S` (no site module: no .pth file runs, site-packages are not on sys.path unless the program puts
    them there; ~40 ms less per start where many packages are installed).
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be a str of Python source, got {type(code).__name__}")
    if not (timeout > 0):
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if not (isinstance(memory_mb, int) and memory_mb >= 32):
        raise ValueError(f"memory_mb must be an int >= 32 (the interpreter alone needs ~20 MB), got {memory_mb!r}")
    if cpu_time is not None and not (cpu_time > 0):
        raise ValueError(f"cpu_time must be > 0 seconds or None, got {cpu_time!r}")
    if max_output_bytes < 1 or max_processes < 1:
        raise ValueError("max_output_bytes and max_processes must be >= 1")
    files = dict(files or {})
    for name in files:
        if os.path.isabs(name) or ".." in name.split("/") or name in ("prog.py", ".stdin"):
            raise ValueError(f"files: {name!r} must be a relative path inside the run directory, not "
                             "prog.py/.stdin")
    data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
    mode = sandbox_mode(sandbox)
    return _run(_Spec(code, data, float(timeout), memory_mb, max_output_bytes, files, max_processes, cpu_time, site),
                namespace=(mode == "namespace"))


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def run_many(jobs, workers: int | None = None, *, sandbox: str | None = None, **kwargs) -> list[RunResult]:
    """Run many programs in parallel (threads driving subprocesses); results in the order of `jobs`.
    Each job is a `RunJob` or a plain code string; `kwargs` go to every `run_program` call."""
    jobs = [RunJob(j) if isinstance(j, str) else j for j in jobs]
    for j in jobs:
        if not isinstance(j, RunJob):
            raise TypeError(f"run_many: each job must be a RunJob or a code string, got {type(j).__name__}")
    sandbox_mode(sandbox)  # probe once, in this thread, before the pool starts
    workers = workers or usable_cores()

    def one(j: RunJob) -> RunResult:
        return run_program(j.code, j.stdin, j.timeout, j.memory_mb, files=j.files, sandbox=sandbox, **kwargs)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


def _init_config(spec: _Spec, workdir: str, uid: int | None, status_fd: int, namespace: bool) -> dict:
    # whole seconds (RLIMIT_CPU's unit), rounded up; the wall timer is the precise limit
    cpu_s = int(-(-(spec.cpu_time or spec.timeout) // 1)) + (0 if spec.cpu_time else 1)
    nproc = spec.max_processes
    if uid is None:
        # RLIMIT_NPROC counts every process of the real uid: without a private uid, allow what already runs
        nproc = count_own_processes() + spec.max_processes
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir,
           "PYTHONIOENCODING": "utf-8", "TMPDIR": workdir}
    return {
        "status_fd": status_fd, "workdir": workdir, "uid": uid, "namespace": namespace, "subreaper": True,
        "wall_s": spec.timeout, "env": env, "expose": _interpreter_paths(), "argv": [sys.executable, "-I"] + ([] if spec.site else ["-S"]) + [os.path.join(workdir, "prog.py")],
        "limits": {"cpu_s": cpu_s, "as_bytes": spec.memory_mb << 20, "fsize_bytes": max(64 << 20, spec.max_output_bytes),
                   "nproc": nproc},
    }


def _interpreter_paths() -> list[str]:
    """Directories the program's interpreter needs (its executable and its prefixes), as real paths."""
    paths = {os.path.dirname(os.path.realpath(sys.executable)), os.path.realpath(sys.prefix),
             os.path.realpath(sys.base_prefix)}
    return sorted(p for p in paths if p != "/")


def fallback_limits_processes() -> bool:
    """Does RLIMIT_NPROC bind programs in fallback mode? Not as root without a private uid (the interpreter is
    out of reach of other uids, e.g. under /root): root is exempt from RLIMIT_NPROC."""
    return os.geteuid() != 0 or all(map(_world_reachable, _interpreter_paths()))


def _world_reachable(path: str) -> bool:
    """Can a uid with no rights of its own reach `path` (execute bit for others on every ancestor)?"""
    cur = "/"
    for name in path.strip("/").split("/"):
        if not os.stat(cur).st_mode & 0o001:
            return False
        cur = os.path.join(cur, name)
    return True


def _run(spec: _Spec, namespace: bool) -> RunResult:
    uid = _take_uid()
    if uid is not None and not namespace and not fallback_limits_processes():
        # fallback mode cannot remount: a private uid could not even start the interpreter, so keep our own
        release_uid(uid)
        uid = None
    workdir = tempfile.mkdtemp(prefix="pt_run_")
    try:
        return _run_in(spec, namespace, uid, workdir)
    finally:
        if uid is not None and not namespace:
            kill_uid(uid, rounds=20)  # fallback as root: anything of that uid that escaped the group and the subreaper
        remove_tree(workdir)  # iterative: 3000 nested directories broke shutil.rmtree (RecursionError)
        release_uid(uid)


def _run_in(spec: _Spec, namespace: bool, uid: int | None, workdir: str) -> RunResult:
    with open(os.path.join(workdir, "prog.py"), "w", encoding="utf-8") as f:
        f.write(spec.code)
    for name, content in spec.files.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
    stdin_path = os.path.join(workdir, ".stdin")
    with open(stdin_path, "wb") as f:
        f.write(spec.stdin)
    if uid is not None:
        for root, dirs, names in os.walk(workdir):
            for n in [root] + [os.path.join(root, x) for x in dirs + names]:
                os.chown(n, uid, uid)
        os.chmod(workdir, 0o700)

    status_r, status_w = os.pipe()
    cfg = _init_config(spec, workdir, uid, status_w, namespace)
    cmd = [sys.executable, "-I", "-S", "-c", INIT_SOURCE, json.dumps(cfg)]
    if namespace:
        cmd = _unshare_cmd() + cmd
    mode = "namespace" if namespace else "fallback"
    t0 = time.monotonic()
    try:
        with open(stdin_path, "rb") as stdin_f:
            proc = subprocess.Popen(cmd, stdin=stdin_f, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(status_w,), start_new_session=True, cwd=workdir)
    except OSError as exc:
        os.close(status_r)
        os.close(status_w)
        return RunResult("", "", None, error=f"cannot start the sandbox: {exc}", sandbox=mode)
    os.close(status_w)
    status_buf = bytearray()
    try:
        out, err, truncated, backstop = _collect(proc, spec, t0)
    finally:
        status_buf += drain(status_r)
        _kill_tree(proc, namespace, _status_lines(status_buf).get("started"))
    wall = time.monotonic() - t0
    status_buf += drain(status_r)
    os.close(status_r)
    status = _status_lines(status_buf)
    status.pop("started", None)

    stdout = out.decode("utf-8", errors="replace")
    stderr = err.decode("utf-8", errors="replace")
    res = RunResult(stdout, stderr, None, wall_time=wall, output_truncated=truncated, sandbox=mode)
    if "setup_error" in status:
        res.error = f"sandbox setup failed: {status['setup_error']}"
        return res
    if status:
        res.returncode = status["exit_code"]
        res.signal = status["signal"]
        res.timed_out = bool(status["timed_out"]) or res.signal == signal.SIGXCPU
        res.wall_time = status["wall_s"]
        res.cpu_time = status["cpu_s"]
        res.max_rss_mb = status["max_rss_kb"] / 1024.0
    elif truncated:
        res.signal = int(signal.SIGKILL)
    elif backstop:
        res.signal, res.timed_out = int(signal.SIGKILL), True
    elif not namespace and proc.returncode is not None and proc.returncode < 0:
        res.signal = -proc.returncode  # fallback mode: the program killed its supervisor (same uid)
    else:
        res.error = f"sandbox ended without a status (exit {proc.returncode}); stderr: {stderr[-300:]!r}"
    if res.timed_out and res.returncode is None and res.signal is None:
        res.signal = int(signal.SIGKILL)
    tail = stderr[-2000:]
    res.memory_exceeded = "MemoryError" in tail or "Cannot allocate memory" in tail
    return res


def _collect(proc: subprocess.Popen, spec: _Spec, t0: float):
    """Read stdout/stderr until both close or the program ends. Returns (out, err, truncated, backstop_fired).

    Stops at the first stream over the cap; after the sandbox exits, drains only what is already buffered (in
    fallback mode an escaped grandchild may hold the pipes open forever)."""
    deadline = t0 + spec.timeout + _BACKSTOP_SLACK_S
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    for fd in bufs:
        os.set_blocking(fd, False)
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    cap = spec.max_output_bytes
    truncated = backstop = False
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                backstop = True
                break
            exited = _exited(proc)
            for key, _ in sel.select(timeout=0 if exited else min(0.1, deadline - now)):
                chunk = read_some(key.fd)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                buf += chunk
                if len(buf) > cap:
                    del buf[cap:]
                    truncated = True
            if truncated or exited:
                if exited and not truncated:  # drain what is buffered, without waiting for more
                    for fd in list(sel.get_map()):
                        while True:
                            chunk = read_some(fd)
                            if not chunk:
                                break
                            bufs[fd] += chunk
                            if len(bufs[fd]) > cap:
                                del bufs[fd][cap:]
                                truncated = True
                                break
                break
    finally:
        sel.close()
    return bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]), truncated, backstop






def _status_lines(data: bytes) -> dict:
    """The init's JSON lines merged: {'started': program pid} then the final status."""
    out: dict = {}
    for line in bytes(data).decode(errors="replace").splitlines():
        try:
            out.update(json.loads(line))
        except ValueError:
            pass
    return out


def _kill_tree(proc: subprocess.Popen, namespace: bool, program_pid: int | None) -> None:
    """Leave nothing running. In namespace mode kill the init first: its exit tears the namespace down, and
    `unshare` (its parent, which we then wait for) returns only after that is complete."""
    if namespace and not _exited(proc):
        for child in _children(proc.pid):
            send_signal(child, signal.SIGKILL)
        for _ in range(500):  # unshare waits for the namespace to be torn down, then exits
            if _exited(proc):
                break
            time.sleep(0.01)
    # The sandbox's first process is not reaped yet (see _exited), so its pid, the group id, cannot have been
    # reused: killing the group is safe, and catches what an init killed by the program left (fallback mode).
    kill_group(proc.pid)
    if not namespace and program_pid:
        kill_group(program_pid)  # fallback: the program's own group, in case the program killed its init
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        stream.close()


def _exited(proc: subprocess.Popen) -> bool:
    """Has the process ended? Unlike Popen.poll this leaves the zombie unreaped, so its pid stays ours."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []





