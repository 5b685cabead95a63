"""The job benchmark's plots: throughput per engine for each row group, and live rows over the run.

matplotlib comes through report.pyplot, only when plotting (`pip install 'prompt-tree[bench]'`); without it no PNG
is written and stderr says so. Both plots are drawn from job.json alone, so `tools/merge_job.py` redraws them for merged files.
"""
from __future__ import annotations

import os
from itertools import accumulate

from .report import pyplot

ENGINE_ORDER = ("continuous-tree", "static-tree", "continuous-flat", "ideal")
TRACE_POINTS = 256


def batch_trace(step_log: list, points: int = TRACE_POINTS) -> list:
    """(live rows, device ms) per replayed decode step -> [[decode device s so far, live rows]] at up to `points`
    evenly spaced steps, the last step always included. The x axis is the device time of decode steps alone
    (the step log has no wall clock), so prefill and captures between steps are not on it."""
    if not step_log:
        return []
    n = len(step_log)
    m = min(points, n)
    keep = sorted({round(i * (n - 1) / max(1, m - 1)) for i in range(m)})
    t = list(accumulate(ms / 1e3 for _, ms in step_log))
    return [[round(t[i], 4), int(step_log[i][0])] for i in keep]


def _group(r: dict) -> tuple:
    return (r["model"], r["shape"], r["lengths"], r["problems"], r["samples"], r.get("logits", "flat"))


def _label(key: tuple, run) -> str:
    model, shape, lengths, p, s, logits = key
    tail = f", {logits} logits" if logits != "flat" else ""
    return f"{model} {shape} {p}x{s} {lengths}{tail}" + (f" (run {run})" if run is not None else "")


def latest_groups(rows: list) -> list[tuple[str, dict]]:
    """Per row group, the rows of the latest run that measured two engines or more: [(label, {engine: row})]."""
    by: dict = {}
    for r in rows:
        if r.get("skipped") or not r.get("seconds"):
            continue
        by.setdefault((_group(r), r.get("run")), {})[r["engine"]] = r
    latest: dict = {}
    for (key, run), engines in by.items():
        if len(engines) >= 2 and (key not in latest or (run or 0) >= (latest[key][0] or 0)):
            latest[key] = (run, engines)
    return [(_label(k, run), engines) for k, (run, engines) in sorted(latest.items(), key=lambda kv: str(kv[0]))]


def write_job_plots(results: dict, out: str) -> list[str]:
    """job_throughput.png (tokens/s per engine, one cluster per row group) and, where rows carry a batch_trace,
    job_batch.png (live rows against decode time, one panel per row group, ideal's batch dashed). Returns paths."""
    groups = latest_groups(results.get("rows", []))
    if not groups:
        return []
    plt = pyplot("no job plots")
    if plt is None:
        return []
    title = f"{results.get('device')}, torch {results.get('torch')}, triton {results.get('triton')}"
    paths = []
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(groups) * len(ENGINE_ORDER) / 2 + 1.5))
    h = 0.8 / len(ENGINE_ORDER)
    for e, engine in enumerate(ENGINE_ORDER):
        ys = [g - 0.4 + (e + 0.5) * h for g in range(len(groups))]
        vals = [engines[engine]["tokens_per_s"] if engine in engines else 0 for _, engines in groups]
        ax.barh(ys, vals, height=h, label=engine, hatch="//" if engine == "ideal" else None)
    ax.set_yticks(range(len(groups)), [label for label, _ in groups], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("tokens/s (sampled, stop strings on, wall time with captures)")
    ax.set_title(f"The sampling job per engine: {title}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out, "job_throughput.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    traced = [(label, engines) for label, engines in groups
              if any(r.get("batch_trace") for r in engines.values())]
    if traced:
        fig, axes = plt.subplots(len(traced), 1, figsize=(9, 2.6 * len(traced)), squeeze=False)
        for ax, (label, engines) in zip(axes[:, 0], traced):
            for engine in ENGINE_ORDER:
                r = engines.get(engine)
                if r and r.get("batch_trace"):
                    ax.plot([p[0] for p in r["batch_trace"]], [p[1] for p in r["batch_trace"]], label=engine)
            if "ideal" in engines and engines["ideal"].get("mean_batch"):
                ax.axhline(engines["ideal"]["mean_batch"], ls="--", color="gray", label="ideal batch")
            ax.set_title(label, fontsize=8)
            ax.set_ylabel("live rows")
            ax.legend(fontsize=7)
        axes[-1, 0].set_xlabel("decode device seconds (prefill and captures between steps not on the axis)")
        fig.tight_layout()
        paths.append(os.path.join(out, "job_batch.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
