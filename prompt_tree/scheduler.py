"""Memory-aware batching: split a plan into sub-batches of whole subtrees that fit a memory budget.

Out-of-memory is predicted, not caught: each candidate sub-batch is costed as

    KV pool (shared nodes once + a suffix per sequence, kv.bytes_needed)
    + decode workspace (activations, fp32 logits and sampling temporaries per sequence, attention partials)
    + prefill workspace (one chunk of prefill_chunk_tokens rows)

against a budget that already excludes the weights (they are resident when the engine measures free memory).
The largest max_sequences whose every sub-batch fits is taken (binary search; cost grows with batch size).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .kv import bytes_needed

# Bytes of fp32 vocabulary-sized rows a decode step keeps alive per sequence: logits, softmax/filters, the sort
# for top-p (values + int64 indices), the fp64 cdf. Counted generously: under-estimating means OOM.
_VOCAB_ROWS_PER_SEQUENCE = 8
# Attention partials per query row: one (output, LSE) slot per level plus KV splits; the kernels split only when
# the batch is too small to fill the GPU, so a handful of extra slots per row bounds the large-batch case.
_EXTRA_ATTENTION_SLOTS = 8
# Fraction of free device memory the scheduler may plan for (allocator fragmentation, CUDA graphs' pools).
CUDA_BUDGET_FRACTION = 0.85
# Fraction of available RAM on CPU (other processes share the machine).
CPU_BUDGET_FRACTION = 0.5


class SchedulingError(ValueError):
    """A single sequence's share of the tree does not fit the memory budget."""


@dataclass(frozen=True)
class BatchCost:
    kv_bytes: int
    workspace_bytes: int

    @property
    def total(self) -> int:
        return self.kv_bytes + self.workspace_bytes


def available_memory(device: torch.device) -> int:
    """Bytes the engine may still allocate on `device`: free CUDA memory, or MemAvailable of the host."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # blocks torch's caching allocator holds but does not use (a previous batch's pool) are free to us too
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((free + cached) * CUDA_BUDGET_FRACTION)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * CPU_BUDGET_FRACTION)
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") * CPU_BUDGET_FRACTION)


def workspace_bytes(num_sequences: int, depth: int, config, dtype: torch.dtype, prefill_chunk_tokens: int) -> int:
    """Transient memory of a batch: max(decode step, prefill chunk), estimated from the model's shapes."""
    el = torch.empty((), dtype=dtype).element_size()
    per_token_act = el * (4 * config.hidden_size + 3 * config.intermediate_size
                          + (config.num_heads + 2 * config.num_kv_heads) * config.head_dim)
    attn_slots = depth + 1 + _EXTRA_ATTENTION_SLOTS
    per_row_attn = attn_slots * config.num_heads * (config.head_dim + 1) * 4
    decode = num_sequences * (per_token_act + per_row_attn + _VOCAB_ROWS_PER_SEQUENCE * 4 * config.vocab_size)
    prefill = prefill_chunk_tokens * (per_token_act + per_row_attn) + 4 * config.vocab_size * 64
    return max(decode, prefill)


def plan_depth(plan) -> int:
    return len(plan.levels)


def batch_cost(plan, max_new_tokens: int, config, dtype: torch.dtype, prefill_chunk_tokens: int) -> BatchCost:
    # A prefill call holds at most one depth's tokens (or one chunk of them).
    widest = max((sum(g.num_tokens for g in level) for level in plan.levels), default=0)
    return BatchCost(
        kv_bytes=bytes_needed(plan, max_new_tokens, config, dtype),
        workspace_bytes=workspace_bytes(plan.num_sequences, plan_depth(plan), config, dtype,
                                        min(prefill_chunk_tokens, widest)),
    )


def split_plan(plan, max_sequences: int) -> list:
    """Sub-plans of whole subtrees with at most max_sequences sequences each (plan.split), or [plan] if it fits."""
    if plan.num_sequences <= max_sequences:
        return [plan]
    parts = plan.split(max_sequences)
    out = []
    for part in parts:
        if isinstance(part, tuple):  # (start, stop) ranges
            part = plan.subplan(*part)
        out.append(part)
    return out


def schedule(plan, max_new_tokens: int, config, dtype: torch.dtype, *, budget_bytes: int,
             prefill_chunk_tokens: int, max_batch_sequences: int | None = None) -> list:
    """Sub-plans to run one after another.

    With max_batch_sequences the split is exactly that (the user's choice overrides the budget). Otherwise the
    largest max_sequences whose every sub-batch's cost fits budget_bytes; SchedulingError if even one sequence at
    a time does not fit.
    """
    if plan.num_sequences == 0:
        return []
    if max_batch_sequences is not None:
        if not isinstance(max_batch_sequences, int) or max_batch_sequences < 1:
            raise ValueError(f"max_batch_sequences must be a positive int, got {max_batch_sequences!r}")
        return split_plan(plan, max_batch_sequences)

    def fits(m: int):
        parts = split_plan(plan, m)
        worst = max(batch_cost(p, max_new_tokens, config, dtype, prefill_chunk_tokens).total for p in parts)
        return parts if worst <= budget_bytes else None

    best = fits(plan.num_sequences)
    if best is not None:
        return best
    lo, hi = 1, plan.num_sequences  # fits(lo) unknown, fits(hi) false
    best = fits(1)
    if best is None:
        one = min(
            (p for p in split_plan(plan, 1)),
            key=lambda p: -batch_cost(p, max_new_tokens, config, dtype, prefill_chunk_tokens).total,
        )
        cost = batch_cost(one, max_new_tokens, config, dtype, prefill_chunk_tokens)
        raise SchedulingError(
            f"one sequence needs {cost.total / 2**20:.1f} MiB (KV {cost.kv_bytes / 2**20:.1f} MiB + workspace "
            f"{cost.workspace_bytes / 2**20:.1f} MiB) but the memory budget is {budget_bytes / 2**20:.1f} MiB: "
            f"shorten the prompts or max_new_tokens, lower prefill_chunk_tokens, or raise memory_budget_bytes")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        parts = fits(mid)
        if parts is None:
            hi = mid
        else:
            lo, best = mid, parts
    return best
