"""Pure-torch ground truth for tree attention. Obviously right, any device, any float dtype.

Everything here favours clarity over speed: the kernels in this package are tested against these functions.
LSEs are natural-log log-sum-exps of the scaled scores, `lse = log(sum_j exp(q.k_j * scale))`; an empty key set
has lse = -inf and output 0 (never NaN).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                  mask: torch.Tensor | None = None, scale: float | None = None, dtype: torch.dtype = torch.float32):
    """Softmax attention returning the output and its LSE.

    q: [Tq, Hq, D], k: [Tk, Hkv, D], v: [Tk, Hkv, D] with Hq a multiple of Hkv (GQA: query head h reads kv head
    h // (Hq // Hkv)).
    causal: query row i sees key j iff j <= i + (Tk - Tq) (the queries are the last Tq positions of the keys).
    mask: [Tq, Tk] bool, True = visible (combined with causal). A row that sees no key gets o = 0, lse = -inf.
    Computed in `dtype` (fp32 or fp64). Returns (o [Tq, Hq, D], lse [Tq, Hq]) in `dtype`.
    """
    tq, hq, d = q.shape
    tk, hkv, _ = k.shape
    if hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of kv heads ({hkv})")
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    g = hq // hkv
    qf = q.to(dtype).view(tq, hkv, g, d)
    s = torch.einsum("qhgd,khd->hgqk", qf, k.to(dtype)) * scale  # [Hkv, g, Tq, Tk]
    if causal:
        allowed = torch.arange(tk, device=q.device)[None, :] <= (torch.arange(tq, device=q.device)[:, None] + tk - tq)
        mask = allowed if mask is None else mask & allowed
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # [Hkv, g, Tq]; -inf where a row sees nothing
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])  # 0 where s = -inf
    o = torch.einsum("hgqk,khd->qhgd", p, v.to(dtype)).reshape(tq, hq, d)
    return o, lse.permute(2, 0, 1).reshape(tq, hq)


def merge_states(outs: Sequence[torch.Tensor], lses: Sequence[torch.Tensor]):
    """Merge partial attention results computed over disjoint key sets.

    outs[i]: [..., D], lses[i]: [...] (natural log). Returns (o [..., D], lse [...]) in fp32 or the inputs' wider
    float type. Closed form: O = sum_i exp(L_i - m) O_i / sum_i exp(L_i - m), L = m + log(sum_i exp(L_i - m)) with
    m = max_i L_i. Parts with L_i = -inf contribute nothing; if every part is -inf the result is (0, -inf).
    """
    if len(outs) == 0 or len(outs) != len(lses):
        raise ValueError("merge_states needs one or more (output, lse) pairs, as many outputs as lses")
    dtype = torch.promote_types(torch.promote_types(outs[0].dtype, lses[0].dtype), torch.float32)
    lse = torch.stack([x.to(dtype) for x in lses])  # [P, ...]
    o = torch.stack([x.to(dtype) for x in outs])  # [P, ..., D]
    m = lse.max(dim=0).values
    m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)  # all -inf -> weights exp(-inf) = 0
    w = torch.exp(lse - m_safe)  # [P, ...]
    total = w.sum(dim=0)
    out = (w[..., None] * o).sum(dim=0) / torch.clamp(total, min=torch.finfo(dtype).tiny)[..., None]
    return out, m_safe + torch.log(total)


def own_slot_list(b: int, own_starts, own_lens, own_pages=None, page_size: int | None = None) -> list[int]:
    """The KV slots of query-sequence b's own segment, position 0 first: own_starts[b] + p, or, paged,
    own_pages[b][p // page_size] * page_size + p % page_size."""
    if own_pages is None:
        return list(range(own_starts[b], own_starts[b] + own_lens[b]))
    return [own_pages[b][p // page_size] * page_size + p % page_size for p in range(own_lens[b])]


def _path(b: int, q_lens, own_starts, own_lens, segments, own_pages, page_size, device):
    """(slots of every key sequence b sees, in order, as a long tensor; its own-segment key positions, -1 for the
    shared keys): the shared segments on its path, then its own segment."""
    slots = []
    for seg in segments:
        kv_start, kv_len, lo, hi = seg[0], seg[1], seg[2], seg[3]
        if lo <= b < hi:
            slots.extend(range(kv_start, kv_start + kv_len))
    n_shared = len(slots)
    slots.extend(own_slot_list(b, own_starts, own_lens, own_pages, page_size))
    own_pos = torch.arange(len(slots), device=device) - n_shared
    return torch.tensor(slots, dtype=torch.long, device=device), own_pos


def naive_tree_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, q_lens: Sequence[int],
                         own_starts: Sequence[int] | None, own_lens: Sequence[int], segments: Sequence,
                         *, own_pages: Sequence[Sequence[int]] | None = None, page_size: int | None = None,
                         scale: float | None = None, dtype: torch.dtype = torch.float64):
    """The ground truth: every query-sequence attends to the concatenation of its path's KV and its own segment.

    q: [T, Hq, D] rows packed by query-sequence b (q_lens[b] rows each); k_cache, v_cache: [S, Hkv, D].
    Sequence b sees, in order, the KV of every segment (kv_start, kv_len, seq_lo, seq_hi) with seq_lo <= b < seq_hi
    (non-causal), then its own segment's own_lens[b] positions (slots: own_slot_list), of which its q rows are the
    last q_lens[b] (causal; an empty own segment leaves the rows with the shared keys only). Nothing is shared:
    each sequence gathers its own copy. Returns (o [T, Hq, D], lse [T, Hq]) in `dtype`.
    """
    t, hq, d = q.shape
    out = torch.zeros(t, hq, d, dtype=dtype, device=q.device)
    lse = torch.full((t, hq), float("-inf"), dtype=dtype, device=q.device)
    row = 0
    for b, qn in enumerate(q_lens):
        if qn == 0:
            continue
        idx, own_pos = _path(b, q_lens, own_starts, own_lens, segments, own_pages, page_size, q.device)
        q_pos = torch.arange(qn, device=q.device) + own_lens[b] - qn
        allowed = (own_pos[None, :] < 0) | (own_pos[None, :] <= q_pos[:, None])  # causal within the own segment
        out[row:row + qn], lse[row:row + qn] = attention_lse(
            q[row:row + qn], k_cache.index_select(0, idx), v_cache.index_select(0, idx), mask=allowed, scale=scale,
            dtype=dtype)
        row += qn
    return out, lse


def naive_tree_attention_lowp(q, k_cache, v_cache, q_lens, own_starts, own_lens, segments, *, own_pages=None,
                              page_size=None, scale=None):
    """The same ground truth computed the plain way in the inputs' own precision (scores, softmax and the
    weighted sum all in q.dtype): the "what torch gives at this precision" yardstick that kernel errors are
    compared against (tests allow a kernel at most 2x this error, both measured against the fp64 ground truth).
    Returns o [T, Hq, D] in q.dtype.
    """
    t, hq, d = q.shape
    out = torch.zeros(t, hq, d, dtype=q.dtype, device=q.device)
    row = 0
    g = hq // k_cache.shape[1]
    for b, qn in enumerate(q_lens):
        if qn == 0:
            continue
        idx, own_pos = _path(b, q_lens, own_starts, own_lens, segments, own_pages, page_size, q.device)
        if idx.numel() == 0:
            row += qn
            continue
        kb = k_cache.index_select(0, idx).repeat_interleave(g, 1)
        vb = v_cache.index_select(0, idx).repeat_interleave(g, 1)
        s = torch.einsum("qhd,khd->hqk", q[row:row + qn], kb) * (1.0 / math.sqrt(d) if scale is None else scale)
        q_pos = torch.arange(qn, device=q.device) + own_lens[b] - qn
        allowed = (own_pos[None, :] < 0) | (own_pos[None, :] <= q_pos[:, None])
        s = s.masked_fill(~allowed, float("-inf"))
        p = torch.softmax(s, dim=-1)
        p = torch.nan_to_num(p, nan=0.0)  # a row with no visible key: output 0, as the kernels define it
        out[row:row + qn] = torch.einsum("hqk,khd->qhd", p, vb)
        row += qn
    return out
