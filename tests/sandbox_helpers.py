"""Shared by the warm-sandbox tests: which isolation modes this machine can test, and the checks that a
sandbox left nothing behind."""
import os
import sys
import time

from prompt_tree.tasks.sandbox.config import SandboxConfig
from prompt_tree.tasks.sandbox.detect import probe
from prompt_tree.tasks.sandbox.host import WarmSandbox
from prompt_tree.tasks.sandbox.zygote_host import zygote_for

IS_ROOT = os.geteuid() == 0
_probes: dict = {}


def available(isolation: str) -> str | None:
    """None if `isolation` works here, else why not (cached)."""
    if isolation not in _probes:
        _probes[isolation] = probe(isolation, SandboxConfig(isolation=isolation))
    return _probes[isolation]


def sealed_modes() -> list[str]:
    """The sealed modes to test: the full sandbox as root (fresh uid) and the non-root path (as root forced to
    uid nobody); as a non-root user, the one path there is."""
    return ["namespace", "userns"] if IS_ROOT else ["userns"]


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every live descendant of `pid`."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            for k in kids:
                try:
                    with open(f"/proc/{k}/stat") as f:
                        state = f.read().rsplit(")", 1)[1].split()[0]
                except OSError:
                    continue
                out.append((k, state))
                todo.append(k)
    return out


def assert_zygote_idle(isolation: str, config: SandboxConfig | None = None, timeout: float = 5.0) -> None:
    """Every process a sandbox made is gone: the zygote (every sandbox's ancestor and subreaper) has no live
    descendant left (zombies waiting for its next reap are dead already)."""
    config = config or SandboxConfig(isolation=isolation)
    zygotes = [z for z in (zygote_for(isolation, config, numpy) for numpy in (False, True)) if z.proc is not None]
    deadline = time.monotonic() + timeout
    while True:
        live = [(p, s) for z in zygotes for p, s in descendants(z.proc.pid) if s != "Z"]
        if not live:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes left behind the sandbox: {live}")
        time.sleep(0.05)


def run_tests(source: str, inputs: list[bytes], isolation: str, timeout: float = 2.0, config=None, kind="stdin",
              fn_name=None, cap: int = 1 << 20):
    """Start a WarmSandbox and run each input; returns (started, [(TestRun, stdout bytes)])."""
    config = config or SandboxConfig(isolation=isolation)
    out = []
    with WarmSandbox(source, kind, fn_name, timeout, isolation=isolation, config=config) as box:
        started = box.start()
        if started.ok:
            for i, data in enumerate(inputs):
                buf = bytearray()
                if kind == "stdin":
                    run = box.run_stdin(i, data, timeout, buf.extend, cap)
                else:
                    run = box.call(i, data, timeout)
                out.append((run, bytes(buf)))
    return started, out


PY = sys.executable
