"""Which isolation this machine gives: probe once per process, warn once when it has to fall back.

"auto" tries the full sandbox first ("namespace": as root with a fresh uid; as another user through an
unprivileged user namespace) by running a one-line program in it, and falls back to "fallback" only if that
fails, with a RuntimeWarning that says why and what the program can then reach. An explicit mode is used as
given (a forced "fallback" warns too; a mode that cannot work raises SandboxError at the first program).
"""
from __future__ import annotations

import os
import sys
import threading
import warnings

from prompt_tree.tasks.sandbox.config import SandboxConfig
from prompt_tree.tasks.sandbox.host import WarmSandbox
from prompt_tree.tasks.sandbox.zygote_host import SandboxError

_lock = threading.Lock()
_cache: dict[str, str] = {}
_warned: set[str] = set()

FALLBACK_WARNING = ("programs run without namespaces: they see the host's files, network and processes, "
                    "limited by rlimits and a new session only")


def resolve_isolation(config: SandboxConfig) -> str:
    """'namespace', 'userns' or 'fallback' for config.isolation (see prompt_tree.tasks.sandbox.config)."""
    iso = config.isolation
    if iso == "namespace" and os.geteuid() != 0:
        iso = "userns"  # without root the full sandbox is the user-namespace one
    if iso == "fallback":
        _warn_once("forced", f"sandbox: fallback mode forced: {FALLBACK_WARNING}")
        return iso
    if iso != "auto":
        return iso
    with _lock:
        if "auto" not in _cache:
            wanted = "namespace" if os.geteuid() == 0 else "userns"
            why = probe(wanted, config)
            if why is None:
                _cache["auto"] = wanted
            else:
                _cache["auto"] = "fallback"
                _warn_once("auto", f"sandbox: user namespaces unavailable here ({why}); {FALLBACK_WARNING}")
        return _cache["auto"]


def probe(isolation: str, config: SandboxConfig) -> str | None:
    """None if a program runs in `isolation` here, else why not."""
    if sys.platform != "linux":
        return f"platform {sys.platform}"
    if not hasattr(os, "pidfd_open") or not hasattr(os, "memfd_create"):
        return "needs Linux >= 5.3 and Python >= 3.9 (pidfd_open, memfd_create)"
    try:
        with WarmSandbox("print(6 * 7)", "stdin", None, 10.0, isolation=isolation, config=config) as sb:
            started = sb.start()
            if not started.ok:
                return f"probe program did not start: {started}"
            out = bytearray()
            run = sb.run_stdin(0, b"", 10.0, out.extend, 1 << 10)
            if run.broken or run.exit_code != 0 or bytes(out) != b"42\n":
                return f"probe program misbehaved: {run} stdout={bytes(out)!r}"
    except (SandboxError, OSError) as exc:
        return str(exc)[:500]
    return None


def _warn_once(key: str, message: str) -> None:
    with _lock if key != "auto" else _nullcontext():
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
