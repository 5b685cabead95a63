"""torchrun's environment and the tensor- and data-parallel layout of the ranks: plain data, no process groups.

Ranks are laid out TP-major: rank = dp_rank * tp + tp_rank. torchrun numbers one host's processes
consecutively, so a TP group stays on one host and its per-layer all-reduces on NVLink. The process groups, the
rendezvous store and the heartbeat that use these live in env.py and health.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

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


