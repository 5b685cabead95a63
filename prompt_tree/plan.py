"""Plan: a prompt tree flattened into an ordered list of sequences and per-depth groups of shared KV.

Order: a depth-first walk; a node that asks for samples has its own sequences first (sample 0, 1, ...), then its
children's, children in insertion order. So every node's descendants are one contiguous range of sequences and the
node's KV is shared by exactly that range: its `Group(node, depth, start, stop, num_tokens)`.

`levels[d]` lists the groups of the nodes at depth d (d = 0: the root's children), ordered by `start`. Single-child
chains are NOT merged: levels mirror the tree, so prefill and the KV pool map 1:1 to nodes (an attention metadata
builder may fuse chains later). Subtrees that ask for no samples are dropped: they need no KV and are not
tokenized. Pure Python, no torch.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Iterator

from prompt_tree.tokenize import BoundaryEncoder, check_token_ids
from prompt_tree.tree import PromptTree, PromptTreeError


@dataclass(frozen=True)
class Group:
    """The sequences [start, stop) share the KV of `node` (num_tokens tokens at depth `depth`)."""

    node: str
    depth: int
    start: int
    stop: int
    num_tokens: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int = 2) -> int:
    """KV cache bytes for one token of one model: K and V, every layer, every KV head (bf16 = 2 bytes)."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


@dataclass(frozen=True)
class MemoryReport:
    """Prompt KV with sharing (each plan node once) versus without (each sequence holds its whole prompt)."""

    num_sequences: int
    num_nodes: int
    kv_tokens_shared: int
    kv_tokens_flat: int
    bytes_per_token: int | None = None

    @property
    def saved_tokens(self) -> int:
        return self.kv_tokens_flat - self.kv_tokens_shared

    @property
    def ratio(self) -> float:
        """flat / shared (how many times less prompt KV sharing needs); inf when nothing is stored."""
        return self.kv_tokens_flat / self.kv_tokens_shared if self.kv_tokens_shared else float("inf")

    def __str__(self) -> str:
        def amount(tokens: int) -> str:
            if self.bytes_per_token is None:
                return f"{tokens:,} tokens"
            return f"{tokens:,} tokens = {tokens * self.bytes_per_token / 2**30:.3f} GiB"

        return (
            f"prompt KV: shared {amount(self.kv_tokens_shared)} vs flat {amount(self.kv_tokens_flat)} "
            f"({self.ratio:.2f}x less, {self.num_sequences:,} sequences over {self.num_nodes:,} nodes)"
        )


def _fail(message: str) -> None:
    # An explicit raise rather than `assert`, so check() also works under python -O.
    raise AssertionError(f"Plan.check: {message}")


class Plan:
    """The flattened tree (see the module docstring). Build with `PromptTree.flatten`, not directly.

    sequences: (node key, sample index) of each sequence. node_tokens: a node's own token ids. parent: parent key,
    None for the root's children. children: child keys in order (key None: the root's children). samples: each
    node's own sequences in this plan. boundary_fallbacks: string nodes whose tokens fell back to encoding their own
    text (see prompt_tree.tokenize). source_range: for a subplan, its [start, stop) in the plan it was cut from.
    """

    def __init__(
        self,
        sequences: list[tuple[str, int]],
        levels: list[list[Group]],
        node_tokens: dict[str, list[int]],
        parent: dict[str, str | None],
        children: dict[str | None, list[str]],
        samples: dict[str, int],
        boundary_fallbacks: tuple[str, ...] = (),
        source_range: tuple[int, int] | None = None,
    ):
        self.sequences = sequences
        self.levels = levels
        self.node_tokens = node_tokens
        self.parent = parent
        self.children = children
        self.samples = samples
        self.boundary_fallbacks = boundary_fallbacks
        self.source_range = source_range
        self._group = {g.node: g for g in self.groups()}
        self._path_len: dict[str, int] = {}
        for g in self.groups():  # parents come before children (depth order)
            up = parent.get(g.node)
            self._path_len[g.node] = g.num_tokens + (self._path_len.get(up, 0) if up is not None else 0)

    # ---- lookups ------------------------------------------------------------------------------------------------
    @property
    def num_sequences(self) -> int:
        return len(self.sequences)

    @property
    def num_nodes(self) -> int:
        return len(self._group)

    def groups(self) -> Iterator[Group]:
        """All groups, depth by depth, each depth in sequence order."""
        for level in self.levels:
            yield from level

    def group(self, key: str) -> Group:
        return self._group[key]

    def depth_of(self, key: str) -> int:
        return self._group[key].depth

    def _seq(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < len(self.sequences):
            raise IndexError(f"sequence index {i!r} out of range: the plan has {len(self.sequences)} sequences")
        return int(i)

    def sequence_node(self, i: int) -> str:
        return self.sequences[self._seq(i)][0]

    def path(self, i: int) -> list[Group]:
        """Groups sequence i reads, outermost first (one per depth down to its node)."""
        out = []
        key: str | None = self.sequence_node(i)
        while key is not None:
            out.append(self._group[key])
            key = self.parent[key]
        return out[::-1]

    def prompt_ids(self, i: int) -> list[int]:
        """The full prompt of sequence i: its path's node tokens concatenated, root side first."""
        ids: list[int] = []
        for g in self.path(i):
            ids.extend(self.node_tokens[g.node])
        return ids

    def prompt_len(self, i: int) -> int:
        return self._path_len[self.sequence_node(i)]

    # ---- memory -------------------------------------------------------------------------------------------------
    @property
    def kv_tokens_shared(self) -> int:
        """Prompt KV tokens with sharing: every node in the plan once."""
        return sum(g.num_tokens for g in self.groups())

    @property
    def kv_tokens_flat(self) -> int:
        """Prompt KV tokens without sharing: the sum of every sequence's prompt length."""
        return sum(n * self._path_len[k] for k, n in self.samples.items())

    def memory_report(self, bytes_per_token: int | None = None) -> MemoryReport:
        """Shared vs flat prompt KV; `bytes_per_token` (see `bytes_per_token(...)`) adds sizes in GiB."""
        return MemoryReport(self.num_sequences, self.num_nodes, self.kv_tokens_shared, self.kv_tokens_flat,
                            bytes_per_token)

    def describe(self, bytes_per_token: int | None = None) -> str:
        sizes = ", ".join(str(len(level)) for level in self.levels)
        lines = [
            f"Plan: {self.num_sequences:,} sequences, {self.num_nodes:,} nodes in {len(self.levels)} levels "
            f"(nodes per level: {sizes})",
            str(self.memory_report(bytes_per_token)),
        ]
        if self.source_range is not None:
            lines.append(f"subplan of sequences [{self.source_range[0]}, {self.source_range[1]})")
        if self.boundary_fallbacks:
            shown = ", ".join(repr(k) for k in self.boundary_fallbacks[:5])
            more = "" if len(self.boundary_fallbacks) <= 5 else f" and {len(self.boundary_fallbacks) - 5} more"
            lines.append(f"tokenization fell back to per-node encoding at {shown}{more} (a token merges across the "
                         f"boundary; end the parent's text at whitespace to avoid it)")
        return "\n".join(lines)

    # ---- invariants ---------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Verify every invariant of the plan; raise AssertionError naming the first one broken."""
        n = len(self.sequences)
        if sum(self.samples.values()) != n:
            _fail(f"{n} sequences but the nodes' own samples sum to {sum(self.samples.values())}")
        if set(self.samples) != set(self._group) or set(self.node_tokens) != set(self._group) \
                or set(self.parent) != set(self._group):
            _fail("samples, node_tokens, parent and levels do not name the same nodes")
        if len(self._group) != sum(len(level) for level in self.levels):
            _fail("a node appears in more than one group")
        for depth, level in enumerate(self.levels):
            if not level:
                _fail(f"level {depth} is empty")
            prev_stop = 0
            for g in level:
                if g.depth != depth:
                    _fail(f"group {g.node!r} says depth {g.depth} but is in level {depth}")
                if not 0 <= g.start < g.stop <= n:
                    _fail(f"group {g.node!r} has range [{g.start}, {g.stop}) outside [0, {n}) or empty")
                if g.start < prev_stop:
                    _fail(f"level {depth}: group {g.node!r} starts at {g.start}, before the previous group ends")
                prev_stop = g.stop
                tokens = self.node_tokens[g.node]
                if g.num_tokens != len(tokens):
                    _fail(f"group {g.node!r} says {g.num_tokens} tokens, the node has {len(tokens)}")
                check_token_ids(tokens, f"plan node {g.node!r}")
                up = self.parent[g.node]
                want_depth = 0 if up is None else self._group[up].depth + 1 if up in self._group else None
                if want_depth != depth:
                    _fail(f"node {g.node!r} at depth {depth} has parent {up!r} at the wrong depth or missing")
        # Tiling: each node's range = its own samples, then its children's ranges back to back, in order.
        listed = {k for ks in self.children.values() for k in ks}
        if listed != set(self._group) or any(self.parent[k] != p for p, ks in self.children.items() for k in ks):
            _fail("children lists disagree with parent pointers")
        spans = [(None, 0, n)] + [(g.node, g.start, g.stop) for g in self.groups()]
        for key, start, stop in spans:
            own = self.samples[key] if key is not None else 0
            base = self.sequences[start][1] if own else 0
            for j in range(start, start + own):
                if self.sequences[j] != (key, base + j - start):
                    _fail(f"sequence {j} is {self.sequences[j]!r}, expected ({key!r}, {base + j - start}): a node's "
                          f"own samples must come first, consecutively")
            if own and self.source_range is None and base != 0:
                _fail(f"node {key!r}: its first sample index is {base}, expected 0")
            at = start + own
            for c in self.children.get(key, []):
                cg = self._group[c]
                if cg.start != at:
                    _fail(f"child {c!r} of {key!r} starts at {cg.start}, expected {at} (children back to back)")
                at = cg.stop
            if at != stop:
                _fail(f"node {key!r}: own samples and children cover [{start}, {at}), its group is [{start}, {stop})")
        # Each sequence reads exactly the groups on its node's path, one per level from the top.
        owners = []
        for level in self.levels:
            owner: list[str | None] = [None] * n
            for g in level:
                owner[g.start:g.stop] = [g.node] * g.size
            owners.append(owner)
        for i in range(n):
            read = [owner[i] for owner in owners if owner[i] is not None]
            want = [g.node for g in self.path(i)]
            if read != want or any(owner[i] is None for owner in owners[: len(want)]):
                _fail(f"sequence {i} lies in groups {read!r} but its path is {want!r}")

    # ---- cutting into sub-batches -------------------------------------------------------------------------------
    def subplan(self, start: int, stop: int) -> Plan:
        """The plan of sequences [start, stop), renumbered from 0, keeping each sequence's (key, sample index).

        Any contiguous range is a valid plan: groups are nested contiguous ranges, so their intersections with
        [start, stop) are too. A cut inside a node's own samples is fine (samples are independent); a cut through
        a subtree means its ancestors' KV is used by both sub-batches. `split` picks cuts that avoid that.
        """
        n = len(self.sequences)
        for name, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise PromptTreeError(f"subplan: {name} must be an int, got {v!r}")
        if not 0 <= start < stop <= n:
            raise PromptTreeError(
                f"subplan: range [{start}, {stop}) is empty or outside [0, {n}); pass 0 <= start < stop <= {n}"
            )
        levels: list[list[Group]] = []
        kept: set[str] = set()
        for level in self.levels:
            new = []
            for g in level:
                lo, hi = max(g.start, start), min(g.stop, stop)
                if lo < hi:
                    new.append(Group(g.node, g.depth, lo - start, hi - start, g.num_tokens))
                    kept.add(g.node)
            if new:
                levels.append(new)
        samples = {}
        for k in kept:
            g = self._group[k]
            samples[k] = max(0, min(g.start + self.samples[k], stop) - max(g.start, start))
        base = self.source_range[0] if self.source_range else 0
        return Plan(
            sequences=self.sequences[start:stop],
            levels=levels,
            node_tokens={k: self.node_tokens[k] for k in kept},
            parent={k: self.parent[k] for k in kept},
            children={p: [c for c in cs if c in kept] for p, cs in self.children.items() if p is None or p in kept},
            samples=samples,
            boundary_fallbacks=tuple(k for k in self.boundary_fallbacks if k in kept),
            source_range=(base + start, base + stop),
        )

    def split(self, max_sequences: int) -> list[tuple[int, int]]:
        """Cut [0, num_sequences) into back-to-back ranges of at most max_sequences sequences.

        Greedy in sequence order: a subtree with at most max_sequences sequences is never cut (it joins the current
        range if it fits, else starts a new one); a larger subtree is opened: its own samples fill ranges one by
        one (cutting among a node's own samples costs nothing extra), then its children are placed the same way.
        """
        if isinstance(max_sequences, bool) or not isinstance(max_sequences, numbers.Integral) or max_sequences < 1:
            raise PromptTreeError(f"split: max_sequences must be an int >= 1, got {max_sequences!r}")
        ranges: list[tuple[int, int]] = []
        range_start, size = 0, 0
        stack = list(reversed(self.children.get(None, [])))
        while stack:
            g = self._group[stack.pop()]
            if g.size <= max_sequences:
                if size + g.size > max_sequences:
                    ranges.append((range_start, range_start + size))
                    range_start, size = range_start + size, 0
                size += g.size
                continue
            own = self.samples[g.node]
            while own:
                if size == max_sequences:
                    ranges.append((range_start, range_start + size))
                    range_start, size = range_start + size, 0
                take = min(own, max_sequences - size)
                size += take
                own -= take
            stack.extend(reversed(self.children.get(g.node, [])))
        if size:
            ranges.append((range_start, range_start + size))
        return ranges

    def __repr__(self) -> str:
        return f"Plan({self.num_sequences} sequences, {self.num_nodes} nodes, {len(self.levels)} levels)"


def build_plan(tree: PromptTree, tokenizer: Any = None, max_len: int | None = None) -> Plan:
    """Tokenize (prompt_tree.tokenize's boundary rule) and order a tree; see PromptTree.flatten."""
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, numbers.Integral) or max_len < 1):
        raise PromptTreeError(f"flatten: max_len must be a positive int or None, got {max_len!r}")
    if tree.num_samples == 0:
        raise PromptTreeError(
            "flatten: the tree asks for no samples; pass samples=n (n >= 1) to add() on the nodes whose prompts "
            "should be completed"
        )
    # Subtree sample counts, children before parents (reverse pre-order).
    nodes = tree.nodes()
    below: dict[str, int] = {}
    for node in reversed(nodes):
        below[node.key] = node.samples + sum(below[c.key] for c in node.children)
    encoder = BoundaryEncoder(tokenizer) if tokenizer is not None else None

    sequences: list[tuple[str, int]] = []
    levels: list[list[Group]] = []
    node_tokens: dict[str, list[int]] = {}
    parent: dict[str, str | None] = {}
    children: dict[str | None, list[str]] = {None: []}
    samples: dict[str, int] = {}
    fallbacks: list[str] = []
    path_ids: list[int] = []
    # For the current path's string nodes: (run_text, run_base = len(path_ids) where the text run began).
    runs: dict[str, tuple[str, int]] = {}
    starts: dict[str, int] = {}
    stack: list[tuple[Any, bool]] = [(c, False) for c in reversed(tree.root.children) if below[c.key]]
    while stack:
        node, leaving = stack.pop()
        key = node.key
        if leaving:
            tokens = node_tokens[key]
            while len(levels) <= node.depth:
                levels.append([])
            levels[node.depth].append(Group(key, node.depth, starts.pop(key), len(sequences), len(tokens)))
            del path_ids[len(path_ids) - len(tokens):]
            runs.pop(key, None)
            continue
        up = node.parent
        if node.is_text:
            if encoder is None:
                raise PromptTreeError(
                    f"node {key!r} has a str prompt but flatten got no tokenizer; pass flatten(tokenizer=...) "
                    f"or give the node token ids"
                )
            if up.key in runs:  # the parent is a string node: this node continues its text run
                run_text, run_base = runs[up.key]
                run_text += node.prompt
                parent_run_ids = path_ids[run_base:]
            else:
                run_text, run_base, parent_run_ids = node.prompt, len(path_ids), None
            tokens, fell_back = encoder.node_tokens(
                run_text, node.prompt, parent_run_ids, run_at_start=run_base == 0, what=f"node {key!r}"
            )
            if fell_back:
                # The node starts a new text run: its descendants continue its own text, so one awkward
                # boundary does not make every node below it fall back too.
                fallbacks.append(key)
                run_text, run_base = node.prompt, len(path_ids)
            runs[key] = (run_text, run_base)
        else:
            tokens = list(node.prompt)
        path_ids.extend(tokens)
        if max_len is not None and len(path_ids) > max_len:
            raise PromptTreeError(
                f"node {key!r}: its prompt from the root is {len(path_ids)} tokens, longer than max_len={max_len}; "
                f"shorten the prompts on its path or raise max_len"
            )
        if node.samples and not path_ids:
            raise PromptTreeError(
                f"node {key!r} asks for {node.samples} samples of an empty prompt (0 tokens from the root); give "
                f"its path at least one token (e.g. a BOS id)"
            )
        node_tokens[key] = tokens
        up_key = None if up.is_root else up.key
        parent[key] = up_key
        children[up_key].append(key)
        children[key] = []
        samples[key] = node.samples
        starts[key] = len(sequences)
        sequences.extend((key, s) for s in range(node.samples))
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(node.children) if below[c.key])
    return Plan(sequences, levels, node_tokens, parent, children, samples, tuple(fallbacks))


def _preview(node) -> str:
    if node.is_text:
        text = repr(node.prompt)
        return text if len(text) <= 40 else text[:36] + "...'"
    ids = list(node.prompt[:6])
    return f"ids {ids}"[:-1] + (", ...]" if len(node.prompt) > 6 else "]")


def describe_tree(tree: PromptTree, plan: Plan | None = None, max_children: int = 8,
                  bytes_per_token: int | None = None) -> str:
    """An outline of the tree, one node a line (at most max_children shown per node), plus the plan's summary."""
    head = f"PromptTree: {len(tree)} nodes, {len(tree.leaves())} leaves, {tree.num_samples:,} samples"
    lines = [head]
    stack: list[tuple[Any, str, bool]] = [
        (c, "", i == len(tree.root.children) - 1) for i, c in reversed(list(enumerate(tree.root.children)))
    ]
    if len(tree.root.children) > max_children:
        stack = stack[-max_children:]
        lines_extra = len(tree.root.children) - max_children
    else:
        lines_extra = 0
    while stack:
        item = stack.pop()
        if item[0] is None:  # an elision marker
            lines.append(item[1])
            continue
        node, prefix, last = item
        if plan is not None and node.key in plan.node_tokens:
            size = f"{len(plan.node_tokens[node.key])} tok"
        elif plan is not None:
            size = "not in plan (no samples below)"
        elif node.is_text:
            size = f"{len(node.prompt)} chars"
        else:
            size = f"{len(node.prompt)} tok"
        samples = f" x{node.samples}" if node.samples else ""
        lines.append(f"{prefix}{'`-' if last else '|-'} {node.key}: {_preview(node)} | {size}{samples}")
        kids = node.children
        inner = prefix + ("   " if last else "|  ")
        shown = kids[:max_children]
        if len(kids) > max_children:
            rest = kids[max_children:]
            stack.append((None, f"{inner}`- ... {len(rest)} more children ({sum(c.subtree_samples() for c in rest):,} "
                                f"samples)", True))
        for i in reversed(range(len(shown))):
            stack.append((shown[i], inner, i == len(kids) - 1))
    if lines_extra:
        lines.append(f"`- ... {lines_extra} more top-level nodes")
    if plan is not None:
        lines.append(plan.describe(bytes_per_token))
    return "\n".join(lines)
