"""Heartbeats through the rendezvous store, so that a rank that fails or dies stops the others with its name.

A collective waiting for a dead peer either hangs until its timeout (NCCL) or fails with a socket error that
names no rank (gloo); a monitored barrier would need every rank at the same point, which data-parallel groups
never are. Instead each rank runs one thread that, every `heartbeat_s`:

    increments its counter  hb/<rank>
    reads every peer's      status/<rank>   {"state": "done"} or {"state": "failed", "rank": culprit, "why": ...}
    and every peer's counter, noting when it last moved (local clock: no cross-host clock comparison)

A peer whose status says failed, or whose counter has not moved for `dead_after_s`, is a failure: the thread
prints which rank and why, and ends this process with PEER_FAILED_EXIT (os._exit, since the main thread may be
blocked inside a collective that cannot be interrupted). Results are appended and flushed as they are produced,
so what this rank wrote is kept. A peer that has posted "done" may exit without being missed.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import timedelta
from typing import Callable

from .layout import PEER_FAILED_EXIT, DistTimeouts, TorchrunEnv


def status_key(rank: int) -> str:
    return f"status/{rank}"


def read_status(store, rank: int) -> dict | None:
    """A rank's posted status, or None (still running). Non-blocking: `get` would wait for a missing key."""
    key = status_key(rank)
    if not store.check([key]):
        return None
    return json.loads(store.get(key))


class Monitor:
    """The heartbeat thread of one rank (see the module docstring). `failure` holds (rank, why) once found."""

    def __init__(self, env: TorchrunEnv, prefix: str, timeouts: DistTimeouts,
                 on_failure: Callable[[int, str], None] | None = None):
        import torch.distributed as dist

        self.env, self.timeouts = env, timeouts
        self.rank = env.rank
        # Its own connection: the main thread's store client is busy in blocking reads at times.
        client = dist.TCPStore(env.master_addr, env.master_port, is_master=False,
                               timeout=timedelta(seconds=min(timeouts.collective_s, timeouts.dead_after_s)))
        self.store = dist.PrefixStore(prefix, client)
        self.on_failure = on_failure or self._exit
        self.failure: tuple[int, str] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"prompt-tree-heartbeat-{self.rank}", daemon=True)
        now = time.monotonic()
        self._seen = {r: (-1, now) for r in range(env.world_size) if r != self.rank}  # rank -> (count, since)

    def start(self) -> None:
        self.store.add(f"hb/{self.rank}", 1)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5 * self.timeouts.heartbeat_s)

    def set_status(self, state: str, culprit: int | None = None, why: str = "") -> None:
        """Post this rank's status ("done", or "failed" with the rank at fault and why); call after stop()."""
        value = {"state": state}
        if state != "done":
            value.update(rank=self.rank if culprit is None else culprit, why=why)
        try:
            self.store.set(status_key(self.rank), json.dumps(value))
        except Exception:  # the store is gone (its host died): nobody is left to tell
            pass

    # ----- the thread

    def _run(self) -> None:
        while not self._stop.wait(self.timeouts.heartbeat_s):
            found = self.check_once()
            if found is not None and not self._stop.is_set():
                self.failure = found
                self.on_failure(*found)
                return

    def check_once(self) -> tuple[int, str] | None:
        """Beat once and look at every peer; (rank, why) of a failure, or None."""
        try:
            self.store.add(f"hb/{self.rank}", 1)
            now = time.monotonic()
            for r, (count, since) in list(self._seen.items()):
                status = read_status(self.store, r)
                if status is not None:
                    if status.get("state") == "done":
                        del self._seen[r]  # finished: it may exit now without being missed
                        continue
                    culprit = int(status.get("rank", r))
                    return culprit, status.get("why") or f"rank {culprit} failed"
                current = self.store.add(f"hb/{r}", 0)
                if current != count:
                    self._seen[r] = (current, now)
                elif now - since > self.timeouts.dead_after_s:
                    return r, (f"rank {r} stopped responding: no heartbeat for {now - since:.0f} s "
                               f"(killed, crashed, or hung outside Python)")
        except Exception as e:  # the store itself is unreachable
            host = "torchrun's agent" if self.env.agent_store else "rank 0"
            culprit = 0 if not self.env.agent_store else -1
            return culprit, (f"lost contact with the rendezvous store at {self.env.master_addr}:"
                             f"{self.env.master_port}, hosted by {host} ({type(e).__name__}: {e})")
        return None

    def _exit(self, rank: int, why: str) -> None:
        print(f"prompt-tree: rank {self.rank} stops: {why}\n"
              f"prompt-tree: results written so far are kept; run the same command again to resume.",
              file=sys.stderr, flush=True)
        os._exit(PEER_FAILED_EXIT)
