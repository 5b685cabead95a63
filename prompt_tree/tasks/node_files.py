"""Group files on each node's own disk, for a torchrun run over nodes that share no filesystem (`--node-dir`).

With a shared filesystem (or one node) every data-parallel group writes its files into --out beside the run's
files, and rank 0 merges them (prompt_tree.tasks.dp_runner). Without one, --out exists only on rank 0's node: the writers of
a node keep their group files in that node's --node-dir, and the records travel to rank 0 through the
rendezvous store (the TCP store torchrun's --rdzv-endpoint names), which every rank already reaches.

- The node's first writer (its lowest rank) locks the directory for the whole run, reads what an interrupted
  run left there (every group's files: the layout may have changed), and publishes it; rank 0 appends it to
  --out (fsynced). Only after rank 0 has said so does that writer delete those files, write the run's
  config.json, and tell the node's other writers that the directory is theirs.
- Each writer appends to its own group's files (generations.rank<d>.jsonl, verdicts.rank<d>.jsonl); at the end
  it publishes their records, and deletes them once rank 0 has merged every group's. A writer killed before
  that keeps them, and the next invocation collects them.

config.json is checked against the run's identity as --out's is: records of another run are refused (named,
with the way out), and under --force dropped, while records of the same run are kept, as --force keeps them in
--out. Records are JSON in the store: for runs of hundreds of thousands of completions a shared filesystem is the
cheaper path.
"""
from __future__ import annotations

import json
import os

from prompt_tree.parallel.dp import part_path, part_paths
from prompt_tree.tasks.results import (CONFIG_FILE, GENERATIONS_FILE, VERDICTS_FILE, RunDirError, config_differences,
                           make_run_dir, read_jsonl, write_json_atomic)

NAMES = (GENERATIONS_FILE, VERDICTS_FILE)
FIELDS = ((GENERATIONS_FILE, "generations"), (VERDICTS_FILE, "verdicts"))  # file -> key of a records dict


def node_part_files(node_dir: str) -> list[str]:
    """Every group file in node_dir, of any group number (the last run may have had another layout)."""
    return [p for name in NAMES for p in part_paths(os.path.join(node_dir, name))]


def read_leftovers(node_dir: str, identity: dict, force: bool) -> dict[str, list[dict]]:
    """The records an interrupted run of this configuration left in node_dir: {"generations": [...],
    "verdicts": [...]}. Files of another run (config.json differs, or is missing or unreadable) raise RunDirError,
    or under force count for nothing (they are deleted with the rest once rank 0 has checked the run)."""
    make_run_dir(node_dir)
    if not node_part_files(node_dir):
        return {"generations": [], "verdicts": []}
    path = os.path.join(node_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        if force:
            return {"generations": [], "verdicts": []}
        raise RunDirError(f"--node-dir {node_dir!r} holds group files but no readable {CONFIG_FILE} ({e}); move "
                          f"them away or pass --force") from None
    diffs = config_differences(saved, json.loads(json.dumps(identity)))
    if diffs:
        if force:
            return {"generations": [], "verdicts": []}
        raise RunDirError(f"--node-dir {node_dir!r} holds records of a run with a different configuration:\n  "
                          + "\n  ".join(diffs) + "\nUse another --node-dir, or pass --force to delete them")
    return node_records(node_dir)


def start_node_dir(node_dir: str, identity: dict) -> None:
    """After rank 0 holds every leftover record: delete the group files and write the run's config.json."""
    for part in node_part_files(node_dir):
        os.remove(part)
    write_json_atomic(os.path.join(node_dir, CONFIG_FILE), json.loads(json.dumps(identity)), sort_keys=True)


def group_files(node_dir: str, dp_rank: int) -> list[str]:
    """Data-parallel group dp_rank's two files in node_dir (as prompt_tree.tasks.dp_runner.part_label names them)."""
    return [part_path(os.path.join(node_dir, name), dp_rank) for name in NAMES]


def node_records(node_dir: str, dp_rank: int | None = None) -> dict[str, list[dict]]:
    """The records of node_dir's group files (only group dp_rank's when given): {"generations": [...],
    "verdicts": [...]} (a torn last line, from a writer killed mid-write, dropped)."""
    out = {}
    for name, field in FIELDS:
        path = os.path.join(node_dir, name)
        if dp_rank is None:
            parts = part_paths(path)
        else:
            own = part_path(path, dp_rank)
            parts = [own] if os.path.exists(own) else []
        out[field] = [r for part in parts for r in read_jsonl(part, truncate_torn=True)]
    return out


def remove_group_files(node_dir: str, dp_rank: int) -> None:
    for path in group_files(node_dir, dp_rank):
        if os.path.exists(path):
            os.remove(path)
