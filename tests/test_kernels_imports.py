"""kernels/ is a leaf layer with one-way imports: no module imports one that imports it back (directly or through
others, imports inside functions counted), and nothing comes from prompt_tree.

The graph is read from the source (ast), so an import hidden in a function body or a branch counts as much as one
at the top: a circle held together by a function-local import is still a circle.
"""
from __future__ import annotations

import ast
import os

KERNELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")


def import_graph() -> dict[str, set[str]]:
    """kernels module -> the kernels modules it imports (package __init__ as "kernels")."""
    modules = {f[:-3] for f in os.listdir(KERNELS) if f.endswith(".py")}
    names = {m: "kernels" if m == "__init__" else f"kernels.{m}" for m in modules}
    graph: dict[str, set[str]] = {}
    for m in sorted(modules):
        with open(os.path.join(KERNELS, m + ".py")) as f:
            tree = ast.parse(f.read())
        edges = graph.setdefault(names[m], set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "kernels" if node.level else (node.module or "")
                if node.level and node.module:
                    base = f"kernels.{node.module}"
                elif not node.level:
                    base = node.module or ""
                # `from . import launch` / `from kernels import meta` name submodules; other names live in base
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in names.values()]
                targets = subs if subs and len(subs) == len(node.names) else [base] + subs
            else:
                continue
            for t in targets:
                assert not t.startswith("prompt_tree"), f"{names[m]} imports {t}: kernels must not use prompt_tree"
                if t in names.values() and t != names[m]:
                    edges.add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_kernels_have_no_import_circle():
    graph = import_graph()
    assert "kernels.tree_attention" in graph and "kernels.triton_tree" in graph["kernels.tree_attention"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
