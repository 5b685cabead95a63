"""The sorting-free sampler as one Triton kernel: one program per row, thresholds by pivot counting, no host sync.

Per row, for scaled logits x = logit * (1/T) and m = max x (definitions in `prompt_tree.sampler`):
  pass 1   raw max and sum of exp (the logprob normaliser), the first argmax (greedy stops here), and for plain
           temperature sampling the normaliser of x.
  pass 2   (any filter) count and mass of {x >= m + c} at P = 16 pivots c: 0, -1, ..., -30, log(min_p), -inf.
           The largest pivot L that provably lies at or below the final threshold T* (from the counts for top-k,
           the masses for top-p, the pivot itself for min-p) and holds at most C elements above it is chosen.
  pass 3   compaction: the <= C elements x >= L, in vocabulary order, into a per-row scratch buffer. Then, in
           registers: a sort of those C values gives t_k, the masses from the top give t_p, and the inverse-CDF
           pick runs over the buffer in vocabulary order. No pass 4.
So the common case reads [B, V] three times (greedy once, plain temperature twice: pass 1 and a pick scan that
stops at the token). When no pivot qualifies (a nucleus wider than C tokens, or k > C), each threshold is found by
refining its bracket between two pivots: P new pivots evenly spaced in the order-preserving integer image of the
floats (`_key`), one pass each, until the bracket holds <= C elements (typically one pass, at most 8 since each
shrinks a 32-bit range 17-fold), then one compaction pass; then a pick scan. The pure-torch equivalent is
`prompt_tree.sampler.Sampler` with backend "torch"; both are tested against `sampling.sample_reference`.

The uniform is computed in the kernel by the same integer function as `seeds.uniforms` (MurmurHash3 x86_32 of the
sequence id and step words), and written to `u_out` so tests can compare it.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

PIVOTS = 16  # P: pivots per counting pass (a power of two for tl.arange)
PIVOT_OFFSETS = (0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -10.0, -12.0, -15.0, -20.0, -30.0)
BLOCK = 1024  # elements per step of the streaming passes (pass 1, compaction, pick)
PIVOT_BLOCK = 256  # elements per step of a counting pass: its [PIVOT_BLOCK, P] accumulators live in registers
_U32 = 0xFFFFFFFF


@triton.jit
def _key(x):
    """fp32 -> int32 with the same order (-0.0 first becomes +0.0, so equal floats get equal keys)."""
    b = (x + 0.0).to(tl.int32, bitcast=True)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


@triton.jit
def _from_key(k):
    """The inverse of `_key`: int32 -> fp32."""
    return (k ^ ((k >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)


@triton.jit
def _at(vec, ar, j):
    """vec[j] for a register vector (0 when j is out of range). vec, ar: [N]."""
    return tl.sum(tl.where(ar == j, vec, 0), 0)


@triton.jit
def _mm_round(h, w):
    """One MurmurHash3 x86_32 body round on uint32 scalars (seeds._murmur3_words)."""
    k = w * tl.full([], 0xCC9E2D51, tl.uint32)
    k = (k << 15) | (k >> 17)
    k = k * tl.full([], 0x1B873593, tl.uint32)
    h = h ^ k
    h = (h << 13) | (h >> 19)
    return h * tl.full([], 5, tl.uint32) + tl.full([], 0xE6546B64, tl.uint32)


@triton.jit
def _murmur4(w0, w1, w2, w3, seed):
    h = _mm_round(seed, w0)
    h = _mm_round(h, w1)
    h = _mm_round(h, w2)
    h = _mm_round(h, w3)
    h = h ^ tl.full([], 16, tl.uint32)
    h = h ^ (h >> 16)
    h = h * tl.full([], 0x85EBCA6B, tl.uint32)
    h = h ^ (h >> 13)
    h = h * tl.full([], 0xC2B2AE35, tl.uint32)
    return h ^ (h >> 16)


@triton.jit
def _uniform(sid, step, key_lo, key_hi):
    """seeds.uniforms for one (sequence id, step): int64 scalars -> fp64 in (0, 1)."""
    w0 = (sid & 0xFFFFFFFF).to(tl.uint32)
    w1 = ((sid >> 32) & 0xFFFFFFFF).to(tl.uint32)
    w2 = (step & 0xFFFFFFFF).to(tl.uint32)
    w3 = ((step >> 32) & 0xFFFFFFFF).to(tl.uint32)
    # (+ a typed zero: an int argument equal to 1 arrives as a constexpr, which has no .to)
    x = _murmur4(w0, w1, w2, w3, (key_lo + tl.zeros([], tl.int64)).to(tl.uint32)).to(tl.int64)
    y = _murmur4(w0, w1, w2, w3, (key_hi + tl.zeros([], tl.int64)).to(tl.uint32)).to(tl.int64)
    bits = ((x << 21) ^ (y >> 11)) & 0x1FFFFFFFFFFFFF
    return (bits.to(tl.float64) + 0.5) * 1.1102230246251565e-16  # 2^-53


@triton.jit
def _count_pass(row_ptr, V, inv_t, m, piv, PB: tl.constexpr, P: tl.constexpr):
    """cnt[j] = #{x >= piv[j]}, mass[j] = sum of exp(x - m) over them, over the whole row. piv: [P] fp32 ->
    ([P] int32, [P] fp32)."""
    return _count_range(row_ptr, 0, V, V, inv_t, m, piv, PB, P)


@triton.jit
def _count_range(row_ptr, begin, end, V, inv_t, m, piv, PB: tl.constexpr, P: tl.constexpr):
    """_count_pass over the elements [begin, end) of the row (end <= V need not hold: offsets >= V are masked).

    The accumulators are [P, PB], pivots along dim 0, and x is loaded as [1, PB]: Triton's default layout then
    gives each thread whole elements and all P pivots in its registers, so a loaded x is compared where it lies.
    The transposed form ([PB, P] with x[:, None]) spread the P pivots of an element over 16 threads and moved x
    and exp(x - m) through shared memory twice per step (two convert_layouts in the loop), which made a count
    pass several times slower than a plain streaming pass on an H200. The loop has no cross-thread reduction;
    the sums over dim 1 run once."""
    cnt = tl.zeros([P, PB], tl.int32)
    mass = tl.zeros([P, PB], tl.float32)
    pv = piv[:, None]
    for start in range(begin, end, PB):
        offs = start + tl.arange(0, PB)[None, :]
        inb = offs < V
        x = tl.load(row_ptr + offs, mask=inb, other=float("-inf")).to(tl.float32) * inv_t  # [1, PB]
        e = tl.exp(x - m)
        ge = (x >= pv) & inb  # inb: a -inf pivot counts the row, never the padding
        cnt += ge.to(tl.int32)
        mass += tl.where(ge, e, 0.0)
    return tl.sum(cnt, 1), tl.sum(mass, 1)


@triton.jit
def _compact(row_ptr, V, inv_t, lo, hi, bv_ptr, bi_ptr, BLOCK: tl.constexpr, C: tl.constexpr):
    """Write the x with lo <= x < hi, in vocabulary order, to bv[0:n] and their indices to bi[0:n]; returns n."""
    n = tl.zeros([], tl.int32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inb = offs < V
        x = tl.load(row_ptr + offs, mask=inb, other=float("-inf")).to(tl.float32) * inv_t
        sel = inb & (x >= lo) & (x < hi)
        pos = n + tl.cumsum(sel.to(tl.int32), 0) - 1
        tl.store(bv_ptr + pos, x, mask=sel & (pos < C))
        tl.store(bi_ptr + pos, offs, mask=sel & (pos < C))
        n += tl.sum(sel.to(tl.int32), 0)
    tl.debug_barrier()  # the buffer is read back by other threads of this program
    return n


@triton.jit
def _online_stats(row_ptr, start, n, V, inv_t, NEED_Z: tl.constexpr, BLOCK: tl.constexpr):
    """Per lane, over elements [start, start + n) of a row (those < V): the online max of the raw logits, the sum of
    exp(raw - that max), the same at temperature (NEED_Z: exp((raw - max) * inv_t)) and the first argmax.
    -> ([BLOCK] fp32 max, sum, sum at temperature, [BLOCK] int32 argmax)."""
    NEG: tl.constexpr = float("-inf")
    ar = tl.arange(0, BLOCK)
    m_l = tl.full([BLOCK], NEG, tl.float32)
    s_l = tl.zeros([BLOCK], tl.float32)
    z_l = tl.zeros([BLOCK], tl.float32)
    a_l = tl.zeros([BLOCK], tl.int32)
    for i in range(0, n, BLOCK):
        offs = start + i + ar
        raw = tl.load(row_ptr + offs, mask=offs < V, other=NEG).to(tl.float32)
        m_new = tl.maximum(m_l, raw)
        a_l = tl.where(raw > m_l, offs, a_l)  # strictly greater: a lane keeps its first maximum
        m_use = tl.where(m_new == NEG, 0.0, m_new)
        s_l = s_l * tl.exp(m_l - m_use) + tl.exp(raw - m_use)
        if NEED_Z:
            z_l = z_l * tl.exp((m_l - m_use) * inv_t) + tl.exp((raw - m_use) * inv_t)
        m_l = m_new
    return m_l, s_l, z_l, a_l


@triton.jit
def _narrow(piv, cnt, mass, ok, lo, lo_c, lo_m, hi, hi_c, hi_m, P: tl.constexpr):
    """The tightest bracket after counting at pivots piv ([P], ascending, inside [lo, hi)), where ok[j] says
    F(piv[j]) >= target; F decreases with the pivot, so ok holds on a prefix. Returns the new
    (lo, lo_c, lo_m, hi, hi_c, hi_m)."""
    ar = tl.arange(0, P)
    j_lo = tl.max(tl.where(ok, ar, -1), 0)
    j_hi = tl.min(tl.where(ok, P, ar), 0)
    lo_new = j_lo >= 0
    hi_new = j_hi < P
    return (tl.where(lo_new, _at(piv, ar, j_lo), lo), tl.where(lo_new, _at(cnt, ar, j_lo), lo_c),
            tl.where(lo_new, _at(mass, ar, j_lo), lo_m), tl.where(hi_new, _at(piv, ar, j_hi), hi),
            tl.where(hi_new, _at(cnt, ar, j_hi), hi_c), tl.where(hi_new, _at(mass, ar, j_hi), hi_m))


@triton.jit
def _resolve(sv, g, reach, live, n, hi_c, hi_m, C: tl.constexpr):
    """The largest element value t with F(t) >= target, from a bracket's compacted values sorted descending (sv,
    [C]), their masses g and reach[i] = F(sv[i]) >= target. Returns (t, count at t, mass at t)."""
    arc = tl.arange(0, C)
    first = tl.min(tl.where(live & reach, arc, n - 1), 0)  # n - 1: rounding lost the last bit of mass
    t = _at(sv, arc, first)
    above = live & (sv >= t)
    return t, hi_c + tl.sum(above.to(tl.int32), 0), hi_m + tl.sum(tl.where(above, g, 0.0), 0)


@triton.jit
def _lower_pivot(piv, cnt, mass, z, t_min, top_k, top_p, HAS_TOPK: tl.constexpr, HAS_TOPP: tl.constexpr,
                 HAS_MINP: tl.constexpr, C: tl.constexpr, P: tl.constexpr):
    """The index of the largest fixed pivot L that provably lies at or below T* (see the module docstring of
    prompt_tree.sampler) and has at most C elements at or above it; P when none does. piv, cnt, mass: [P]."""
    arp = tl.arange(0, P)
    if HAS_TOPK:
        below = cnt >= top_k
        if HAS_MINP and not HAS_TOPP:
            below = below | (piv <= t_min)
    elif HAS_TOPP:
        below = mass >= top_p * z
        if HAS_MINP:
            below = below | (piv <= t_min)
    else:
        below = piv <= t_min
    return tl.min(tl.where(below & (cnt <= C), arp, P), 0)


@triton.jit
def _buffer_thresholds(sv, live, n, m, z, top_k, top_p, HAS_TOPK: tl.constexpr, HAS_TOPP: tl.constexpr,
                       C: tl.constexpr):
    """t_k and t_p (-inf when off) from the values sorted descending (sv, [C], n live) of everything at or above a
    pivot L <= T*; z: the row's mass (top-p's normaliser without top-k)."""
    arc = tl.arange(0, C)
    ws = tl.exp(sv - m)
    t_k = tl.full([], float("-inf"), tl.float32)
    z_k = z
    if HAS_TOPK:
        t_k = tl.where(top_k <= n, _at(sv, arc, top_k - 1), float("-inf"))
        z_k = tl.sum(tl.where(sv >= t_k, ws, 0.0), 0)
    t_p = tl.full([], float("-inf"), tl.float32)
    if HAS_TOPP:
        cum = tl.cumsum(tl.where(sv >= t_k, ws, 0.0), 0)
        first = tl.min(tl.where(live & (cum >= top_p * z_k), arc, C), 0)
        t_p = tl.where(first < C, _at(sv, arc, first), float("-inf"))
    return t_k, t_p


@triton.jit
def _top_k_start(piv, cnt, mass, m, top_k, P: tl.constexpr):
    """Top-k's bracket from the fixed pivots (piv descending, the last -inf): (lo, lo_c, lo_m, hi, hi_c, hi_m)."""
    arp = tl.arange(0, P)
    hi_top = _from_key(_key(m) + 1)  # just above the max: count and mass 0
    j = tl.min(tl.where(cnt >= top_k, arp, P), 0)  # exists: the -inf pivot counts V >= k
    up = j > 0
    return (_at(piv, arp, j), _at(cnt, arp, j), _at(mass, arp, j), tl.where(up, _at(piv, arp, j - 1), hi_top),
            tl.where(up, _at(cnt, arp, j - 1), 0), tl.where(up, _at(mass, arp, j - 1), 0.0))


@triton.jit
def _top_p_start(piv, cnt, mass, m, t_k, c_k, z_k, target_p, P: tl.constexpr):
    """Top-p's bracket from the fixed pivots once t_k (count c_k, mass z_k) is known, for the target mass
    target_p = top_p * z_k: (lo, lo_c, lo_m, hi, hi_c, hi_m)."""
    arp = tl.arange(0, P)
    hi_top = _from_key(_key(m) + 1)
    j = tl.min(tl.where((mass >= target_p) & (piv >= t_k), arp, P), 0)
    found = j < P
    # a pivot reaching the target, else t_k; above it the next larger pivot, else hi_top
    j_up = tl.where(found, j - 1, tl.max(tl.where(piv > t_k, arp, -1), 0))
    up = j_up >= 0
    return (tl.where(found, _at(piv, arp, j), t_k), tl.where(found, _at(cnt, arp, j), c_k),
            tl.where(found, _at(mass, arp, j), z_k), tl.where(up, _at(piv, arp, j_up), hi_top),
            tl.where(up, _at(cnt, arp, j_up), 0), tl.where(up, _at(mass, arp, j_up), 0.0))


@triton.jit
def _select(row_ptr, V, inv_t, m, target_c, target_m, lo, lo_c, lo_m, hi, hi_c, hi_m, bv_ptr, bi_ptr,
            BY_MASS: tl.constexpr, BLOCK: tl.constexpr, PB: tl.constexpr, C: tl.constexpr, P: tl.constexpr):
    """The largest element value t with F(t) >= target, given F(lo) >= target > F(hi); F is the count (target_c)
    or, BY_MASS, the mass (target_m) of {x >= t}. (lo|hi)_(c|m): the count and mass at lo and hi.
    Returns (t, count at t, mass at t)."""
    ar = tl.arange(0, P)
    while ((lo_c - hi_c) > C) & ((_key(hi).to(tl.int64) - _key(lo).to(tl.int64)) > 1):
        klo = _key(lo).to(tl.int64)
        khi = _key(hi).to(tl.int64)
        piv = _from_key((klo + ((khi - klo) * (ar + 1)) // (P + 1)).to(tl.int32))  # ascending, inside [lo, hi)
        cnt, mass = _count_pass(row_ptr, V, inv_t, m, piv, PB, P)
        if BY_MASS:
            ok = mass >= target_m
        else:
            ok = cnt >= target_c
        lo, lo_c, lo_m, hi, hi_c, hi_m = _narrow(piv, cnt, mass, ok, lo, lo_c, lo_m, hi, hi_c, hi_m, P)
    t = lo
    t_c = lo_c
    t_m = lo_m
    if (lo_c - hi_c) <= C:
        n = _compact(row_ptr, V, inv_t, lo, hi, bv_ptr, bi_ptr, BLOCK, C)
        arc = tl.arange(0, C)
        live = arc < n
        s = tl.sort(tl.load(bv_ptr + arc, mask=live, other=float("-inf")), descending=True)
        g = tl.where(live, tl.exp(s - m), 0.0)
        if BY_MASS:
            reach = (hi_m + tl.cumsum(g, 0)) >= target_m
        else:
            reach = (hi_c + arc + 1) >= target_c
        t, t_c, t_m = _resolve(s, g, reach, live, n, hi_c, hi_m, C)
    # else: one distinct value is left in [lo, hi), and it is lo
    return t, t_c, t_m


@triton.jit
def _pick_scan(row_ptr, V, inv_t, m, T, total, u, BLOCK: tl.constexpr):
    """First index, in vocabulary order, whose running kept mass exceeds u * total (else the last kept one)."""
    target = (u * total.to(tl.float64)).to(tl.float32)
    run = tl.zeros([], tl.float32)
    tok = tl.full([], -1, tl.int32)
    last = tl.full([], -1, tl.int32)
    start = tl.zeros([], tl.int32)
    while (tok < 0) & (start < V):
        offs = start + tl.arange(0, BLOCK)
        inb = offs < V
        x = tl.load(row_ptr + offs, mask=inb, other=float("-inf")).to(tl.float32) * inv_t
        kept = inb & (x >= T)
        cum = run + tl.cumsum(tl.where(kept, tl.exp(x - m), 0.0), 0)
        j = tl.min(tl.where(kept & (cum > target), offs, 2147483647), 0)
        tok = tl.where(j < 2147483647, j, tok)
        last = tl.maximum(last, tl.max(tl.where(kept, offs, -1), 0))
        run = tl.max(cum, 0)  # cum is non-decreasing: its max is the running total
        start += BLOCK
    return tl.where(tok < 0, last, tok)


@triton.jit
def _sample_kernel(
    logits_ptr, stride_row,  # [B, V] fp32 / fp16 / bf16, unit stride along V
    seq_ptr,  # [B] int64
    step_ptr, step_stride, step_val,  # [B] or [] int64 (STEP_TENSOR) or the int step_val
    tok_ptr, lp_ptr, u_ptr,  # [B] int64, [B] fp32, [B] fp64 outputs
    bv_ptr, bi_ptr,  # [B, C] fp32 / int32 scratch
    piv_off_ptr,  # [P] fp32 pivot offsets, descending, the last -inf
    V, inv_t, top_k, top_p, log_min_p, key_lo, key_hi,
    GREEDY: tl.constexpr, NEED_Z: tl.constexpr, HAS_TOPK: tl.constexpr, HAS_TOPP: tl.constexpr,
    HAS_MINP: tl.constexpr, STEP_TENSOR: tl.constexpr,
    BLOCK: tl.constexpr, PB: tl.constexpr, C: tl.constexpr, P: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    bv_ptr += row * C
    bi_ptr += row * C
    NEG: tl.constexpr = float("-inf")

    # ---- pass 1: per-lane online max / sum of exp of the raw logits (and of x when NEED_Z), first argmax
    m_l, s_l, z_l, a_l = _online_stats(row_ptr, 0, V, V, inv_t, NEED_Z, BLOCK)
    m_raw = tl.max(m_l, 0)
    m_use = tl.where(m_raw == NEG, 0.0, m_raw)
    lse = m_use + tl.log(tl.sum(s_l * tl.exp(m_l - m_use), 0))

    if GREEDY:
        tok = tl.min(tl.where(m_l == m_raw, a_l, 2147483647), 0)
    else:
        if STEP_TENSOR:
            step = tl.load(step_ptr + row * step_stride)
        else:
            step = step_val + tl.zeros([], tl.int64)
        u = _uniform(tl.load(seq_ptr + row), step, key_lo, key_hi)
        tl.store(u_ptr + row, u)
        m = m_raw * inv_t  # = max x exactly: multiplying by a positive constant keeps the order
        t_min = NEG
        if HAS_MINP:
            t_min = m + log_min_p
        if HAS_TOPK or HAS_TOPP or HAS_MINP:
            # ---- pass 2: counts and masses at the fixed pivots
            arp = tl.arange(0, P)
            piv = m + tl.load(piv_off_ptr + arp)
            cnt, mass = _count_pass(row_ptr, V, inv_t, m, piv, PB, P)
            z = _at(mass, arp, P - 1)  # the last pivot is -inf: the whole row
            j_l = _lower_pivot(piv, cnt, mass, z, t_min, top_k, top_p, HAS_TOPK, HAS_TOPP, HAS_MINP, C, P)
            if j_l < P:
                # ---- pass 3: everything at or above L, then thresholds and the pick in registers
                L = _at(piv, arp, j_l)
                n = _compact(row_ptr, V, inv_t, L, float("inf"), bv_ptr, bi_ptr, BLOCK, C)
                arc = tl.arange(0, C)
                live = arc < n
                cv = tl.load(bv_ptr + arc, mask=live, other=NEG)
                ci = tl.load(bi_ptr + arc, mask=live, other=0)
                t_k, t_p = _buffer_thresholds(tl.sort(cv, descending=True), live, n, m, z, top_k, top_p, HAS_TOPK,
                                              HAS_TOPP, C)
                # T* >= L holds exactly; max with L only repairs a rounding miss
                T = tl.maximum(tl.maximum(tl.maximum(t_k, t_p), t_min), L)
                kept = live & (cv >= T)
                wv = tl.where(kept, tl.exp(cv - m), 0.0)
                target = (u * tl.sum(wv, 0).to(tl.float64)).to(tl.float32)
                j = tl.min(tl.where(kept & (tl.cumsum(wv, 0) > target), arc, C), 0)
                j = tl.where(j < C, j, tl.max(tl.where(kept, arc, -1), 0))
                tok = _at(ci, arc, j)
            else:
                # ---- fallback: refine each threshold's bracket, then a pick scan
                zero_c = tl.zeros([], tl.int32)
                zero_m = tl.zeros([], tl.float32)
                t_k = tl.full([], NEG, tl.float32)
                c_k = V + zero_c
                z_k = z
                if HAS_TOPK:
                    lo, lo_c, lo_m, hi, hi_c, hi_m = _top_k_start(piv, cnt, mass, m, top_k, P)
                    t_k, c_k, z_k = _select(row_ptr, V, inv_t, m, top_k, zero_m, lo, lo_c, lo_m, hi, hi_c, hi_m,
                                            bv_ptr, bi_ptr, False, BLOCK, PB, C, P)
                t_p = tl.full([], NEG, tl.float32)
                m_p = z
                if HAS_TOPP:
                    target_p = top_p * z_k
                    lo, lo_c, lo_m, hi, hi_c, hi_m = _top_p_start(piv, cnt, mass, m, t_k, c_k, z_k, target_p, P)
                    t_p, c_p, m_p = _select(row_ptr, V, inv_t, m, zero_c, target_p, lo, lo_c, lo_m, hi, hi_c, hi_m,
                                            bv_ptr, bi_ptr, True, BLOCK, PB, C, P)
                T = tl.maximum(tl.maximum(t_k, t_p), t_min)
                total = z
                if HAS_TOPK:
                    total = tl.where(t_k == T, z_k, total)
                if HAS_TOPP:
                    total = tl.where(t_p == T, m_p, total)
                if HAS_MINP:
                    j = tl.min(tl.where(piv == t_min, arp, P), 0)  # the pivot m + log(min_p) is t_min exactly
                    total = tl.where(t_min == T, _at(mass, arp, j), total)
                tok = _pick_scan(row_ptr, V, inv_t, m, T, total, u, BLOCK)
        else:
            z = tl.sum(z_l * tl.exp((m_l - m_use) * inv_t), 0)
            tok = _pick_scan(row_ptr, V, inv_t, m, NEG, z, u, BLOCK)
    lp = tl.load(row_ptr + tok).to(tl.float32) - lse
    tl.store(tok_ptr + row, tok.to(tl.int64))
    tl.store(lp_ptr + row, lp)


def pivot_offsets(log_min_p: float | None, device) -> torch.Tensor:
    """The fixed pivots' offsets c (pivot m + c), descending: PIVOT_OFFSETS, min-p's own offset among them (its
    pivot is t_min exactly, and its mass the row kernel's fallback pick total), padded with -inf to PIVOTS (the
    last one counts the whole row). -> [P] fp32."""
    offsets = sorted(set(PIVOT_OFFSETS) | ({log_min_p} if log_min_p is not None else set()), reverse=True)
    assert len(offsets) < PIVOTS
    offsets += [float("-inf")] * (PIVOTS - len(offsets))
    return torch.tensor(offsets, dtype=torch.float32, device=device)


class TritonSampler:
    """The launcher behind `Sampler(backend="triton-row")`: constants on the device built once, one launch per call.

    sampler: the `prompt_tree.sampler.Sampler` whose settings (inv_t, top_p, log_min_p, key, candidates) it uses.
    """

    def __init__(self, sampler, block: int | None = None):
        self.s = sampler
        self.block = block or BLOCK
        self.pivot_block = min(PIVOT_BLOCK, self.block)
        self.pivot_offsets = pivot_offsets(sampler.log_min_p, sampler.device)
        self.u_out = None  # [B] fp64 of the last call (tests compare it with seeds.uniforms)

    def __call__(self, logits: torch.Tensor, seq_ids: torch.Tensor, step):
        s = self.s
        B, V = logits.shape
        if logits.stride(1) != 1:
            logits = logits.contiguous()
        dev = logits.device
        C = s.candidates
        tokens = torch.empty(B, dtype=torch.int64, device=dev)
        logprobs = torch.empty(B, dtype=torch.float32, device=dev)
        u_out = torch.empty(B, dtype=torch.float64, device=dev)
        greedy = s.greedy
        k = s.top_k_for(V)
        has_topk, has_topp, has_minp = s.filters_for(V)
        any_filter = has_topk or has_topp or has_minp
        bv = torch.empty(B if any_filter else 1, C, dtype=torch.float32, device=dev)
        bi = torch.empty(B if any_filter else 1, C, dtype=torch.int32, device=dev)
        step_tensor = isinstance(step, torch.Tensor)
        step_arg = step if step_tensor else seq_ids  # any int64 pointer when unused
        step_stride = (step.stride(0) if step.dim() == 1 else 0) if step_tensor else 0
        _sample_kernel[(B,)](
            logits, logits.stride(0), seq_ids, step_arg, step_stride, 0 if step_tensor else int(step),
            tokens, logprobs, u_out, bv, bi, self.pivot_offsets,
            V, 1.0 if greedy else s.inv_t, k, s.top_p, s.log_min_p if has_minp else 0.0, s.key[0], s.key[1],
            GREEDY=greedy, NEED_Z=not greedy and not any_filter, HAS_TOPK=has_topk, HAS_TOPP=has_topp,
            HAS_MINP=has_minp, STEP_TENSOR=step_tensor,
            BLOCK=self.block, PB=self.pivot_block, C=C, P=PIVOTS, num_warps=8,
        )
        self.u_out = u_out
        return tokens, logprobs
