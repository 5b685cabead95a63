"""What a run reports: summary.json (pass@k overall and per difficulty, counts, throughput, timings), the text
report, and the bigcode-format export of the programs. One process and a torchrun run finish through the same
functions."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from prompt_tree.tasks.results import RunStore
from prompt_tree.tasks.run_config import RunConfig, run_identity

@dataclass
class RunReport:
    """What one invocation did (not the whole run's history): counts of work done now, timings, the summary."""

    summary: dict
    generated_now: int = 0
    executed_now: int = 0
    resumed_generations: int = 0
    resumed_verdicts: int = 0
    out_dir: str = ""


def jsonable_dict(d) -> dict:
    """A JSON-safe copy of a mapping or dataclass (the engine's GenerationSummary)."""
    if hasattr(d, "as_dict"):
        d = d.as_dict()
    elif not isinstance(d, dict):
        d = asdict(d)
    return json.loads(json.dumps(d, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


def build_summary(config: RunConfig, problems, store: RunStore, wanted, gen_info: dict, timings: dict) -> dict:
    """summary.json: pass@k overall and per difficulty (prompt_tree.tasks.metrics), counts, throughput and timings."""
    from prompt_tree.tasks.metrics import summarize

    records = per_problem_records(problems, store, wanted)
    metrics = summarize(records, list(config.k))
    wanted_set = set(wanted)
    tokens = sum(g.tokens or 0 for g in store.generations.values() if g.key in wanted_set)
    summary = {
        "config": dict(run_identity(config, problems), k=list(config.k)),
        "problems": len(problems),
        "samples": len(wanted),
        "generated": sum(1 for key in wanted if key in store.generations),
        "executed": sum(1 for key in wanted if key in store.verdicts),
        "duplicates": sum(1 for key in wanted if key in store.verdicts and store.verdicts[key].duplicate_of is not None),
        "tokens_generated": tokens,
        "metrics": metrics,
        "timings": timings,
    }
    if gen_info:
        summary["generation"] = gen_info
    return summary


def per_problem_records(problems, store: RunStore, wanted) -> list[dict]:
    """One record per problem for prompt_tree.tasks.metrics.summarize: problem_id, difficulty, and each sample's per-test
    verdicts. A problem without any verdict (a failed run) is left out rather than counted as failing."""
    by_pid: dict[str, list[int]] = {}
    for pid, i in wanted:
        by_pid.setdefault(pid, []).append(i)
    out = []
    for p in problems:
        keys = [(p.problem_id, i) for i in by_pid.get(p.problem_id, [])]
        results = [store.verdicts[key].results for key in keys if key in store.verdicts]
        if results:
            out.append({"problem_id": p.problem_id, "difficulty": p.difficulty, "results": results,
                        "tests": p.num_tests})
    return out


def format_report(summary: dict) -> str:
    from prompt_tree.tasks.metrics import format_table

    lines = [format_table(summary["metrics"])]
    t = summary["timings"]
    gen = summary.get("generation", {})
    lines.append(
        f"problems {summary['problems']}, samples {summary['samples']}, tokens {summary['tokens_generated']}"
        + (f", {gen['tokens_per_s']:.1f} tokens/s" if gen.get("tokens_per_s") else "")
    )
    lines.append(
        f"time: generation {t['generation_s']:.1f}s, execution {t['execution_s']:.1f}s summed over programs "
        f"({t['execution_after_generation_s']:.1f}s after generation ended), total {t['total_s']:.1f}s"
    )
    return "\n".join(lines)


def export_programs(config: RunConfig, problems: Sequence, store: RunStore, wanted, log: Callable[[str], None]) -> None:
    """config.export_bigcode, when set: every wanted sample's program, problem-major in sample order, in the
    format bigcode-evaluation-harness reads (prompt_tree.tasks.bigcode)."""
    if not config.export_bigcode:
        return
    from prompt_tree.tasks.bigcode import export_bigcode

    programs: dict[str, list[str]] = {}
    for pid, i in wanted:
        programs.setdefault(pid, []).append(store.generations[(pid, i)].code)
    export_bigcode(config.export_bigcode, problems, programs)
    log(f"wrote bigcode-format generations to {config.export_bigcode}")
