"""Host-side process chores shared by both sandboxes (the warm one in host.py, the per-test one in
prompt_tree/tasks/execution.py): private uids for programs run as root, killing every process of such a uid, reads that
never block, and the count of this uid's processes that a shared uid's RLIMIT_NPROC must start from. Stdlib
only: the warm sandbox's zygote uses it too.

One uid pool for both: a warm and a per-test sandbox running side by side must never get the same uid, or
RLIMIT_NPROC (counted per uid) would let one program's fork bomb starve the other, and killing one run's uid would
kill the other's processes.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time

# Fresh uids for the programs come from here: far above login uids (< 65536) and the usual subuid ranges.
UID_BASE, UID_SPAN = 3_000_000, 1_000_000

_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def take_uid() -> int:
    """A uid no other live run of this process holds (release it with release_uid)."""
    with _uid_lock:
        while True:
            uid = UID_BASE + random.randrange(UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def release_uid(uid: int | None) -> None:
    if uid is not None:
        with _uid_lock:
            _uids_in_use.discard(uid)


def send_signal(pid: int, sig: int) -> None:
    """os.kill that ignores a process already gone (or never ours)."""
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def kill_uid(uid: int, rounds: int = 50) -> None:
    """SIGKILL every process whose real uid is `uid`, until none is left (a fork bomb refills the table while it
    is scanned, hence the rounds). Only for a run's private uid: nothing else ever runs as it."""
    for _ in range(rounds):
        found = False
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) == uid:
                                found = True
                                send_signal(int(p), signal.SIGKILL)
                            break
            except (OSError, ValueError):
                pass
        if not found:
            return
        time.sleep(0.01)


def read_some(fd: int) -> bytes:
    """Up to 64 KiB from a non-blocking fd; b"" when nothing is there or the fd is closed or broken."""
    try:
        return os.read(fd, 1 << 16)
    except OSError:  # BlockingIOError and InterruptedError included
        return b""


def drain(fd: int) -> bytes:
    """All the pipe holds now, without waiting for more."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        chunk = read_some(fd)
        if not chunk:
            return data
        data += chunk


def count_own_processes() -> int:
    """Live processes of this process's uid. RLIMIT_NPROC counts every process of the uid, so a program that runs
    under a uid it shares (no private uid) gets this many plus its own allowance."""
    me, n = os.getuid(), 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}").st_uid == me:
                    n += 1
            except OSError:
                pass
    return n
