"""What the end-to-end benchmark measures: its configuration (BenchConfig), its modes and workloads, the rows of
e2e.json and what identifies one (row_key, which --resume matches), and the small sizing rules the planner uses
(e2e.py runs them)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

from prompt_tree.config import PRESETS, ModelConfig, get_preset
from prompt_tree.config import replace as replace_config
from prompt_tree.tree import PromptTree

from .limit import Ceilings
from .workloads import (BATCHES, DEFAULT_2A, DEFAULT_2B, NEW_TOKENS_1, PREFIXES, HierarchicalShape,
                        HierarchicalWorkload)

MODES = ("tree", "single", "flat", "none", "hf")
WORKLOADS = ("1", "2a", "2b")
# Engine attention per mode; "single" is attention="tree" over the one-level tree (workloads.single_level).
ENGINE_ATTENTION = {"tree": "tree", "single": "tree", "flat": "flat", "none": "none"}
# What each mode's attention reads, for time estimates (limit.ESTIMATE_ATTENTION_FACTOR).
MODE_READS = {"tree": "shared", "single": "shared", "flat": "paged", "none": "none", "hf": "copied"}
# Workload 1 cells that run first: the long-prefix, large-batch corner where sharing matters.
PRIORITY_PREFIXES = (4096, 16384)
PRIORITY_BATCHES = (128, 512, 1024)
# Workload 2 order: 2b before 2a (2a's 512-token samples make it the slowest).
WORKLOAD_2_ORDER = ("2b", "2a")
ROLE_GRID, ROLE_SAME, ROLE_LARGEST, ROLE_LIMIT = "grid", "same batch", "largest batch", "limit"
TIME_BUDGET_REASON = "time budget"
JSON_NAME, MD_NAME = "e2e.json", "e2e.md"


class BenchError(ValueError):
    """A benchmark run that cannot start: the message says which input to fix."""


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. shapes: workload 2 shapes by name; new_tokens_1: workload 1's new tokens.
    memory_budget_bytes: override of the engine's budget (default: free device memory); ceilings: assumed instead
    of measured (dry runs, tests)."""

    models: tuple[str, ...] = ("llama3-8b", "codellama-7b")
    workloads: tuple[str, ...] = WORKLOADS
    prefixes: tuple[int, ...] = PREFIXES
    batches: tuple[int, ...] = BATCHES
    modes: tuple[str, ...] = MODES
    new_tokens_1: int = NEW_TOKENS_1
    shapes: dict = field(default_factory=lambda: {"2a": DEFAULT_2A, "2b": DEFAULT_2B})
    out: str = "docs/benchmarks"
    time_budget_s: float | None = None
    device: str = "cuda"
    dtype: str = "bf16"
    resume: bool = False
    dry_run: bool = False
    memory_budget_bytes: int | None = None
    ceilings: Ceilings | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        def check(kind: str, given, known) -> None:
            if not given:
                raise ValueError(f"no {kind} given; choose from {', '.join(known)}")
            bad = [x for x in given if x not in known]
            if bad:
                raise ValueError(f"unknown {kind} {bad[0]!r}; choose from {', '.join(known)}")

        check("model", self.models, list(PRESETS))
        check("workload", self.workloads, WORKLOADS)
        check("mode", self.modes, MODES)
        for name in ("prefixes", "batches"):
            values = getattr(self, name)
            if "1" in self.workloads and not values:
                raise ValueError(f"workload 1 needs at least one of --{name}")
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} must be positive ints, got {list(values)}")
        if isinstance(self.new_tokens_1, bool) or not isinstance(self.new_tokens_1, int) or self.new_tokens_1 < 1:
            raise ValueError(f"new tokens must be a positive int, got {self.new_tokens_1!r}")
        for w in ("2a", "2b"):
            if w in self.workloads and not isinstance(self.shapes.get(w), HierarchicalShape):
                raise ValueError(f"workload {w} has no shape")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time budget must be positive seconds, got {self.time_budget_s!r}")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes < 1:
            raise ValueError(f"memory budget must be positive, got {self.memory_budget_bytes!r}")


@dataclass
class Row:
    """One line of e2e.json. seconds: decode seconds; tokens_per_s: decode tokens (all but each sequence's first,
    which prefill produces) / seconds; limit_s: the roofline limit of those seconds (limit.py)."""

    model: str
    workload: str
    shape: str
    batch: int
    mode: str
    new_tokens: int
    prefix: int | None = None
    problems: int | None = None
    roles: list = field(default_factory=list)
    tokens_per_s: float | None = None
    seconds: float | None = None
    prefill_s: float | None = None
    peak_gib: float | None = None
    limit_s: float | None = None
    measured_over_limit: float | None = None
    attention_floor_s: float | None = None
    physical_s: float | None = None  # the whole step's floor summed over the run (limit.physical_run_seconds)
    measured_over_physical: float | None = None
    max_batch: int | None = None
    predicted_gib: float | None = None
    kv_gib: float | None = None
    sub_batches: int | None = None
    generated_tokens: int | None = None
    skipped: str | None = None

    def key(self) -> tuple:
        return row_key(asdict(self))


def row_key(d: dict) -> tuple:
    """What identifies a row (and what --resume matches)."""
    return (d["model"], d["workload"], d["shape"], d["batch"], d["mode"], d["new_tokens"])


@dataclass
class Cell:
    """A row to produce: the fully shared tree of its batch (the limit's work; hf and single derive from it) and
    a reason when it is skipped without running."""

    row: Row
    tree: PromptTree | None
    skip: str | None = None


def _gib(n: int | float | None) -> float | None:
    return None if n is None else n / 2**30


def _size(n: float) -> str:
    """Bytes for messages: GiB for model-sized amounts, MiB or KiB for the tiny preset's."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def context_needed(bench: BenchConfig) -> int:
    """The longest prompt + new tokens of the run's workloads (positions the model must accept)."""
    need = max(bench.prefixes) + bench.new_tokens_1 if "1" in bench.workloads else 1
    for w in ("2a", "2b"):
        if w in bench.workloads:
            shape = bench.shapes[w]
            wl = HierarchicalWorkload(shape, 2, None, bench.seed)
            longest = shape.few_shot + max(wl.problem_length(i) for i in range(shape.problems))
            need = max(need, longest + shape.new_tokens)
    return need


def benchmark_config(name: str, bench: BenchConfig) -> tuple[ModelConfig, bool]:
    """The preset's config, its context extended to the run's longest sequence when shorter (CodeLlama's 16384
    positions cannot hold the 16384-token prefix + 128 new tokens of workload 1). Weights are random and RoPE is
    defined at every position, so this changes no shape and no cost. Returns (config, extended)."""
    config = get_preset(name)
    need = context_needed(bench)
    if need <= config.max_position_embeddings:
        return config, False
    return replace_config(config, max_position_embeddings=need), True


def largest_fitting(candidates: list[int], fits: Callable[[int], bool]) -> int:
    """The largest candidate (ascending list) that fits, by bisection (fit is monotone in batch); 0 if none."""
    lo, hi = -1, len(candidates)  # fits(candidates[lo]) true (or lo = -1), fits(candidates[hi]) false (or hi = len)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(candidates[mid]):
            lo = mid
        else:
            hi = mid
    return candidates[lo] if lo >= 0 else 0


def resolve_bench_device(bench: BenchConfig):
    """(torch device, dtype) of a benchmark run; BenchError naming the way to a CPU run when the device is not
    there. Every workload checks it before building anything."""
    from prompt_tree.loading import resolve_device_dtype

    try:
        return resolve_device_dtype(bench.device, bench.dtype)
    except ValueError as e:
        raise BenchError(f"{e} (pass --device cpu --dtype fp32 --models tiny for a CPU run)") from e
