"""The paged KV pool's bookkeeping (host side, plain Python): which pages are free, which hold a node, which a
sequence's suffix.

The device pool is one slot array per layer, [num_pages * page_size, Hkv, D]; slot = page * page_size + offset.
Page 0 is never handed out: it is the scratch page that padded and finished rows write their (ignored) keys to,
so a CUDA graph's fixed write pattern never touches a live page.

- A shared node's tokens take whole pages, contiguous where the free space allows (one run = one attention
  segment, read once for every sequence below it); a node that must be split over several runs becomes several
  segments with the same sequence range. Nodes come from the low end of the free space, suffix pages from the
  high end, so the one-page-at-a-time suffix traffic does not fragment the space nodes need.
- A node is pinned while a live (admitted, unfinished) sequence reads it; with none left it stays resident as
  long as a waiting sequence still needs it (no second prefill), and is evicted first under memory pressure.
- A sequence's suffix grows a page at a time (position p lives at pages[p // page_size]).
Each rule about pages is written here once; the scheduler asks, the runner reads `node_runs` and `Sequence.pages`.
"""
from __future__ import annotations

import bisect
from typing import Iterable

SCRATCH_PAGE = 0


class OutOfPages(RuntimeError):
    """Not enough free pages for a request (the scheduler preempts, or reports what does not fit)."""


class PagePool:
    """Free pages as sorted disjoint runs [start, stop): first-fit runs from the low end, single pages from the
    high end, coalescing on free."""

    def __init__(self, num_pages: int, reserved: int = 1):
        if num_pages <= reserved:
            raise OutOfPages(f"a pool of {num_pages} pages has no page beyond the {reserved} reserved")
        self.num_pages = num_pages
        self.reserved = reserved
        self._starts = [reserved]
        self._stops = [num_pages]
        self.free_pages = num_pages - reserved

    @property
    def usable_pages(self) -> int:
        return self.num_pages - self.reserved

    def alloc_run(self, n: int) -> list[int]:
        """n pages, one contiguous run when one is free (lowest such run), else several runs, largest first."""
        if n <= 0:
            return []
        if n > self.free_pages:
            raise OutOfPages(f"{n} pages asked, {self.free_pages} free")
        for i, (a, b) in enumerate(zip(self._starts, self._stops)):
            if b - a >= n:
                self._take(i, a, a + n)
                return list(range(a, a + n))
        pages: list[int] = []
        while len(pages) < n:
            i = max(range(len(self._starts)), key=lambda j: self._stops[j] - self._starts[j])
            a, b = self._starts[i], self._stops[i]
            take = min(b - a, n - len(pages))
            self._take(i, a, a + take)
            pages.extend(range(a, a + take))
        return pages

    def alloc_page(self) -> int:
        """One page, from the high end."""
        if not self.free_pages:
            raise OutOfPages("no free page")
        i = len(self._stops) - 1
        page = self._stops[i] - 1
        self._take(i, page, page + 1)
        return page

    def _take(self, i: int, a: int, b: int) -> None:
        """Remove [a, b) from run i (it lies at the run's start or end)."""
        s, e = self._starts[i], self._stops[i]
        if a == s and b == e:
            del self._starts[i], self._stops[i]
        elif a == s:
            self._starts[i] = b
        elif b == e:
            self._stops[i] = a
        else:  # pragma: no cover - callers take from an end
            raise AssertionError("a take from the middle of a run")
        self.free_pages -= b - a

    def free(self, pages: Iterable[int]) -> None:
        for p in sorted(pages):
            if not self.reserved <= p < self.num_pages:
                raise ValueError(f"page {p} is not a page of this pool")
            i = bisect.bisect_right(self._starts, p)
            if i > 0 and self._stops[i - 1] > p or i < len(self._starts) and self._starts[i] <= p:
                raise ValueError(f"page {p} freed twice")
            left = i > 0 and self._stops[i - 1] == p
            right = i < len(self._starts) and self._starts[i] == p + 1
            if left and right:
                self._stops[i - 1] = self._stops[i]
                del self._starts[i], self._stops[i]
            elif left:
                self._stops[i - 1] = p + 1
            elif right:
                self._starts[i] = p
            else:
                self._starts.insert(i, p)
                self._stops.insert(i, p + 1)
            self.free_pages += 1

    def free_runs(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._stops))


def pages_for(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size)


class KVBlocks:
    """Nodes and suffixes over one PagePool. Node keys are the plan's; sequences are prompt_tree.engine.sequence
    records (their `pages` list is theirs; this class allocates and frees it)."""

    def __init__(self, num_pages: int, page_size: int):
        self.page_size = page_size
        self.pool = PagePool(num_pages)
        self.node_pages: dict = {}  # resident nodes -> pages in token order
        self.node_len: dict = {}
        self.prefilled: set = set()  # resident nodes whose KV has been written
        self.readers: dict = {}  # node -> live sequences reading it (pins it)
        self.suffix_pages = 0

    # ----- nodes

    def resident(self, key) -> bool:
        return key in self.node_pages

    def node_pages_needed(self, key, tokens: int) -> int:
        return 0 if key in self.node_pages else pages_for(tokens, self.page_size)

    def place_node(self, key, tokens: int) -> None:
        """Make `key` resident (not yet prefilled); no-op if it is."""
        if key in self.node_pages:
            return
        self.node_pages[key] = self.pool.alloc_run(pages_for(tokens, self.page_size))
        self.node_len[key] = tokens
        self.readers.setdefault(key, 0)

    def drop_node(self, key) -> None:
        if self.readers.get(key, 0):
            raise AssertionError(f"node {key!r} dropped while {self.readers[key]} live sequences read it")
        self.pool.free(self.node_pages.pop(key))
        del self.node_len[key]
        self.prefilled.discard(key)
        self.readers.pop(key, None)

    def pin(self, path: Iterable) -> None:
        for key in path:
            self.readers[key] = self.readers.get(key, 0) + 1

    def unpin(self, path: Iterable) -> list:
        """Unpin a sequence's path; returns the nodes no live sequence reads any more."""
        unread = []
        for key in path:
            self.readers[key] -= 1
            if self.readers[key] == 0:
                unread.append(key)
        return unread

    def unpinned_nodes(self) -> list:
        return [k for k in self.node_pages if not self.readers.get(k, 0)]

    def node_runs(self, key) -> list[tuple[int, int]]:
        """(first slot, tokens) of each contiguous run of the node's KV, in token order."""
        pages, n, ps = self.node_pages[key], self.node_len[key], self.page_size
        runs: list[list[int]] = []
        for j, p in enumerate(pages):
            if runs and runs[-1][0] + runs[-1][1] == p * ps:
                runs[-1][1] += ps
            else:
                runs.append([p * ps, ps])
        out, left = [], n
        for start, length in runs:
            take = min(length, left)
            if take > 0:
                out.append((start, take))
            left -= take
        return out

    def node_slots(self, key, lo: int, hi: int) -> list[int]:
        """Slots of the node's tokens lo .. hi-1."""
        pages, ps = self.node_pages[key], self.page_size
        return [pages[t // ps] * ps + t % ps for t in range(lo, hi)]

    # ----- suffixes

    def ensure_suffix(self, seq, fed: int) -> list[tuple[int, int]]:
        """Give `seq` the pages for its first `fed` fed-back positions; returns the new (page index, page) pairs."""
        new = []
        while len(seq.pages) < pages_for(fed, self.page_size):
            page = self.pool.alloc_page()
            new.append((len(seq.pages), page))
            seq.pages.append(page)
            self.suffix_pages += 1
        return new

    def release_suffix(self, seq) -> None:
        self.pool.free(seq.pages)
        self.suffix_pages -= len(seq.pages)
        seq.pages = []

    # ----- accounting

    @property
    def node_tokens(self) -> int:
        return sum(self.node_len.values())

    @property
    def free_pages(self) -> int:
        return self.pool.free_pages

    def check(self) -> None:
        """Every page is free, a node's, or one sequence's (tests): counted by the pool's free runs."""
        used = sum(len(p) for p in self.node_pages.values()) + self.suffix_pages
        if used + self.pool.free_pages != self.pool.usable_pages:
            raise AssertionError(f"{used} pages used + {self.pool.free_pages} free != {self.pool.usable_pages}")
