"""Merge workload-1 rows of a later `prompt-tree bench` call into an e2e.json, replacing rows of the same key.

    python tools/merge_e2e.py docs/benchmarks/e2e.json NEW/e2e.json "what the later call re-measured"
    prompt-tree bench --report-only --out docs/benchmarks

`--resume` only adds rows that are missing; this re-measures existing ones (e.g. after a kernel change). Every
merged row's attention floor is recomputed at the target file's ceilings (each call measures its own, and they
vary by several percent), so one file holds every row to one limit; the row keeps the date of its call in `run`
and the call is listed under `merged_runs` with its own ceilings (e2e.md names both).
"""
from __future__ import annotations

import json
import sys

from prompt_tree.benchmark.limit import Ceilings, attention_floor_seconds, decode_work
from prompt_tree.benchmark.e2e_rows import row_key
from prompt_tree.benchmark.workloads import shared_prefix_tree
from prompt_tree.config import get_preset


def floor_s(row: dict, dtype, copy_tbs: float, matmul_tflops: float) -> float:
    config = get_preset(row["model"])
    plan = shared_prefix_tree(row["prefix"], row["batch"], config.vocab_size, None).flatten()
    work = decode_work(plan, row["new_tokens"], config, dtype)
    return attention_floor_seconds(work, Ceilings(copy_tbs * 1e12, matmul_tflops * 1e12))


def _dtype(results: dict):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[results["config"]["dtype"]]


def merge(target: dict, later: dict, what: str) -> list[dict]:
    """Merge `later`'s rows into `target` in place; returns the merged rows."""
    ceilings = (target["copy_bw_tbs"], target["matmul_tflops"])
    rows, dtype = later["rows"], _dtype(later)
    if _dtype(target) != dtype:
        raise SystemExit("the two files were measured in different dtypes")
    for r in rows:
        if r["workload"] != "1":
            raise SystemExit(f"only workload-1 rows are merged here, not {r['workload']}")
        if r.get("skipped"):  # did not fit (no time, floor or limit): recorded as such
            continue
        # The recomputation must reproduce the later call's own floor at its own ceilings.
        own = floor_s(r, dtype, later["copy_bw_tbs"], later["matmul_tflops"])
        if abs(own - r["attention_floor_s"]) > 1e-9 * max(1.0, own):
            raise SystemExit(f"cannot reproduce the floor of {row_key(r)}: {own} vs {r['attention_floor_s']}")
        r["attention_floor_s"] = floor_s(r, dtype, *ceilings)
    keys = {row_key(r): i for i, r in enumerate(target["rows"])}
    merged = []
    for r in rows:
        if not r.get("skipped"):
            none = next((x for x in rows if x["mode"] == "none" and row_key(x)[:4] == row_key(r)[:4]
                         and not x.get("skipped")), None)
            if none is None:
                raise SystemExit(f"{row_key(r)} has no measured no-attention row in the later call: its limit "
                                 "needs one (run that call with --modes including none)")
            r["limit_s"] = none["seconds"] + r["attention_floor_s"]
            r["measured_over_limit"] = r["seconds"] / r["limit_s"]
        elif row_key(r) in keys and not target["rows"][keys[row_key(r)]].get("skipped"):
            continue  # a row the later call could not fit never replaces one that was measured
        r["run"] = later["date"]
        merged.append(r)
        if row_key(r) in keys:
            target["rows"][keys[row_key(r)]] = r
        else:
            keys[row_key(r)] = len(target["rows"])
            target["rows"].append(r)
        target["not_run"] = [n for n in target.get("not_run", [])
                             if (n["model"], n["workload"], n["shape"], n["batch"], n["mode"])
                             != (r["model"], r["workload"], r["shape"], r["batch"], r["mode"])]
    target.setdefault("merged_runs", []).append(dict(
        date=later["date"], copy_bw_tbs=later["copy_bw_tbs"], matmul_tflops=later["matmul_tflops"], rows=what,
        note="limits recomputed with the top-level ceilings of this file"))
    return merged


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    target_path, later_path, what = argv
    target = json.load(open(target_path))
    for r in merge(target, json.load(open(later_path)), what):
        print(r["model"], r["shape"], r["batch"], r["mode"],
              r["skipped"] if r.get("skipped") else f"{r['measured_over_limit']:.3f}")
    with open(target_path, "w") as f:
        json.dump(target, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
