"""Tree-attention metadata: what the kernels read for one batch composition, and how it is reused.

`prompt_tree.kernels.worklist.build_tree_meta` turns segments and query-sequences into a TreeAttentionMeta (the rules
of that are documented there). This module holds the types:

- TreeAttentionMeta: host-side description plus device work lists. Every device tensor is a view into one flat
  int32 buffer (one host-to-device copy per build, one device copy per `update_`), each view 16-byte aligned.
- MetaCapacity: fixed sizes for those tensors. A meta built with `capacity=` has device tensors of exactly those
  shapes (padded with no-op work items), so metas of different compositions can replace each other in place
  (`update_`) under one captured CUDA graph or one plan.
- own_slots / query_slots: the KV slot of a position of a query-sequence's own segment (contiguous or paged),
  computed on the device, so that the caller writes new keys exactly where the kernels will read them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

# Tile classes for shared work, by query-block height (rows x heads); see prompt_tree.kernels.worklist for the choice.
SHARED_BLOCK_MS = (16, 64, 128)


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
    tiles: torch.Tensor  # [n_tiles, 5] int32: row_lo, row_hi, kv_lo, kv_hi, slot (padding: all 0, writes nothing)


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"MetaCapacity.{name} must be a non-negative int, not {value!r}")
    return value


class CapacityOverflow(ValueError):
    """A composition does not fit the capacity it was built for; `needed` is what it needs (unsplit shared
    segments, the smallest it can be)."""

    def __init__(self, message: str, needed: MetaCapacity):
        super().__init__(message)
        self.needed = needed


@dataclass(frozen=True)
class MetaCapacity:
    """The shapes of a metadata's device tensors, fixed so that metas of other compositions fit them.

    num_seqs, num_rows: exactly the query-sequences and query rows (the padded batch: pad with padding
      query-sequences of q_len 1, own_len 0 and no segment, whose output is exactly 0).
    shared_tiles: at most this many tiles per shared tile class, in SHARED_BLOCK_MS order (16, 64, 128 rows).
    own_tiles: at most this many own tiles (decode: one per query-sequence).
    max_slots: partial (output, LSE) slots per row, the workspace's second dimension (levels + splits).
    max_pages: columns of the own page table (paged metas; 0 for contiguous own segments).
    """

    num_seqs: int
    num_rows: int
    shared_tiles: tuple[int, ...]
    own_tiles: int
    max_slots: int
    max_pages: int = 0

    def __post_init__(self):
        for f in ("num_seqs", "num_rows", "own_tiles", "max_slots", "max_pages"):
            _count(f, getattr(self, f))
        tiles = tuple(self.shared_tiles) if isinstance(self.shared_tiles, (tuple, list)) else None
        if tiles is None or len(tiles) != len(SHARED_BLOCK_MS):
            raise ValueError(f"MetaCapacity.shared_tiles must hold {len(SHARED_BLOCK_MS)} counts, one per shared "
                             f"tile class {SHARED_BLOCK_MS}, not {self.shared_tiles!r}")
        for t in tiles:
            _count("shared_tiles", t)
        object.__setattr__(self, "shared_tiles", tiles)

    def overflow(self, need: MetaCapacity) -> list[str]:
        """What of `need` does not fit this capacity, in words (empty when it fits)."""
        out = []
        for f in ("num_seqs", "num_rows"):
            if getattr(need, f) != getattr(self, f):
                out.append(f"{f} is {getattr(need, f)} but the capacity is for exactly {getattr(self, f)} (pad the "
                           f"batch with query-sequences of q_len 1, own_len 0 and no segment)")
        for bm, n, c in zip(SHARED_BLOCK_MS, need.shared_tiles, self.shared_tiles):
            if n > c:
                out.append(f"{n} shared tiles of {bm} rows exceed shared_tiles capacity {c}")
        for f in ("own_tiles", "max_slots", "max_pages"):
            if getattr(need, f) > getattr(self, f):
                out.append(f"{f} {getattr(need, f)} exceeds the capacity {getattr(self, f)}")
        return out

    def union(self, other: MetaCapacity) -> MetaCapacity:
        """The smallest capacity that holds both (same num_seqs and num_rows)."""
        if (self.num_seqs, self.num_rows) != (other.num_seqs, other.num_rows):
            raise ValueError(f"capacities for different batches cannot be joined: {self.num_seqs} sequences / "
                             f"{self.num_rows} rows against {other.num_seqs} / {other.num_rows}")
        return MetaCapacity(self.num_seqs, self.num_rows,
                            tuple(max(a, b) for a, b in zip(self.shared_tiles, other.shared_tiles)),
                            max(self.own_tiles, other.own_tiles), max(self.max_slots, other.max_slots),
                            max(self.max_pages, other.max_pages))

    def grow(self, factor: float = 1.5) -> MetaCapacity:
        """Headroom: every bound (tiles, slots, pages) times `factor`, rounded up; the batch stays the same."""
        if not (isinstance(factor, (int, float)) and factor >= 1):
            raise ValueError(f"grow factor must be a number >= 1, not {factor!r}")

        def up(n: int) -> int:
            return math.ceil(n * factor)

        return MetaCapacity(self.num_seqs, self.num_rows, tuple(up(n) for n in self.shared_tiles),
                            up(self.own_tiles), up(self.max_slots), up(self.max_pages))


# Fields that select kernel variants, grids or workspace shapes: metas must agree on them to replace each other.
_MODE_FIELDS = ("num_q_heads", "num_kv_heads", "head_dim", "num_rows", "num_seqs", "max_slots", "own_splits",
                "own_block_m", "causal_own", "page_size")
# Host-side fields that `update_` replaces.
_HOST_FIELDS = ("splits", "q_lens", "own_starts_host", "own_pages_host", "kv_extent", "kv_extent_owner",
                "kv_tokens_read", "needed", "capacity")


@dataclass
class TreeAttentionMeta:
    """Everything the kernels need for one batch composition. Built by `prompt_tree.kernels.build_tree_meta`."""

    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    num_rows: int  # T, query rows
    num_seqs: int  # NB, query-sequences
    max_slots: int  # partial slots per row in the workspace (the capacity's, when padded)
    own_splits: int  # KV splits of each own segment (1 = merge fused into the own kernel)
    own_block_m: int
    causal_own: bool  # False when every q_len is 1 (decode): no mask arithmetic in the own kernel
    page_size: int  # own segments: 0 = contiguous slots from own_start; else paged through own_page_table
    # host-side description (tests, the torch path, debugging)
    splits: list[SegmentSplit]
    q_lens: list[int]
    own_starts_host: list[int]
    own_pages_host: np.ndarray | None  # [NB, width] int64 page ids, rows padded with a valid id (paged)
    # device tensors (int32 views into `buffer`)
    shared_classes: list[TileClass]
    own_tiles: torch.Tensor  # [n_own_tiles, 3] int32: seq, row_lo, row_hi (padding: all 0, reads nothing)
    seq_q_start: torch.Tensor  # [NB] int32: first q row of each query-sequence
    seq_q_len: torch.Tensor  # [NB] int32
    own_start: torch.Tensor  # [NB] int32 (all 0 when paged)
    own_len: torch.Tensor  # [NB] int32, may be updated in place between decode steps (up to the own capacity)
    seq_shared_slots: torch.Tensor  # [NB] int32: partial slots of shared work on the sequence's path
    row_seq: torch.Tensor  # [T] int32: the query-sequence of each row
    own_page_table: torch.Tensor | None  # [NB, max_pages] int32 page ids (paged), rows padded with a valid id
    buffer: torch.Tensor  # the flat int32 buffer every device tensor above views
    layout: tuple  # ((name, offset, shape), ...) of those views
    # what this composition needs (required_capacity) and what it was padded to (None: unpadded)
    needed: MetaCapacity
    capacity: MetaCapacity | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # One past the highest KV slot any segment or own segment (at its capacity) may read: the op checks the
    # cache holds it, because the kernels do not bound-check slots (an overrun would read other memory).
    kv_extent: int = 0
    # (kind, index) of what reaches kv_extent, for the error message
    kv_extent_owner: tuple = ("", -1)
    # An estimate of the KV slots one call reads (each shared split once, though tiles of many rows re-read it,
    # plus every own segment at build time; in-place own_len updates do not change it): sizes the call's GPU
    # work for the plain-call choice of one stream or two (times Hkv x D x element bytes x 2 for K and V)
    kv_tokens_read: int = 0

    @property
    def paged(self) -> bool:
        return self.page_size > 0

    @property
    def workspace_bytes(self) -> int:
        """fp32 partial outputs and LSEs: T x slots x Hq x (D + 1) x 4 bytes (no partial when there is no slot)."""
        return self.num_rows * self.max_slots * self.num_q_heads * (self.head_dim + 1) * 4

    @property
    def num_launches(self) -> int:
        return sum(1 for c in self.shared_classes if c.tiles.shape[0]) + 1 + (self.own_splits > 1)

    def update_(self, other: TreeAttentionMeta) -> TreeAttentionMeta:
        """Make this meta describe `other`'s composition, writing its device tensors in place (their shapes and
        addresses stay: a CUDA graph or plan made with this meta now computes `other`'s attention).

        Both must agree on every kernel-variant field and tensor shape (build both with the same `capacity=`,
        `own_splits=` and, when paged, page size): a ValueError names any mismatch. `other` may live on another
        device (e.g. built on the CPU: one host-to-device copy). The copy is ordered on the current stream."""
        if not isinstance(other, TreeAttentionMeta):
            raise ValueError(f"update_ takes a TreeAttentionMeta, not {type(other).__name__}")
        problems = [f"{f} {getattr(self, f)} vs {getattr(other, f)}" for f in _MODE_FIELDS
                    if getattr(self, f) != getattr(other, f)]
        mine, theirs = {n: s for n, _, s in self.layout}, {n: s for n, _, s in other.layout}
        problems += [f"{n} of shape {tuple(mine.get(n, ()))} vs {tuple(theirs.get(n, ()))}"
                     for n in sorted(set(mine) | set(theirs)) if mine.get(n) != theirs.get(n)]
        if problems:
            raise ValueError("cannot update this metadata in place from a differently shaped one: "
                             + "; ".join(problems) + ". Build both with the same capacity= "
                             "(prompt_tree.kernels.MetaCapacity), own_splits= and page_size")
        self.buffer.copy_(other.buffer)
        for f in _HOST_FIELDS:
            setattr(self, f, getattr(other, f))
        return self

    def views(self) -> dict[str, torch.Tensor]:
        """Every device tensor by its layout name (all views into `buffer`)."""
        out = {f"tiles{c.block_m}": c.tiles for c in self.shared_classes}
        out.update(own_tiles=self.own_tiles, seq_q_start=self.seq_q_start, seq_q_len=self.seq_q_len,
                   own_start=self.own_start, own_len=self.own_len, seq_shared_slots=self.seq_shared_slots,
                   row_seq=self.row_seq)
        if self.own_page_table is not None:
            out["own_page_table"] = self.own_page_table
        return out

    def check(self) -> None:
        """Invariants of the work lists (tests call this): views 16-byte aligned in the buffer with their layout
        shapes, split slots in range, every row's slots within the workspace, padding within the capacity."""
        views = self.views()
        assert sorted(views) == sorted(n for n, _, _ in self.layout), "layout and views differ"
        for name, off, shape in self.layout:
            v = views[name]
            assert off % 4 == 0 and tuple(v.shape) == tuple(shape), f"{name}: offset {off}, shape {tuple(v.shape)}"
            assert v.numel() == 0 or v.data_ptr() == self.buffer.data_ptr() + 4 * off, f"{name}: not in the buffer"
        for sp in self.splits:
            assert 0 <= sp.row_lo <= sp.row_hi <= self.num_rows and sp.kv_lo <= sp.kv_hi <= self.kv_extent
            assert 0 <= sp.slot < self.max_slots, f"split slot {sp.slot} outside {self.max_slots} slots"
        shared = self.seq_shared_slots.tolist()
        for b, n in enumerate(self.q_lens):
            if n:
                assert shared[b] + self.own_splits <= self.max_slots, f"sequence {b} needs more slots than exist"
        assert self.capacity is None or not self.capacity.overflow(self.needed)


def required_capacity(meta: TreeAttentionMeta) -> MetaCapacity:
    """The smallest MetaCapacity this meta's composition fits (before any padding): start a bucket from it, e.g.
    `required_capacity(meta).grow(1.5)`, and join several with MetaCapacity.union."""
    return meta.needed


def position_slots(meta: TreeAttentionMeta, seq: torch.Tensor | None, pos: torch.Tensor,
                   empty_slot: int = -1) -> torch.Tensor:
    """[N] int64: the KV slot of own-segment position pos[i] (int64 [N]) of query-sequence seq[i] (int64 [N];
    None: every sequence in order, N = NB), empty_slot where pos < 0. The one rule of where own positions live: contiguous from own_start, or paged
    (position p at own_page_table[b, p // page_size] * page_size + p % page_size)."""
    p = pos.clamp_min(0)
    if meta.paged:
        size = meta.page_size
        table = meta.own_page_table if seq is None else meta.own_page_table.index_select(0, seq)
        col = (p // size).clamp_max(table.shape[1] - 1)  # past the table only when own_len outgrew its pages
        slot = table.gather(1, col[:, None]).squeeze(1).long() * size + p % size
    else:
        start = meta.own_start if seq is None else meta.own_start.index_select(0, seq)
        slot = start.long() + p
    return torch.where(pos >= 0, slot, torch.full_like(slot, empty_slot))


def own_slots(meta: TreeAttentionMeta, empty_slot: int = -1) -> torch.Tensor:
    """[NB] int64 on meta's device: the KV slot of position own_len[b] - 1 of each query-sequence's own segment
    (decode: where this step's new key and value go, the fed token being the segment's last), or `empty_slot`
    where own_len[b] is 0 (padding rows: pass a scratch slot the caller owns). Device ops only, so it can be
    captured in a CUDA graph; it reads own_len as it is when it runs."""
    return position_slots(meta, None, meta.own_len.long() - 1, empty_slot)


def query_slots(meta: TreeAttentionMeta, empty_slot: int = -1) -> torch.Tensor:
    """[T] int64 on meta's device: the KV slot of each query row's own key (row i of query-sequence b is position
    own_len[b] - q_len[b] + i of its own segment), or `empty_slot` for rows whose sequence has an empty own
    segment. Prefill writes a chunk's keys here; in decode (q_len 1) it equals own_slots."""
    seq = meta.row_seq.long()
    rows = torch.arange(meta.num_rows, device=seq.device)
    pos = (meta.own_len.long() - meta.seq_q_len.long()).index_select(0, seq) + rows \
        - meta.seq_q_start.long().index_select(0, seq)
    empty = meta.own_len.index_select(0, seq) == 0
    return torch.where(empty, torch.full_like(rows, empty_slot), position_slots(meta, seq, pos, empty_slot))
