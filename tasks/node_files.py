"""Group files on each node's own disk, for a torchrun run over nodes that share no filesystem (`--node-dir`).

With a shared filesystem (or one node) every data-parallel group writes its files into --out beside the run's
files, and rank 0 merges them (tasks.dp_runner). Without one, --out exists only on rank 0's node: each group's
writer keeps its files in --node-dir on its own node, and the records travel to rank 0 through the rendezvous
store (the TCP store torchrun's --rdzv-endpoint names), which every rank already reaches:

- at the start, each writer publishes what its node directory holds from an interrupted run; rank 0 appends
  those records to --out's files (fsynced), and only after rank 0 has said so does the writer delete them;
- at the end, each writer publishes the records it wrote; rank 0 merges them into --out and says so; then the
  writer deletes its files. A writer killed before that keeps them, and the next invocation collects them.

A node directory holds config.json (the run's identity, checked as --out's is) and generations.rank<d>.jsonl /
verdicts.rank<d>.jsonl; it is locked by its writer while in use. Records are JSON in the store: for runs of
hundreds of thousands of completions a shared filesystem is the cheaper path.
"""
from __future__ import annotations

import json
import os

from prompt_tree.parallel.dp import part_paths
from tasks.results import (CONFIG_FILE, GENERATIONS_FILE, VERDICTS_FILE, RunDirError, config_differences,
                           make_run_dir, read_jsonl, write_json_atomic)

NAMES = (GENERATIONS_FILE, VERDICTS_FILE)


def node_part_files(node_dir: str) -> list[str]:
    """Every group file in node_dir, of any group number (the last run may have had another layout)."""
    return [p for name in NAMES for p in part_paths(os.path.join(node_dir, name))]


def read_leftovers(node_dir: str, identity: dict, force: bool) -> dict[str, list[dict]]:
    """The records an interrupted run left in node_dir: {"generations": [...], "verdicts": [...]}. Nothing under
    force (they are deleted once rank 0 has checked the run). RunDirError if node_dir holds records of another
    run, as for --out."""
    make_run_dir(node_dir)
    parts = node_part_files(node_dir)
    if force or not parts:
        return {"generations": [], "verdicts": []}
    path = os.path.join(node_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"--node-dir {node_dir!r} holds group files but no readable {CONFIG_FILE} ({e}); move "
                          f"them away or pass --force") from None
    diffs = config_differences(saved, json.loads(json.dumps(identity)))
    if diffs:
        raise RunDirError(f"--node-dir {node_dir!r} holds records of a run with a different configuration:\n  "
                          + "\n  ".join(diffs) + "\nUse another --node-dir, or pass --force to delete them")
    return node_records(node_dir)


def start_node_dir(node_dir: str, identity: dict) -> None:
    """After rank 0 holds every leftover record: delete the group files and write the run's config.json."""
    for part in node_part_files(node_dir):
        os.remove(part)
    write_json_atomic(os.path.join(node_dir, CONFIG_FILE), json.loads(json.dumps(identity)), sort_keys=True)


def node_records(node_dir: str) -> dict[str, list[dict]]:
    """The records of node_dir's group files: {"generations": [...], "verdicts": [...]} (a torn last line, from
    a writer killed mid-write, dropped)."""
    return {field: [r for part in part_paths(os.path.join(node_dir, name)) for r in read_jsonl(part, truncate_torn=True)]
            for name, field in ((GENERATIONS_FILE, "generations"), (VERDICTS_FILE, "verdicts"))}
