"""prompt_tree/kernels/ is a leaf layer with one-way imports: no module imports one that imports it back (directly or
through others, imports inside functions counted), and nothing comes from the rest of prompt_tree.

The graph is read from the source (ast), so an import hidden in a function body or a branch counts as much as one
at the top: a circle held together by a function-local import is still a circle.

The package used to be a top-level `kernels`, which shadowed Hugging Face's `kernels` distribution (transformers >=
5.25 requires it and runs `from kernels import CUDAProperties, ...` when imported): the tests at the end keep any
such top-level name out of the repository.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "prompt_tree.kernels"
KERNELS = os.path.join(ROOT, *PACKAGE.split("."))

# Top-level import names of PyPI distributions that our dependencies pull in, which a top-level package or module
# of ours would shadow (or be shadowed by) on sys.path and in site-packages. `kernels`: Hugging Face's hub kernels,
# required by transformers >= 5.25. `tasks`: a PyPI distribution (tasks 2.8.0 installs a top-level `tasks`), and the
# name of invoke's tasks.py in many a working directory, which shadows a package of that name under `python -m`.
CLASHING_TOP_LEVEL = ("kernels", "tasks", "transformers", "tokenizers", "safetensors", "datasets", "torch", "triton",
                      "huggingface_hub", "numpy", "networkx", "jinja2", "tqdm")


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def import_graph(directory: str = KERNELS, package: str = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    """The package's modules -> the modules of the package each imports (its __init__ as `package`), and the imports
    that reach the rest of prompt_tree ("module imports target"). Relative imports resolve against the package, so
    `from .. import x` leaves it and is reported like `from prompt_tree import x`."""
    modules = {f[:-3] for f in os.listdir(directory) if f.endswith(".py")}
    names = {m: package if m == "__init__" else f"{package}.{m}" for m in modules}
    graph: dict[str, set[str]] = {}
    outside: list[str] = []
    for m in sorted(modules):
        with open(os.path.join(directory, m + ".py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        edges = graph.setdefault(names[m], set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # every module here is directly in the package, __init__ included
                    parts = package.split(".")
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from . import launch` / `from prompt_tree.kernels import meta` name submodules; other names live
                # in base
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in names.values()]
                targets = subs if subs and len(subs) == len(node.names) else [base] + subs
            else:
                continue
            for t in targets:
                if _inside(t, "prompt_tree") and not _inside(t, package):
                    outside.append(f"{names[m]} imports {t}")
                if t in names.values() and t != names[m]:
                    edges.add(t)
    return graph, outside


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
    graph, outside = import_graph()
    assert f"{PACKAGE}.tree_attention" in graph and f"{PACKAGE}.triton_tree" in graph[f"{PACKAGE}.tree_attention"]
    assert f"{PACKAGE}.meta" in graph[PACKAGE]  # the __init__'s relative imports resolve inside the package
    assert cycles(graph) == []
    assert outside == [], "the kernels must not use the rest of prompt_tree"


def test_the_graph_sees_circles_and_imports_from_outside(tmp_path):
    """The checks would fail on a bad package: a circle through a function-local import, and imports of the rest of
    prompt_tree (absolute and relative); imports of the package itself are fine."""
    (tmp_path / "__init__.py").write_text("from .a import f\n")
    (tmp_path / "a.py").write_text("from . import b\n\ndef f():\n    from prompt_tree.tree import PromptTree\n")
    (tmp_path / "b.py").write_text("import torch\n\ndef g():\n    from prompt_tree.kernels.a import f\n"
                                   "    from .. import plan\n")
    graph, outside = import_graph(str(tmp_path), PACKAGE)
    assert graph[PACKAGE] == {f"{PACKAGE}.a"}
    assert cycles(graph) == [[f"{PACKAGE}.a", f"{PACKAGE}.b"]]
    assert sorted(outside) == [f"{PACKAGE}.a imports prompt_tree.tree", f"{PACKAGE}.b imports prompt_tree"]


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _packages_find_include() -> list[str]:
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^\[tool\.setuptools\.packages\.find\]$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert section, "pyproject.toml has no [tool.setuptools.packages.find]"
    include = re.search(r"^include\s*=\s*\[(.*?)\]", section.group(1), re.M | re.S)
    assert include, "pyproject.toml's packages.find has no include list"
    return re.findall(r"[\"']([^\"']+)[\"']", include.group(1))


def _top_level_names() -> set[str]:
    """What the repository would put on sys.path's top level: packages (directories with an __init__.py) and modules
    at its root, and the top-level names pyproject's packages.find installs."""
    names = {e[:-3] if e.endswith(".py") else e for e in os.listdir(ROOT)
             if (e.endswith(".py") and os.path.isfile(os.path.join(ROOT, e)))
             or os.path.isfile(os.path.join(ROOT, e, "__init__.py"))}
    return names | {p.split(".")[0].rstrip("*") for p in _packages_find_include()}


def test_no_top_level_name_clashes_with_a_dependency():
    import fnmatch
    import importlib.metadata

    include = _packages_find_include()
    assert include == ["prompt_tree*"]  # one top-level package; it covers prompt_tree.kernels and prompt_tree.tasks
    ours = _top_level_names()
    assert "prompt_tree" in ours and "kernels" not in ours and "tasks" not in ours
    assert ours.isdisjoint(CLASHING_TOP_LEVEL), sorted(ours & set(CLASHING_TOP_LEVEL))
    for name in CLASHING_TOP_LEVEL:  # no pattern installs one, `k*` or `*` included
        assert not [p for p in include if fnmatch.fnmatchcase(name, p)], (name, include)
    # and none of the names we install is one that an installed distribution other than prompt-tree provides (an
    # editable install of an older checkout may still list its own top-level names as prompt-tree's)
    installed = {p.split(".")[0].rstrip("*") for p in include}
    provided = importlib.metadata.packages_distributions()
    taken = {n: d for n in installed for d in provided.get(n, ()) if d.replace("_", "-").lower() != "prompt-tree"}
    assert taken == {}


def test_kernels_name_is_not_ours():
    """With the repository root first on sys.path (as when running from a checkout), `kernels` is not found in it."""
    code = ("import importlib.util, sys; sys.path.insert(0, sys.argv[1]); s = importlib.util.find_spec('kernels'); "
            "print(repr((s.origin, list(s.submodule_search_locations or [])) if s else (None, [])))")
    origin, locations = ast.literal_eval(subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True,
                                                        text=True, check=True, cwd=ROOT).stdout.strip())
    # ours would be ROOT/kernels (a package, or a namespace package without __init__) or ROOT/kernels.py; an
    # installed `kernels` may still live under ROOT, in a virtual environment inside the checkout (.venv)
    ours = {os.path.join(ROOT, "kernels"), os.path.join(ROOT, "kernels.py"), os.path.join(ROOT, "kernels", "__init__.py")}
    found = {os.path.abspath(p) for p in [origin, *locations] if p}
    assert not found & ours, found


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_transformers_imports_beside_the_repository():
    """transformers >= 5.25 runs `from kernels import ...` on import; from the repository root (first on sys.path) it
    must get Hugging Face's package, not one of ours, and our tests' Llama model code must import."""
    code = ("import importlib.util, sys; sys.path.insert(0, sys.argv[1]); import transformers; "
            "from transformers import LlamaForCausalLM; "
            "importlib.util.find_spec('transformers.integrations.hub_kernels') and "
            "importlib.import_module('transformers.integrations.hub_kernels'); import prompt_tree.kernels")
    r = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
