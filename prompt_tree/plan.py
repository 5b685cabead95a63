"""Plan: a prompt tree flattened into an ordered list of sequences and per-depth groups of shared KV.

Order: a depth-first walk; a node that asks for samples has its own sequences first (sample 0, 1, ...), then its
children's, children in insertion order. So every node's descendants are one contiguous range of sequences and the
node's KV is shared by exactly that range: its `Group(node, depth, start, stop, num_tokens)`.

`levels[d]` lists the groups of the nodes at depth d (d = 0: the root's children), ordered by `start`. Single-child
chains are NOT merged: levels mirror the tree, so prefill and the KV pool map 1:1 to nodes (an attention metadata
builder may fuse chains later). Subtrees that ask for no samples are dropped: they need no KV and are not
tokenized. Pure Python, no torch.

Tokens: every sequence's ids are exactly its whole prompt's encoding (prompt_tree.tokenize), and a plan
node holds what the sequences of its subtree share beyond its parent's: the token-id longest common prefix of the
subtree's path encodings (prompt_tree.prefix), cut where the node's own text ends. Where BPE merges across a
boundary ("...)\n" + "\nQUESTION" -> ")\n\n"), the last token or two of a node's text are not shared: its
children hold their own encoding of them, and `Plan.unshared` counts them per tree node. A node with samples
whose own prompt ends in such tokens gets a *tail*: a plan node of its own (key `Plan.tails[key]`, never a tree
key) under it, holding those tokens and the node's samples, placed before its children. Sequences keep their
tree key: `sequences[i]` is (tree key, sample index) and `sequence_node(i)` the plan node the sequence ends in.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from prompt_tree.errors import PromptTreeError
from prompt_tree.prefix import subtree_prefixes
from prompt_tree.config import bytes_per_token  # noqa: F401 - part of the plan's memory API
from prompt_tree.tokenize import PromptEncoder, check_token_ids, encode_paths, is_chat_tree

if TYPE_CHECKING:
    from prompt_tree.tree import Node, PromptTree

# A tail node's key is its node's key + this (more of it while that is a tree key); see the module docstring.
TAIL_SUFFIX = "~own"


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

    sequences: (tree key, sample index) of each sequence. node_tokens: a plan node's own token ids. parent: parent
    key, None for the root's children. children: child keys in order (key None: the root's children). samples:
    each plan node's own sequences in this plan. tails: tree key -> the key of its tail node, for nodes whose own
    samples sit in one (see the module docstring). unshared: tree key -> how many tokens at the end of its path
    encoding its subtree does not share (only nodes with some). tokenization: which tokenization rule applied, in
    words (None for token-id trees). source_range: for a subplan, its [start, stop) in the plan it was cut from.
    """

    def __init__(
        self,
        sequences: list[tuple[str, int]],
        levels: list[list[Group]],
        node_tokens: dict[str, list[int]],
        parent: dict[str, str | None],
        children: dict[str | None, list[str]],
        samples: dict[str, int],
        tails: dict[str, str] | None = None,
        unshared: dict[str, int] | None = None,
        tokenization: str | None = None,
        source_range: tuple[int, int] | None = None,
    ):
        self.sequences = sequences
        self.levels = levels
        self.node_tokens = node_tokens
        self.parent = parent
        self.children = children
        self.samples = samples
        self.tails = dict(tails or {})
        self.unshared = dict(unshared or {})
        self.tokenization = tokenization
        self.source_range = source_range
        self._owner = {tail: key for key, tail in self.tails.items()}  # tail key -> tree key
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
        """The plan node sequence i ends in: its tree node, or that node's tail."""
        key = self.sequences[self._seq(i)][0]
        return self.tails.get(key, key)

    def owner(self, plan_key: str) -> str:
        """The tree key whose samples a plan node holds (itself, or for a tail its node's)."""
        return self._owner.get(plan_key, plan_key)

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
        if self.tokenization is not None:
            lines.append(f"tokenization: {self.tokenization}; every sequence is its whole prompt's encoding")
        if self.unshared:
            worst = max(self.unshared, key=self.unshared.get)
            lines.append(
                f"not shared: {sum(self.unshared.values()):,} token(s) at the end of {len(self.unshared):,} node(s) "
                f"(a BPE merge across the boundary below them; each child holds its own encoding of them), most "
                f"{self.unshared[worst]} at {worst!r}")
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
        for key, tail in self.tails.items():
            if tail not in self._group or self.parent[tail] != key or self.children[key][:1] != [tail] \
                    or self.children[tail] or self.samples[key]:
                _fail(f"tail {tail!r} of {key!r} must be its first child, a leaf, and hold all of its samples")
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
                if self.sequences[j] != (self.owner(key), base + j - start):
                    _fail(f"sequence {j} is {self.sequences[j]!r}, expected ({self.owner(key)!r}, "
                          f"{base + j - start}): a node's own samples must come first, consecutively")
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
            tails={k: t for k, t in self.tails.items() if t in kept},
            unshared={k: n for k, n in self.unshared.items() if k in kept},
            tokenization=self.tokenization,
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


def build_plan(tree: PromptTree, tokenizer: Any = None, max_len: int | None = None, *, add_bos: bool | None = None,
               chat: bool = False) -> Plan:
    """Tokenize (prompt_tree.tokenize's canonical rule) and order a tree; see PromptTree.flatten."""
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, numbers.Integral) or max_len < 1):
        raise PromptTreeError(f"flatten: max_len must be a positive int or None, got {max_len!r}")
    if not isinstance(chat, bool):
        raise PromptTreeError(f"flatten: chat must be True or False, got {chat!r}")
    if tree.num_samples == 0:
        raise PromptTreeError(
            "flatten: the tree asks for no samples; pass samples=n (n >= 1) to add() on the nodes whose prompts "
            "should be completed"
        )
    if tokenizer is None and add_bos is not None:
        raise PromptTreeError("flatten: add_bos= needs a tokenizer (token-id prompts are taken as they are); pass "
                              "flatten(tokenizer=..., add_bos=...) or leave add_bos out")
    # Subtree sample counts, children before parents (reverse pre-order); subtrees without samples are dropped.
    nodes = tree.nodes()
    below: dict[str, int] = {}
    for node in reversed(nodes):
        below[node.key] = node.samples + sum(below[c.key] for c in node.children)
    kept = [n for n in nodes if below[n.key]]
    encoder = PromptEncoder(tokenizer, add_bos) if tokenizer is not None else None
    chat_tree = is_chat_tree(kept, chat)
    paths = encode_paths(kept, encoder, chat)
    for node in kept:
        ids = paths[node.key]
        if node.samples and not ids:
            raise PromptTreeError(
                f"node {node.key!r} asks for {node.samples} samples of an empty prompt (0 tokens from the root); "
                f"give its path at least one token (e.g. a BOS id)"
            )
        if max_len is not None and ids is not None and len(ids) > max_len:
            raise PromptTreeError(
                f"node {node.key!r}: its prompt from the root is {len(ids)} tokens, longer than max_len={max_len}; "
                f"shorten the prompts on its path or raise max_len"
            )
    shared, some = subtree_prefixes(kept, paths)
    node_tokens: dict[str, list[int]] = {}
    unshared: dict[str, int] = {}
    tails: dict[str, str] = {}
    tail_tokens: dict[str, list[int]] = {}
    for node in kept:
        start = 0 if node.parent.is_root else shared[node.parent.key]
        node_tokens[node.key] = some[node.key][start:shared[node.key]]
        own = paths[node.key]
        if own is not None and len(own) > shared[node.key]:
            unshared[node.key] = len(own) - shared[node.key]
            if node.samples:
                tails[node.key] = _tail_key(tree, node.key, set(tails.values()))
                tail_tokens[node.key] = own[shared[node.key]:]
    texts = any(n.is_text for n in kept)
    tokenization = encoder.describe(chat_tree) if encoder is not None and texts else None
    return _order(kept, node_tokens, tails, tail_tokens, unshared, tokenization)


def _tail_key(tree: PromptTree, key: str, taken: set[str]) -> str:
    tail = key + TAIL_SUFFIX
    while tail in tree or tail in taken:
        tail += TAIL_SUFFIX
    return tail


def _order(kept: list[Node], node_tokens: dict[str, list[int]], tails: dict[str, str],
           tail_tokens: dict[str, list[int]], unshared: dict[str, int], tokenization: str | None) -> Plan:
    """Sequences, groups and levels of the kept nodes (see the module docstring), tails as first children."""
    keep = {n.key for n in kept}
    sequences: list[tuple[str, int]] = []
    levels: list[list[Group]] = []
    parent: dict[str, str | None] = {}
    children: dict[str | None, list[str]] = {None: []}
    samples: dict[str, int] = {}
    starts: dict[str, int] = {}

    def place(key: str, depth: int, up: str | None, own_samples: int) -> None:
        parent[key] = up
        children[up].append(key)
        children[key] = []
        samples[key] = own_samples
        starts[key] = len(sequences)
        while len(levels) <= depth:
            levels.append([])

    def close(key: str, depth: int) -> None:
        levels[depth].append(Group(key, depth, starts.pop(key), len(sequences), len(node_tokens[key])))

    roots = [n for n in kept if n.parent.is_root]
    stack: list[tuple[Any, bool]] = [(n, False) for n in reversed(roots)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            close(node.key, node.depth)
            continue
        up = None if node.parent.is_root else node.parent.key
        tail = tails.get(node.key)
        place(node.key, node.depth, up, 0 if tail else node.samples)
        if tail:
            node_tokens[tail] = tail_tokens[node.key]
            place(tail, node.depth + 1, node.key, node.samples)
        sequences.extend((node.key, s) for s in range(node.samples))
        if tail:
            close(tail, node.depth + 1)
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(node.children) if c.key in keep)
    return Plan(sequences, levels, node_tokens, parent, children, samples, tails, unshared, tokenization)
