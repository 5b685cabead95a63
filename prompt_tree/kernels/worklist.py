"""build_tree_meta: from segments and query-sequences (CPU, numpy) to the kernels' device work lists.

The attention of a batch over a prompt tree is cut into work items that the kernels run in a constant number of
launches, whatever the depth or width of the tree:

- shared work: each shared segment (a tree node's KV, read non-causally by a contiguous range of query-sequences)
  becomes tiles of (query rows x the g query heads of one KV head) = the M dimension of one matrix product, looped
  over the segment's KV. When there are too few tiles to fill the GPU the KV is split (flash-decoding). One launch
  per tile class (BLOCK_M of 16, 64 or 128): at most three launches for all levels together.
- own work: each query-sequence's own segment (its generated suffix in decode, the node itself in prefill), read
  causally, one tile per (sequence, block of its query rows), optionally split along the KV. Own segments are
  contiguous slot ranges or paged (position p in slot pages[p // page_size] * page_size + p % page_size).
- merge: every query row combines its partial (output, LSE) pairs; fused into the own-work epilogue when the own
  segment is not split.

Partial results live in a workspace indexed by (query row, slot): a row's slots are 0..n-1, one per (segment, KV
split) on its path, outermost first, then its own splits. Because the segments of a tree are laminar (two ranges
are nested or disjoint), a segment's slot base is the same for every row it covers. Segments with equal ranges
(one node stored in several runs of slots) nest inside each other: each gets its own slot.

With `capacity=` the device tensors get fixed shapes (prompt_tree.kernels.meta.MetaCapacity): tile lists padded with
no-op tiles (empty row and KV ranges: they read and write nothing), the workspace slot count and the page table's width
fixed. Splits are a speed choice, not part of the composition: when the automatic shared splits overflow the
capacity, the meta is built without shared splits; only a composition that does not fit even then is an error.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .meta import SHARED_BLOCK_MS, CapacityOverflow, MetaCapacity, Segment, SegmentSplit, TileClass, TreeAttentionMeta

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
ALIGN = 4  # int32 entries: every device view starts 16-byte aligned (Triton specializes pointers on it)


def _check_ints(name: str, values, n: int | None = None, minimum: int = 0) -> np.ndarray:
    """values as an int64 array (a list, tuple or integer array; other numbers truncate, as int() does)."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iub":
        arr = np.array([int(v) for v in values], dtype=np.int64)
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries but there are {n} query-sequences")
    bad = np.flatnonzero(arr < minimum)
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {arr[bad[0]]} is below {minimum}")
    return arr


def _page_table(own_pages, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """(table [nb, width >= 1] int64, pages per row [nb]) from per-row page lists (rows padded with their last
    page, empty rows with 0) or from one [nb, width] integer array or tensor (every row holding width pages: the
    engine's page table, already padded with a page it owns)."""
    if isinstance(own_pages, torch.Tensor):
        own_pages = own_pages.detach().cpu().numpy()
    if isinstance(own_pages, np.ndarray):
        if own_pages.ndim != 2 or own_pages.dtype.kind not in "iu":
            raise ValueError(f"own_pages as an array must be a 2-D integer [query-sequences, pages] table, not "
                             f"{own_pages.dtype} of shape {own_pages.shape}")
        if own_pages.shape[0] != nb:
            raise ValueError(f"own_pages has {own_pages.shape[0]} rows but there are {nb} query-sequences")
        table = own_pages.astype(np.int64)
        lens = np.full(nb, table.shape[1], dtype=np.int64)
        if table.shape[1] == 0:
            table = np.zeros((nb, 1), dtype=np.int64)
        return table, lens
    if len(own_pages) != nb:
        raise ValueError(f"own_pages has {len(own_pages)} rows but there are {nb} query-sequences")
    rows = [[int(p) for p in row] for row in own_pages]
    lens = np.array([len(r) for r in rows], dtype=np.int64)
    table = np.zeros((nb, max(int(lens.max(initial=0)), 1)), dtype=np.int64)
    for b, row in enumerate(rows):
        if row:
            table[b, :len(row)] = row
            table[b, len(row):] = row[-1]
    return table, lens


def _check_pages(own_pages, page_size, own_starts, cap: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated page table, pages per row and page size; own_starts must be None or all 0 (positions map
    through the pages)."""
    if own_pages is None or page_size is None:
        raise ValueError("own_pages and page_size go together: give both for paged own segments, or neither")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1 \
            or page_size & (page_size - 1):
        raise ValueError(f"page_size must be a positive power of two (16 or 32 in the engine), not {page_size!r}")
    nb = cap.size
    table, lens = _page_table(own_pages, nb)
    if own_starts is not None and np.any(np.asarray(own_starts) != 0):
        raise ValueError("own_starts must be None or all 0 with own_pages: a paged own segment's position p lives "
                         "at own_pages[b][p // page_size] * page_size + p % page_size")
    neg = np.flatnonzero(table.min(axis=1) < 0)
    if neg.size:
        b = int(neg[0])
        raise ValueError(f"own_pages[{b}] holds a negative page id {int(table[b].min())}")
    need = -(-cap // page_size)
    short = np.flatnonzero(lens < need)
    if short.size:
        b = int(short[0])
        raise ValueError(f"own_pages[{b}] has {lens[b]} pages ({lens[b] * page_size} slots) but query-sequence {b} "
                         f"may hold {cap[b]} tokens (own_len / own_capacity): give it at least {need[b]} pages")
    return table, lens, page_size


def _order_laminar(segments: list[Segment]) -> list[tuple[int, Segment, int]]:
    """Sort segments outermost first and return (index, segment, parent index or -1); reject crossing ranges.

    Sorting by (seq_lo, -seq_hi, original index) visits a parent before its children (equal ranges, e.g. a
    single-child chain or one node stored in several runs, keep their given order: the first is the outer one).
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


def _block_m_for(rows: int, g: int) -> int:
    m = rows * g
    for bm in SHARED_BLOCK_MS:
        if m <= bm:
            return bm
    return SHARED_BLOCK_MS[-1]


def _shared_work(ordered, q_start: list[int], nb: int, g: int, num_kv_heads: int, target: int, split: bool):
    """(splits, slots of shared work per sequence, tiles per class) for the laminar-ordered segments.

    KV split size: enough tiles for `target` programs, never finer than MIN_SPLIT_TOKENS (no splits when not
    `split` or when the unsplit tiles already fill the target)."""
    base_tiles, work = 0, 0  # tiles without splits; tile-steps of KV, summed
    for _, s, _ in ordered:
        rows = q_start[s.seq_hi] - q_start[s.seq_lo]
        if rows == 0:
            continue
        bm = _block_m_for(rows, g)
        n_m = math.ceil(rows * g / bm) if rows * g > bm else 1
        base_tiles += n_m * num_kv_heads
        work += n_m * num_kv_heads * s.kv_len
    chunk = max(MIN_SPLIT_TOKENS, math.ceil(work / target / BLOCK_N) * BLOCK_N) if work else MIN_SPLIT_TOKENS
    slot_base: dict[int, int] = {}
    nsplit: dict[int, int] = {}
    seq_slots = np.zeros(nb, dtype=np.int64)
    splits: list[SegmentSplit] = []
    for i, s, parent in ordered:
        n = max(1, min(MAX_SPLITS, math.ceil(s.kv_len / chunk))) if split and base_tiles < target else 1
        base = 0 if parent < 0 else slot_base[parent] + nsplit[parent]
        slot_base[i], nsplit[i] = base, n
        np.maximum(seq_slots[s.seq_lo:s.seq_hi], base + n, out=seq_slots[s.seq_lo:s.seq_hi])
        row_lo, row_hi = q_start[s.seq_lo], q_start[s.seq_hi]
        if row_lo == row_hi:
            continue
        step = math.ceil(s.kv_len / n / BLOCK_N) * BLOCK_N
        for j in range(n):
            lo = s.kv_start + j * step
            hi = min(s.kv_start + s.kv_len, lo + step)
            # rounding may leave a split empty (lo >= hi): it still owns a slot, so it writes an empty partial
            splits.append(SegmentSplit(row_lo, row_hi, lo, max(lo, hi), base + j))
    classes: dict[int, list] = {bm: [] for bm in SHARED_BLOCK_MS}
    for sp in splits:
        bm = _block_m_for(sp.row_hi - sp.row_lo, g)
        rpt = max(1, bm // g)
        for r in range(sp.row_lo, sp.row_hi, rpt):
            classes[bm].append((r, min(r + rpt, sp.row_hi), sp.kv_lo, sp.kv_hi, sp.slot))
    return splits, seq_slots, classes


def _pack(sections: list[tuple[str, object, tuple]], device: torch.device):
    """One int32 buffer holding every section (name, values: rows or flat ints, as a list or an array, shape),
    each starting ALIGN-aligned and zero-padded to its shape; returns (buffer, layout, views by name)."""
    layout, off = [], 0
    for name, _, shape in sections:
        layout.append((name, off, tuple(shape)))
        off += math.prod(shape)
        off += -off % ALIGN
    flat = np.zeros(max(off, 1), dtype=np.int64)
    for (name, values, shape), (_, start, _) in zip(sections, layout):
        arr = np.asarray(values, dtype=np.int64).reshape(-1)
        if arr.size > math.prod(shape):  # pragma: no cover - shapes come from the same counts
            raise AssertionError(f"section {name} holds {arr.size} values for shape {shape}")
        flat[start:start + arr.size] = arr
    if flat.size and (flat.max() > np.iinfo(np.int32).max or flat.min() < np.iinfo(np.int32).min):
        raise ValueError("a KV slot, page id or count of this metadata does not fit int32 (the kernels' index type)")
    buf = torch.from_numpy(flat.astype(np.int32)).to(device)  # one host-to-device copy
    views = {name: buf[o:o + math.prod(shape)].view(shape) for name, o, shape in layout}
    return buf, tuple(layout), views


def build_tree_meta(q_lens: Sequence[int], own_starts: Sequence[int] | None, own_lens: Sequence[int],
                    segments: Sequence[Segment | tuple], num_q_heads: int, num_kv_heads: int, head_dim: int,
                    device: torch.device | str | None = None, *, share: bool = True,
                    own_capacity: Sequence[int] | None = None, num_sms: int | None = None,
                    own_pages: Sequence[Sequence[int]] | np.ndarray | None = None, page_size: int | None = None,
                    own_splits: int | None = None, capacity: MetaCapacity | None = None) -> TreeAttentionMeta:
    """Build the work lists for one batch composition.

    q_lens[b]: query rows of query-sequence b (rows are packed in order of b). own_lens[b]: the length of its own
    segment, read causally, whose last q_lens[b] positions are the queries' own keys (or none at all: own_len 0
    means the queries see shared KV only). Own position p lives at slot own_starts[b] + p, or, when paged
    (own_pages and page_size given, own_starts None or all 0), at own_pages[b][p // page_size] * page_size +
    p % page_size; own_pages is a list of page lists (padded with their last page), or one [nb, width] integer
    array or tensor whose every row holds width valid page ids (the engine's page table: no per-row Python work
    at thousands of rows). segments: shared KV read non-causally, laminar ranges of query-sequences. share=False
    gives the no-sharing baseline: each sequence reads each segment on its path itself. own_capacity[b]: the largest
    own_len while this meta is reused (own_len grown in place in decode): decides own splits, bounds the slots
    read, and must be covered by the sequence's pages. num_sms: multiprocessor count for split decisions (read off
    the device when None and CUDA is used; 132 otherwise: pass it when building on the CPU for a GPU).
    own_splits: force the own segments' KV split count (1 = the merge fused into the own kernel); None = choose.
    capacity: pad every device tensor to these shapes (for update_ under a captured graph; see the module doc).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if num_q_heads <= 0 or num_kv_heads <= 0 or num_q_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_q_heads}) must be a positive multiple of kv heads ({num_kv_heads})")
    if head_dim <= 0 or head_dim > 256:
        raise ValueError(f"head_dim {head_dim} is not supported: 1..256")
    g = num_q_heads // num_kv_heads
    if g > OWN_BLOCK_M_DECODE:
        raise ValueError(f"a GQA ratio of {g} is above the supported maximum of {OWN_BLOCK_M_DECODE}")
    if own_splits is not None and (isinstance(own_splits, bool) or not isinstance(own_splits, int)
                                   or not 1 <= own_splits <= MAX_SPLITS):
        raise ValueError(f"own_splits must be None (automatic) or an int in 1..{MAX_SPLITS}, not {own_splits!r}")
    if capacity is not None and not isinstance(capacity, MetaCapacity):
        raise ValueError(f"capacity must be a prompt_tree.kernels.MetaCapacity, not {type(capacity).__name__}")
    q_lens = _check_ints("q_lens", q_lens)
    nb = q_lens.size
    own_lens = _check_ints("own_lens", own_lens, nb)
    cap = _check_ints("own_capacity", own_capacity, nb) if own_capacity is not None else own_lens
    bad = np.flatnonzero((own_lens > 0) & (own_lens < q_lens))
    if bad.size:
        b = int(bad[0])
        raise ValueError(f"query-sequence {b} has {q_lens[b]} query rows but an own segment of only "
                         f"{own_lens[b]} slots: the queries' own keys must be the last slots of the segment "
                         f"(or the segment empty, when the queries see only shared KV)")
    cap = np.maximum(cap, own_lens)
    pages, page_lens, size = None, None, 0
    if own_pages is not None or page_size is not None:
        pages, page_lens, size = _check_pages(own_pages, page_size, own_starts, cap)
        own_starts = np.zeros(nb, dtype=np.int64)
    elif own_starts is None:
        raise ValueError("own_starts is needed for contiguous own segments (or give own_pages and page_size)")
    else:
        own_starts = _check_ints("own_starts", own_starts, nb)
    # extent: one past the highest slot read, and what reads it (checked against the cache by the op)
    extent, owner = 0, ("", -1)
    if nb:
        if pages is not None:
            tops = np.where(page_lens > 0, (pages.max(axis=1) + 1) * size, 0)
        else:
            tops = np.where(cap > 0, own_starts + cap, 0)
        b = int(np.argmax(tops))  # the first row reaching the maximum
        if tops[b] > 0:
            extent, owner = int(tops[b]), ("own pages of query-sequence" if pages is not None else
                                           "own segment of query-sequence", b)
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
    target = TARGET_WAVES * num_sms
    q_start = np.zeros(nb + 1, dtype=np.int64)
    np.cumsum(q_lens, out=q_start[1:])
    t = int(q_start[nb])
    ordered = _order_laminar(segs)

    # Own work: split the KV only when sequences x kv heads cannot fill the GPU and the segments are long.
    causal_own = bool(np.any(q_lens > 1))
    own_block_m = OWN_BLOCK_M_PREFILL if causal_own else OWN_BLOCK_M_DECODE
    rows_per_own_tile = max(1, own_block_m // g)
    # one tile per (sequence, block of rows_per_own_tile of its query rows): [seq, row_lo, row_hi]
    per_seq = -(-q_lens // rows_per_own_tile)
    tile_seq = np.repeat(np.arange(nb, dtype=np.int64), per_seq)
    first_tile = np.repeat(np.cumsum(per_seq) - per_seq, per_seq)
    row_lo = q_start[tile_seq] + (np.arange(tile_seq.size, dtype=np.int64) - first_tile) * rows_per_own_tile
    own_tiles = np.stack([tile_seq, row_lo, np.minimum(row_lo + rows_per_own_tile, q_start[tile_seq + 1])], axis=1)
    n_own_tiles = own_tiles.shape[0]
    max_cap = int(cap.max(initial=0))
    n_own = 1
    if own_splits is not None:
        n_own = own_splits
    elif n_own_tiles and n_own_tiles * num_kv_heads < target and max_cap >= 2 * MIN_OWN_SPLIT_TOKENS:
        n_own = min(MAX_SPLITS, max_cap // MIN_OWN_SPLIT_TOKENS, math.ceil(target / (n_own_tiles * num_kv_heads)))
    table_width = pages.shape[1] if pages is not None else 0

    q_start_list = q_start.tolist()
    for split in (True, False):  # with a capacity, fall back to unsplit shared segments if the splits overflow it
        splits, seq_slots, classes = _shared_work(ordered, q_start_list, nb, g, num_kv_heads, target, split)
        slots = int((seq_slots[q_lens > 0] + n_own).max(initial=0))
        needed = MetaCapacity(nb, t, tuple(len(classes[bm]) for bm in SHARED_BLOCK_MS), n_own_tiles, slots,
                              table_width)
        if capacity is None or not capacity.overflow(needed):
            break
    else:
        raise CapacityOverflow("the batch composition does not fit the metadata capacity: "
                               + "; ".join(capacity.overflow(needed)) + " (grow it, e.g. capacity.union("
                               "prompt_tree.kernels.required_capacity(meta)).grow(), and capture again)", needed)
    shape = capacity or needed

    sections = [(f"tiles{bm}", classes[bm], (shape.shared_tiles[i], 5)) for i, bm in enumerate(SHARED_BLOCK_MS)]
    sections += [("own_tiles", own_tiles, (shape.own_tiles, 3)),
                 ("seq_q_start", q_start[:nb], (nb,)), ("seq_q_len", q_lens, (nb,)),
                 ("own_start", own_starts, (nb,)), ("own_len", own_lens, (nb,)),
                 ("seq_shared_slots", seq_slots, (nb,)),
                 ("row_seq", np.repeat(np.arange(nb, dtype=np.int64), q_lens), (t,))]
    if pages is not None:  # rows padded with their last page (a valid id the row owns), empty rows with 0
        width = shape.max_pages
        table = pages if width == pages.shape[1] else \
            np.concatenate([pages, np.repeat(pages[:, -1:], width - pages.shape[1], axis=1)], axis=1)
        sections.append(("own_page_table", table, (nb, width)))
    buf, layout, v = _pack(sections, device)
    return TreeAttentionMeta(
        num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, num_rows=t, num_seqs=nb,
        max_slots=shape.max_slots, own_splits=n_own, own_block_m=own_block_m, causal_own=causal_own,
        page_size=size, splits=splits, q_lens=q_lens.tolist(), own_starts_host=own_starts.tolist(),
        own_pages_host=pages,
        shared_classes=[TileClass(bm, v[f"tiles{bm}"]) for bm in SHARED_BLOCK_MS], own_tiles=v["own_tiles"],
        seq_q_start=v["seq_q_start"], seq_q_len=v["seq_q_len"], own_start=v["own_start"], own_len=v["own_len"],
        seq_shared_slots=v["seq_shared_slots"], row_seq=v["row_seq"], own_page_table=v.get("own_page_table"),
        buffer=buf, layout=layout, needed=needed, capacity=capacity, device=device,
        kv_extent=extent, kv_extent_owner=owner,
        kv_tokens_read=sum(sp.kv_hi - sp.kv_lo for sp in splits) + int(own_lens.sum()))
