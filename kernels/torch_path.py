"""Tree attention in batched torch ops, following the same work lists as the Triton kernels.

Used where Triton cannot run natively (CPU) and as a readable second implementation of the decomposition: each
(segment, split) is one batched attention of all its query rows over the segment's KV (the shared KV is read once),
each own segment one causal attention, and the merge one log-sum-exp over the partial slots of each row.
"""
from __future__ import annotations

import math

import torch

from .meta import TreeAttentionMeta


def _partial(q_rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask=None):
    """q_rows: [R, Hq, D]; k, v: [N, Hkv, D]; mask: [R, N] bool (True = visible) or None.
    Returns o [R, Hq, D] fp32, lse [R, Hq] fp32 (-inf, 0 for rows that see nothing)."""
    r, hq, d = q_rows.shape
    hkv = k.shape[1]
    g = hq // hkv
    qg = q_rows.float().view(r, hkv, g, d)
    s = torch.einsum("rhgd,nhd->hgrn", qg, k.float()) * scale  # [Hkv, g, R, N]
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # [Hkv, g, R]
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    o = torch.einsum("hgrn,nhd->rhgd", p, v.float()).reshape(r, hq, d)
    return o, lse.permute(2, 0, 1).reshape(r, hq)


def tree_attention_torch(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta,
                         scale: float | None = None, return_lse: bool = False):
    """q: [T, Hq, D]; k_cache, v_cache: [S, Hkv, D]. Returns o [T, Hq, D] in q.dtype (and lse [T, Hq] fp32)."""
    t, hq, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    slots = max(meta.max_slots, 1)
    o_part = q.new_zeros((t, slots, hq, d), dtype=torch.float32)
    lse_part = q.new_full((t, slots, hq), float("-inf"), dtype=torch.float32)
    for sp in meta.splits:
        if sp.kv_hi > sp.kv_lo:
            o, lse = _partial(q[sp.row_lo:sp.row_hi], k_cache[sp.kv_lo:sp.kv_hi], v_cache[sp.kv_lo:sp.kv_hi], scale)
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
        chunk = math.ceil(math.ceil(n / nsplit) / 64) * 64 if n else 0
        start = meta.own_starts_host[b]
        rows = slice(q_start[b], q_start[b] + qn)
        q_pos = torch.arange(qn, device=q.device) + n - qn  # position of each query within the own segment
        for j in range(nsplit):
            lo, hi = j * chunk, min(n, (j + 1) * chunk)
            if hi <= lo:
                continue
            key_pos = torch.arange(lo, hi, device=q.device)
            mask = key_pos[None, :] <= q_pos[:, None]
            o, lse = _partial(q[rows], k_cache[start + lo:start + hi], v_cache[start + lo:start + hi], scale, mask)
            o_part[rows, shared_slots[b] + j] = o
            lse_part[rows, shared_slots[b] + j] = lse
    m = lse_part.max(dim=1, keepdim=True).values
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    w = torch.exp(lse_part - m)  # [T, slots, Hq]
    total = w.sum(dim=1)
    out = (w[..., None] * o_part).sum(dim=1) / torch.clamp(total, min=1e-30)[..., None]
    if return_lse:
        return out.to(q.dtype), (m.squeeze(1) + torch.log(total))
    return out.to(q.dtype)
