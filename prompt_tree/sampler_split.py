"""The sorting-free sampler with every row split over many programs: passes over chunks of the vocabulary on a
(B, S) grid, each decision taken once per row on a (B,) grid, the two alternating a fixed number of rounds.

Why: the one-program-per-row kernel (`prompt_tree.sampler_triton`, backend "triton-row") streams a whole 128k row
through one SM, so at batch 32 it uses 32 of 132 SMs and even at batch 1024 it ran at ~10x the bandwidth floor
on an H200 (docs/benchmarks/sampler.json). Here a row's S = ceil(V / chunk) chunks are read by S programs at once.

The function is the same as that kernel's (definitions of x, m, t_k, t_p, t_min and the tie rule in
`prompt_tree.sampler`), and so are its thresholds: counts and masses at P fixed pivots m + c, then either a
compaction of the <= C elements above the chosen pivot L (the common case: thresholds and the pick in registers),
or, when no pivot qualifies, a refinement of each threshold's bracket by P pivots evenly spaced in key space
(`_key`) until it holds <= C elements, a compaction of the bracket, and a pick over the whole row.

In front of that, for top-p and min-p, the bound path (`_start_kernel`): a lower bound L <= T* that needs no count
(from the row's max and normaliser), and a compaction above it; a row whose compaction holds <= C elements is
done after that one pass, one that overflows goes on to the fixed pivots.

Every step is a per-row state machine whose state lives in small device tensors (`_State`):
  stats   (B, S)  per chunk: max, sum of exp and first argmax of the raw logits
  start   (B,)    the row's max, logsumexp, uniform; greedy ends here; else the bound compaction or the fixed
                  pivots (or, with no filter, straight to the pick)
  round   a data pass (B, S) doing what the row's phase asks (COUNT at the pivots, COMPACT a value range into
          the row's buffer, PICK_MASS: the kept mass per chunk, PICK_SCAN: the pick inside one chunk), then a
          decision (B,) that reads the partials and sets the next phase. A row that is DONE costs its programs
          one load.
The number of rounds launched is the worst case for the settings (`rounds_for`), fixed on the host, so a call
has no data-dependent launch and no host sync, and can be captured in a CUDA graph. The common case needs one
round (the bound COMPACT) or two (COUNT, COMPACT); a flat top-p row about six (COUNT, two refinements, COMPACT,
PICK_MASS, PICK_SCAN).

Compaction takes its positions in the row's buffer with one atomic add per block that has selected elements, so
the buffer's order is arbitrary; everything read from it is order-free (a sort of the values for the
thresholds, a sort of the indices for the pick in vocabulary order), so results do not depend on that order.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .sampler_triton import (PIVOTS, _at, _buffer_thresholds, _count_range, _from_key, _key, _lower_pivot,
                             _narrow, _online_stats, _resolve, _top_k_start, _top_p_start, _uniform, pivot_offsets)

CHUNK = 4096  # vocabulary elements per program of a data pass: V = 128256 gives S = 32 programs per row
# Rounds after the first FULL_ROUNDS run LATE_CHUNKS_PER_PROGRAM chunks per program. A round launches its programs
# whatever the rows' phases (a fixed launch count is what makes a call capturable), and a round with nothing to do
# cost ~0.04 ms at B = 1024 (its B x S = 32k programs, each loading a phase and leaving: sampling.md). Rows need 1
# round (peaked, the bound path), 3 (a fixed pivot qualifies) or about 6 (flat top-p: count, two refinements,
# compaction, pick); only rows of clustered ties refine further, and they still finish, more slowly.
# Measured on the H200 against one grid for every round (sampler.json run G, B1024): 0.945 -> 0.896 ms on peaked
# logits, 3.817 -> 3.745 on flat ones.
FULL_ROUNDS = 6
LATE_CHUNKS_PER_PROGRAM = 8
BLOCK = 1024  # elements per step inside a chunk (stats, compaction, picks)
PIVOT_BLOCK = 256  # elements per step of a counting pass: [PIVOT_BLOCK, P] accumulators in registers
_INT_MAX = tl.constexpr(2147483647)

# phases (host ints and their jit twins)
DONE, COUNT, COMPACT, RESOLVED, PICK_MASS, PICK_SCAN = range(6)
# what a COUNT / COMPACT / RESOLVED round is for
GOAL_FIXED, GOAL_ALL, GOAL_K, GOAL_P, GOAL_BOUND = range(5)
# float state slots
F_M, F_LSE, F_Z, F_LO, F_HI, F_LO_M, F_HI_M, F_TK, F_ZK, F_TGT, F_T, F_RUN, F_PICK = range(13)
NF = 16
# int state slots
I_PHASE, I_GOAL, I_LO_C, I_HI_C, I_CK, I_N, I_CHUNK = range(7)
NI = 8

_DONE = tl.constexpr(DONE)
_COUNT = tl.constexpr(COUNT)
_COMPACT = tl.constexpr(COMPACT)
_RESOLVED = tl.constexpr(RESOLVED)
_PICK_MASS = tl.constexpr(PICK_MASS)
_PICK_SCAN = tl.constexpr(PICK_SCAN)
_G_FIXED = tl.constexpr(GOAL_FIXED)
_G_ALL = tl.constexpr(GOAL_ALL)
_G_K = tl.constexpr(GOAL_K)
_G_P = tl.constexpr(GOAL_P)
_G_BOUND = tl.constexpr(GOAL_BOUND)
_F_M = tl.constexpr(F_M)
_F_LSE = tl.constexpr(F_LSE)
_F_Z = tl.constexpr(F_Z)
_F_LO = tl.constexpr(F_LO)
_F_HI = tl.constexpr(F_HI)
_F_LO_M = tl.constexpr(F_LO_M)
_F_HI_M = tl.constexpr(F_HI_M)
_F_TK = tl.constexpr(F_TK)
_F_ZK = tl.constexpr(F_ZK)
_F_TGT = tl.constexpr(F_TGT)
_F_T = tl.constexpr(F_T)
_F_RUN = tl.constexpr(F_RUN)
_F_PICK = tl.constexpr(F_PICK)
_NF = tl.constexpr(NF)
_I_PHASE = tl.constexpr(I_PHASE)
_I_GOAL = tl.constexpr(I_GOAL)
_I_LO_C = tl.constexpr(I_LO_C)
_I_HI_C = tl.constexpr(I_HI_C)
_I_CK = tl.constexpr(I_CK)
_I_N = tl.constexpr(I_N)
_I_CHUNK = tl.constexpr(I_CHUNK)
_NI = tl.constexpr(NI)


# The bound path is tried when the row's Z = sum exp(x - m) = 1 / p_max is at most C / BOUND_Z_DIVISOR: a
# distribution whose top token has less than 1/128 of the mass (C = 1024) has a wide nucleus, and the compaction
# would overflow (a random-weight model's flat logits: Z ~ 1000).
BOUND_Z_DIVISOR = 8
_BOUND_Z_DIVISOR = tl.constexpr(BOUND_Z_DIVISOR)


def rounds_for(greedy: bool, top_k: bool, top_p: bool, min_p: bool) -> int:
    """The most rounds a row can need: the bound compaction when it applies (1, see `_start_kernel`), the fixed
    count (1), per refined threshold at most 8 refinements (a 32-bit key range shrinks >= 17-fold per pass with
    P = 16) and its compaction or resolution (1), then the pick (2)."""
    if greedy:
        return 0
    if not (top_k or top_p or min_p):
        return 2
    return int(top_p or min_p) + 1 + 9 * int(top_k) + 9 * int(top_p) + 2


# ---------------------------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _stats_kernel(logits_ptr, stride_row, V, pmax_ptr, psum_ptr, parg_ptr, pz_ptr, S, inv_t,
                  NEED_Z: tl.constexpr, CH: tl.constexpr, BLOCK: tl.constexpr):
    """Per (row, chunk): max, sum of exp(raw - that max), first argmax of the raw logits, and (NEED_Z) the sum of
    exp((raw - that max) * inv_t). -> [B, S] each."""
    row = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    row_ptr = logits_ptr + row * stride_row
    NEG: tl.constexpr = float("-inf")
    m_l, s_l, z_l, a_l = _online_stats(row_ptr, s * CH, CH, V, inv_t, NEED_Z, BLOCK)
    mc = tl.max(m_l, 0)
    mu = tl.where(mc == NEG, 0.0, mc)
    at = row * S + s
    if NEED_Z:
        tl.store(pz_ptr + at, tl.sum(z_l * tl.exp((m_l - mu) * inv_t), 0))
    tl.store(pmax_ptr + at, mc)
    tl.store(psum_ptr + at, tl.sum(s_l * tl.exp(m_l - mu), 0))
    tl.store(parg_ptr + at, tl.min(tl.where(m_l == mc, a_l, _INT_MAX), 0))


@triton.jit
def _start_kernel(logits_ptr, stride_row, pmax_ptr, psum_ptr, parg_ptr, pz_ptr, S, V,
                  seq_ptr, step_ptr, step_stride, step_val, tok_ptr, lp_ptr, u_ptr,
                  fs_ptr, is_ptr, piv_ptr, piv_off_ptr, inv_t, key_lo, key_hi, top_k, top_p, log_min_p,
                  GREEDY: tl.constexpr, ANY_FILTER: tl.constexpr, STEP_TENSOR: tl.constexpr,
                  HAS_TOPK: tl.constexpr, HAS_TOPP: tl.constexpr, HAS_MINP: tl.constexpr,
                  S_PAD: tl.constexpr, C: tl.constexpr, P: tl.constexpr):
    """Per row: max, logsumexp and the greedy token from the chunk stats; the uniform; the first phase.

    With top-p or min-p the first phase may be a compaction above a threshold lower bound L known without any
    count (the bound path): every kept token has x >= T* >= L, where
      min-p:            L = t_min = m + log(min_p) exactly;
      top-p:            the mass below L is at most V exp(L - m), so L = m + log((1 - p) Z / V) leaves at least
                        p Z above it: t_p >= L (Z = sum exp(x - m), from the stats pass);
      top-p with top-k: the same within the top k, whose mass z_k >= 1: L = m + log((1 - p) / k).
    The largest of those applies. If the compaction finds more than C elements above L (or fewer than k), the
    row goes on to the fixed pivots as without it."""
    row = tl.program_id(0).to(tl.int64)
    NEG: tl.constexpr = float("-inf")
    ars = tl.arange(0, S_PAD)
    ins = ars < S
    ms = tl.load(pmax_ptr + row * S + ars, mask=ins, other=NEG)
    m_raw = tl.max(ms, 0)
    mu = tl.where(m_raw == NEG, 0.0, m_raw)
    lse = mu + tl.log(tl.sum(tl.load(psum_ptr + row * S + ars, mask=ins, other=0.0) * tl.exp(ms - mu), 0))
    fs = fs_ptr + row * _NF
    st = is_ptr + row * _NI
    if GREEDY:
        args = tl.load(parg_ptr + row * S + ars, mask=ins, other=_INT_MAX)
        tok = tl.min(tl.where(ins & (ms == m_raw), args, _INT_MAX), 0)  # chunks are in order: the first maximum
        tl.store(tok_ptr + row, tok.to(tl.int64))
        tl.store(lp_ptr + row, tl.load(logits_ptr + row * stride_row + tok).to(tl.float32) - lse)
        tl.store(st + _I_PHASE, _DONE)
    else:
        if STEP_TENSOR:
            step = tl.load(step_ptr + row * step_stride)
        else:
            step = step_val + tl.zeros([], tl.int64)
        tl.store(u_ptr + row, _uniform(tl.load(seq_ptr + row), step, key_lo, key_hi))
        m = m_raw * inv_t  # = max x exactly: multiplying by a positive constant keeps the order
        tl.store(fs + _F_M, m)
        tl.store(fs + _F_LSE, lse)
        if ANY_FILTER:
            arp = tl.arange(0, P)
            tl.store(piv_ptr + row * P + arp, m + tl.load(piv_off_ptr + arp))
            tl.store(st + _I_GOAL, _G_FIXED)
            tl.store(st + _I_PHASE, _COUNT)
            if HAS_TOPP or HAS_MINP:
                zs = tl.load(pz_ptr + row * S + ars, mask=ins, other=0.0)
                z = tl.sum(zs * tl.exp(ms * inv_t - m), 0)  # chunk maxima rescaled to the row's
                bound = tl.full([], NEG, tl.float32)
                if HAS_MINP:
                    bound = m + log_min_p
                if HAS_TOPP:
                    if HAS_TOPK:
                        bound = tl.maximum(bound, m + tl.log((1.0 - top_p) / top_k))
                    else:
                        bound = tl.maximum(bound, m + tl.log((1.0 - top_p) * z / V))
                if (z * _BOUND_Z_DIVISOR <= C) & (bound > NEG):
                    tl.store(fs + _F_Z, z)
                    tl.store(fs + _F_LO, bound)
                    tl.store(fs + _F_HI, float("inf"))
                    tl.store(st + _I_N, 0)
                    tl.store(st + _I_GOAL, _G_BOUND)
                    tl.store(st + _I_PHASE, _COMPACT)
        else:
            tl.store(fs + _F_T, NEG)
            tl.store(st + _I_PHASE, _PICK_MASS)


@triton.jit
def _pass_kernel(logits_ptr, stride_row, V, S, inv_t, fs_ptr, is_ptr, piv_ptr, part_c_ptr, part_m_ptr,
                 bv_ptr, bi_ptr, tok_ptr, lp_ptr,
                 CH: tl.constexpr, BLOCK: tl.constexpr, PB: tl.constexpr, C: tl.constexpr, P: tl.constexpr,
                 CPP: tl.constexpr):
    """One data pass over chunks s = CPP * program_id(1) + 0 .. CPP - 1 of row `row` (grid (B, ceil(S / CPP))),
    whatever the row's phase asks (see the module docstring). A row that is DONE costs each of its programs one
    load. CPP > 1 serves the late rounds (LATE_CHUNKS_PER_PROGRAM): few rows are still active there, and an
    idle round's cost is its programs'."""
    row = tl.program_id(0).to(tl.int64)
    st = is_ptr + row * _NI
    fs = fs_ptr + row * _NF
    phase = tl.load(st + _I_PHASE)
    if phase != _DONE:
        for c in tl.static_range(CPP):
            s = tl.program_id(1) * CPP + c
            if s < S:
                _pass_chunk(logits_ptr, stride_row, V, S, inv_t, fs, st, piv_ptr, part_c_ptr, part_m_ptr, bv_ptr,
                            bi_ptr, tok_ptr, lp_ptr, row, s, phase, CH, BLOCK, PB, C, P)


@triton.jit
def _pass_chunk(logits_ptr, stride_row, V, S, inv_t, fs, st, piv_ptr, part_c_ptr, part_m_ptr, bv_ptr, bi_ptr,
                tok_ptr, lp_ptr, row, s, phase, CH: tl.constexpr, BLOCK: tl.constexpr, PB: tl.constexpr,
                C: tl.constexpr, P: tl.constexpr):
    """The data pass's work on chunk s of row `row` (fs, st: the row's float and int state)."""
    row_ptr = logits_ptr + row * stride_row
    NEG: tl.constexpr = float("-inf")
    c0 = s * CH
    part = (row * S + s) * P
    if phase == _COUNT:
        arp = tl.arange(0, P)
        cnt, mass = _count_range(row_ptr, c0, c0 + CH, V, inv_t, tl.load(fs + _F_M), tl.load(piv_ptr + row * P + arp),
                                 PB, P)
        tl.store(part_c_ptr + part + arp, cnt)
        tl.store(part_m_ptr + part + arp, mass)
    if phase == _COMPACT:
        lo = tl.load(fs + _F_LO)
        hi = tl.load(fs + _F_HI)
        for i in range(0, CH, BLOCK):
            offs = c0 + i + tl.arange(0, BLOCK)
            inb = offs < V
            x = tl.load(row_ptr + offs, mask=inb, other=NEG).to(tl.float32) * inv_t
            sel = inb & (x >= lo) & (x < hi)
            k = tl.sum(sel.to(tl.int32), 0)
            if k > 0:
                base = tl.atomic_add(st + _I_N, k)  # positions in the row's buffer: order-free (module docstring)
                pos = base + tl.cumsum(sel.to(tl.int32), 0) - 1
                keep = sel & (pos < C)
                tl.store(bv_ptr + row * C + pos, x, mask=keep)
                tl.store(bi_ptr + row * C + pos, offs, mask=keep)
    if phase == _PICK_MASS:
        m = tl.load(fs + _F_M)
        T = tl.load(fs + _F_T)
        acc = tl.zeros([BLOCK], tl.float32)
        for i in range(0, CH, BLOCK):
            offs = c0 + i + tl.arange(0, BLOCK)
            inb = offs < V
            x = tl.load(row_ptr + offs, mask=inb, other=NEG).to(tl.float32) * inv_t
            acc += tl.where(inb & (x >= T), tl.exp(x - m), 0.0)
        tl.store(part_m_ptr + part, tl.sum(acc, 0))
    if phase == _PICK_SCAN:
        if s == tl.load(st + _I_CHUNK):
            m = tl.load(fs + _F_M)
            T = tl.load(fs + _F_T)
            target = tl.load(fs + _F_PICK)
            run = tl.load(fs + _F_RUN)
            tok = tl.full([], _INT_MAX, tl.int32)
            last = tl.full([], -1, tl.int32)
            for i in range(0, CH, BLOCK):
                offs = c0 + i + tl.arange(0, BLOCK)
                inb = offs < V
                x = tl.load(row_ptr + offs, mask=inb, other=NEG).to(tl.float32) * inv_t
                kept = inb & (x >= T)
                cum = run + tl.cumsum(tl.where(kept, tl.exp(x - m), 0.0), 0)
                tok = tl.minimum(tok, tl.min(tl.where(kept & (cum > target), offs, _INT_MAX), 0))
                last = tl.maximum(last, tl.max(tl.where(kept, offs, -1), 0))
                run = tl.max(cum, 0)  # cum is non-decreasing: its max is the running total
            # not reached (rounding between this sum and the chunk's mass): the chunk's last kept token
            tok = tl.where(tok < _INT_MAX, tok, last)
            tl.store(tok_ptr + row, tok.to(tl.int64))
            tl.store(lp_ptr + row, tl.load(row_ptr + tok).to(tl.float32) - tl.load(fs + _F_LSE))


@triton.jit
def _enter(fs, st, piv_row, goal, lo, lo_c, lo_m, hi, hi_c, hi_m, C: tl.constexpr, P: tl.constexpr):
    """Store a threshold's bracket [lo, hi) (count and mass of {x >= .} at both ends) and choose its next
    round: compact it when it holds <= C elements; resolve it to lo when one value is left; else count at P
    pivots evenly spaced inside it in key space."""
    tl.store(fs + _F_LO, lo)
    tl.store(fs + _F_HI, hi)
    tl.store(fs + _F_LO_M, lo_m)
    tl.store(fs + _F_HI_M, hi_m)
    tl.store(st + _I_LO_C, lo_c)
    tl.store(st + _I_HI_C, hi_c)
    tl.store(st + _I_GOAL, goal)
    klo = _key(lo).to(tl.int64)
    khi = _key(hi).to(tl.int64)
    if (lo_c - hi_c) <= C:
        tl.store(st + _I_N, 0)
        tl.store(st + _I_PHASE, _COMPACT)
    elif (khi - klo) <= 1:
        tl.store(st + _I_PHASE, _RESOLVED)
    else:
        ar = tl.arange(0, P)
        tl.store(piv_row + ar, _from_key((klo + ((khi - klo) * (ar + 1)) // (P + 1)).to(tl.int32)))
        tl.store(st + _I_PHASE, _COUNT)


@triton.jit
def _enter_top_p(fs, st, piv_row, fpiv, fcnt, fmass, m, t_k, c_k, z_k, top_p, C: tl.constexpr, P: tl.constexpr):
    """The top-p bracket from the fixed pivots, once t_k (count c_k, mass z_k) is known, and its next round."""
    target_p = top_p * z_k
    tl.store(fs + _F_TGT, target_p)
    lo, lo_c, lo_m, hi, hi_c, hi_m = _top_p_start(fpiv, fcnt, fmass, m, t_k, c_k, z_k, target_p, P)
    _enter(fs, st, piv_row, _G_P, lo, lo_c, lo_m, hi, hi_c, hi_m, C, P)


@triton.jit
def _finalize(fs, st, m, t_k, t_p, log_min_p, HAS_MINP: tl.constexpr):
    """T* = max(t_k, t_p, t_min); then the pick over the whole row."""
    T = tl.maximum(t_k, t_p)
    if HAS_MINP:
        T = tl.maximum(T, m + log_min_p)
    tl.store(fs + _F_T, T)
    tl.store(st + _I_PHASE, _PICK_MASS)


@triton.jit
def _decide_kernel(logits_ptr, stride_row, V, S, inv_t, fs_ptr, is_ptr, piv_ptr, fix_ptr, part_c_ptr, part_m_ptr,
                   bv_ptr, bi_ptr, u_ptr, tok_ptr, lp_ptr, top_k, top_p, log_min_p,
                   HAS_TOPK: tl.constexpr, HAS_TOPP: tl.constexpr, HAS_MINP: tl.constexpr,
                   S_PAD: tl.constexpr, C: tl.constexpr, P: tl.constexpr):
    """Per row (grid B): read the last data pass's partials and set the next phase (see the module docstring).
    fix: [B, 3, P] fp32, the fixed pivots with their counts and masses (kept for the top-p bracket and min-p)."""
    row = tl.program_id(0).to(tl.int64)
    st = is_ptr + row * _NI
    fs = fs_ptr + row * _NF
    phase = tl.load(st + _I_PHASE)
    NEG: tl.constexpr = float("-inf")
    arp = tl.arange(0, P)
    ars = tl.arange(0, S_PAD)
    piv_row = piv_ptr + row * P
    fix = fix_ptr + row * 3 * P
    m = tl.load(fs + _F_M)
    if phase == _COUNT:
        tile = (row * S + ars[:, None]) * P + arp[None, :]
        ins = (ars < S)[:, None]
        cnt = tl.sum(tl.load(part_c_ptr + tile, mask=ins, other=0), 0)
        mass = tl.sum(tl.load(part_m_ptr + tile, mask=ins, other=0.0), 0)
        piv = tl.load(piv_row + arp)
        goal = tl.load(st + _I_GOAL)
        if goal == _G_FIXED:
            tl.store(fix + arp, piv)
            tl.store(fix + P + arp, cnt.to(tl.float32))  # counts <= V < 2^24: exact in fp32
            tl.store(fix + 2 * P + arp, mass)
            z = _at(mass, arp, P - 1)  # the last pivot is -inf: the whole row
            tl.store(fs + _F_Z, z)
            t_min = NEG
            if HAS_MINP:
                t_min = m + log_min_p
            j_l = _lower_pivot(piv, cnt, mass, z, t_min, top_k, top_p, HAS_TOPK, HAS_TOPP, HAS_MINP, C, P)
            if j_l < P:
                tl.store(fs + _F_LO, _at(piv, arp, j_l))
                tl.store(fs + _F_HI, float("inf"))
                tl.store(st + _I_N, 0)
                tl.store(st + _I_GOAL, _G_ALL)
                tl.store(st + _I_PHASE, _COMPACT)
            else:
                if HAS_TOPK:
                    lo, lo_c, lo_m, hi, hi_c, hi_m = _top_k_start(piv, cnt, mass, m, top_k, P)
                    _enter(fs, st, piv_row, _G_K, lo, lo_c, lo_m, hi, hi_c, hi_m, C, P)
                elif HAS_TOPP:
                    _enter_top_p(fs, st, piv_row, piv, cnt.to(tl.float32), mass, m, NEG, V, z, top_p, C, P)
                else:
                    _finalize(fs, st, m, NEG, NEG, log_min_p, HAS_MINP)
        else:
            # a refinement round: keep the tightest bracket of F (count for top-k, mass for top-p) around the target
            if goal == _G_P:
                ok = mass >= tl.load(fs + _F_TGT)
            else:
                ok = cnt >= top_k
            lo, lo_c, lo_m, hi, hi_c, hi_m = _narrow(
                piv, cnt, mass, ok, tl.load(fs + _F_LO), tl.load(st + _I_LO_C), tl.load(fs + _F_LO_M),
                tl.load(fs + _F_HI), tl.load(st + _I_HI_C), tl.load(fs + _F_HI_M), P)
            _enter(fs, st, piv_row, goal, lo, lo_c, lo_m, hi, hi_c, hi_m, C, P)
    elif (phase == _COMPACT) | (phase == _RESOLVED):
        goal = tl.load(st + _I_GOAL)
        arc = tl.arange(0, C)
        n = tl.load(st + _I_N)
        live = arc < n
        row_ptr = logits_ptr + row * stride_row
        fits = n <= C
        if HAS_TOPK:
            fits = fits & (n >= top_k)
        if (goal == _G_BOUND) & (fits == 0):
            # the bound path overflowed (or holds fewer than k): the fixed pivots, written by the start kernel
            tl.store(st + _I_GOAL, _G_FIXED)
            tl.store(st + _I_PHASE, _COUNT)
        elif (goal == _G_ALL) | (goal == _G_BOUND):
            # everything >= L is in the buffer: the thresholds and the pick in registers
            cv = tl.load(bv_ptr + row * C + arc, mask=live, other=NEG)
            ci = tl.load(bi_ptr + row * C + arc, mask=live, other=0)
            t_k, t_p = _buffer_thresholds(tl.sort(cv, descending=True), live, n, m, tl.load(fs + _F_Z), top_k, top_p,
                                          HAS_TOPK, HAS_TOPP, C)
            T = tl.maximum(t_k, t_p)
            if HAS_MINP:
                T = tl.maximum(T, m + log_min_p)
            # T* >= L holds exactly; max with L only repairs a rounding miss
            T = tl.maximum(T, tl.load(fs + _F_LO))
            # the kept ones in vocabulary order: sort their indices, read their values back
            si = tl.sort(tl.where(live & (cv >= T), ci, _INT_MAX))
            kept = si < _INT_MAX
            safe = tl.where(kept, si, 0)
            xv = tl.load(row_ptr + safe, mask=kept, other=NEG).to(tl.float32) * inv_t
            wv = tl.where(kept, tl.exp(xv - m), 0.0)
            target = (tl.load(u_ptr + row) * tl.sum(wv, 0).to(tl.float64)).to(tl.float32)
            j = tl.min(tl.where(kept & (tl.cumsum(wv, 0) > target), arc, C), 0)
            j = tl.where(j < C, j, tl.max(tl.where(kept, arc, -1), 0))
            tok = _at(safe, arc, j)
            tl.store(tok_ptr + row, tok.to(tl.int64))
            tl.store(lp_ptr + row, tl.load(row_ptr + tok).to(tl.float32) - tl.load(fs + _F_LSE))
            tl.store(st + _I_PHASE, _DONE)
        else:
            # a threshold's bracket resolved: the largest t with F(t) >= target
            lo = tl.load(fs + _F_LO)
            lo_c = tl.load(st + _I_LO_C)
            lo_m = tl.load(fs + _F_LO_M)
            hi_c = tl.load(st + _I_HI_C)
            hi_m = tl.load(fs + _F_HI_M)
            t = lo
            t_c = lo_c
            t_m = lo_m
            if phase == _COMPACT:
                sv = tl.sort(tl.load(bv_ptr + row * C + arc, mask=live, other=NEG), descending=True)
                g = tl.where(live, tl.exp(sv - m), 0.0)
                if goal == _G_P:
                    reach = (hi_m + tl.cumsum(g, 0)) >= tl.load(fs + _F_TGT)
                else:
                    reach = (hi_c + arc + 1) >= top_k
                t, t_c, t_m = _resolve(sv, g, reach, live, n, hi_c, hi_m, C)
            if goal == _G_K:
                tl.store(fs + _F_TK, t)
                tl.store(fs + _F_ZK, t_m)
                tl.store(st + _I_CK, t_c)
                if HAS_TOPP:
                    _enter_top_p(fs, st, piv_row, tl.load(fix + arp), tl.load(fix + P + arp),
                                 tl.load(fix + 2 * P + arp), m, t, t_c, t_m, top_p, C, P)
                else:
                    _finalize(fs, st, m, t, NEG, log_min_p, HAS_MINP)
            else:
                t_k = tl.full([], NEG, tl.float32)
                if HAS_TOPK:
                    t_k = tl.load(fs + _F_TK)
                _finalize(fs, st, m, t_k, t, log_min_p, HAS_MINP)
    elif phase == _PICK_MASS:
        # the chunk holding the target, and the kept mass before it
        cm = tl.load(part_m_ptr + (row * S + ars) * P, mask=ars < S, other=0.0)
        cum = tl.cumsum(cm, 0)
        target = (tl.load(u_ptr + row) * tl.sum(cm, 0).to(tl.float64)).to(tl.float32)
        c = tl.min(tl.where((ars < S) & (cum > target), ars, S_PAD), 0)
        c = tl.where(c < S_PAD, c, tl.max(tl.where(cm > 0, ars, -1), 0))  # rounding: the last chunk with mass
        tl.store(fs + _F_PICK, target)
        tl.store(fs + _F_RUN, tl.sum(tl.where(ars < c, cm, 0.0), 0))
        tl.store(st + _I_CHUNK, c)
        tl.store(st + _I_PHASE, _PICK_SCAN)
    elif phase == _PICK_SCAN:
        tl.store(st + _I_PHASE, _DONE)  # the chunk's program wrote the token


# ---------------------------------------------------------------------------------------------------------------
# launcher


class SplitSampler:
    """The launcher behind `Sampler(backend="triton")`: constants on the device built once, 2 + 2 * rounds launches
    per call, everything on the device.

    sampler: the `prompt_tree.sampler.Sampler` whose settings it uses. block, chunk: powers of two, chunk a
    multiple of block (tests shrink them to run many chunks under the interpreter)."""

    def __init__(self, sampler, block: int | None = None, chunk: int | None = None):
        self.s = sampler
        self.block = block or BLOCK
        self.chunk = chunk or max(CHUNK, self.block)
        self.pivot_block = min(PIVOT_BLOCK, self.block)
        for name, v in (("block", self.block), ("chunk", self.chunk)):
            if v < 16 or v & (v - 1):
                raise ValueError(f"Sampler: {name} must be a power of two >= 16, got {v}")
        if self.chunk % self.block:
            raise ValueError(f"Sampler: chunk ({self.chunk}) must be a multiple of block ({self.block})")
        self.pivot_offsets = pivot_offsets(sampler.log_min_p, sampler.device)
        self.u_out = None  # [B] fp64 of the last call (tests compare it with seeds.uniforms)
        self.state = None  # (fs [B, NF] fp32, ist [B, NI] int32) of the last call: tests read each row's path

    def __call__(self, logits: torch.Tensor, seq_ids: torch.Tensor, step):
        s = self.s
        B, V = logits.shape
        if logits.stride(1) != 1:
            logits = logits.contiguous()
        dev = logits.device
        C, P, CH = s.candidates, PIVOTS, self.chunk
        S = triton.cdiv(V, CH)
        S_PAD = triton.next_power_of_2(S)
        greedy = s.greedy
        k = s.top_k_for(V)
        has_topk, has_topp, has_minp = s.filters_for(V)
        any_filter = has_topk or has_topp or has_minp
        tokens = torch.empty(B, dtype=torch.int64, device=dev)
        logprobs = torch.empty(B, dtype=torch.float32, device=dev)
        u_out = torch.empty(B, dtype=torch.float64, device=dev)
        rounds = rounds_for(greedy, has_topk, has_topp, has_minp)
        pmax = torch.empty(B, S, dtype=torch.float32, device=dev)
        psum = torch.empty(B, S, dtype=torch.float32, device=dev)
        parg = torch.empty(B, S, dtype=torch.int32, device=dev)
        fs = torch.empty(B, NF, dtype=torch.float32, device=dev)
        ist = torch.zeros(B, NI, dtype=torch.int32, device=dev)
        piv = torch.empty(B, P, dtype=torch.float32, device=dev)
        step_tensor = isinstance(step, torch.Tensor)
        step_arg = step if step_tensor else seq_ids  # any int64 pointer when unused
        step_stride = (step.stride(0) if step.dim() == 1 else 0) if step_tensor else 0
        need_z = has_topp or has_minp  # the bound path's normaliser
        pz = torch.empty(B, S, dtype=torch.float32, device=dev) if need_z else pmax
        _stats_kernel[(B, S)](logits, logits.stride(0), V, pmax, psum, parg, pz, S, 1.0 if greedy else s.inv_t,
                              NEED_Z=need_z, CH=CH, BLOCK=self.block, num_warps=4)
        _start_kernel[(B,)](
            logits, logits.stride(0), pmax, psum, parg, pz, S, V, seq_ids, step_arg, step_stride,
            0 if step_tensor else int(step), tokens, logprobs, u_out, fs, ist, piv, self.pivot_offsets,
            1.0 if greedy else s.inv_t, s.key[0], s.key[1], max(k, 1), s.top_p,
            s.log_min_p if has_minp else 0.0,
            GREEDY=greedy, ANY_FILTER=any_filter, STEP_TENSOR=step_tensor, HAS_TOPK=has_topk, HAS_TOPP=has_topp,
            HAS_MINP=has_minp, S_PAD=S_PAD, C=C, P=P, num_warps=1)
        if rounds:
            part_c = torch.empty(B, S, P, dtype=torch.int32, device=dev)
            part_m = torch.empty(B, S, P, dtype=torch.float32, device=dev)
            fix = torch.empty(B, 3, P, dtype=torch.float32, device=dev)
            bv = torch.empty(B if any_filter else 1, C, dtype=torch.float32, device=dev)
            bi = torch.empty(B if any_filter else 1, C, dtype=torch.int32, device=dev)
            log_min_p = s.log_min_p if has_minp else 0.0
            for r in range(rounds):
                cpp = 1 if r < FULL_ROUNDS else min(LATE_CHUNKS_PER_PROGRAM, S)
                _pass_kernel[(B, triton.cdiv(S, cpp))](
                    logits, logits.stride(0), V, S, s.inv_t, fs, ist, piv, part_c, part_m, bv, bi, tokens,
                    logprobs, CH=CH, BLOCK=self.block, PB=self.pivot_block, C=C, P=P, CPP=cpp, num_warps=4)
                _decide_kernel[(B,)](logits, logits.stride(0), V, S, s.inv_t, fs, ist, piv, fix, part_c, part_m,
                                     bv, bi, u_out, tokens, logprobs, k, s.top_p, log_min_p,
                                     HAS_TOPK=has_topk, HAS_TOPP=has_topp, HAS_MINP=has_minp, S_PAD=S_PAD, C=C,
                                     P=P, num_warps=8)
        self.u_out = u_out
        self.state = (fs, ist)
        return tokens, logprobs
