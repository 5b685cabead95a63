"""Tree-attention metadata: from segments and query-sequences (CPU, pure Python) to device work lists.

The attention of a batch over a prompt tree is cut into work items that the kernels run in a constant number of
launches, whatever the depth or width of the tree:

- shared work: each shared segment (a tree node's KV, read non-causally by a contiguous range of query-sequences)
  becomes tiles of (query rows x the g query heads of one KV head) = the M dimension of one matrix product, looped
  over the segment's KV. When there are too few tiles to fill the GPU the KV is split (flash-decoding). One launch
  per tile class (BLOCK_M of 16, 64 or 128): at most three launches for all levels together.
- own work: each query-sequence's own segment (its generated suffix in decode, the node itself in prefill), read
  causally, one tile per (sequence, block of its query rows), optionally split along the KV.
- merge: every query row combines its partial (output, LSE) pairs; fused into the own-work epilogue when the own
  segment is not split.

Partial results live in a workspace indexed by (query row, slot): a row's slots are 0..n-1, one per (segment, KV
split) on its path, outermost first, then its own splits. Because the segments of a tree are laminar (two ranges
are nested or disjoint), a segment's slot base is the same for every row it covers.

All tensors built here are int32 on the target device and never change shape while the batch composition is the
same, so a decode step that only bumps `own_lens` (`set_own_lens`) can be captured in a CUDA graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import torch

# Tile classes for shared work, by query-block height (rows x heads). A 1-row GQA-4 group wastes 75% of a 16-row
# tile but 97% of a 128-row one: picking the smallest class that holds the whole group keeps narrow groups (flat
# mode, few samples per problem) memory-bound instead of tensor-core-bound.
SHARED_BLOCK_MS = (16, 64, 128)
OWN_BLOCK_M_DECODE = 16  # decode: g query heads of one token (g <= 16 in every supported model)
OWN_BLOCK_M_PREFILL = 64
BLOCK_N = 64  # KV rows per inner-loop step; splits are aligned to it
# Split size floor: a segment is cut into ceil(len / max(this, work per SM)) splits, so splits are at least about
# this long (a 600-token segment gives 2 of ~300). Each split costs a partial write and read, and a short split
# is mostly pipeline ramp. Shared segments: 512 measured best on the small decode rows (H100,
# tools/launch_overhead.py: 32/8 B=16 4K prefix 16.8 us against 19.8 us at 256; equal or better on the other rows
# below 0.15 ms; rows with more work split coarser anyway). Own segments keep 256, the value they were tuned with.
MIN_SPLIT_TOKENS = 512
MIN_OWN_SPLIT_TOKENS = 256
MAX_SPLITS = 64  # bounds the workspace: slots per row <= levels * MAX_SPLITS + own splits
# Aim for this many programs per SM when deciding splits. One wave measured best on an H100 (B=16, 16K prefix:
# 44 us against 54 us with two): fewer, longer splits amortize the pipeline ramp and leave fewer slots to merge.
TARGET_WAVES = 1


class Segment(NamedTuple):
    """Shared KV slots kv_start .. kv_start+kv_len-1, read non-causally by query-sequences seq_lo .. seq_hi-1."""

    kv_start: int
    kv_len: int
    seq_lo: int
    seq_hi: int


@dataclass
class SegmentSplit:
    """One (segment, KV split): rows row_lo..row_hi-1 read kv_lo..kv_hi-1 and write partial slot `slot`."""

    row_lo: int
    row_hi: int
    kv_lo: int
    kv_hi: int
    slot: int


@dataclass
class TileClass:
    block_m: int
    tiles: torch.Tensor  # [n_tiles, 5] int32: row_lo, row_hi, kv_lo, kv_hi, slot


@dataclass
class TreeAttentionMeta:
    """Everything the kernels need for one batch composition. Built by `build_tree_meta`."""

    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    num_rows: int  # T, query rows
    num_seqs: int  # NB, query-sequences
    max_slots: int  # partial slots per row in the workspace
    own_splits: int  # KV splits of each own segment (1 = merge fused into the own kernel)
    own_block_m: int
    causal_own: bool  # False when every q_len is 1 (decode): no mask arithmetic in the own kernel
    # host-side description (tests, the torch path, debugging)
    splits: list[SegmentSplit]
    q_lens: list[int]
    own_starts_host: list[int]
    # device tensors
    shared_classes: list[TileClass]
    own_tiles: torch.Tensor  # [n_own_tiles, 3] int32: seq, row_lo, row_hi
    seq_q_start: torch.Tensor  # [NB] int32: first q row of each query-sequence
    seq_q_len: torch.Tensor  # [NB] int32
    own_start: torch.Tensor  # [NB] int32
    own_len: torch.Tensor  # [NB] int32, updated in place between decode steps
    seq_shared_slots: torch.Tensor  # [NB] int32: partial slots of shared work on the sequence's path
    row_seq: torch.Tensor  # [T] int32: the query-sequence of each row
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # One past the highest KV slot any segment or own segment (at its capacity) may read: the op checks the
    # cache holds it, because the kernels do not bound-check slots (an overrun would read other memory).
    kv_extent: int = 0
    # (kind, index) of what reaches kv_extent, for the error message
    kv_extent_owner: tuple = ("", -1)
    # An estimate of the KV slots one call reads (each shared split once, though tiles of many rows re-read it,
    # plus every own segment at build time; set_own_lens does not update it): sizes the call's GPU work for the
    # launcher's plain-call choice of one stream or two (times Hkv x D x element bytes x 2 for K and V)
    kv_tokens_read: int = 0

    def set_own_lens(self, lens) -> None:
        """In-place update of the own segment lengths (decode: one more token per step). CUDA-graph safe."""
        if isinstance(lens, torch.Tensor):
            self.own_len.copy_(lens.to(self.own_len.dtype))
        else:
            self.own_len.copy_(torch.tensor(list(lens), dtype=torch.int32))

    @property
    def workspace_bytes(self) -> int:
        """fp32 partial outputs and LSEs: T x slots x Hq x (D + 1) x 4 bytes (no partial when there is no slot)."""
        return self.num_rows * self.max_slots * self.num_q_heads * (self.head_dim + 1) * 4

    @property
    def num_launches(self) -> int:
        return sum(1 for c in self.shared_classes if c.tiles.shape[0]) + 1 + (self.own_splits > 1)


def _check_ints(name: str, values: Sequence[int], n: int | None = None, minimum: int = 0) -> list[int]:
    vals = [int(v) for v in values]
    if n is not None and len(vals) != n:
        raise ValueError(f"{name} has {len(vals)} entries but there are {n} query-sequences")
    bad = [i for i, v in enumerate(vals) if v < minimum]
    if bad:
        raise ValueError(f"{name}[{bad[0]}] = {vals[bad[0]]} is below {minimum}")
    return vals


def _order_laminar(segments: list[Segment]) -> list[tuple[int, Segment, int]]:
    """Sort segments outermost first and return (index, segment, parent index or -1); reject crossing ranges.

    Sorting by (seq_lo, -seq_hi, original index) visits a parent before its children (equal ranges, e.g. a
    single-child chain, keep their given order: the first is the outer one).
    """
    order = sorted(range(len(segments)), key=lambda i: (segments[i].seq_lo, -segments[i].seq_hi, i))
    stack: list[int] = []
    out = []
    for i in order:
        s = segments[i]
        while stack and segments[stack[-1]].seq_hi <= s.seq_lo:
            stack.pop()
        if stack and segments[stack[-1]].seq_hi < s.seq_hi:
            p = segments[stack[-1]]
            raise ValueError(
                f"segments {stack[-1]} (sequences {p.seq_lo}..{p.seq_hi - 1}) and {i} (sequences {s.seq_lo}.."
                f"{s.seq_hi - 1}) overlap without nesting: a prompt tree's groups must be nested or disjoint")
        out.append((i, s, stack[-1] if stack else -1))
        stack.append(i)
    return out


def _num_splits(kv_len: int, chunk: int) -> int:
    return max(1, min(MAX_SPLITS, math.ceil(kv_len / chunk)))


def _block_m_for(rows: int, g: int) -> int:
    m = rows * g
    for bm in SHARED_BLOCK_MS:
        if m <= bm:
            return bm
    return SHARED_BLOCK_MS[-1]


def build_tree_meta(q_lens: Sequence[int], own_starts: Sequence[int], own_lens: Sequence[int],
                    segments: Sequence[Segment | tuple], num_q_heads: int, num_kv_heads: int, head_dim: int,
                    device: torch.device | str | None = None, *, share: bool = True,
                    own_capacity: Sequence[int] | None = None, num_sms: int | None = None) -> TreeAttentionMeta:
    """Build the work lists for one batch composition.

    q_lens[b]: query rows of query-sequence b (rows are packed in order of b); own_starts[b], own_lens[b]: its own
    KV slots, read causally, whose last q_lens[b] entries are the queries' own keys (or none at all: own_len 0
    means the queries see shared KV only); segments: shared KV read
    non-causally, laminar ranges of query-sequences. share=False gives the no-sharing baseline: each sequence
    reads each segment on its path itself. own_capacity[b]: the largest own_len while this meta is reused (decode),
    used to decide own-segment splits. num_sms: multiprocessor count for split decisions (read off the device when
    None and CUDA is used; 132 otherwise).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if num_q_heads <= 0 or num_kv_heads <= 0 or num_q_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_q_heads}) must be a positive multiple of kv heads ({num_kv_heads})")
    if head_dim <= 0 or head_dim > 256:
        raise ValueError(f"head_dim {head_dim} is not supported: 1..256")
    g = num_q_heads // num_kv_heads
    if g > OWN_BLOCK_M_DECODE:
        raise ValueError(f"a GQA ratio of {g} is above the supported maximum of {OWN_BLOCK_M_DECODE}")
    q_lens = _check_ints("q_lens", q_lens)
    nb = len(q_lens)
    own_starts = _check_ints("own_starts", own_starts, nb)
    own_lens = _check_ints("own_lens", own_lens, nb)
    cap = _check_ints("own_capacity", own_capacity, nb) if own_capacity is not None else list(own_lens)
    for b in range(nb):
        if 0 < own_lens[b] < q_lens[b]:
            raise ValueError(f"query-sequence {b} has {q_lens[b]} query rows but an own segment of only "
                             f"{own_lens[b]} slots: the queries' own keys must be the last slots of the segment "
                             f"(or the segment empty, when the queries see only shared KV)")
        cap[b] = max(cap[b], own_lens[b])
    # extent: one past the highest slot read, and what reads it (checked against the cache by the op)
    extent, owner = 0, ("", -1)
    for b in range(nb):
        if cap[b] > 0 and own_starts[b] + cap[b] > extent:
            extent, owner = own_starts[b] + cap[b], ("own segment of query-sequence", b)
    segs = []
    for i, s in enumerate(segments):
        s = Segment(*(int(x) for x in s))
        if s.kv_start < 0 or s.kv_len < 0 or not (0 <= s.seq_lo <= s.seq_hi <= nb):
            raise ValueError(f"segment {i} = {tuple(s)} is out of range for {nb} query-sequences")
        if s.kv_len == 0 or s.seq_lo == s.seq_hi:
            continue  # contributes nothing (an empty node): no work, no slot
        if s.kv_start + s.kv_len > extent:
            extent, owner = s.kv_start + s.kv_len, ("segment", i)
        if share:
            segs.append(s)
        else:
            segs.extend(Segment(s.kv_start, s.kv_len, b, b + 1) for b in range(s.seq_lo, s.seq_hi))
    if num_sms is None:
        num_sms = (torch.cuda.get_device_properties(device).multi_processor_count
                   if device.type == "cuda" else 132)

    q_start = [0] * (nb + 1)
    for b in range(nb):
        q_start[b + 1] = q_start[b] + q_lens[b]
    t = q_start[nb]

    # KV split size: enough tiles for TARGET_WAVES waves, never finer than MIN_SPLIT_TOKENS.
    ordered = _order_laminar(segs)
    base_tiles = 0
    work = 0  # tile-steps of KV, summed
    for _, s, _ in ordered:
        rows = q_start[s.seq_hi] - q_start[s.seq_lo]
        if rows == 0:
            continue
        bm = _block_m_for(rows, g)
        n_m = math.ceil(rows * g / bm) if rows * g > bm else 1
        base_tiles += n_m * num_kv_heads
        work += n_m * num_kv_heads * s.kv_len
    target = TARGET_WAVES * num_sms
    chunk = max(MIN_SPLIT_TOKENS, math.ceil(work / target / BLOCK_N) * BLOCK_N) if work else MIN_SPLIT_TOKENS

    slot_base: dict[int, int] = {}
    nsplit: dict[int, int] = {}
    seq_slots = [0] * nb
    splits: list[SegmentSplit] = []
    for i, s, parent in ordered:
        n = _num_splits(s.kv_len, chunk) if base_tiles < target else 1
        base = 0 if parent < 0 else slot_base[parent] + nsplit[parent]
        slot_base[i], nsplit[i] = base, n
        for b in range(s.seq_lo, s.seq_hi):
            seq_slots[b] = max(seq_slots[b], base + n)
        row_lo, row_hi = q_start[s.seq_lo], q_start[s.seq_hi]
        if row_lo == row_hi:
            continue
        step = math.ceil(s.kv_len / n / BLOCK_N) * BLOCK_N
        for j in range(n):
            lo = s.kv_start + j * step
            hi = min(s.kv_start + s.kv_len, lo + step)
            if lo < hi:
                splits.append(SegmentSplit(row_lo, row_hi, lo, hi, base + j))
            else:  # rounding left this split empty: it still owns a slot, so write an empty partial
                splits.append(SegmentSplit(row_lo, row_hi, lo, lo, base + j))

    # Own work: split the KV only when sequences x kv heads cannot fill the GPU and the segments are long.
    causal_own = any(q > 1 for q in q_lens)
    own_block_m = OWN_BLOCK_M_PREFILL if causal_own else OWN_BLOCK_M_DECODE
    rows_per_own_tile = max(1, own_block_m // g)
    own_tiles = []
    for b in range(nb):
        for r in range(q_start[b], q_start[b + 1], rows_per_own_tile):
            own_tiles.append((b, r, min(r + rows_per_own_tile, q_start[b + 1])))
    max_cap = max(cap) if cap else 0
    own_splits = 1
    if own_tiles and len(own_tiles) * num_kv_heads < target and max_cap >= 2 * MIN_OWN_SPLIT_TOKENS:
        own_splits = min(MAX_SPLITS, max_cap // MIN_OWN_SPLIT_TOKENS,
                         math.ceil(target / (len(own_tiles) * num_kv_heads)))
    max_slots = max([seq_slots[b] + own_splits for b in range(nb) if q_lens[b]] or [0])

    # Shared tiles by class.
    classes = {bm: [] for bm in SHARED_BLOCK_MS}
    for sp in splits:
        rows = sp.row_hi - sp.row_lo
        bm = _block_m_for(rows, g)
        rpt = max(1, bm // g)
        for r in range(sp.row_lo, sp.row_hi, rpt):
            classes[bm].append((r, min(r + rpt, sp.row_hi), sp.kv_lo, sp.kv_hi, sp.slot))

    i32 = dict(dtype=torch.int32, device=device)

    def tens(rows, width):
        return torch.tensor(rows, **i32) if rows else torch.zeros((0, width), **i32)

    row_seq = [b for b in range(nb) for _ in range(q_lens[b])]
    return TreeAttentionMeta(
        num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, num_rows=t, num_seqs=nb,
        max_slots=max_slots, own_splits=own_splits, own_block_m=own_block_m, causal_own=causal_own,
        splits=splits, q_lens=q_lens, own_starts_host=own_starts,
        shared_classes=[TileClass(bm, tens(classes[bm], 5)) for bm in SHARED_BLOCK_MS],
        own_tiles=tens(own_tiles, 3),
        seq_q_start=torch.tensor(q_start[:nb], **i32), seq_q_len=torch.tensor(q_lens, **i32),
        own_start=torch.tensor(own_starts, **i32), own_len=torch.tensor(own_lens, **i32),
        seq_shared_slots=torch.tensor(seq_slots, **i32), row_seq=torch.tensor(row_seq, **i32), device=device,
        kv_extent=extent, kv_extent_owner=owner,
        kv_tokens_read=sum(sp.kv_hi - sp.kv_lo for sp in splits) + sum(own_lens))
