"""The execution benchmark's outputs (prompt_tree.tasks.bench_exec): the median row per method, the issue's targets as
measured, execution.json, the markdown table and the plot."""
from __future__ import annotations

import json
import os

from prompt_tree.tasks.bench_programs import LOOP_TIMEOUT_S, TIMEOUT_S


def summarize_runs(runs: list[dict]) -> list[dict]:
    """One row per method: the median run's numbers, with the spread of tests/s over runs."""
    out = []
    for method in [r["method"] for r in runs[0]["rows"]]:
        rows = [next(r for r in run["rows"] if r["method"] == method) for run in runs]
        rows.sort(key=lambda r: r["seconds"])
        mid = dict(rows[(len(rows) - 1) // 2])
        tps = [r["tests_per_s"] for r in rows]
        mid["tests_per_s_min"], mid["tests_per_s_max"] = min(tps), max(tps)
        out.append(mid)
    return out


def targets(rows: list[dict], jobs: list[dict]) -> dict:
    """The issue's targets, each measured as the row says (see write_outputs for what each means)."""
    by = {r["method"]: r for r in rows}
    t = {}
    if "warm" in by and "bare" in by:
        t["warm / bare tests/s"] = round(by["warm"]["tests_per_s"] / by["bare"]["tests_per_s"], 2)
        t["warm / bare tests/s without the endless loops"] = round(
            by["warm"]["tests_per_s_without_endless_loops"] / by["bare"]["tests_per_s_without_endless_loops"], 2)
    w = by.get("warm", {})
    for key in ("overhead_ms_per_test", "cpu_overhead_ms_per_test", "wall_overhead_vs_floor_ms_per_test"):
        if key in w:
            t[f"warm {key} (target <= 5)"] = w[key]
    for key in ("overhead_ms_per_program", "cpu_overhead_ms_per_program", "wall_overhead_vs_floor_ms_per_program"):
        if key in w:
            t[f"warm {key} (target <= 50)"] = w[key]
    if "overhead_ms_per_test" in w:
        # The two targets together: a run's overhead within 5 ms for each test plus 50 ms for each program.
        spent = w["overhead_ms_per_test"] * w["tests"] / 1e3
        allowed = (5 * w["tests"] + 50 * w["programs"]) / 1e3
        t["warm wall overhead s (target <= 5 ms x tests + 50 ms x programs)"] = f"{spent:.2f} <= {allowed:.2f}" \
            if spent <= allowed else f"{spent:.2f} > {allowed:.2f}"
    if "fit_ms_per_test" in w:
        t["warm latency fit: ms per test (target <= 5)"] = w["fit_ms_per_test"]
        t["warm latency fit: ms per program (target <= 50)"] = w["fit_ms_per_program"]
    if jobs:
        t["main job: execution <= generation"] = all(j["execution_s"] <= j["generation_s"] for j in jobs)
    return t


def write_outputs(result: dict, out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    loads = ", ".join(f"{r['load_average']:.1f}" for r in result["runs"])
    lines = ["# Execution benchmark", "",
             f"{result['cpu_model']}, {result['cores']} usable cores, {result['workers']} workers, isolation "
             f"`{result['isolation']}`, Python {result['python']}, {result['date']}; `{result['command']}`. "
             f"Load average (1 min) after each run: {loads} (the machine is shared).", "",
             f"{result['programs']} programs, {result['tests']} tests per run; limit {TIMEOUT_S} s per test "
             f"({LOOP_TIMEOUT_S} s for the endless-loop variant). Median of {len(result['runs'])} run(s); "
             "tests/s spread over the runs in brackets (with 2 runs, the faster).", "",
             "Overheads per test / per program, three ways: *wall* = workers x wall seconds beyond the programs' "
             "own CPU time (their rusage under the floor), inflated by whatever else runs on the machine; *cpu* = "
             "CPU seconds the method made the machine spend (this process, its children, the zygote and its "
             "sandboxes) beyond the programs' own; *vs floor* = workers x wall seconds beyond the floor's.", "",
             "| method | seconds | tests/s [min-max] | tests/s w/o loops | programs/s/core | wall ms/test | "
             "cpu ms/test | vs floor ms/test | wall ms/prog | cpu ms/prog | vs floor ms/prog | verdicts != warm |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        g = lambda k: r.get(k, "-")  # noqa: E731
        lines.append(f"| {r['method']} | {r['seconds']} | {r['tests_per_s']} [{r['tests_per_s_min']}-"
                     f"{r['tests_per_s_max']}] | {r['tests_per_s_without_endless_loops']} | "
                     f"{r['programs_per_s_per_core']} | {g('overhead_ms_per_test')} | {g('cpu_overhead_ms_per_test')} | "
                     f"{g('wall_overhead_vs_floor_ms_per_test')} | {g('overhead_ms_per_program')} | "
                     f"{g('cpu_overhead_ms_per_program')} | {g('wall_overhead_vs_floor_ms_per_program')} | "
                     f"{g('verdicts_differing_from_warm')} |")
    warm = next((r for r in result["rows"] if r["method"] == "warm"), {})
    if "fit_ms_per_test" in warm:
        lines += ["", f"Warm sandbox latency beyond the program's own CPU time, per program, fitted as a + b x tests "
                  f"over the {warm['fit_programs']} programs without the endless loops: a = "
                  f"{warm['fit_ms_per_program']} ms per program (start, compile, seal, tear-down), b = "
                  f"{warm['fit_ms_per_test']} ms per test (fork, input, output, verdict); residual "
                  f"{warm['fit_residual_ms_rms']} ms rms."]
    lines += ["", "Targets:", ""] + [f"- {k}: {v}" for k, v in result["targets"].items()] + [""]
    if result["main_jobs"]:
        lines += ["Embedded default main job (`prompt-tree apps`, tiny model, 33 problems x 16 samples):", "",
                  "| run | generation s | execution s (summed over programs) | execution after generation s | total s |",
                  "|---|---|---|---|---|"]
        for i, j in enumerate(result["main_jobs"], 1):
            lines.append(f"| {i} | {j['generation_s']} | {j['execution_s']} | {j['execution_after_generation_s']} | "
                         f"{j['total_s']} |")
        lines.append("")
    if os.path.exists(out + ".png"):
        lines += [f"![tests per second](./{os.path.basename(out)}.png)", ""]
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines))


def plot(result: dict, out: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    methods = [r["method"] for r in result["rows"]]
    xs = list(range(len(methods)))
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for dx, key, label, color in ((-0.2, "tests_per_s", "all programs", "#8fb3d9"),
                                  (0.2, "tests_per_s_without_endless_loops", "without the endless loops", "#e3a66b")):
        ax.bar([x + dx for x in xs], [r[key] for r in result["rows"]], width=0.4, color=color, label=label)
    for run in result["runs"]:  # each run's all-programs value, to show the spread
        ax.plot([x - 0.2 for x in xs], [next(r["tests_per_s"] for r in run["rows"] if r["method"] == m)
                                        for m in methods], "k.", markersize=4)
    ax.set_xticks(xs, methods)
    ax.set_ylabel("tests / s")
    ax.legend(fontsize=8)
    ax.set_title(f"Executing {result['tests']} APPS tests on {result['workers']} workers ({result['cpu_model'][:30]})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=120)
    plt.close(fig)
    return True
