"""e2e.md tables and PNG plots from the results of e2e.json (rows as dicts; see runner.Row).

    e2e_batch.png      workload 1: decode tokens/s vs batch, one panel per (model, prefix), a line per mode and
                       the limit dashed (the shape of the paper's Figure 3)
    e2e_prefix.png     workload 1: decode tokens/s vs prefix length, one panel per (model, batch)
    e2e_workload2.png  workload 2: bars per mode at the same batch and at each mode's largest batch, limit ticks
matplotlib is imported only here, only when plotting (`pyplot`, which job_plots uses too).
"""
from __future__ import annotations

import os

from .workloads import MAX_SEARCH_BATCH

MODE_ORDER = ("tree", "single", "flat", "none", "hf")
MODE_STYLE = {"tree": ("tab:blue", "o"), "single": ("tab:cyan", "v"), "flat": ("tab:orange", "s"),
              "none": ("tab:gray", "^"), "hf": ("tab:red", "x")}


def decode_tokens(row: dict) -> int:
    """Tokens decode produces: every sequence's all but first (the first comes from the prefill logits)."""
    return row["batch"] * max(0, row["new_tokens"] - 1)


def limit_tokens_per_s(row: dict) -> float | None:
    return decode_tokens(row) / row["limit_s"] if row.get("limit_s") else None


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _mode_rank(mode: str) -> int:
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def _note(row: dict) -> str:
    if row.get("skipped"):
        return row["skipped"].replace("|", "/")
    notes = []
    if row.get("sub_batches") and row["sub_batches"] > 1:
        notes.append(f"ran as {row['sub_batches']} sub-batches")
    if row.get("run"):
        notes.append(f"measured {row['run']}")
    return "; ".join(notes)


def _max_batch(n: int | None) -> str:
    if n is None:
        return "-"
    return f">= {n}" if n >= MAX_SEARCH_BATCH else str(n)


def _models(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows))


def write_markdown(results: dict, path: str) -> None:
    rows = results.get("rows", [])
    head = (f"# End-to-end decode throughput ({results.get('device')}, torch {results.get('torch')}, triton "
            f"{results.get('triton')}, transformers {results.get('transformers')}, {results.get('date')})")
    lines = [head, ""]
    if results.get("copy_bw_tbs"):
        assumed = " (assumed, not measured)" if results.get("ceilings_assumed") else " measured in this run"
        lines += [f"Ceilings{assumed}: copy {results['copy_bw_tbs']:.3g} TB/s (bytes read + written), matmul "
                  f"{results['matmul_tflops']:.3g} TFLOP/s. tokens/s: decode tokens (all but each sequence's first, "
                  "which prefill produces) / decode seconds; prefill is reported apart. limit: the measured "
                  "no-attention decode time at the same batch + the attention floor (per step and layer, max of "
                  "bytes read once / copy bandwidth and flops / matmul rate). measured/limit = decode seconds / "
                  "limit. largest batch: the most sequences that fit the mode's memory.", ""]
    for run in results.get("merged_runs") or []:
        lines += [f"Merged from a later call ({run['date']}; its own ceilings: copy {run['copy_bw_tbs']:.3g} TB/s, "
                  f"matmul {run['matmul_tflops']:.3g} TFLOP/s): {run['rows']}. Their limits are recomputed with the "
                  "ceilings above, so every row of this file is held to the same limit; such rows say so in the "
                  "note column, and ratios between a merged row and an older one compare different calls.", ""]
    for model in _models(rows):
        mine = [r for r in rows if r["model"] == model]
        w1 = [r for r in mine if r["workload"] == "1"]
        if w1:
            lines += _workload1_tables(model, w1)
        for w in ("2a", "2b"):
            w2 = [r for r in mine if r["workload"] == w]
            if w2:
                lines += _workload2_table(model, w, w2)
    not_run = results.get("not_run") or []
    if not_run:
        lines += ["## Not run in the last call", ""]
        for n in not_run:
            what = " ".join(str(n[k]) for k in ("model", "workload", "shape", "batch", "mode") if n.get(k) is not None)
            lines.append(f"- {what}: {n['reason']}")
        lines.append("")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _workload1_tables(model: str, rows: list[dict]) -> list[str]:
    new = rows[0]["new_tokens"]
    modes = sorted({r["mode"] for r in rows}, key=_mode_rank)
    lines = [f"## {model}: workload 1, one shared prefix, {new} new tokens", "",
             "Decode tokens/s per mode (measured/limit in brackets):", "",
             "| prefix | batch | limit tok/s | " + " | ".join(modes) + " | tree / flat |",
             "|---|---|---|" + "---|" * len(modes) + "---|"]
    cells = {}
    for r in rows:
        cells.setdefault((r["prefix"], r["batch"]), {})[r["mode"]] = r
    for (prefix, batch), by_mode in sorted(cells.items()):
        limit = next((limit_tokens_per_s(r) for r in by_mode.values() if r.get("limit_s")), None)
        out = []
        for m in modes:
            r = by_mode.get(m)
            if r is None:
                out.append("")
            elif r.get("skipped"):
                out.append("skipped")
            else:
                out.append(f"{r['tokens_per_s']:,.0f} ({_num(r.get('measured_over_limit'), '.2f')})")
        t, f = by_mode.get("tree"), by_mode.get("flat")
        speedup = (f"{t['tokens_per_s'] / f['tokens_per_s']:.2f}" if t and f and t.get("tokens_per_s")
                   and f.get("tokens_per_s") else "-")
        lines.append(f"| {prefix} | {batch} | {_num(limit, ',.0f')} | " + " | ".join(out) + f" | {speedup} |")
    lines += ["", "All rows:", "", _ROW_HEADER, _ROW_RULE]
    for r in sorted(rows, key=lambda r: (r["prefix"], r["batch"], _mode_rank(r["mode"]))):
        lines.append(_row_line(r, f"{r['prefix']}"))
    return lines + [""]


_ROW_HEADER = ("| shape | batch | mode | tokens/s | decode s | prefill s | peak GiB | largest batch | limit s | "
               "measured/limit | note |")
_ROW_RULE = "|---|---|---|---|---|---|---|---|---|---|---|"


def _row_line(r: dict, shape: str) -> str:
    return (f"| {shape} | {r['batch']} | {r['mode']} | {_num(r.get('tokens_per_s'), ',.0f')} | "
            f"{_num(r.get('seconds'), '.3g')} | {_num(r.get('prefill_s'), '.3g')} | {_num(r.get('peak_gib'), '.1f')} | "
            f"{_max_batch(r.get('max_batch'))} | {_num(r.get('limit_s'), '.3g')} | "
            f"{_num(r.get('measured_over_limit'), '.2f')} | {_note(r)} |")


def _workload2_table(model: str, workload: str, rows: list[dict]) -> list[str]:
    lines = [f"## {model}: workload {workload}, {rows[0]['shape']}", "",
             "Rows at the same batch compare modes on equal work; rows at each mode's largest batch show what its "
             "memory allows (batch = sequences decoded together; problems in brackets).", "", _ROW_HEADER, _ROW_RULE]
    for r in sorted(rows, key=lambda r: (r["batch"], _mode_rank(r["mode"]))):
        roles = ", ".join(r.get("roles") or [])
        lines.append(_row_line(r, f"{roles} ({r.get('problems')} problems)"))
    return lines + [""]


# ----- plots


def pyplot(missing: str):
    """matplotlib.pyplot on the file-only Agg backend, or None with a note on stderr ending in `missing`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import sys

        print(f"matplotlib is not installed (pip install 'prompt-tree[bench]'): {missing}", file=sys.stderr)
        return None
    return plt


def write_plots(results: dict, out: str) -> list[str]:
    """Write the PNGs that have data; returns their paths ([] without matplotlib, with a note on stderr)."""
    rows = [r for r in results.get("rows", []) if r.get("tokens_per_s")]
    if not rows:
        return []
    plt = pyplot("no plots")
    if plt is None:
        return []
    paths = []
    w1 = [r for r in rows if r["workload"] == "1"]
    if w1:
        paths.append(_line_plot(plt, w1, "batch", "prefix", os.path.join(out, "e2e_batch.png")))
        paths.append(_line_plot(plt, w1, "prefix", "batch", os.path.join(out, "e2e_prefix.png")))
    w2 = [r for r in rows if r["workload"] in ("2a", "2b")]
    if w2:
        paths.append(_bar_plot(plt, w2, os.path.join(out, "e2e_workload2.png")))
    return paths


def _line_plot(plt, rows: list[dict], x: str, panel: str, path: str) -> str:
    """Tokens/s vs `x`, one panel per (model, value of `panel`), one line per mode, the limit dashed."""
    panels = sorted({(r["model"], r[panel]) for r in rows}, key=lambda p: (_models(rows).index(p[0]), p[1]))
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.8 * nrows), squeeze=False)
    for ax, (model, value) in zip(axes.flat, panels):
        mine = [r for r in rows if r["model"] == model and r[panel] == value]
        for mode in sorted({r["mode"] for r in mine}, key=_mode_rank):
            pts = sorted((r[x], r["tokens_per_s"]) for r in mine if r["mode"] == mode)
            color, marker = MODE_STYLE.get(mode, ("k", "."))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=mode)
        limits = sorted({(r[x], limit_tokens_per_s(r)) for r in mine if r["mode"] == "none" and r.get("limit_s")})
        if limits:
            ax.plot([p[0] for p in limits], [p[1] for p in limits], "k--", lw=1, label="limit")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_ylabel("decode tokens/s")
        ax.set_title(f"{model}, {panel} {value}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bar_plot(plt, rows: list[dict], path: str) -> str:
    """One panel per (model, workload): a bar per row (mode at a batch), grouped same batch / largest batch."""
    panels = list(dict.fromkeys((r["model"], r["workload"]) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5, 1.0 * len(rows) / len(panels) + 3) * len(panels), 4.2),
                             squeeze=False)
    for ax, (model, workload) in zip(axes.flat, panels):
        mine = [r for r in rows if r["model"] == model and r["workload"] == workload and r.get("roles") != ["limit"]]
        mine.sort(key=lambda r: ("same batch" not in (r.get("roles") or []), r["batch"], _mode_rank(r["mode"])))
        xs = range(len(mine))
        ax.bar(xs, [r["tokens_per_s"] for r in mine], color=[MODE_STYLE.get(r["mode"], ("k", ""))[0] for r in mine])
        lim = [(i, limit_tokens_per_s(r)) for i, r in enumerate(mine) if r.get("limit_s")]
        if lim:
            ax.scatter([i for i, _ in lim], [v for _, v in lim], marker="_", s=400, color="k", label="limit")
            ax.legend(fontsize=7)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{r['mode']}\nB={r['batch']}" + ("\n(same)" if "same batch" in (r.get("roles") or [])
                                                              else "") for r in mine], fontsize=7)
        ax.set_ylabel("decode tokens/s")
        ax.set_title(f"{model}, workload {workload}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
