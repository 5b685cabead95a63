"""Longest common prefixes of token-id sequences: the one rule both sharing constructions use.

`PromptTree.from_prompts` builds a radix tree of flat prompts and `flatten` finds what the sequences below each
tree node share; both need the common prefix of a *run* of sequences, and both get it the same way:

    The longest common prefix of sequences s_1 .. s_n, taken in any order, is the least common prefix of
    neighbours: min(lcp(s_1, s_2), ..., lcp(s_{n-1}, s_n)) (and len(s_1) for n = 1).

Why: no neighbour pair can share more than the whole set does, so the minimum is at least the set's; and any
two sequences agree up to the least neighbour lcp between them (agreeing with b up to m and b with c up to m
means a and c agree up to m), so the set shares that much. from_prompts uses it over runs of the prompts in
sorted order (each radix group is such a run); flatten over the pre-order of the tree, where every subtree is a
run. Pure Python, no torch.
"""
from __future__ import annotations

from typing import Any, Sequence

# Slices of this many ids are compared at once (in C) before the first differing one is looked for id by id:
# linear in the common prefix, with no Python-level loop over it.
_CHUNK = 64


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """The number of leading ids a and b share. Linear time: chunks compared as slices, then at most one chunk
    id by id."""
    if a is b:
        return len(a)
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the common case in a prompt tree: one is a prefix of the other
        return n
    lo = 0
    while lo + _CHUNK <= n and a[lo:lo + _CHUNK] == b[lo:lo + _CHUNK]:
        lo += _CHUNK
    while lo < n and a[lo] == b[lo]:
        lo += 1
    return lo


def neighbour_prefixes(seqs: Sequence[Sequence[int]]) -> list[int]:
    """lcp(seqs[j], seqs[j + 1]) for every j (len(seqs) - 1 values): the module rule's neighbour terms."""
    return [common_prefix_len(a, b) for a, b in zip(seqs, seqs[1:])]


def run_prefix(seqs: Sequence[Sequence[int]], neighbours: Sequence[int], lo: int, hi: int) -> int:
    """The longest common prefix of seqs[lo:hi] (a non-empty run), from `neighbour_prefixes(seqs)`."""
    if not 0 <= lo < hi <= len(seqs):
        raise ValueError(f"run [{lo}, {hi}) is empty or outside the {len(seqs)} sequences")
    return len(seqs[lo]) if hi - lo == 1 else min(neighbours[lo:hi - 1])


def subtree_prefixes(kept: Sequence[Any], paths: dict[str, Sequence[int] | None]):
    """For tree nodes `kept` (pre-order; a node's children outside `kept` are skipped) and their encodings:
    ({key: P(u)}, {key: an encoding of u's subtree}), P(u) = the longest common prefix of the encodings in u's
    subtree, u's own included. flatten uses it with path encodings (prompt_tree.plan).

    The module's rule over the pre-order, where every subtree is a run: P(u) is the least neighbour lcp inside u's
    run, computed bottom-up in linear time: the minimum of the children's P and of the lcps where the run passes
    from one part to the next (u's own encoding -> first child's run -> next child's run ...). A node whose
    encoding is None is no part of the run; every node must have some encoding in its subtree."""
    shared: dict[str, int] = {}
    first: dict[str, Sequence[int]] = {}  # the first encoding of each subtree's run
    last: dict[str, Sequence[int]] = {}  # and its last
    for node in reversed(kept):  # children before parents
        own = paths[node.key]
        p = len(own) if own is not None else None
        head = tail = own
        for c in node.children:
            if c.key not in shared:
                continue  # dropped: no samples below
            p = shared[c.key] if p is None else min(p, shared[c.key])
            if tail is not None:
                p = min(p, common_prefix_len(tail, first[c.key]))
            head = head if head is not None else first[c.key]
            tail = last[c.key]
        shared[node.key], first[node.key], last[node.key] = p, head, tail
    return shared, first
