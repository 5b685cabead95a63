"""Append the rows of a later job call to docs/benchmarks/job.json as run N, then rewrite job.md and its plots.

    python tools/merge_job.py docs/benchmarks/job.json NEW/job.json [MORE/job.json ...] 6 "what changed"

(one call may write several job folders: they become one run)

Rows keep every field of their call and gain `run`; the file's note gets the run's sentence. The device and
versions of the call must be the file's (one file, one machine).
"""
from __future__ import annotations

import json
import os
import sys

from prompt_tree.benchmark.job import write


def main(target: str, news: list[str], run: int, sentence: str) -> None:
    with open(target, encoding="utf-8") as f:
        results = json.load(f)
    if any(r.get("run") == run for r in results["rows"]):
        raise SystemExit(f"{target} already holds run {run}")
    for new in news:
        with open(new, encoding="utf-8") as f:
            extra = json.load(f)
        for k in ("device", "torch", "triton"):
            if results[k] != extra[k]:
                raise SystemExit(f"{new} was measured on {k} {extra[k]!r}, {target} on {results[k]!r}")
        for r in extra["rows"]:
            results["rows"].append({**r, "run": run, "sampler": r.get("sampler", "triton")})
        results.setdefault("tokenizers", {}).update(extra.get("tokenizers", {}))
    results["note"] = results.get("note", "") + f" Run {run}: {sentence}"
    write(results, os.path.dirname(target) or ".", plots=True)


if __name__ == "__main__":
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:-2], int(sys.argv[-2]), sys.argv[-1])
