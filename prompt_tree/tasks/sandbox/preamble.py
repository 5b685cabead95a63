"""The APPS preamble: the names the official harness defines in every candidate program before running it.

The official checker (hendrycks/apps, eval/testing_util.py) prepends a fixed block of imports to every program,
so APPS starter code such as `def f(self, nums: List[int])` works without importing List. The same names,
stated here as data:

    import sys, time, itertools, collections, math, fractions, random, heapq
    from itertools import accumulate, product, permutations, combinations
    from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
    from functools import lru_cache
    from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
    from typing import List, Tuple
    from heapq import *            (heappush, heappop, heapify, heapreplace, heappushpop, merge, nlargest, nsmallest)
    import numpy as np             (only where numpy is installed)

How it is applied differs on purpose: the official harness pastes the text above the program, which moves
every line number in a traceback and puts imports ahead of the program's own `from __future__` lines (a
SyntaxError). Here the names are put into the program's fresh global namespace before its code runs, and the
program is compiled on its own: its line numbers are its own and its `from __future__` lines stay first.

Stdlib only: the sandbox's zygote (prompt_tree.tasks.sandbox.zygote) builds the namespace once and every test gets a copy.
"""
from __future__ import annotations

import importlib
import re

# (module, names taken from it, name the module itself is bound to or None)
_IMPORTS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("sys", (), "sys"),
    ("time", (), "time"),
    ("itertools", ("accumulate", "product", "permutations", "combinations"), "itertools"),
    ("collections", ("Counter", "OrderedDict", "deque", "defaultdict", "ChainMap"), "collections"),
    ("functools", ("lru_cache",), None),
    ("math", ("sqrt", "sin", "cos", "tan", "ceil", "fabs", "floor", "gcd", "exp", "log", "log2"), "math"),
    ("fractions", (), "fractions"),
    ("typing", ("List", "Tuple"), None),
    ("random", (), "random"),
    ("heapq", ("*",), "heapq"),
)
NUMPY_NAME = "np"
_NP_TOKEN = re.compile(r"\bnp\b|\bnumpy\b")


def site_builtins() -> None:
    """`exit` and `quit` as builtins, as the site module makes them. The sandboxes' interpreters run with -S (no
    site: no .pth file runs), which left `print(ans); exit()`, an idiom of many competitive programs, a
    NameError and a -1 where the official harness passes it. They raise SystemExit, as there."""
    import builtins
    import _sitebuiltins

    for name in ("exit", "quit"):
        if not hasattr(builtins, name):
            setattr(builtins, name, _sitebuiltins.Quitter(name, "Ctrl-D (i.e. EOF)"))


def preamble_namespace(with_numpy: bool = True) -> dict:
    """The preamble's names -> objects, importing what they need. numpy is included as `np` when with_numpy
    and it imports; a missing numpy is not an error (the official harness would fail on it)."""
    names: dict = {}
    for module_name, members, bind_as in _IMPORTS:
        module = importlib.import_module(module_name)
        if bind_as:
            names[bind_as] = module
        for member in members:
            if member == "*":
                for public in getattr(module, "__all__", ()):
                    names[public] = getattr(module, public)
            else:
                names[member] = getattr(module, member)
    if with_numpy:
        try:
            names[NUMPY_NAME] = importlib.import_module("numpy")
        except ImportError:
            pass
    return names


def may_use_numpy(source: str) -> bool:
    """Can a program reach numpy at all? Only if the token `np` (the preamble's name) or `numpy` occurs in
    its text: a name cannot be looked up without being written. Programs that cannot skip numpy's ~0.1 s
    import (per-test sandbox) and its ~12 MB in every fork (warm sandbox: the lean zygote)."""
    return _NP_TOKEN.search(source) is not None


def preamble_source(with_numpy: bool) -> str:
    """The preamble as Python source, for a launcher that runs in a fresh interpreter (the per-test sandbox)."""
    lines = []
    for module_name, members, bind_as in _IMPORTS:
        if bind_as:
            lines.append(f"import {module_name}" + ("" if bind_as == module_name else f" as {bind_as}"))
        if members:
            lines.append(f"from {module_name} import {', '.join(members)}")
    if with_numpy:
        lines.append("try:\n    import numpy as np\nexcept ImportError:\n    pass")
    return "\n".join(lines) + "\n"
