"""Where the engine's memory goes: the budget, the workspace a step needs, and the KV pages the rest buys.

Out-of-memory is predicted, not caught:

    budget (free device memory x 0.85, or memory_budget_bytes; the weights are already resident)
      = workspace (the largest decode step's activations, logits and sampling temporaries, attention partials
                   + one prefill chunk's activations: both live at once, the graphs' pool holds the former)
      + KV pages (page_size tokens of K and V, every layer)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

# fp32 vocabulary-sized rows a decode step keeps alive per sequence: the model-dtype logits, the sampler's
# fp32 probabilities and its few row-sized temporaries. Counted generously: under-estimating means OOM.
VOCAB_ROWS_PER_SEQUENCE = 6
# Attention partials per query row: one (output, LSE) slot per level plus KV splits.
EXTRA_ATTENTION_SLOTS = 8
CUDA_BUDGET_FRACTION = 0.85  # allocator fragmentation, CUDA graphs' private pools, cuBLAS workspaces
CPU_BUDGET_FRACTION = 0.5  # other processes share the machine
# A step's workspace may take at most this fraction of the budget: the rest is KV, which is what batches need.
# Rows are never cut below MIN_ROWS for it (a small budget is then KV-bound, not row-bound).
MAX_WORKSPACE_FRACTION = 0.25
MIN_ROWS = 64


class SchedulingError(ValueError):
    """The budget cannot hold even one sequence's share of the tree (the message gives the numbers)."""


def available_memory(device: torch.device) -> int:
    """Bytes the engine may still allocate on `device`: free CUDA memory, or MemAvailable of the host."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # blocks torch's caching allocator holds but does not use (a previous run's pool) are free to us too
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


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """K and V of one token over all layers, in `dtype` (ModelConfig.kv_bytes_per_token)."""
    return config.kv_bytes_per_token(element_size(dtype))


def prefill_rows(plan, prefill_chunk_tokens: int) -> int:
    """The most query rows one prefill call of this plan can have: a chunk, or the widest depth if smaller."""
    widest = max((sum(g.num_tokens for g in level) for level in plan.levels), default=0)
    return max(1, min(prefill_chunk_tokens, widest))


def workspace_bytes(decode_rows: int, depth: int, config, dtype: torch.dtype, prefill_chunk_tokens: int) -> int:
    """Transient memory: a decode step of `decode_rows` rows plus one prefill call of prefill_chunk_tokens rows."""
    el = element_size(dtype)
    per_token_act = el * (4 * config.hidden_size + 3 * config.intermediate_size
                          + (config.num_heads + 2 * config.num_kv_heads) * config.head_dim)
    per_row_attn = (depth + 1 + EXTRA_ATTENTION_SLOTS) * config.num_heads * (config.head_dim + 1) * 4
    decode = decode_rows * (per_token_act + per_row_attn + VOCAB_ROWS_PER_SEQUENCE * 4 * config.vocab_size)
    prefill = prefill_chunk_tokens * (per_token_act + per_row_attn) + 4 * config.vocab_size * 64
    return decode + prefill


@dataclass(frozen=True)
class MemoryPlan:
    """What one generate call may use: decode rows, KV pages, and the bytes behind them."""

    budget_bytes: int
    workspace_bytes: int
    max_rows: int
    num_pages: int
    page_size: int
    page_bytes: int

    @property
    def kv_bytes(self) -> int:
        return self.num_pages * self.page_bytes

    @property
    def kv_tokens(self) -> int:
        return (self.num_pages - 1) * self.page_size  # page 0 is the scratch page


def plan_memory(budget: int, rows_wanted: int, depth: int, config, dtype: torch.dtype, page_size: int,
                prefill_chunk_tokens: int, min_pages: int, max_pages: int | None = None) -> MemoryPlan:
    """Decode rows (at most rows_wanted, fewer while their workspace would exceed MAX_WORKSPACE_FRACTION of the
    budget) and the KV pages the rest of the budget holds, at most max_pages (what the plan could ever use).
    SchedulingError when fewer than min_pages fit."""
    page_bytes = page_size * kv_bytes_per_token(config, dtype)
    rows = max(1, rows_wanted)
    while rows > MIN_ROWS and workspace_bytes(rows, depth, config, dtype, prefill_chunk_tokens) > \
            MAX_WORKSPACE_FRACTION * budget:
        rows = max(MIN_ROWS, rows // 2)
    ws = workspace_bytes(rows, depth, config, dtype, prefill_chunk_tokens)
    pages = (budget - ws) // page_bytes
    if pages < min_pages:
        raise SchedulingError(
            f"the memory budget of {budget / 2**20:.1f} MiB holds {max(0, pages)} KV pages of {page_size} tokens "
            f"({page_bytes / 2**20:.2f} MiB each) after {ws / 2**20:.1f} MiB of workspace, but one sequence needs "
            f"{min_pages} pages (its prompt's nodes and max_new_tokens): shorten the prompts or max_new_tokens, "
            f"lower prefill_chunk_tokens or max_batch_sequences, or raise memory_budget_bytes")
    if max_pages is not None:
        pages = min(pages, max_pages)
    return MemoryPlan(budget, ws, rows, int(pages), page_size, page_bytes)


@dataclass(frozen=True)
class BatchCost:
    """Predicted bytes of one batch: KV and transient workspace."""

    kv_bytes: int
    workspace_bytes: int

    @property
    def total(self) -> int:
        return self.kv_bytes + self.workspace_bytes


def plan_cost(plan, max_new_tokens: int, config, dtype: torch.dtype, prefill_chunk_tokens: int) -> BatchCost:
    """Predicted bytes of running the whole plan as one batch with every sample at max_new_tokens: the KV (each
    node once + a suffix per sequence, the last token never fed back) and the workspace of a step that wide."""
    per = kv_bytes_per_token(config, dtype)
    kv = (plan.kv_tokens_shared + plan.num_sequences * max(0, max_new_tokens - 1)) * per
    ws = workspace_bytes(plan.num_sequences, len(plan.levels), config, dtype,
                         prefill_rows(plan, prefill_chunk_tokens))
    return BatchCost(kv_bytes=max(per, kv), workspace_bytes=ws)
