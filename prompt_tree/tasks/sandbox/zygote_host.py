"""The host's zygotes of the warm sandbox: one zygote process (prompt_tree.tasks.sandbox.zygote) per isolation mode,
package set, run-as uid and numpy choice, started on first use, restarted once if it died, closed at exit.
WarmSandbox (host.py) asks one to fork a program's sandbox.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import threading

from prompt_tree.tasks.sandbox import wire
from prompt_tree.tasks.sandbox.config import SandboxConfig, interpreter_paths

# the directory that holds the prompt_tree package (a checkout or site-packages): the zygote imports its code from it
IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ZYGOTE_START_TIMEOUT_S = 60.0
MIN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": "/"}


class SandboxError(RuntimeError):
    """The sandbox itself cannot work here (not the candidate program's doing): verdicts would be meaningless."""


class Zygote:
    """One zygote process (prompt_tree.tasks.sandbox.zygote) for one isolation mode, package set and numpy choice: numpy
    adds ~12 MB to every fork (~0.9 ms per fork here), so programs that never mention it fork from a zygote
    without it (numpy stays importable there, at its import cost)."""

    def __init__(self, isolation: str, packages: tuple[str, ...], run_as: int | None, numpy: bool):
        self.isolation, self.packages, self.run_as, self.numpy = isolation, packages, run_as, numpy
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.info: dict = {}

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        interp = interpreter_paths()
        cfg = {"request_fd": child.fileno(), "root": IMPORT_ROOT, "isolation": self.isolation,
               "packages": list(self.packages), "run_as": self.run_as, "numpy": self.numpy,
               "extra_sys_path": interp["site"], "staging": "/tmp" if os.path.isdir("/tmp") else "/mnt"}
        boot = f"import sys; sys.path.insert(0, {IMPORT_ROOT!r}); from prompt_tree.tasks.sandbox.zygote import main; main()"
        try:
            proc = subprocess.Popen([interp["executable"], "-I", "-S", "-X", "utf8", "-c", boot, json.dumps(cfg)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    pass_fds=(child.fileno(),), env=dict(MIN_ENV), start_new_session=True)
        finally:
            child.close()
        parent.settimeout(ZYGOTE_START_TIMEOUT_S)
        try:
            msg, _ = wire.recv_message(parent)
        except (OSError, wire.ProtocolError) as exc:
            msg = {"ev": "zygote_error", "error": f"no answer ({exc})"}
        parent.settimeout(None)
        if not msg or msg.get("ev") != "zygote_ready":
            proc.kill()
            proc.wait()
            parent.close()
            why = (msg or {}).get("error", "it exited at start")
            raise SandboxError(f"the sandbox zygote ({self.isolation}) did not start: {why}")
        self.proc, self.sock, self.info = proc, parent, msg

    def spawn(self, request: dict, fds: list[int]) -> None:
        """Send one spawn request (restarting the zygote once if it died)."""
        with self.lock:
            for attempt in (0, 1):
                if self.proc is None or self.proc.poll() is not None:
                    self._close_locked()
                    self._start()
                try:
                    wire.send_message(self.sock, request, fds)
                    return
                except OSError:
                    self._close_locked()
                    if attempt:
                        raise SandboxError("the sandbox zygote stopped answering") from None

    def _close_locked(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        with self.lock:
            self._close_locked()


_zygotes: dict[tuple, Zygote] = {}
_zygotes_lock = threading.Lock()


def zygote_for(isolation: str, config: SandboxConfig, numpy: bool = False) -> Zygote:
    numpy = numpy and "numpy" in config.packages
    key = (isolation, config.packages, config.zygote_run_as(isolation), numpy)
    with _zygotes_lock:
        z = _zygotes.get(key)
        if z is None:
            z = _zygotes[key] = Zygote(isolation, config.packages, key[2], numpy)
        return z


def live_zygote_pids() -> list[int]:
    """Pids of this process's running zygotes (the benchmark reads their CPU time, children included)."""
    with _zygotes_lock:
        return [z.proc.pid for z in _zygotes.values() if z.proc is not None and z.proc.poll() is None]


@atexit.register
def _close_zygotes() -> None:
    with _zygotes_lock:
        for z in _zygotes.values():
            z.close()
        _zygotes.clear()
