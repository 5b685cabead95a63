"""The house rules on imports, read off the source (ast), counting imports inside functions and not those under
`if TYPE_CHECKING:`: no module imports one that imports it back (directly or through others); prompt_tree/kernels/
imports nothing from the rest of prompt_tree/; the library (prompt_tree/ outside tasks/) imports nothing from
prompt_tree/tasks/ (the APPS job, built on the library); prompt_tree/tasks/ does not import the prompt-tree command
line (prompt_tree.cli, prompt_tree.commands), which names the job's modules only as strings."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("prompt_tree",)
KERNELS = "prompt_tree.kernels"  # the leaf layer: a subpackage of prompt_tree that imports nothing else of it
TASKS = "prompt_tree.tasks"  # the job layer: built on the library, which never imports it


def _modules() -> dict[str, str]:
    mods = {}
    for pkg in PACKAGES:
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    mods[name[:-9] if name.endswith(".__init__") else name] = path
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(open(path, encoding="utf-8").read())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
            node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = mod.split(".") if path.endswith("__init__.py") else mod.split(".")[:-1]
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(_graph()) == []


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _in_kernels(name: str) -> bool:
    return _in(name, KERNELS)


def test_layers_point_one_way():
    graph = _graph()
    # the layer rules below are not vacuous
    assert KERNELS in graph and f"{KERNELS}.tree_attention" in graph and f"{TASKS}.runner" in graph
    assert any(_in(t, "prompt_tree") and not _in(t, TASKS) for t in graph[f"{TASKS}.runner"])
    bad = [(m, t) for m, ts in graph.items() for t in ts
           if (_in_kernels(m) and not _in_kernels(t))
           or (not _in(m, TASKS) and _in(t, TASKS))
           or (_in(m, TASKS) and (t == "prompt_tree.cli" or _in(t, "prompt_tree.commands")))]
    assert bad == []


def test_the_checker_sees_a_circle():
    """The test would fail on a real circle: two modules importing each other inside functions."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == [["a", "b"]]


def test_every_lazy_export_resolves():
    # The packages export names lazily through a name -> module table; a renamed module leaves a stale entry that
    # only fails when someone first touches the name (a TP rank, in the run that found this).
    import importlib

    for package in ("prompt_tree", "prompt_tree.parallel"):
        module = importlib.import_module(package)
        for name in module.__all__:
            if name == "__version__":
                continue
            assert getattr(module, name) is not None, f"{package}.{name}"
