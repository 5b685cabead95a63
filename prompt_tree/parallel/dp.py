"""Data parallelism over subtrees: who generates what, where each group writes, and the merge at the end.

Pure Python (no torch). Work is split in whole subtrees (a problem with all its samples; a top-level branch of a
prompt tree) so that no group re-reads another's shared prompt, balanced by expected tokens

    cost(subtree) = its prompt tokens (each node once) + samples x max_new_tokens

with greedy largest-first bin packing (LPT: within 4/3 of the best makespan). Sample identity does not depend
on the split: sample i of node k draws from (seed, k, i) only (prompt_tree.sampling), and a node's tokens
depend only on its path, so every group produces exactly the tokens one process would.

Each group's writer appends to its own file next to the normal one (`part_path`: generations.jsonl ->
generations.rank1.jsonl), and rank 0 merges the parts into the normal file at the end (`merge_parts`).
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Callable, Iterable, Sequence


def expected_tokens(prompt_tokens: int, samples: int, max_new_tokens: int) -> int:
    """The balancing cost of a unit of work: tokens prefilled plus tokens decoded at most."""
    return prompt_tokens + samples * max_new_tokens


def split_by_cost(costs: Sequence[float], bins: int) -> list[list[int]]:
    """Item indices per bin, greedy largest-first: each item, by decreasing cost (ties: lower index first), goes
    to the bin with the least total so far (ties: lower bin). Indices within a bin keep their original order, so
    a group runs its units in the order one process would. Deterministic: every rank computes the same split."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    totals = [0.0] * bins
    members: list[list[int]] = [[] for _ in range(bins)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        b = min(range(bins), key=lambda b: (totals[b], b))
        totals[b] += costs[i]
        members[b].append(i)
    return [sorted(m) for m in members]


# ----- prompt trees (prompt-tree generate)


def split_tree(tree_dict: dict, node_tokens: dict, bins: int, max_new_tokens: int) -> list[dict]:
    """Split a tree (PromptTree.to_dict()) into `bins` trees of whole subtrees, balanced by expected tokens.

    The units are the subtrees below the first node that branches: from the root down, a chain of single children
    asking for no samples (a shared system prompt, a few-shot block) is shared by every group, and the children
    of its last node are the units. node_tokens: key -> token count (Plan.node_tokens lengths; a node missing
    from it costs 0). Returns one tree dict per bin (nodes in the original pre-order; a bin may hold no samples).
    """
    nodes = tree_dict["nodes"]
    children: dict = {}
    for n in nodes:
        children.setdefault(n.get("parent"), []).append(n)
    chain, top = [], None  # `top`: the node whose children are the units (None = the root)
    while len(children.get(top, [])) == 1 and not children[top][0].get("samples", 0):
        top = children[top][0]["key"]
        chain.append(top)
    units = [n["key"] for n in children.get(top, [])]

    def subtree(key) -> list:
        out, stack = [], [key]
        while stack:
            k = stack.pop()
            out.append(k)
            stack.extend(c["key"] for c in children.get(k, []))
        return out

    by_key = {n["key"]: n for n in nodes}
    members = [subtree(u) for u in units]
    costs = [sum(expected_tokens(node_tokens.get(k, 0), by_key[k].get("samples", 0), max_new_tokens) for k in m)
             for m in members]
    trees = []
    for indices in split_by_cost(costs, bins):
        keep = set(chain).union(*(members[i] for i in indices)) if indices else set(chain)
        trees.append(dict(tree_dict, nodes=[n for n in nodes if n["key"] in keep]))
    return trees


# ----- per-group files


PART_LABEL = "rank{}"


def part_path(path: str, dp_rank: int) -> str:
    """The file data-parallel group `dp_rank` writes instead of `path` (x/out.jsonl -> x/out.rank1.jsonl)."""
    root, ext = os.path.splitext(path)
    return f"{root}.{PART_LABEL.format(dp_rank)}{ext}"


def part_paths(path: str) -> list[str]:
    """Existing part files of `path`, by group number."""
    root, ext = os.path.splitext(path)
    pattern = re.compile(re.escape(os.path.basename(root)) + r"\.rank(\d+)" + re.escape(ext) + "$")
    found = []
    for candidate in glob.glob(glob.escape(root) + ".rank*" + glob.escape(ext)):
        m = pattern.match(os.path.basename(candidate))
        if m:
            found.append((int(m.group(1)), candidate))
    return [p for _, p in sorted(found)]


def read_records(path: str) -> list[dict]:
    """JSON lines of a file written as results are produced: a torn last line (a killed writer) is dropped."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline after it: torn by a kill mid-write
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
    return records


def merge_parts(path: str, parts: Iterable[str], key: Callable[[dict], object] | None = None, *,
                read: Callable[[str], list[dict]] = read_records, fresh: bool = False) -> int:
    """Append to `path` the records of `parts` (in order) that it lacks, then delete the parts.

    key(record): records with a key already in `path` (or earlier in the parts) are skipped, so merging twice,
    or after a crash mid-merge, adds nothing twice. fresh: replace `path` instead of appending to it.
    The merged file is fsynced before any part is deleted. Returns the number of records added.
    """
    parts = list(parts)
    existing = [] if fresh else read(path)
    seen = {key(r) for r in existing} if key else set()
    new = []
    for part in parts:
        for record in read(part):
            if key is not None:
                k = key(record)
                if k in seen:
                    continue
                seen.add(k)
            new.append(record)
    if not fresh:
        _cut_torn_tail(path)  # so the first appended record does not glue onto a half-written line
    if fresh or new:
        with open(path, "w" if fresh else "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
            f.flush()
            os.fsync(f.fileno())
    for part in parts:
        os.remove(part)
    return len(new)


def _cut_torn_tail(path: str) -> None:
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
