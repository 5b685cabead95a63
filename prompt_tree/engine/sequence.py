"""One typed record per sample (what it has generated, where its suffix lives, why it ended) and the admission
unit: a subtree of the plan (a problem with its samples, or a slice of one node's samples)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class SeqState(enum.Enum):
    WAITING = "waiting"  # not admitted (or preempted: its tokens were discarded, it is recomputed)
    PREFILLING = "prefilling"  # admitted; its path's nodes are being prefilled
    READY = "ready"  # has its first token (from the prefill logits); joins the decode batch at the next rebuild
    RUNNING = "running"  # in the decode batch
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """Sample `sample` of plan node `key`; `index` is its position in the plan's depth-first order, which keeps
    every node's descendants contiguous when rows are sorted by it.

    tokens / logprobs: generated so far (the last one not yet fed back). pages: KV pages of the fed-back suffix,
    position p at pages[p // page_size]. path: the plan nodes it reads, outermost first. first_node: the deepest
    node on its path with tokens (its last-token logits give token 0).
    """

    index: int
    key: Any
    sample: int
    seq_id: int
    prompt_len: int
    path: tuple
    first_node: Any
    limit: int = 0  # the most tokens it may generate (SamplingParams.max_new_tokens, or a per-sample budget)
    unit: int = -1
    state: SeqState = SeqState.WAITING
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    stop: Any = None  # the incremental stop-string state (prompt_tree.stops)
    finish_reason: str | None = None

    @property
    def generated(self) -> int:
        return len(self.tokens)

    def reset(self) -> None:
        """Back to WAITING with nothing generated (preemption: the sample is recomputed from its prompt; the
        seeded sampler draws the same tokens again)."""
        self.state = SeqState.WAITING
        self.tokens.clear()
        self.logprobs.clear()
        self.pages = []
        self.stop = None
        self.finish_reason = None


@dataclass(eq=False)
class Unit:
    """Admission unit: plan sequences [start, stop) (a whole subtree, or a slice of one node's own samples).
    `order`: admission counter (preemption takes the largest = newest)."""

    uid: int
    start: int
    stop: int
    order: int = -1

    @property
    def size(self) -> int:
        return self.stop - self.start


def make_units(plan, max_size: int) -> list[tuple[int, int]]:
    """Cut the plan's sequences into admission units of at most max_size sequences, in plan order.

    A subtree of at most max_size sequences is one unit (siblings are NOT packed together: admission takes as
    many units as fit, so a finer grain frees memory sooner and costs nothing); a larger subtree is opened: its
    own samples in slices of max_size, then each child the same way.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    out: list[tuple[int, int]] = []
    stack = list(reversed(plan.children.get(None, [])))
    while stack:
        g = plan.group(stack.pop())
        if g.size <= max_size:
            out.append((g.start, g.stop))
            continue
        own = plan.samples[g.node]
        for lo in range(g.start, g.start + own, max_size):
            out.append((lo, min(lo + max_size, g.start + own)))
        stack.extend(reversed(plan.children.get(g.node, [])))
    return out
