"""The KV pool: where each tree node's keys/values and each sequence's generated suffix live, and what they cost.

One allocation holds every layer: `kv[0]` are keys, `kv[1]` values, each [L, S, Hkv, D] (token-major slots, the
layout `kernels.tree_attention` reads per layer as [S, Hkv, D]). Slots are laid out once per batch:

    [ node 0 | node 1 | ... (plan order, each node's tokens contiguous, stored ONCE however many sequences share it)
      | suffix of sequence 0 | suffix of sequence 1 | ... (each `suffix_capacity` slots) ]

A suffix holds the keys of the tokens a sequence has generated and fed back. The last sampled token is never fed
back, so `max_new_tokens - 1` slots suffice: the first generated token comes from the prefill logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def node_keys_in_order(plan) -> list:
    """Every node with tokens that some sequence reads, outermost level first, by sequence range within a level."""
    keys = []
    for level in plan.levels:
        for group in sorted(level, key=lambda g: (g.start, g.stop)):
            if group.stop > group.start and group.num_tokens > 0:
                keys.append(group.node)
    return keys


def suffix_capacity(max_new_tokens: int) -> int:
    """Suffix slots per sequence: the fed-back generated tokens (all but the last)."""
    return max(0, max_new_tokens - 1)


@dataclass(frozen=True)
class KVLayout:
    """Slot ranges of one plan in the pool (host side, plain Python)."""

    node_start: dict  # node key -> first slot
    node_len: dict  # node key -> tokens
    suffix_start: list[int]  # per sequence of the plan
    suffix_capacity: int
    num_slots: int

    @property
    def shared_slots(self) -> int:
        return sum(self.node_len.values())

    @classmethod
    def for_plan(cls, plan, max_new_tokens: int) -> "KVLayout":
        node_start, node_len = {}, {}
        pos = 0
        for key in node_keys_in_order(plan):
            n = len(plan.node_tokens[key])
            node_start[key], node_len[key] = pos, n
            pos += n
        cap = suffix_capacity(max_new_tokens)
        suffix_start = [pos + i * cap for i in range(plan.num_sequences)]
        return cls(node_start, node_len, suffix_start, cap, pos + plan.num_sequences * cap)


def bytes_per_slot(config, dtype: torch.dtype) -> int:
    """K and V of one token over all layers."""
    return 2 * config.num_layers * config.num_kv_heads * config.head_dim * torch.empty((), dtype=dtype).element_size()


def bytes_needed(plan, max_new_tokens: int, config, dtype: torch.dtype) -> int:
    """Pool bytes for `plan`: each used node once, plus a suffix per sequence."""
    shared = sum(len(plan.node_tokens[k]) for k in node_keys_in_order(plan))
    slots = shared + plan.num_sequences * suffix_capacity(max_new_tokens)
    return max(1, slots) * bytes_per_slot(config, dtype)


class KVPool:
    """K/V storage for one batch: `kv` [2, L, S, Hkv, D] in one allocation, laid out by `layout`."""

    def __init__(self, layout: KVLayout, config, device: torch.device, dtype: torch.dtype):
        self.layout = layout
        # At least one slot so that an all-empty pool is still a valid tensor for the kernels' shape checks.
        shape = (2, config.num_layers, max(1, layout.num_slots), config.num_kv_heads, config.head_dim)
        self.kv = torch.empty(shape, device=device, dtype=dtype)
        self.k = self.kv[0]  # [L, S, Hkv, D]
        self.v = self.kv[1]

    @classmethod
    def for_plan(cls, plan, max_new_tokens: int, config, device, dtype) -> "KVPool":
        return cls(KVLayout.for_plan(plan, max_new_tokens), config, torch.device(device), dtype)

    bytes_needed = staticmethod(bytes_needed)

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store new tokens' keys/values. slots: [T] int64; k, v: [T, Hkv, D]."""
        self.k[layer].index_copy_(0, slots, k)
        self.v[layer].index_copy_(0, slots, v)
