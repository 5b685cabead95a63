"""PromptTree: a tree of prompts whose root-to-node concatenations are sampled from.

A node with `samples=n > 0` asks for n completions of the concatenation of the prompts from the root to it; every
sequence below a node shares that node's KV. The tree is pure Python (no torch); `flatten` turns it into a `Plan`.

Keys: every node has a string key, unique in the tree. `add(..., key=...)` accepts a str or an int (bools refused)
and stores `str(key)`, so APPS problem ids given as 17 or "17" name the same node "17". Without a key a node gets a
generated one, "_" + the dotted child indices from the root ("_0.2.1"): stable across runs and across save/load.
The empty string is reserved for the implicit root.

Roles: a text node may carry a chat `role` ("system", "user", "assistant", ...): it then starts a message of a
conversation, which the tokenizer's chat template renders (prompt_tree.chat); a tree with any role is a chat tree.
"""
from __future__ import annotations

import json
import numbers
from typing import Any, Iterator, Sequence

from prompt_tree.chat import check_role
from prompt_tree.errors import PromptTreeError
from prompt_tree.outline import describe_tree
from prompt_tree.plan import Plan, build_plan
from prompt_tree.prefix import neighbour_prefixes, run_prefix
from prompt_tree.tokenize import PromptEncoder, check_token_ids

ROOT_KEY = ""  # the implicit root's key (in tree.graph and to_dict it is not listed as a node)
FORMAT = "prompt-tree"
FORMAT_VERSION = 1


def _check_samples(samples: Any, what: str) -> int:
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral):
        raise PromptTreeError(
            f"{what}: samples must be a non-negative int, got {samples!r} ({type(samples).__name__}); "
            f"pass e.g. samples=128, or samples=0 for a node that only holds a shared prefix"
        )
    if samples < 0:
        raise PromptTreeError(f"{what}: samples must be >= 0, got {samples}; use samples=0 for no completions here")
    return int(samples)


def _check_key(key: Any, what: str) -> str:
    if isinstance(key, bool) or not isinstance(key, (str, numbers.Integral)):
        raise PromptTreeError(f"{what}: key must be a str or an int, got {key!r} ({type(key).__name__})")
    key = str(key)
    if key == ROOT_KEY:
        raise PromptTreeError(f"{what}: the empty key is reserved for the root; pass a non-empty key")
    return key


def _check_prompt(prompt: Any, what: str) -> str | tuple[int, ...]:
    if isinstance(prompt, str):
        return prompt
    return tuple(check_token_ids(prompt, what))


class Node:
    """One node of a PromptTree. Create nodes with `parent.add(...)`, never directly."""

    __slots__ = ("tree", "key", "prompt", "samples", "parent", "_children", "depth", "role")

    def __init__(self, tree: PromptTree, key: str, prompt: str | tuple[int, ...], samples: int, parent: Node | None,
                 role: str | None = None):
        self.tree = tree
        self.key = key
        self.prompt = prompt  # str, or a tuple of token ids (tuples so that a caller cannot mutate it)
        self.samples = samples
        self.role = role  # a chat role starting a message here, or None
        self.parent = parent
        self._children: list[Node] = []
        # depth 0 = a child of the root (matches Plan.levels); the root itself is -1
        self.depth = -1 if parent is None else parent.depth + 1

    @property
    def children(self) -> tuple[Node, ...]:
        return tuple(self._children)

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def is_text(self) -> bool:
        return isinstance(self.prompt, str)

    def add(self, prompt: str | Sequence[int], *, samples: int = 0, key: str | int | None = None,
            role: str | None = None) -> Node:
        """Add a child: `prompt` is a str (needs a tokenizer at flatten) or a list of token ids.

        samples: how many completions of the root-to-child prompt to draw (0: the child only holds a prefix).
        key: unique str/int name (stored as str); default "_" + dotted child indices from the root.
        role: a chat role ("system", "user", "assistant", ...) for a text prompt: the node starts a message of the
          conversation its paths are rendered as (see the module docstring); None continues the message above.
        """
        index = len(self._children)
        where = f"node {key!r}" if key is not None else f"child {index} of {self._describe_key()}"
        prompt = _check_prompt(prompt, where)
        samples = _check_samples(samples, where)
        role = check_role(role, where)
        if role is not None and not isinstance(prompt, str):
            raise PromptTreeError(f"{where}: a role is for a text prompt (a chat message), and this prompt is token "
                                  f"ids; pass the message's text, or no role")
        if key is None:
            key = self._auto_key(index)
            if key in self.tree._nodes:
                raise PromptTreeError(
                    f"{where}: its generated key {key!r} is already used by another node; pass key= explicitly, "
                    f"or avoid user keys that start with '_'"
                )
        else:
            key = _check_key(key, where)
            if key in self.tree._nodes:
                raise PromptTreeError(
                    f"duplicate key {key!r}: a node with this key already exists (under "
                    f"{self.tree._nodes[key].parent._describe_key()}); keys must be unique, pick another key"
                )
        child = Node(self.tree, key, prompt, samples, self, role)
        self._children.append(child)
        self.tree._nodes[key] = child
        self.tree._version += 1
        return child

    def _auto_key(self, index: int) -> str:
        parts = [str(index)]
        node = self
        while node.parent is not None:
            parts.append(str(node.parent._children.index(node)))
            node = node.parent
        return "_" + ".".join(reversed(parts))

    def _describe_key(self) -> str:
        return "the root" if self.parent is None else f"node {self.key!r}"

    def path(self) -> list[Node]:
        """Nodes from the root's child down to this node (empty for the root)."""
        out = []
        node = self
        while node.parent is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def subtree_samples(self) -> int:
        return sum(n.samples for n in _preorder(self))

    def __repr__(self) -> str:
        if self.is_root:
            return f"<root of PromptTree, {len(self._children)} children>"
        prompt = self.prompt if self.is_text else list(self.prompt)
        text = repr(prompt)
        if len(text) > 40:
            text = text[:37] + "..."
        role = f", role={self.role!r}" if self.role is not None else ""
        return (f"Node(key={self.key!r}, prompt={text}, samples={self.samples}{role}, "
                f"children={len(self._children)})")


def _preorder(start: Node) -> Iterator[Node]:
    stack = [start]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node._children))


class PromptTree:
    """A rooted tree of prompts. `tree.root` is implicit: no prompt, never asks for samples."""

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}
        self.root = Node(self, ROOT_KEY, "", 0, None)
        self._version = 0  # bumped on every add; a cached plan is only shown by describe() for the same version
        self._last_plan: tuple[int, Any] | None = None

    # ---- inspection -------------------------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        """All nodes except the root, parents before children, children in insertion order."""
        return list(_preorder(self.root))[1:]

    def leaves(self) -> list[Node]:
        """Nodes without children, in pre-order (empty for an empty tree)."""
        return [n for n in self.nodes() if not n._children]

    def node(self, key: str | int) -> Node:
        """The node with this key (ints are looked up as str). Raises KeyError naming the key."""
        try:
            return self._nodes[str(key)]
        except KeyError:
            raise KeyError(f"no node with key {str(key)!r} in this tree ({len(self._nodes)} nodes)") from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (str, int)) and not isinstance(key, bool) and str(key) in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def num_samples(self) -> int:
        """Total completions asked for: the number of sequences the plan will hold."""
        return sum(n.samples for n in self._nodes.values())

    @property
    def graph(self):
        """A fresh `networkx.DiGraph` snapshot: nodes are keys (root = ""), attributes `prompt` and `samples` (and
        `role` where set); edges parent -> child, added in child order. Editing it does not change the tree; use
        from_graph."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_node(ROOT_KEY, prompt="", samples=0)
        for node in self.nodes():
            g.add_node(node.key, prompt=node.prompt if node.is_text else list(node.prompt), samples=node.samples,
                       **({"role": node.role} if node.role is not None else {}))
            g.add_edge(node.parent.key, node.key)
        return g

    # ---- flattening ---------------------------------------------------------------------------------------------
    def flatten(self, tokenizer: Any = None, max_len: int | None = None, *, add_bos: bool | None = None,
                chat: bool = False) -> Plan:
        """Tokenize and order the tree into a Plan (see prompt_tree.plan). Token-id prompts need no tokenizer.

        Every sequence's ids are its whole prompt's encoding (prompt_tree.tokenize). add_bos: True / False overrides
        the tokenizer's BOS rule (prompt_tree.bos), None keeps it. chat: render every path as a conversation through
        the tokenizer's chat template (text before the first role is a user message); a tree with roles is
        rendered so anyway.
        """
        plan = build_plan(self, tokenizer=tokenizer, max_len=max_len, add_bos=add_bos, chat=chat)
        self._last_plan = (self._version, plan)
        return plan

    def describe(self, plan: Any = None, max_children: int = 8, bytes_per_token: int | None = None) -> str:
        """A readable outline (at most max_children shown under each node); with a plan (or after flatten, while
        the tree is unchanged) token counts per node and the plan's memory summary too."""
        if plan is None and self._last_plan is not None and self._last_plan[0] == self._version:
            plan = self._last_plan[1]
        return describe_tree(self, plan, max_children, bytes_per_token)

    # ---- serialization -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-safe dict: nodes in pre-order, each {key, parent (None = root), prompt (str | list[int]), samples}
        and `role` where a node has one."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "nodes": [
                {
                    "key": n.key,
                    "parent": None if n.parent.is_root else n.parent.key,
                    "prompt": n.prompt if n.is_text else list(n.prompt),
                    "samples": n.samples,
                    **({"role": n.role} if n.role is not None else {}),
                }
                for n in self.nodes()
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> PromptTree:
        if not isinstance(d, dict) or not isinstance(d.get("nodes"), list):
            raise PromptTreeError("from_dict: expected a dict with a 'nodes' list (as written by PromptTree.to_dict)")
        if d.get("format", FORMAT) != FORMAT or d.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise PromptTreeError(
                f"from_dict: unsupported format {d.get('format')!r} version {d.get('version')!r}; "
                f"expected {FORMAT!r} version {FORMAT_VERSION}"
            )
        tree = cls()
        for pos, entry in enumerate(d["nodes"]):
            if not isinstance(entry, dict) or "key" not in entry or "prompt" not in entry:
                raise PromptTreeError(f"from_dict: node entry {pos} needs 'key' and 'prompt' fields, got {entry!r}")
            parent_key = entry.get("parent")
            if parent_key is None:
                parent = tree.root
            elif str(parent_key) in tree._nodes:
                parent = tree._nodes[str(parent_key)]
            else:
                raise PromptTreeError(
                    f"from_dict: parent {parent_key!r} of node {entry['key']!r} is not defined before it; list "
                    f"parents before their children (to_dict writes pre-order)"
                )
            parent.add(entry["prompt"], samples=entry.get("samples", 0), key=entry["key"], role=entry.get("role"))
        return tree

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> PromptTree:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_graph(cls, g) -> PromptTree:
        """Build a tree from a networkx.DiGraph with edges parent -> child.

        Node attributes: `prompt` (str or list of ids; required except on the root), `samples` (default 0) and
        `role` (default None).
        Keys are str(node id). The graph must be a rooted tree: one node without parents, no node with two
        parents, no cycle. Its root is the implicit root when it has no (or an empty) prompt and no samples;
        otherwise it becomes the root's only child. Children keep the graph's successor order.
        """
        import networkx as nx

        if not isinstance(g, nx.DiGraph) or g.is_multigraph():
            raise PromptTreeError(
                f"from_graph: expected a networkx.DiGraph with edges parent -> child, got {type(g).__name__}"
            )
        if g.number_of_nodes() == 0:
            raise PromptTreeError("from_graph: the graph is empty; add at least one node with a prompt")
        try:
            cycle = nx.find_cycle(g)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            nodes = " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}"
            raise PromptTreeError(f"from_graph: the graph has a cycle ({nodes}); a prompt tree has none, remove an edge")
        for v in g.nodes:
            parents = list(g.predecessors(v))
            if len(parents) > 1:
                raise PromptTreeError(
                    f"from_graph: node {v!r} has {len(parents)} parents {parents!r}; in a tree every node has one "
                    f"parent: duplicate the node under each parent or remove edges"
                )
        roots = [v for v in g.nodes if g.in_degree(v) == 0]
        if len(roots) != 1:
            raise PromptTreeError(
                f"from_graph: the graph has {len(roots)} roots {roots[:5]!r}, a tree has one; add a common root node "
                f"without a prompt and edges from it to each of them"
            )
        (root,) = roots
        tree = cls()
        attrs = g.nodes[root]
        root_prompt = attrs.get("prompt", "")
        implicit = (root_prompt is None or len(root_prompt) == 0) and not attrs.get("samples", 0)
        stack: list[tuple[Any, Node]] = []
        if implicit:
            stack.extend((c, tree.root) for c in reversed(list(g.successors(root))))
        else:
            stack.append((root, tree.root))
        while stack:
            v, parent = stack.pop()
            attrs = g.nodes[v]
            if "prompt" not in attrs:
                raise PromptTreeError(f"from_graph: node {v!r} has no 'prompt' attribute; set g.nodes[{v!r}]['prompt']")
            node = parent.add(attrs["prompt"], samples=attrs.get("samples", 0), key=_check_key(v, f"node {v!r}"),
                              role=attrs.get("role"))
            stack.extend((c, node) for c in reversed(list(g.successors(v))))
        return tree

    @classmethod
    def from_prompts(
        cls,
        prompts: Sequence[str | Sequence[int]],
        samples: int | Sequence[int] = 1,
        tokenizer: Any = None,
        min_shared_tokens: int = 1,
        *,
        keys: Sequence[str | int] | None = None,
        add_bos: bool | None = None,
    ) -> PromptTree:
        """Build a tree from a flat list of prompts by their shared token prefixes (a compressed token trie).

        prompts: strs (each encoded whole with `tokenizer`, after the BOS rule's prefix as flatten does; add_bos
          overrides the rule) or token-id lists; the tree holds token ids only, so `flatten()` needs no tokenizer
          and prompt_ids equals each prompt's encoding.
        samples: completions per prompt (an int for all, or one per prompt).
        min_shared_tokens: a shared segment (the tokens a shared node adds beyond its parent) shorter than this is
          not made a node of its own; its tokens are copied into each node below it.
        keys: the key of each prompt's node; default str(index). Results map back through the key:
          `plan.sequences[i] == (keys[j], s)` is sample s of prompt j.
        Each input prompt gets its own node, even a duplicate: where several prompts end at the same point they
        become 0-token children of the shared node; where one prompt is a prefix of others, the shared node is
        that prompt's node (an inner node with samples).
        """
        n = len(prompts)
        if keys is None:
            keys = [str(i) for i in range(n)]
        elif len(keys) != n:
            raise PromptTreeError(f"from_prompts: {len(keys)} keys for {n} prompts; give one key per prompt")
        if isinstance(samples, bool) or isinstance(samples, numbers.Integral):
            samples = [samples] * n
        elif len(samples) != n:
            raise PromptTreeError(f"from_prompts: {len(samples)} sample counts for {n} prompts; give an int or one per prompt")
        if isinstance(min_shared_tokens, bool) or not isinstance(min_shared_tokens, numbers.Integral) or min_shared_tokens < 1:
            raise PromptTreeError(f"from_prompts: min_shared_tokens must be an int >= 1, got {min_shared_tokens!r}")
        token_lists = []
        encoder = PromptEncoder(tokenizer, add_bos) if tokenizer is not None else None
        for i, p in enumerate(prompts):
            what = f"prompt {i} (key {str(keys[i])!r})"
            if isinstance(p, str):
                if encoder is None:
                    raise PromptTreeError(f"{what} is a str but no tokenizer was given; pass tokenizer= or token ids")
                ids = encoder.sequence(p, what)
            else:
                ids = check_token_ids(p, what)
            if not ids:
                raise PromptTreeError(f"{what} is empty (0 tokens); a completion needs at least one prompt token")
            token_lists.append(ids)
        checked = [_check_samples(s, f"prompt {i}") for i, s in enumerate(samples)]
        if sum(checked) == 0:
            raise PromptTreeError("from_prompts: no prompt asks for samples; pass samples >= 1")
        tree = cls()
        _build_radix(tree, token_lists, checked, [str(k) for k in keys], int(min_shared_tokens))
        return tree

    def __repr__(self) -> str:
        return f"PromptTree({len(self._nodes)} nodes, {len(self.leaves())} leaves, {self.num_samples} samples)"


def _build_radix(tree: PromptTree, prompts: list[list[int]], samples: list[int], keys: list[str], min_shared: int) -> None:
    """Add the compressed token trie of `prompts` under tree.root (see PromptTree.from_prompts for the rules).

    Iterative (prompts may branch thousands of times deep). A task (parent, idxs, start, pos) means: every prompt
    in idxs shares prompt[:pos]; `parent` covers prompt[:start] (start <= pos; tokens start:pos are shared but not
    yet given a node, because they were shorter than min_shared). Tasks run depth-first in input order so that
    children are created in the order their first prompt appears.
    """
    # ("build", parent, idxs, start, pos) splits idxs by their next token into ("group", ...) tasks; a group task
    # places one group. Both go on one LIFO stack, pushed in reverse, so everything is created in input order.
    order = sorted(range(len(prompts)), key=prompts.__getitem__)
    rank = [0] * len(prompts)
    for r, i in enumerate(order):
        rank[i] = r
    in_order = [prompts[i] for i in order]
    neighbours = neighbour_prefixes(in_order)
    stack: list[tuple[str, Node, list[int], int, int]] = [("build", tree.root, list(range(len(prompts))), 0, 0)]
    while stack:
        kind, parent, idxs, start, pos = stack.pop()
        if kind == "build":
            # Prompts ending exactly here: each gets its own node holding the not-yet-placed tokens start:pos.
            for i in idxs:
                if len(prompts[i]) == pos:
                    parent.add(prompts[i][start:pos], samples=samples[i], key=keys[i])
            groups: dict[int, list[int]] = {}
            for i in idxs:
                if len(prompts[i]) > pos:
                    groups.setdefault(prompts[i][pos], []).append(i)
            # dicts keep first-appearance order
            stack.extend(("group", parent, g, start, pos) for g in reversed(list(groups.values())))
            continue
        group = idxs
        if len(group) == 1:
            (i,) = group
            parent.add(prompts[i][start:], samples=samples[i], key=keys[i])
            continue
        first = prompts[group[0]]
        # A group is every prompt with one prefix (minus, perhaps, the shortest): a contiguous run in sorted order,
        # so its common prefix is the run's (prompt_tree.prefix).
        ranks = [rank[i] for i in group]
        lcp = run_prefix(in_order, neighbours, min(ranks), max(ranks) + 1)
        if lcp - start < min_shared:
            stack.append(("build", parent, group, start, lcp))  # too short to share: carry the tokens down
            continue
        ending = [i for i in group if len(prompts[i]) == lcp]
        if len(ending) == 1:  # one prompt ends where the shared part ends: the shared node is its node
            (i,) = ending
            node = parent.add(first[start:lcp], samples=samples[i], key=keys[i])
            rest = [j for j in group if j != i]
        else:  # none or duplicates: an auto-keyed shared node; duplicates become 0-token children of it
            node = parent.add(first[start:lcp])
            rest = group
        stack.append(("build", node, rest, lcp, lcp))
