"""torchrun's environment, the tensor- and data-parallel layout of the ranks, process groups, and their errors.

    torchrun --nproc-per-node 4 -m prompt_tree.cli apps --tp 2 ...   # 2 data-parallel groups of 2 TP ranks

Ranks are laid out TP-major: rank = dp_rank * tp + tp_rank. torchrun numbers one host's processes
consecutively, so a TP group stays on one host and its per-layer all-reduces on NVLink; data-parallel groups
never talk to each other while generating (they meet only through the rendezvous store at the start and end).

Without torchrun's variables (a plain `prompt-tree apps`), or with a world of one process, `init_distributed`
returns None and the caller runs exactly as a single process always has.

Failure handling: the process group is created with a timeout (`DistTimeouts.collective_s`: gloo's per-call
timeout, NCCL's watchdog), and every rank runs a heartbeat through the rendezvous store (health.py) so that a rank
that dies or fails makes the others stop within `DistTimeouts.dead_after_s`, with a message naming it, instead of
waiting in a collective forever.
"""
from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any, Callable, Mapping

from .health import Monitor, read_status
from .layout import (DEAD_AFTER_ENV, HEARTBEAT_ENV, PEER_FAILED_EXIT, TIMEOUT_ENV, DistTimeouts,  # noqa: F401
                     ParallelError, ParallelLayout, RankFailedError, TorchrunEnv, pick_device)

class DistContext:
    """This rank's place in the run: layout, device, process groups, the rendezvous store and the heartbeat.

    tp_group: the NCCL/gloo group of this rank's tensor-parallel peers (None when tp == 1).
    The store carries everything that is not tensor maths: rank 0's start-up decision (`share`), each rank's
    finishing status and results (`finish`, `wait_for_all`, `collect`), and heartbeats.
    """

    def __init__(self, layout: ParallelLayout, env: TorchrunEnv, device, backend: str, tp_group, store,
                 timeouts: DistTimeouts, monitor):
        self.layout, self.env, self.device, self.backend = layout, env, device, backend
        self.tp_group, self.store, self.timeouts, self.monitor = tp_group, store, timeouts, monitor
        self._closed = False

    @property
    def rank(self) -> int:
        return self.layout.rank

    # ----- rank 0 decides, everyone learns

    def share(self, key: str, compute: Callable[[], Any]) -> Any:
        """Run compute() on rank 0 and return its (JSON-safe) result on every rank. If it raises, rank 0
        re-raises it and the other ranks raise RankFailedError(0, ...) with its message."""
        if self.rank == 0:
            try:
                value = compute()
            except Exception as e:
                self.store.set(f"share/{key}", json.dumps({"error": f"{type(e).__name__}: {e}"}))
                raise
            self.store.set(f"share/{key}", json.dumps({"value": value}))
            return value
        payload = json.loads(self.store.get(f"share/{key}"))  # blocks until rank 0 has set it
        if "error" in payload:
            raise RankFailedError(0, f"rank 0 could not start the run: {payload['error']}")
        return payload["value"]

    # ----- finishing

    def publish(self, key: str, value: Any) -> None:
        """Leave a JSON-safe result for rank 0 (`collect`)."""
        self.store.set(f"result/{key}/{self.rank}", json.dumps(value))

    def collect(self, key: str, ranks: list[int]) -> dict[int, Any]:
        """Results `publish`ed under `key` by `ranks` (call after wait_for_all)."""
        return {r: json.loads(self.store.get(f"result/{key}/{r}")) for r in ranks}

    def wait_published(self, key: str, ranks: list[int]) -> dict[int, Any]:
        """Rank 0: the results `ranks` publish under `key`, waiting as long as they keep their heartbeat (a
        data-parallel group may generate for hours: a plain store get would time out). A rank that fails, dies,
        or finishes without publishing stops this one, naming it."""
        self._poll(ranks, lambda r: f"result/{key}/{r}")
        return self.collect(key, list(ranks))

    def announce(self, key: str, value: Any = True) -> None:
        """Tell every rank something they may wait for far longer than a store get allows (rank 0's word that the
        run's records are merged, comes when the slowest group ends); read with wait_announced."""
        self.store.set(f"announce/{key}", json.dumps(value))

    def wait_announced(self, key: str, owner: int) -> Any:
        """What `owner` announces under `key`, waiting as long as it keeps its heartbeat (as wait_published)."""
        self._poll([owner], lambda r: f"announce/{key}")
        return json.loads(self.store.get(f"announce/{key}"))

    def wait_for_all(self) -> None:
        """Rank 0: wait until every other rank has finished. No timeout of its own: a slow data-parallel group
        is waited for as long as it keeps its heartbeat; one that dies or fails stops this rank (the monitor)."""
        self._poll([r for r in range(self.layout.world_size) if r != self.rank])

    def _poll(self, ranks: list[int], key_of: Callable[[int], str] | None = None, poll_s: float = 0.2) -> None:
        """Until every rank r in `ranks` has set the store key key_of(r) or, without key_of, has finished. A rank
        whose status says failed raises RankFailedError naming the culprit, as does one that finished without
        setting its key (it never will) and a failure the heartbeat monitor found."""
        waiting = list(ranks)
        while waiting:
            still = []
            for r in waiting:
                key = key_of(r) if key_of is not None else None
                if key is not None and self.store.check([key]):
                    continue
                status = read_status(self.store, r) or {"state": "running"}
                if status["state"] == "failed":
                    raise RankFailedError(int(status.get("rank", r)), status.get("why") or f"rank {r} failed")
                if status["state"] == "done":
                    if key is None or self.store.check([key]):  # (set between the two reads)
                        continue
                    raise RankFailedError(r, f"rank {r} finished without setting {key!r}")
                if self.monitor.failure is not None:
                    raise RankFailedError(*self.monitor.failure)
                still.append(r)
            waiting = still
            if waiting:
                time.sleep(poll_s)

    def finish(self) -> None:
        """This rank is done: say so, stop the heartbeat, leave the process group. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # Stop watching first: once the others see "done" they may exit, and with a store hosted by rank 0 its
        # exit would look like a failure to a monitor still running here.
        self.monitor.stop()
        self.monitor.set_status("done")
        _destroy_groups()

    def fail(self, exc: BaseException) -> None:
        """Record that this rank failed (the others' monitors then stop them, naming this rank)."""
        if self._closed:
            return
        self._closed = True
        self.monitor.stop()
        if isinstance(exc, RankFailedError):  # not this rank's fault: pass the culprit on
            self.monitor.set_status("failed", culprit=exc.rank, why=str(exc))
        else:
            self.monitor.set_status("failed", why=f"rank {self.rank} failed: {type(exc).__name__}: {exc}"[:2000])

    def explain(self, exc: BaseException) -> BaseException:
        """The error to report for `exc` raised on this rank: a RankFailedError naming the rank at fault when a
        peer failed or died (a collective then fails here too, with a message that names nobody), else exc."""
        if isinstance(exc, RankFailedError):
            return exc
        import torch.distributed as dist

        communication = isinstance(exc, getattr(dist, "DistError", ())) or any(
            word in str(exc) for word in ("Connection", "gloo", "NCCL", "Socket", "socket", "timed out"))
        if not communication:  # this rank's own error (the others may have hit the same one: each reports it)
            return exc
        # A failed peer posts its status within a heartbeat; a dead one is only known after dead_after_s.
        found = self._find_failure(self.timeouts.dead_after_s + 2 * self.timeouts.heartbeat_s)
        if found is None:
            return exc
        rank, why = found
        return RankFailedError(rank, why)

    def _find_failure(self, wait_s: float) -> tuple[int, str] | None:
        """(rank, why) of a failed peer, looking for up to wait_s seconds (the monitor's findings included)."""

        deadline = time.monotonic() + wait_s
        while True:
            if self.monitor.failure is not None:
                return self.monitor.failure
            for r in range(self.layout.world_size):
                if r == self.rank:
                    continue
                try:
                    status = read_status(self.store, r)
                except Exception:
                    return None
                if status is not None and status.get("state") != "done":
                    return int(status.get("rank", r)), status.get("why") or f"rank {r} failed"
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(0.2, self.timeouts.heartbeat_s))


def init_distributed(tp: int = 1, device: str | None = None, timeouts: DistTimeouts | None = None,
                     environ: Mapping[str, str] | None = None) -> DistContext | None:
    """Join the run torchrun started: process group (NCCL on GPUs, gloo on CPU), TP subgroups, heartbeat.

    Returns None for a single process (no torchrun variables, or a world of one) with tp == 1: the caller then
    runs as it always has. ParallelError for --tp > 1 without torchrun, or a world size --tp does not divide.
    """
    env = TorchrunEnv.read(environ)
    if env is None or env.world_size == 1:
        if tp != 1:
            raise ParallelError(
                f"--tp {tp} needs {tp} processes: start the command with torchrun, e.g. "
                f"torchrun --nproc-per-node {tp} -m prompt_tree.cli ... --tp {tp}")
        return None
    layout = ParallelLayout(env.world_size, env.rank, tp)
    timeouts = timeouts or DistTimeouts.from_env(environ)
    import torch
    import torch.distributed as dist


    device = pick_device(device, env)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=timeouts.collective_s)
    # The launcher's agent hosts the store under torchrun; a bare set of processes (tests, other launchers)
    # has rank 0 host it. Keys are prefixed per restart attempt, as torchrun's own env:// rendezvous does.
    tcp = dist.TCPStore(env.master_addr, env.master_port, env.world_size if not env.agent_store else None,
                        is_master=env.rank == 0 and not env.agent_store, timeout=timeout,
                        wait_for_workers=False)
    prefix = f"prompt_tree/attempt_{env.restart_count}/"
    store = dist.PrefixStore(prefix, tcp)
    # device_id binds NCCL's communicator to this rank's GPU (no guessing the GPU from the rank).
    dist.init_process_group(backend, store=dist.PrefixStore("pg", store), rank=env.rank,
                            world_size=env.world_size, timeout=timeout,
                            device_id=device if device.type == "cuda" else None)
    tp_group = None
    if tp > 1:
        for d in range(layout.dp):  # every rank creates every group, in the same order (new_group's contract)
            group = dist.new_group(layout.tp_ranks(d), timeout=timeout)
            if d == layout.dp_rank:
                tp_group = group
    monitor = Monitor(env, prefix, timeouts)
    monitor.start()
    return DistContext(layout, env, device, backend, tp_group, store, timeouts, monitor)


def _destroy_groups() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def run_guarded(ctx: DistContext, work: Callable[[], Any]) -> Any:
    """work() on this rank, then `ctx.finish()`. On failure the others are told (ctx.fail) and the error to
    report is raised: a RankFailedError naming the rank at fault when another rank failed first (the error here
    is then only its echo, e.g. a broken collective), else work's own error."""
    try:
        result = work()
    except BaseException as e:
        err = ctx.explain(e)
        ctx.fail(err)
        if err is e:
            raise
        raise err from e
    ctx.finish()
    return result
