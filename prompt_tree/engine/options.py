"""Engine options: one frozen dataclass, every field validated when it is given (not deep in a run).

    Engine(model, config, tokenizer, memory_budget_bytes=40 * 2**30, batching="continuous")
    Engine.random("tiny", cuda_graphs=False)

A wrong type or value raises at construction with the field's name, what it must be and what it got.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..sampler import BACKENDS as SAMPLER_BACKENDS

BATCHING = ("continuous", "static")
# Padded decode batch sizes a CUDA graph is captured for (each once, at its first use). Between two buckets a
# step pays for at most ~25-33% padding rows; the small ones matter for the tail of a run.
DEFAULT_GRAPH_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 640, 768, 1024, 1280, 1536, 2048,
                         2560, 3072, 4096, 5120, 6144, 8192)
PAGE_SIZES = (16, 32)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class EngineOptions:
    """How the engine batches and where its memory goes.

    memory_budget_bytes: device bytes the engine may use beyond the weights (KV pages + workspace); None = the
      measured free memory at generate time (x 0.85 on CUDA, x 0.5 of MemAvailable on CPU).
    batching: "continuous" (default: subtrees admitted as memory frees, paged suffixes, preemption of the newest
      subtree) or "static" (the plan cut up front into sub-batches that reserve max_new_tokens per sequence and
      decode in lockstep until their last sample ends: the earlier engine's policy, kept for comparison).
    cuda_graphs: replay decode steps from CUDA graphs captured once per padded batch size (CUDA only).
    prefill_chunk_tokens: the most query rows of one prefill call (bounds activations; a call runs between two
      decode steps).
    page_size: tokens per KV page of generated suffixes (16 or 32).
    max_batch_sequences: the most sequences decoded in one step (None: as many as memory and graph_buckets allow).
    watermark: fraction of the KV pages kept free when admitting new subtrees (headroom for mispredicted lengths).
    compact_fraction: rebuild the decode batch without its finished rows once this fraction of it has finished;
      units admitted meanwhile are prefilled and join at that rebuild (or sooner when they fill a prefill chunk,
      or when no unit is left waiting).
    overlap: match stop strings on the host for step t while the device runs step t+1 (results are identical
      with overlap=False, which is the synchronous reference).
    add_bos: force (True) or forbid (False) a BOS token at the start of every prompt; None = the tokenizer's rule.
    graph_buckets: the padded batch sizes, ascending.
    sampler_backend: the token sampler (`prompt_tree.sampler.Sampler`): "auto" (the split Triton kernel on CUDA,
      the torch path elsewhere), "torch", "triton", or "triton-row" (the earlier one-program-per-row kernel).
    full_collections: let CPython's automatic full garbage collections run during generate (default False: only
      the young generations are collected there and the caller's thresholds come back after; engine.collector says
      why).
    """

    memory_budget_bytes: int | None = None
    batching: str = "continuous"
    cuda_graphs: bool = True
    prefill_chunk_tokens: int = 8192
    page_size: int = 16
    max_batch_sequences: int | None = None
    watermark: float = 0.03
    compact_fraction: float = 0.125
    overlap: bool = True
    add_bos: bool | None = None
    graph_buckets: tuple[int, ...] = DEFAULT_GRAPH_BUCKETS
    sampler_backend: str = "auto"
    full_collections: bool = False

    def __post_init__(self):
        def fail(name, why):
            raise ValueError(f"Engine option {name}: {why} (got {getattr(self, name)!r})")

        def need_type(name, ok, what):
            if not ok:
                raise TypeError(f"Engine option {name} must be {what}, not {type(getattr(self, name)).__name__} "
                                f"{getattr(self, name)!r}")

        b = self.memory_budget_bytes
        need_type("memory_budget_bytes", b is None or _is_int(b), "an int (bytes) or None")
        if b is not None and b < 1:
            fail("memory_budget_bytes", "must be a positive number of bytes")
        need_type("batching", isinstance(self.batching, str), "a str")
        if self.batching not in BATCHING:
            fail("batching", f"must be one of {', '.join(map(repr, BATCHING))}")
        for name in ("cuda_graphs", "overlap", "full_collections"):
            need_type(name, isinstance(getattr(self, name), bool), "a bool")
        need_type("add_bos", self.add_bos is None or isinstance(self.add_bos, bool), "a bool or None")
        need_type("prefill_chunk_tokens", _is_int(self.prefill_chunk_tokens), "an int")
        if self.prefill_chunk_tokens < 1:
            fail("prefill_chunk_tokens", "must be >= 1")
        need_type("page_size", _is_int(self.page_size), "an int")
        if self.page_size not in PAGE_SIZES:
            fail("page_size", f"must be one of {PAGE_SIZES}")
        m = self.max_batch_sequences
        need_type("max_batch_sequences", m is None or _is_int(m), "an int or None")
        if m is not None and m < 1:
            fail("max_batch_sequences", "must be >= 1")
        for name, lo, hi in (("watermark", 0.0, 0.5), ("compact_fraction", 0.0, 1.0)):
            x = getattr(self, name)
            need_type(name, isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x),
                      "a finite number")
            if not lo <= x < hi:
                fail(name, f"must be in [{lo}, {hi})")
        buckets = self.graph_buckets
        need_type("graph_buckets", isinstance(buckets, (tuple, list)) and all(_is_int(x) for x in buckets),
                  "a tuple of ints")
        if not buckets or any(x < 1 for x in buckets) or list(buckets) != sorted(set(buckets)):
            fail("graph_buckets", "must be positive, strictly ascending")
        object.__setattr__(self, "graph_buckets", tuple(buckets))
        need_type("sampler_backend", isinstance(self.sampler_backend, str), "a str")
        if self.sampler_backend not in SAMPLER_BACKENDS:
            fail("sampler_backend", f"must be one of {', '.join(map(repr, SAMPLER_BACKENDS))}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def max_rows(self) -> int:
        """The most decode rows a step may have: the largest bucket, or max_batch_sequences if smaller."""
        top = self.graph_buckets[-1]
        return top if self.max_batch_sequences is None else min(top, self.max_batch_sequences)

    def bucket(self, rows: int) -> int:
        """The padded batch size of a step with `rows` sequences (rows <= max_rows())."""
        for b in self.graph_buckets:
            if b >= rows:
                return b
        raise ValueError(f"{rows} rows exceed the largest graph bucket {self.graph_buckets[-1]}")
