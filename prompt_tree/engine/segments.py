"""The one builder of attention metadata for the engine's model calls: shared segments from the plan's nodes,
own segments through pages, for prefill pieces and decode rows alike.

A query-sequence (a prefill piece of one node, or one decode row) reads, as shared KV, every node of its path
above its own segment; rows come in plan order, so the readers of a node are consecutive and each run of a
resident node becomes one Segment over that row range (prompt_tree.kernels.Segment: KV read once for the whole range).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from prompt_tree.kernels import Segment, build_tree_meta


def shared_segments(paths: Sequence[Sequence], node_runs: Callable) -> list[Segment]:
    """paths[r]: the nodes query-sequence r reads as shared KV, outermost first (a node's readers consecutive).
    node_runs(key) -> [(first slot, tokens), ...]. One segment per (maximal run of readers, node run), depth by
    depth, in row order."""
    # Consecutive rows with equal paths (a node's samples: thousands of rows, one path object) collapse into one
    # run first, so the per-depth work below is over runs, not rows: the host part of a decode-batch rebuild,
    # which the device waits for (tools/rebuild_host.py).
    runs: list[list] = []  # [lo, hi, path]
    for r, p in enumerate(paths):
        if runs and (p is runs[-1][2] or p == runs[-1][2]):
            runs[-1][1] = r + 1
        else:
            runs.append([r, r + 1, p])
    segs: list[Segment] = []
    for a in range(max((len(p) for _, _, p in runs), default=0)):
        i = 0
        while i < len(runs):
            lo, _, p = runs[i]
            i += 1
            if a >= len(p):
                continue
            node = p[a]
            while i < len(runs) and a < len(runs[i][2]) and runs[i][2][a] == node:
                i += 1
            hi = runs[i - 1][1]
            for start, length in node_runs(node):
                segs.append(Segment(start, length, lo, hi))
    return segs


@dataclass(frozen=True)
class Heads:
    num_q_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class PrefillPiece:
    """Tokens lo .. hi-1 of node `key` as query rows: their own segment is the node's first hi tokens (through the
    node's pages), and they read `ancestors` (outermost first) as shared KV."""

    key: object
    lo: int
    hi: int
    pages: tuple
    ancestors: tuple
    base_pos: int  # position of the node's first token in its sequences


def prefill_meta(pieces: Sequence[PrefillPiece], node_runs: Callable, heads: Heads, page_size: int,
                 device: torch.device, share: bool):
    """Metadata of one prefill call over pieces in plan order."""
    return build_tree_meta(
        [p.hi - p.lo for p in pieces], [0] * len(pieces), [p.hi for p in pieces],
        shared_segments([p.ancestors for p in pieces], node_runs),
        heads.num_q_heads, heads.num_kv_heads, heads.head_dim, device, share=share,
        own_pages=[list(p.pages) for p in pieces], page_size=page_size)


def decode_meta(paths: Sequence[Sequence], pages, own_lens: Sequence[int], capacity_pages: int, padded_rows: int,
                node_runs: Callable, heads: Heads, page_size: int, device: torch.device, share: bool,
                num_sms: int | None = None, capacity=None):
    """Metadata of one decode step: rows 0..len(paths)-1 are sequences in plan order, then padding rows up to
    padded_rows (q_len 1, own_len 0, no segment: output 0, never a NaN). pages: the rows' page lists, each padded
    with the scratch page to capacity_pages so the table keeps its shape while the suffixes grow; or that table
    already, a numpy [padded_rows, capacity_pages] int array (the engine's host mirror: no per-row work)."""
    n = len(paths)
    pad = padded_rows - n
    if isinstance(pages, np.ndarray):
        if pages.shape != (padded_rows, capacity_pages):
            raise ValueError(f"the page table is {pages.shape}, not (padded rows, capacity pages) = "
                             f"{(padded_rows, capacity_pages)}")
        own_pages = pages
    else:
        own_pages = [list(p) + [0] * (capacity_pages - len(p)) for p in pages] + [[0] * capacity_pages] * pad
    return build_tree_meta(
        [1] * padded_rows, None, list(own_lens) + [0] * pad,
        shared_segments(paths, node_runs), heads.num_q_heads, heads.num_kv_heads, heads.head_dim, device,
        share=share, own_capacity=[capacity_pages * page_size] * padded_rows, own_pages=own_pages,
        page_size=page_size, num_sms=num_sms, capacity=capacity)
