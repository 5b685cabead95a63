"""The Triton kernels of nested Hydragen tree attention (launched by prompt_tree/kernels/triton_tree.py).

  _shared_kernel  all shared (segment, KV split) tiles of one tile class in one launch; a tile's M dimension is
                  (query rows x the g query heads of one KV head), so a node's KV is read once for every sequence
                  below it and the work is a matrix-matrix product on tensor cores. Writes fp32 partials + LSE.
  _own_kernel     each query-sequence's own segment (decode: its suffix; prefill: the node itself, causal), from
                  contiguous slots or through a page table (PAGED). When the own KV is not split it also merges
                  the row's shared partials in its epilogue and writes the final output. On one-stream calls it
                  may be a programmatic dependent of the shared kernel and overlap it (PDL).
  _merge_kernel   the merge of all partial slots of each row, used when own segments are split or overlapped.
Helpers: _softmax_block (one KV block of the online softmax) and _merge_partials (the merge, for both users).
Scores are kept in base 2 (scale * log2 e folded into one multiply, exp2 on the hardware unit); LSEs leave the
kernels in natural log. Accumulation is fp32; P is rounded to the input dtype for the P @ V product, as in
FlashAttention-2. The pure-torch equivalents are prompt_tree/kernels/reference.py (ground truth) and
prompt_tree/kernels/torch_path.py.
"""
from __future__ import annotations

import triton
import triton.language as tl

try:  # grid dependency control for programmatic dependent launch (Triton >= 3.3, Hopper and later)
    from triton.language.extra.cuda import gdc as _gdc
except ImportError:  # pragma: no cover - older Triton: PDL stays off
    _gdc = None

HAS_PDL = _gdc is not None


@triton.jit
def _softmax_block(acc, m_i, l_i, q, k, v, qk_scale, visible, MASKED: tl.constexpr, EMPTY_ROWS: tl.constexpr,
                   IEEE: tl.constexpr):
    """One KV block of the online softmax, in the order of FlashAttention-2 and Triton's fused-attention tutorial.

    q [BLOCK_M, BLOCK_D], k and v [BLOCK_N, BLOCK_D]; acc [BLOCK_M, BLOCK_D] fp32; m_i (base-2 running max of the
    scaled scores) and l_i [BLOCK_M]; visible: a mask broadcastable to [BLOCK_M, BLOCK_N], used when MASKED. The
    scale is applied inside exp2's argument (one fused multiply-add per score instead of a separate multiply) and
    P @ V accumulates into acc in place (the tensor-core accumulator), which saves a BLOCK_M x BLOCK_D add and its
    registers every step. Needs qk_scale > 0 (max commutes with the scale). EMPTY_ROWS: some row may have seen
    no visible key yet (causal masks); its max stays -inf and it must stay empty instead of turning into NaN.
    """
    if IEEE:
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    if MASKED:
        s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    if EMPTY_ROWS:
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_use = m_new
    p = tl.math.exp2(s * qk_scale - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if IEEE:
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
    else:
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_new, l_i


@triton.jit
def _merge_partials(o, lse, OPart, LPart, rows, heads, valid, n_slots, offs_d, stride_pt, stride_ps, stride_lt,
                    stride_ls, HEAD_DIM: tl.constexpr):
    """The merge of partial attention states (ANCHORS: Hydragen's split attention), written once for the own
    kernel's fused epilogue and the merge kernel.

    o [M, BLOCK_D] fp32 and lse [M] (natural log): a state held in registers (lse -inf: none); rows [M] int64 and
    heads [M]: where lane i's partial slots 0..n_slots-1 live in OPart [T, SLOTS, Hq, D] and LPart [T, SLOTS, Hq];
    valid [M]: lanes to load. m = max of all LSEs, w_i = exp(L_i - m), O = sum_i w_i O_i / sum_i w_i,
    L = m + log(sum_i w_i). All parts empty (-inf) gives (0, -inf), never NaN. Returns (O, L) fp32."""
    mask2 = valid[:, None] & (offs_d[None, :] < HEAD_DIM)
    l_ptrs = LPart + rows * stride_lt + heads
    o_ptrs = OPart + rows[:, None] * stride_pt + heads[:, None] * HEAD_DIM + offs_d[None, :]
    mx = lse
    for k in range(0, n_slots):
        mx = tl.maximum(mx, tl.load(l_ptrs + k * stride_ls, mask=valid, other=float("-inf")))
    mx = tl.where(mx == float("-inf"), 0.0, mx)
    w = tl.exp(lse - mx)
    wsum = w
    acc = o * w[:, None]
    for k in range(0, n_slots):
        wk = tl.exp(tl.load(l_ptrs + k * stride_ls, mask=valid, other=float("-inf")) - mx)
        acc += tl.load(o_ptrs + k * stride_ps, mask=mask2, other=0.0) * wk[:, None]
        wsum += wk
    out = acc / tl.where(wsum > 0.0, wsum, 1.0)[:, None]
    lse_out = tl.where(wsum > 0.0, mx + tl.log(tl.where(wsum > 0.0, wsum, 1.0)), float("-inf"))
    return out, lse_out


@triton.jit
def _shared_kernel(
    Q, K, V,  # Q: [T, Hq, D]; K, V: [S, Hkv, D]
    Tiles,  # [n_tiles, 5] int32: row_lo, row_hi, kv_lo, kv_hi, slot
    OPart, LPart,  # OPart: [T, SLOTS, Hq, D] fp32; LPart: [T, SLOTS, Hq] fp32
    qk_scale,  # softmax scale * log2(e)
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_pt, stride_ps, stride_lt, stride_ls,
    G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, IEEE: tl.constexpr, PDL: tl.constexpr,
):
    if PDL:  # programmatic dependent launch: the next kernel (own) may start as soon as every program is running
        _gdc.gdc_launch_dependents()
    tile = tl.program_id(0)
    h = tl.program_id(1)  # kv head
    row_lo = tl.load(Tiles + tile * 5 + 0)
    row_hi = tl.load(Tiles + tile * 5 + 1)
    kv_lo = tl.load(Tiles + tile * 5 + 2)
    kv_hi = tl.load(Tiles + tile * 5 + 3)
    slot = tl.load(Tiles + tile * 5 + 4)

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    rows = row_lo + offs_m // G  # query row of each M index
    heads = h * G + offs_m % G  # query head of each M index
    m_valid = offs_m < (row_hi - row_lo) * G
    d_valid = offs_d < HEAD_DIM
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM

    q_ptrs = Q + rows.to(tl.int64)[:, None] * stride_qt + heads[:, None] * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=m_valid[:, None] & d_valid[None, :], other=0.0)  # [BLOCK_M, BLOCK_D]

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    k_ptrs = K + (kv_lo + offs_n).to(tl.int64)[:, None] * stride_kt + h * stride_kh + offs_d[None, :]
    v_ptrs = V + (kv_lo + offs_n).to(tl.int64)[:, None] * stride_vt + h * stride_vh + offs_d[None, :]
    # Whole blocks without masks (splits are BLOCK_N-aligned, so only a segment's last block is partial).
    n_full = (kv_hi - kv_lo) // BLOCK_N
    for i in range(0, n_full):
        if EVEN_D:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        else:
            k = tl.load(k_ptrs, mask=d_valid[None, :], other=0.0)
            v = tl.load(v_ptrs, mask=d_valid[None, :], other=0.0)
        # (offs_n stands in for the mask, which an unmasked block does not read)
        acc, m_i, l_i = _softmax_block(acc, m_i, l_i, q, k, v, qk_scale, offs_n, False, False, IEEE)
        k_ptrs += BLOCK_N * stride_kt
        v_ptrs += BLOCK_N * stride_vt
    tail_lo = kv_lo + n_full * BLOCK_N
    if tail_lo < kv_hi:  # the partial last block: masked loads (the slots past kv_hi may hold anything)
        n_valid = (tail_lo + offs_n) < kv_hi
        k = tl.load(k_ptrs, mask=n_valid[:, None] & d_valid[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=n_valid[:, None] & d_valid[None, :], other=0.0)
        acc, m_i, l_i = _softmax_block(acc, m_i, l_i, q, k, v, qk_scale, n_valid[None, :], True, False, IEEE)

    has = l_i > 0.0  # an empty split (kv_lo == kv_hi) leaves l_i = 0: output 0, lse -inf
    o = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, (m_i + tl.math.log2(tl.where(has, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
    row64 = rows.to(tl.int64)
    p_ptrs = OPart + row64[:, None] * stride_pt + slot * stride_ps + heads[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(p_ptrs, o, mask=m_valid[:, None] & d_valid[None, :])
    tl.store(LPart + row64 * stride_lt + slot * stride_ls + heads, lse, mask=m_valid)


@triton.jit
def _own_kernel(
    Q, K, V,  # Q: [T, Hq, D]; K, V: [S, Hkv, D]
    OwnTiles,  # [n_tiles, 3] int32: seq, row_lo, row_hi
    SeqQStart, SeqQLen, OwnStart, OwnLen, SeqSharedSlots,  # [NB] int32 each
    PageTable,  # [NB, max_pages] int32 page ids when PAGED (any int32 pointer otherwise: never read)
    OPart, LPart,  # fp32 partial workspace (see _shared_kernel)
    Out, LseOut,  # Out: [T, Hq, D] q.dtype; LseOut: [T, Hq] fp32
    qk_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_pt, stride_ps, stride_lt, stride_ls, stride_ot, stride_oh, stride_lot, stride_pg,
    G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, NSPLIT: tl.constexpr, SPLIT_ALIGN_: tl.constexpr, CAUSAL: tl.constexpr,
    FUSE_MERGE: tl.constexpr, WRITE_LSE: tl.constexpr, IEEE: tl.constexpr, PDL: tl.constexpr,
    PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
):
    """One (own tile, kv head, split): the tile's query rows against positions lo..hi-1 of its sequence's own
    segment, causal when CAUSAL. Position p's key is row kv_base + p of K (contiguous) or, when PAGED, row
    PageTable[b, p // PAGE_SIZE] * PAGE_SIZE + p % PAGE_SIZE (a gather through the page table; positions past
    the segment's end are masked and never read). A tile with no rows (capacity padding) reads nothing."""
    tile = tl.program_id(0)
    h = tl.program_id(1)
    split = tl.program_id(2)
    b = tl.load(OwnTiles + tile * 3 + 0)
    row_lo = tl.load(OwnTiles + tile * 3 + 1)
    row_hi = tl.load(OwnTiles + tile * 3 + 2)
    q_start = tl.load(SeqQStart + b)
    q_len = tl.load(SeqQLen + b)
    kv_base = tl.load(OwnStart + b)
    n = tl.load(OwnLen + b)
    shared_slots = tl.load(SeqSharedSlots + b)

    chunk = tl.cdiv(tl.cdiv(n, NSPLIT), SPLIT_ALIGN_) * SPLIT_ALIGN_
    lo = split * chunk
    hi = tl.minimum(n, lo + chunk)

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    rows = row_lo + offs_m // G
    heads = h * G + offs_m % G
    m_valid = offs_m < (row_hi - row_lo) * G
    d_valid = offs_d < HEAD_DIM
    q_pos = n - q_len + (rows - q_start)  # each query's position inside its own segment
    if CAUSAL:
        hi = tl.minimum(hi, n - q_len + (row_hi - q_start))  # keys past the last query of the tile are unseen
    hi = tl.where(row_hi > row_lo, hi, lo)  # a padding tile (no rows) skips the KV loop

    q = tl.load(Q + rows.to(tl.int64)[:, None] * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                mask=m_valid[:, None] & d_valid[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if PAGED:
        page_row = PageTable + b.to(tl.int64) * stride_pg
    else:
        k_ptrs = K + (kv_base + lo + offs_n).to(tl.int64)[:, None] * stride_kt + h * stride_kh + offs_d[None, :]
        v_ptrs = V + (kv_base + lo + offs_n).to(tl.int64)[:, None] * stride_vt + h * stride_vh + offs_d[None, :]
    for start in range(lo, hi, BLOCK_N):
        key = start + offs_n
        n_valid = key < hi
        kv_mask = n_valid[:, None] & d_valid[None, :]
        if PAGED:
            page = tl.load(page_row + key // PAGE_SIZE, mask=n_valid, other=0)
            kv_row = (page.to(tl.int64) * PAGE_SIZE + key % PAGE_SIZE)[:, None]
            k = tl.load(K + kv_row * stride_kt + h * stride_kh + offs_d[None, :], mask=kv_mask, other=0.0)
            v = tl.load(V + kv_row * stride_vt + h * stride_vh + offs_d[None, :], mask=kv_mask, other=0.0)
        else:
            k = tl.load(k_ptrs, mask=kv_mask, other=0.0)
            v = tl.load(v_ptrs, mask=kv_mask, other=0.0)
            k_ptrs += BLOCK_N * stride_kt
            v_ptrs += BLOCK_N * stride_vt
        visible = n_valid[None, :]
        if CAUSAL:
            visible = visible & (key[None, :] <= q_pos[:, None])
        # A causal row may see no key of this block (and none before it): it stays empty.
        acc, m_i, l_i = _softmax_block(acc, m_i, l_i, q, k, v, qk_scale, visible, True, CAUSAL, IEEE)

    if PDL:
        # Launched early under the shared kernel (programmatic dependent launch): its own-KV work above overlapped
        # it; wait for it to finish (and its partials to be visible) before merging them or finishing at all, so
        # that anything after this kernel on the stream also comes after the shared kernel.
        _gdc.gdc_wait()
    has = l_i > 0.0
    o = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, (m_i + tl.math.log2(tl.where(has, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
    row64 = rows.to(tl.int64)
    mask2 = m_valid[:, None] & d_valid[None, :]
    if FUSE_MERGE:  # merge with the sequence's shared partials and write the final output
        out, lse_out = _merge_partials(o, lse, OPart, LPart, row64, heads, m_valid, shared_slots, offs_d,
                                       stride_pt, stride_ps, stride_lt, stride_ls, HEAD_DIM)
        tl.store(Out + row64[:, None] * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
                 out.to(Out.dtype.element_ty), mask=mask2)
        if WRITE_LSE:
            tl.store(LseOut + row64 * stride_lot + heads, lse_out, mask=m_valid)
    else:
        slot = shared_slots + split
        tl.store(OPart + row64[:, None] * stride_pt + slot * stride_ps + heads[:, None] * HEAD_DIM
                 + offs_d[None, :], o, mask=mask2)
        tl.store(LPart + row64 * stride_lt + slot * stride_ls + heads, lse, mask=m_valid)


@triton.jit
def _merge_kernel(
    OPart, LPart,  # [T, SLOTS, Hq, D] fp32, [T, SLOTS, Hq] fp32
    RowSeq, SeqSharedSlots,  # [T] int32, [NB] int32
    Out, LseOut,  # [T, Hq, D] out dtype, [T, Hq] fp32
    stride_pt, stride_ps, stride_lt, stride_ls, stride_ot, stride_oh, stride_lot,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, EXTRA_SLOTS: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, WRITE_LSE: tl.constexpr,
):
    """Merge slots 0 .. shared_slots + EXTRA_SLOTS - 1 of one row, BLOCK_H heads at a time."""
    t = tl.program_id(0)
    hb = tl.program_id(1)
    offs_h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    h_valid = offs_h < NUM_HEADS
    mask2 = h_valid[:, None] & (offs_d[None, :] < HEAD_DIM)
    n = tl.load(SeqSharedSlots + tl.load(RowSeq + t)) + EXTRA_SLOTS
    t64 = t.to(tl.int64)
    rows = tl.full([BLOCK_H], 0, tl.int64) + t64
    empty = tl.full([BLOCK_H], float("-inf"), tl.float32)  # no state of its own: every part is in the slots
    out, lse = _merge_partials(tl.zeros([BLOCK_H, BLOCK_D], tl.float32), empty, OPart, LPart, rows, offs_h,
                               h_valid, n, offs_d, stride_pt, stride_ps, stride_lt, stride_ls, HEAD_DIM)
    tl.store(Out + t64 * stride_ot + offs_h[:, None] * stride_oh + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=mask2)
    if WRITE_LSE:
        tl.store(LseOut + t64 * stride_lot + offs_h, lse, mask=h_valid)
