"""Tree attention in batched torch ops, following the same work lists as the Triton kernels.

Used where Triton cannot run natively (CPU) and as a readable second implementation of the decomposition: each
(segment, split) is one batched attention of all its query rows over the segment's KV (the shared KV is read once),
each own segment (contiguous or paged, through prompt_tree.kernels.meta.position_slots) one causal attention, and the
merge one log-sum-exp over the partial slots of each row.
"""
from __future__ import annotations

import math

import torch

from .meta import TreeAttentionMeta, position_slots
from .reference import attention_lse, merge_states

SPLIT_ALIGN = 64  # own-segment split chunks are multiples of this (as prompt_tree/kernels/triton_tree.py)


def _own_kv(meta: TreeAttentionMeta, k_cache: torch.Tensor, v_cache: torch.Tensor, b: int, lo: int, hi: int):
    """Keys and values [hi - lo, Hkv, D] of positions lo..hi-1 of query-sequence b's own segment."""
    if not meta.paged:
        start = meta.own_starts_host[b]
        return k_cache[start + lo:start + hi], v_cache[start + lo:start + hi]
    pos = torch.arange(lo, hi, device=k_cache.device)
    idx = position_slots(meta, torch.full_like(pos, b), pos)
    return k_cache.index_select(0, idx), v_cache.index_select(0, idx)


def tree_attention_torch(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta,
                         scale: float | None = None, return_lse: bool = False):
    """q: [T, Hq, D]; k_cache, v_cache: [S, Hkv, D]. Returns o [T, Hq, D] in q.dtype (and lse [T, Hq] fp32)."""
    t, hq, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    # The slots this composition uses (not a capacity's padding): padded and unpadded metas give the same bits.
    slots = max(meta.needed.max_slots, 1)
    o_part = q.new_zeros((t, slots, hq, d), dtype=torch.float32)
    lse_part = q.new_full((t, slots, hq), float("-inf"), dtype=torch.float32)
    for sp in meta.splits:
        if sp.kv_hi > sp.kv_lo:
            o, lse = attention_lse(q[sp.row_lo:sp.row_hi], k_cache[sp.kv_lo:sp.kv_hi], v_cache[sp.kv_lo:sp.kv_hi],
                                   scale=scale)
            o_part[sp.row_lo:sp.row_hi, sp.slot] = o
            lse_part[sp.row_lo:sp.row_hi, sp.slot] = lse
    own_len = meta.own_len.tolist()
    shared_slots = meta.seq_shared_slots.tolist()
    q_start = meta.seq_q_start.tolist()
    nsplit = meta.own_splits
    for b, qn in enumerate(meta.q_lens):
        if qn == 0:
            continue
        n = own_len[b]
        chunk = math.ceil(math.ceil(n / nsplit) / SPLIT_ALIGN) * SPLIT_ALIGN if n else 0
        rows = slice(q_start[b], q_start[b] + qn)
        q_pos = torch.arange(qn, device=q.device) + n - qn  # position of each query within the own segment
        for j in range(nsplit):
            lo, hi = j * chunk, min(n, (j + 1) * chunk)
            if hi <= lo:
                continue
            mask = torch.arange(lo, hi, device=q.device)[None, :] <= q_pos[:, None]
            k, v = _own_kv(meta, k_cache, v_cache, b, lo, hi)
            o, lse = attention_lse(q[rows], k, v, mask=mask, scale=scale)
            o_part[rows, shared_slots[b] + j] = o
            lse_part[rows, shared_slots[b] + j] = lse
    out, lse = merge_states(o_part.unbind(1), lse_part.unbind(1))  # [T, Hq, D], [T, Hq] fp32
    return (out.to(q.dtype), lse) if return_lse else out.to(q.dtype)
