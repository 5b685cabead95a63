"""Triton kernels for nested Hydragen tree attention, and their thin launchers.

Three kernels, a constant number of launches per layer whatever the tree:
  _shared_kernel  all shared (segment, KV split) tiles of one tile class in one launch; a tile's M dimension is
                  (query rows x the g query heads of one KV head), so a node's KV is read once for every sequence
                  below it and the work is a matrix-matrix product on tensor cores. Writes fp32 partials + LSE.
  _own_kernel     each query-sequence's own segment (decode: its suffix; prefill: the node itself, causal). When the
                  own KV is not split it also merges the row's shared partials in its epilogue and writes the final
                  output (decode: 1 shared launch per class + this one). On one-stream calls it is launched as a
                  programmatic dependent of the shared kernel and overlaps it (see PDL).
  _merge_kernel   the merge of all partial slots of each row, used when own segments are split.
Scores are kept in base 2 (scale * log2 e folded into one multiply, exp2 on the hardware unit); LSEs leave the
kernels in natural log. Accumulation is fp32; P is rounded to the input dtype for the P @ V product, as in
FlashAttention-2. The pure-torch equivalents are kernels/reference.py (ground truth) and kernels/torch_path.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .launch import DirectLauncher, side_stream

try:  # grid dependency control for programmatic dependent launch (Triton >= 3.3, Hopper and later)
    from triton.language.extra.cuda import gdc as _gdc
except ImportError:  # pragma: no cover - older Triton: PDL stays off
    _gdc = None
from .meta import TreeAttentionMeta
from .tree_attention import in_graph_path

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
SPLIT_ALIGN = 64  # own-segment split chunks are multiples of this (must match kernels/torch_path.py)


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
    OPart, LPart,  # fp32 partial workspace (see _shared_kernel)
    Out, LseOut,  # Out: [T, Hq, D] q.dtype; LseOut: [T, Hq] fp32
    qk_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_pt, stride_ps, stride_lt, stride_ls, stride_ot, stride_oh, stride_lot,
    G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, NSPLIT: tl.constexpr, SPLIT_ALIGN_: tl.constexpr, CAUSAL: tl.constexpr,
    FUSE_MERGE: tl.constexpr, WRITE_LSE: tl.constexpr, IEEE: tl.constexpr, PDL: tl.constexpr,
):
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

    q = tl.load(Q + rows.to(tl.int64)[:, None] * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                mask=m_valid[:, None] & d_valid[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    k_ptrs = K + (kv_base + lo + offs_n).to(tl.int64)[:, None] * stride_kt + h * stride_kh + offs_d[None, :]
    v_ptrs = V + (kv_base + lo + offs_n).to(tl.int64)[:, None] * stride_vt + h * stride_vh + offs_d[None, :]
    for start in range(lo, hi, BLOCK_N):
        key = start + offs_n
        n_valid = key < hi
        k = tl.load(k_ptrs, mask=n_valid[:, None] & d_valid[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=n_valid[:, None] & d_valid[None, :], other=0.0)
        visible = n_valid[None, :]
        if CAUSAL:
            visible = visible & (key[None, :] <= q_pos[:, None])
        # A causal row may see no key of this block (and none before it): it stays empty.
        acc, m_i, l_i = _softmax_block(acc, m_i, l_i, q, k, v, qk_scale, visible, True, CAUSAL, IEEE)
        k_ptrs += BLOCK_N * stride_kt
        v_ptrs += BLOCK_N * stride_vt

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
    if FUSE_MERGE:
        # Merge with the shared partials of this sequence: m = max of all LSEs, O = sum w_i O_i / sum w_i.
        mx = lse
        for k in range(0, shared_slots):
            lk = tl.load(LPart + row64 * stride_lt + k * stride_ls + heads, mask=m_valid, other=float("-inf"))
            mx = tl.maximum(mx, lk)
        mx = tl.where(mx == float("-inf"), 0.0, mx)
        w = tl.exp(lse - mx)
        wsum = w
        acc = o * w[:, None]
        for k in range(0, shared_slots):
            lk = tl.load(LPart + row64 * stride_lt + k * stride_ls + heads, mask=m_valid, other=float("-inf"))
            ok = tl.load(OPart + row64[:, None] * stride_pt + k * stride_ps + heads[:, None] * HEAD_DIM
                         + offs_d[None, :], mask=mask2, other=0.0)
            wk = tl.exp(lk - mx)
            acc += ok * wk[:, None]
            wsum += wk
        out = acc / tl.where(wsum > 0.0, wsum, 1.0)[:, None]
        tl.store(Out + row64[:, None] * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
                 out.to(Out.dtype.element_ty), mask=mask2)
        if WRITE_LSE:
            lse_out = tl.where(wsum > 0.0, mx + tl.log(tl.where(wsum > 0.0, wsum, 1.0)), float("-inf"))
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
    mx = tl.full([BLOCK_H], float("-inf"), tl.float32)
    for k in range(0, n):
        mx = tl.maximum(mx, tl.load(LPart + t64 * stride_lt + k * stride_ls + offs_h, mask=h_valid,
                                    other=float("-inf")))
    mx = tl.where(mx == float("-inf"), 0.0, mx)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    wsum = tl.zeros([BLOCK_H], tl.float32)
    for k in range(0, n):
        lk = tl.load(LPart + t64 * stride_lt + k * stride_ls + offs_h, mask=h_valid, other=float("-inf"))
        ok = tl.load(OPart + t64 * stride_pt + k * stride_ps + offs_h[:, None] * HEAD_DIM + offs_d[None, :],
                     mask=mask2, other=0.0)
        wk = tl.exp(lk - mx)
        acc += ok * wk[:, None]
        wsum += wk
    out = acc / tl.where(wsum > 0.0, wsum, 1.0)[:, None]
    tl.store(Out + t64 * stride_ot + offs_h[:, None] * stride_oh + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=mask2)
    if WRITE_LSE:
        lse = tl.where(wsum > 0.0, mx + tl.log(tl.where(wsum > 0.0, wsum, 1.0)), float("-inf"))
        tl.store(LseOut + t64 * stride_lot + offs_h, lse, mask=h_valid)


# Launch configurations (BLOCK_N, num_warps, num_stages) per kernel and query-block height. Chosen on an H100
# with kernels/tune.py (numbers in docs/benchmarks/); the interpreter ignores warps and stages. Measured and
# rejected (docs/benchmarks/tune_v3.json, triton 3.6): BLOCK_N=128 for the 128-row class (13x slower: the
# 128 x 128 fp32 score tile spills), 4 warps for it (19x), and TMA descriptor loads of whole KV blocks (2.6-3x
# slower: Triton 3.6 does not pipeline host-descriptor loads in this loop).
SHARED_CFG = {16: (64, 4, 3), 64: (64, 4, 3), 128: (64, 8, 3)}
OWN_CFG = {16: (64, 4, 2), 64: (64, 4, 3)}
# Run the own (suffix) kernel on a side stream while the shared kernels run, then merge: the shared work is
# tensor-core bound for large groups and the own work is bandwidth bound, so the two overlap on the SMs.
# Measured on an H100 (docs/benchmarks/tune_v2.json): launching the shared kernels first and the own kernel on a
# side stream saves 19% at 32/8, B=256, 16K prefix and 8% at 40/40, B=1024, 16K; launching the own kernel
# first lets its thousands of small programs take every SM and nothing overlaps.
# Plain (uncaptured) calls switch streams only when the step's KV is at least `plain_min_bytes`: the switch
# costs ~30 us of host time (tools/launch_overhead.py) and, with the own kernel unsplit, a merge launch that is
# otherwise fused. Below that the GPU work (< ~90 us at 3 TB/s) is shorter than the host time of the call,
# so overlap on the GPU would only add to the host time; under CUDA-graph capture the host cost is paid once.
# (A warm-up before a capture runs inside kernels.cuda_graph_path() to take the capture's path.)
OVERLAP = {"enabled": True, "own_first": False, "plain_min_bytes": 256 * 2**20}
# Programmatic dependent launch on one-stream calls (Hopper and later): the own kernel is launched with launch_pdl
# and may start once every shared program is running (each signals griddepcontrol.launch_dependents first); it
# does its own-KV work under the shared kernel and waits (griddepcontrol.wait) only before its epilogue. That
# overlaps the two kernels and hides the second launch's latency. Measured on an H100 (tools/split_sweep.py --pdl,
# docs/benchmarks/pdl_sweep.json), plain planned calls, L2 flushed: 32/8 B16 1K 29.6 -> 20.3 us, B16 4K 36.1 ->
# 27.8, B64 1K 57.2 -> 45.2, B1024 1K 436 -> 425; faster on all 8 rows. Captures keep the two-stream overlap:
# one stream with PDL won on some rows (B16 1K 12.4 against 14.1 us) and lost on others (B64 1K 36.7 against
# 34.5, B256 4K 138 against 134).
PDL = {"enabled": True}
_PDL_CAPABLE: dict[int, bool] = {}


def _pdl_ok(device: torch.device) -> bool:
    if not PDL["enabled"] or _gdc is None:
        return False
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _PDL_CAPABLE:
        _PDL_CAPABLE[idx] = torch.cuda.get_device_capability(idx)[0] >= 9
    return _PDL_CAPABLE[idx]

_LAUNCH_SHARED = DirectLauncher(_shared_kernel)
_LAUNCH_OWN = DirectLauncher(_own_kernel)
_LAUNCH_MERGE = DirectLauncher(_merge_kernel)
def _side_stream(device: torch.device) -> torch.cuda.Stream:
    return side_stream(device.index if device.index is not None else torch.cuda.current_device())


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


@dataclass
class Launch:
    """One kernel launch of a tree-attention call: what DirectLauncher needs, plus where it runs.

    args are the runtime arguments in signature order; when `qkv`, the first three are q, k_cache, v_cache (a plan
    swaps them per call). `side`: on the side stream (the own kernel while overlapping); `join`: the main stream
    waits for the side stream before this launch (the merge)."""
    launcher: DirectLauncher
    grid: tuple
    args: tuple
    constexprs: dict
    num_warps: int
    num_stages: int
    qkv: bool
    side: bool = False
    join: bool = False
    launch_pdl: bool = False  # launched as a programmatic dependent of the previous kernel (see PDL)

    def __call__(self, qkv: tuple | None = None):
        args = self.args if qkv is None or not self.qkv else qkv + self.args[3:]
        return self.launcher(self.grid, args, self.constexprs, self.num_warps, self.num_stages, self.launch_pdl)


@dataclass
class LaunchList:
    """Every launch of one call, in issue order, and the buffers they write. overlap: fork a side stream first."""
    launches: list[Launch]
    overlap: bool
    out: torch.Tensor  # [T, Hq, D] q.dtype
    lse: torch.Tensor  # [T, Hq] fp32 (the LSE workspace itself when return_lse is off)
    return_lse: bool


def build_launches(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta,
                   scale: float | None = None, return_lse: bool = False, out: torch.Tensor | None = None,
                   workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
                   overlap: bool | None = None) -> LaunchList:
    """The launches of one call (allocating out / workspace where not given), without running them."""
    t, hq, d = q.shape
    g = hq // meta.num_kv_heads
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qk_scale = scale * LOG2E
    ieee = q.dtype == torch.float32
    block_d = _block_d(d)
    slots = max(meta.max_slots, 1)
    if workspace is None:
        o_part = torch.empty((t, slots, hq, d), dtype=torch.float32, device=q.device)
        l_part = torch.empty((t, slots, hq), dtype=torch.float32, device=q.device)
    else:
        o_part, l_part = workspace
    if out is None:
        out = torch.empty_like(q)
    lse = torch.empty((t, hq), dtype=torch.float32, device=q.device) if return_lse else l_part
    if t == 0:
        return LaunchList([], False, out, lse, return_lse)

    has_shared = any(c.tiles.shape[0] for c in meta.shared_classes)
    on_cuda = q.device.type == "cuda"
    if overlap is None:  # auto: always when captured, for plain calls only when the step is large (see OVERLAP)
        overlap = OVERLAP["enabled"] and on_cuda and (
            torch.cuda.is_current_stream_capturing() or in_graph_path()
            or meta.kv_tokens_read * meta.num_kv_heads * d * q.element_size() * 2 >= OVERLAP["plain_min_bytes"])
    overlap = bool(overlap and has_shared and on_cuda)
    fuse = meta.own_splits == 1 and not overlap
    pdl = not overlap and has_shared and on_cuda and _pdl_ok(q.device)

    own = None
    if meta.own_tiles.shape[0]:
        block_n, warps, stages = OWN_CFG[meta.own_block_m]
        own = Launch(
            _LAUNCH_OWN, (meta.own_tiles.shape[0], meta.num_kv_heads, meta.own_splits),
            (q, k_cache, v_cache, meta.own_tiles, meta.seq_q_start, meta.seq_q_len, meta.own_start, meta.own_len,
             meta.seq_shared_slots, o_part, l_part, out, lse, qk_scale,
             q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1),
             o_part.stride(0), o_part.stride(1), l_part.stride(0), l_part.stride(1), out.stride(0), out.stride(1),
             lse.stride(0)),
            dict(G=g, HEAD_DIM=d, BLOCK_M=meta.own_block_m, BLOCK_N=block_n, BLOCK_D=block_d, NSPLIT=meta.own_splits,
                 SPLIT_ALIGN_=SPLIT_ALIGN, CAUSAL=meta.causal_own, FUSE_MERGE=fuse, WRITE_LSE=return_lse, IEEE=ieee,
                 PDL=pdl),
            warps, stages, qkv=True, side=overlap, launch_pdl=pdl)
    launches = []
    own_first = OVERLAP["own_first"] and overlap
    if own is not None and own_first:
        launches.append(own)
    for cls in meta.shared_classes:
        n_tiles = cls.tiles.shape[0]
        if n_tiles == 0:
            continue
        block_n, warps, stages = SHARED_CFG[cls.block_m]
        launches.append(Launch(
            _LAUNCH_SHARED, (n_tiles, meta.num_kv_heads),
            (q, k_cache, v_cache, cls.tiles, o_part, l_part, qk_scale,
             q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1),
             o_part.stride(0), o_part.stride(1), l_part.stride(0), l_part.stride(1)),
            dict(G=g, HEAD_DIM=d, BLOCK_M=cls.block_m, BLOCK_N=block_n, BLOCK_D=block_d, IEEE=ieee, PDL=pdl),
            warps, stages, qkv=True))
    if own is not None and not own_first:
        launches.append(own)
    if not fuse:
        # Enough programs to fill the GPU even for a handful of rows: fewer heads per program when T is small.
        block_h = min(triton.next_power_of_2(hq), max(1, 4096 // block_d))
        while block_h > 1 and t * triton.cdiv(hq, block_h) < 256:
            block_h //= 2
        launches.append(Launch(
            _LAUNCH_MERGE, (t, triton.cdiv(hq, block_h)),
            (o_part, l_part, meta.row_seq, meta.seq_shared_slots, out, lse,
             o_part.stride(0), o_part.stride(1), l_part.stride(0), l_part.stride(1), out.stride(0), out.stride(1),
             lse.stride(0)),
            dict(NUM_HEADS=hq, HEAD_DIM=d, EXTRA_SLOTS=meta.own_splits, BLOCK_H=block_h, BLOCK_D=block_d,
                 WRITE_LSE=return_lse),
            4, 3, qkv=False, join=overlap))
    return LaunchList(launches, overlap, out, lse, return_lse)


def run_launches(plan: LaunchList, device: torch.device, qkv: tuple | None = None):
    """Issue a call's launches (with q, k_cache, v_cache swapped for `qkv` when given) -> out (, lse)."""
    if plan.overlap:
        main = torch.cuda.current_stream(device)
        side = _side_stream(device)
        side.wait_stream(main)  # the fork: the side stream starts after everything issued so far
    for ln in plan.launches:
        if ln.join:
            main.wait_stream(side)
        if ln.side:
            with torch.cuda.stream(side):
                ln(qkv)
        else:
            ln(qkv)
    assert not plan.overlap or any(ln.join for ln in plan.launches), "an overlapped call must join its side stream"
    return (plan.out, plan.lse) if plan.return_lse else plan.out


def tree_attention_triton(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta,
                          scale: float | None = None, return_lse: bool = False, out: torch.Tensor | None = None,
                          workspace: tuple[torch.Tensor, torch.Tensor] | None = None, overlap: bool | None = None):
    """Launch the tree-attention kernels. Shapes and dtypes are checked by kernels.tree_attention.

    q: [T, Hq, D]; k_cache, v_cache: [S, Hkv, D] (last dim contiguous). Returns o [T, Hq, D] in q.dtype (and lse
    [T, Hq] fp32 natural log). `out` and `workspace` may be preallocated (CUDA graphs reuse them).
    """
    plan = build_launches(q, k_cache, v_cache, meta, scale, return_lse, out, workspace, overlap)
    return run_launches(plan, q.device)
