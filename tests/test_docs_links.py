"""The documentation points at things that exist: every relative link in README.md and docs/*.md, every repository
path it names in backticks, and every module it runs with `python -m`. (A renamed package, a page linked and never
written, or a log file named but not committed fails here rather than in a reader's hands.)"""
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                               if f.endswith(".md"))
# top-level folders of the repository whose files the docs name
REPO_DIRS = ("docs", "tools", "prompt_tree", "tests", "scripts", "examples", ".ci")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*\w)" % "|".join(re.escape(d) for d in REPO_DIRS))
MODULE = re.compile(r"python3? -m ([A-Za-z_][\w.]*)")


def _read(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def _exists(page: str, target: str) -> bool:
    """A path relative to the page, or to the repository root (both are used)."""
    return any(os.path.exists(os.path.join(base, target)) for base in (os.path.dirname(os.path.join(ROOT, page)),
                                                                          ROOT))


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    missing = []
    for target in LINK.findall(CODE.sub("", _read(page))):  # `kernel[grid](...)` in code is not a link
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        if not _exists(page, target.split("#")[0]):
            missing.append(target)
    assert missing == [], f"{page} links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_named_paths_exist(page):
    missing = []
    for code in CODE.findall(_read(page)):
        for m in PATH.finditer(code):
            if re.match(r"\.?[*{<]", code[m.end():]):
                continue  # a pattern or a placeholder: `docs/benchmarks/dense.*`, `execution.{json,md}`
            if not _exists(page, m.group(1)):
                missing.append(m.group(1))
    assert missing == [], f"{page} names paths that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("page", PAGES)
def test_python_m_modules_exist(page):
    text = _read(page)
    missing = sorted({m for m in MODULE.findall(text) if m.split(".")[0] in ("prompt_tree", "tools", "examples")
                      and importlib.util.find_spec(m) is None})
    assert missing == [], f"{page} runs modules that do not exist: {missing}"


def test_the_checks_see_a_missing_file(tmp_path):
    """The patterns find what they are meant to find (the tests above would pass vacuously otherwise)."""
    text = ("see [the page](docs/nope.md), `docs/benchmarks/nope.log`, `docs/benchmarks/x.*` and "
            "`python -m prompt_tree.nope`")
    assert LINK.findall(text) == ["docs/nope.md"]
    assert [p for c in CODE.findall(text) for p in PATH.findall(c)] == ["docs/benchmarks/nope.log",
                                                                         "docs/benchmarks/x"]
    assert MODULE.findall(text) == ["prompt_tree.nope"]
    assert not _exists("README.md", "docs/nope.md") and _exists("README.md", "docs/apps.md")
