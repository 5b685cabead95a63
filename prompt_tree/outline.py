"""A readable outline of a prompt tree, one node a line, with its plan's token counts (PromptTree.describe and
`prompt-tree describe`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prompt_tree.plan import Plan
    from prompt_tree.tree import Node, PromptTree

PREVIEW_CHARS = 40  # a node's prompt is shown up to about this many characters


def preview(node: Node) -> str:
    """The start of a node's prompt: a complete Python literal (quotes matched), '...' after it when cut."""
    if node.is_text:
        text = repr(node.prompt)
        if len(text) <= PREVIEW_CHARS:
            return text
        cut = node.prompt[:PREVIEW_CHARS - 8]
        while len(repr(cut)) > PREVIEW_CHARS - 4:  # escapes (\n, \t, unicode) make the repr longer than the text
            cut = cut[:-1]
        return repr(cut) + "..."
    ids = list(node.prompt[:6])
    return f"ids {ids}"[:-1] + (", ...]" if len(node.prompt) > 6 else "]")


def _size(node: Node, plan: Plan | None) -> str:
    if plan is None:
        return f"{len(node.prompt)} chars" if node.is_text else f"{len(node.prompt)} tok"
    if node.key not in plan.node_tokens:
        return "not in plan (no samples below)"
    size = f"{len(plan.node_tokens[node.key])} tok"
    tail = plan.tails.get(node.key)
    if tail is not None:
        # its own sequences end in tokens its children encode differently (a BPE merge across the boundary)
        return size + f" + {len(plan.node_tokens[tail])} own (not shared with its children)"
    if node.key in plan.unshared:
        return size + f", {plan.unshared[node.key]} more not shared (its children re-encode them)"
    return size


def describe_tree(tree: PromptTree, plan: Plan | None = None, max_children: int = 8,
                  bytes_per_token: int | None = None) -> str:
    """An outline of the tree, one node a line (at most max_children shown per node), plus the plan's summary."""
    head = f"PromptTree: {len(tree)} nodes, {len(tree.leaves())} leaves, {tree.num_samples:,} samples"
    lines = [head]
    top = tree.root.children
    stack: list[tuple[Any, str, bool]] = [(c, "", i == len(top) - 1) for i, c in reversed(list(enumerate(top)))]
    extra = max(0, len(top) - max_children)
    if extra:
        stack = stack[-max_children:]
    while stack:
        item = stack.pop()
        if item[0] is None:  # an elision marker
            lines.append(item[1])
            continue
        node, prefix, last = item
        samples = f" x{node.samples}" if node.samples else ""
        role = f" [{node.role}]" if node.role is not None else ""
        lines.append(f"{prefix}{'`-' if last else '|-'} {node.key}{role}: {preview(node)} | {_size(node, plan)}"
                     f"{samples}")
        kids = node.children
        inner = prefix + ("   " if last else "|  ")
        shown = kids[:max_children]
        if len(kids) > max_children:
            rest = kids[max_children:]
            stack.append((None, f"{inner}`- ... {len(rest)} more children ({sum(c.subtree_samples() for c in rest):,} "
                                f"samples)", True))
        for i in reversed(range(len(shown))):
            stack.append((shown[i], inner, i == len(kids) - 1))
    if extra:
        lines.append(f"`- ... {extra} more top-level nodes")
    if plan is not None:
        lines.append(plan.describe(bytes_per_token))
    return "\n".join(lines)
