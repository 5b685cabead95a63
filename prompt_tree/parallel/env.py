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
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping

# Environment variables that override DistTimeouts' defaults (seconds).
TIMEOUT_ENV = "PT_DIST_TIMEOUT"
DEAD_AFTER_ENV = "PT_DIST_DEAD_AFTER"
HEARTBEAT_ENV = "PT_DIST_HEARTBEAT"
# Exit status of a rank that stops because another rank failed (distinct from its own errors: 1 and 2).
PEER_FAILED_EXIT = 3


class ParallelError(ValueError):
    """A parallel setup that cannot run: world size, --tp, model shapes, a missing torchrun. Says the fix."""


class RankFailedError(RuntimeError):
    """Another rank failed or stopped responding; `rank` names it and the message says what is known."""

    def __init__(self, rank: int, message: str):
        super().__init__(message)
        self.rank = rank


@dataclass(frozen=True)
class ParallelLayout:
    """Which tensor-parallel and data-parallel group a rank belongs to. tp x dp = world_size."""

    world_size: int
    rank: int
    tp: int = 1

    def __post_init__(self) -> None:
        for name in ("world_size", "tp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParallelError(f"{name} must be an int >= 1, got {value!r}")
        if not 0 <= self.rank < self.world_size:
            raise ParallelError(f"rank {self.rank} is outside the world of {self.world_size} processes")
        if self.world_size % self.tp:
            raise ParallelError(
                f"the world size {self.world_size} is not divisible by --tp {self.tp}: start tp x dp processes, "
                f"e.g. torchrun --nproc-per-node {self.tp * max(1, self.world_size // self.tp)} ... --tp {self.tp}")

    @property
    def dp(self) -> int:
        """Number of data-parallel groups."""
        return self.world_size // self.tp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.tp

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def is_writer(self) -> bool:
        """Only TP rank 0 of each group writes results (its TP peers compute the same tokens)."""
        return self.tp_rank == 0

    def tp_ranks(self, dp_rank: int) -> list[int]:
        """Global ranks of data-parallel group `dp_rank`'s tensor-parallel group."""
        return list(range(dp_rank * self.tp, (dp_rank + 1) * self.tp))


@dataclass(frozen=True)
class TorchrunEnv:
    """The variables torchrun (torch.distributed.run) sets for each worker."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    restart_count: int = 0
    agent_store: bool = False  # the launcher's agent hosts the store (torchrun); else rank 0 hosts it

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> "TorchrunEnv | None":
        """The worker's variables, or None when the process was not started by torchrun (no RANK/WORLD_SIZE)."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env and "RANK" not in env:
            return None

        def need(name: str, default: str | None = None) -> str:
            if name not in env and default is None:
                raise ParallelError(f"torchrun variable {name} is not set (RANK, WORLD_SIZE, MASTER_ADDR and "
                                    f"MASTER_PORT are needed): start the command with torchrun")
            return env.get(name, default)

        def integer(name: str, default: str | None = None) -> int:
            text = need(name, default)
            try:
                return int(text)
            except ValueError:
                raise ParallelError(f"torchrun variable {name}={text!r} is not an integer") from None

        world = integer("WORLD_SIZE")
        return cls(
            rank=integer("RANK"), local_rank=integer("LOCAL_RANK", "0"), world_size=world,
            local_world_size=integer("LOCAL_WORLD_SIZE", str(world)),
            master_addr=need("MASTER_ADDR", "127.0.0.1" if world == 1 else None),
            master_port=integer("MASTER_PORT", "29500" if world == 1 else None),
            restart_count=integer("TORCHELASTIC_RESTART_COUNT", "0"),
            agent_store=env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true",
        )


@dataclass(frozen=True)
class DistTimeouts:
    """collective_s: process-group creation and each collective (gloo raises, NCCL's watchdog aborts) and the
    store's blocking reads. heartbeat_s: how often each rank says it is alive. dead_after_s: a rank silent that
    long is taken as dead. It bounds how long the others take to stop, and must exceed the longest stall of a
    live rank's Python threads."""

    collective_s: float = 600.0
    heartbeat_s: float = 1.0
    dead_after_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("collective_s", "heartbeat_s", "dead_after_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ParallelError(f"DistTimeouts.{name} must be > 0 seconds, got {value!r}")
        if self.dead_after_s <= 2 * self.heartbeat_s:
            raise ParallelError(f"dead_after_s ({self.dead_after_s}) must exceed two heartbeats "
                                f"({2 * self.heartbeat_s} s)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DistTimeouts":
        env = os.environ if environ is None else environ
        values = {}
        for field, name in (("collective_s", TIMEOUT_ENV), ("heartbeat_s", HEARTBEAT_ENV),
                            ("dead_after_s", DEAD_AFTER_ENV)):
            if env.get(name):
                try:
                    values[field] = float(env[name])
                except ValueError:
                    raise ParallelError(f"{name}={env[name]!r} is not a number of seconds") from None
        return cls(**values)


def pick_device(requested: str | None, env: TorchrunEnv):
    """This rank's device: cuda:LOCAL_RANK when CUDA is there (or "cuda" is asked for), else cpu."""
    import torch

    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParallelError(f"device {requested!r} requested but CUDA is not available; use --device cpu")
        if device.index is not None and env.local_world_size > 1:
            raise ParallelError(f"--device {requested} names one GPU for {env.local_world_size} processes on this "
                                f"host; pass --device cuda and each rank takes cuda:LOCAL_RANK")
        if device.index is None:  # one GPU per process, by local rank (torchrun's convention)
            if env.local_rank >= torch.cuda.device_count():
                raise ParallelError(f"local rank {env.local_rank} has no GPU: this host has "
                                    f"{torch.cuda.device_count()}; start at most that many processes per node")
            device = torch.device("cuda", env.local_rank)
    return device


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

    def wait_for_all(self, poll_s: float = 0.2) -> None:
        """Rank 0: wait until every other rank has finished. No timeout of its own: a slow data-parallel group
        is waited for as long as it keeps its heartbeat; one that dies or fails stops this rank (the monitor)."""
        from .health import read_status

        waiting = [r for r in range(self.layout.world_size) if r != self.rank]
        while waiting:
            still = []
            for r in waiting:
                status = read_status(self.store, r) or {"state": "running"}
                if status["state"] == "failed":
                    raise RankFailedError(int(status.get("rank", r)), status.get("why") or f"rank {r} failed")
                if status["state"] != "done":
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
        from .health import read_status

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

    from .health import Monitor

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
