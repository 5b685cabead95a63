"""pass@k and the APPS summaries over checked samples.

Definitions (n samples of a problem, c of them correct; a sample is correct when every test verdict is True):
- pass@k (Chen et al. 2021, unbiased): the chance that k samples drawn without replacement from the n include a
  correct one, 1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (no huge binomials).
  k > n cannot be estimated from n samples: `pass_at_k` returns nan and `summarize` leaves such problems out of
  pass@k (it reports how many problems each pass@k averages over).
- strict accuracy: mean over problems of the fraction of samples passing all tests (c/n). With one sample per
  problem this is APPS's strict accuracy; with more it equals the unbiased pass@1.
- test-case average: mean over problems of the mean, over samples, of the fraction of tests passed (a compile
  error passes none), APPS's "test case average". Under --fail-fast a failing sample stops at its first failure
  and its later tests are not run: they count as not passed (the record's "tests" gives the test count), so the
  average is a lower bound and the summary says "test_case_average_partial": true. pass@k and strict accuracy
  need only whether a sample passed every test, which fail-fast does not change.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

OVERALL = "all"
_DIFFICULTY_ORDER = ("introductory", "interview", "competition")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct; nan when k > n (see the module docstring)."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"pass_at_k: {name} must be an int, got {v!r}")
    if n < 1 or k < 1:
        raise ValueError(f"pass_at_k: need n >= 1 and k >= 1, got n={n}, k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if k > n:
        return math.nan
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def sample_passed(verdicts: Sequence[Any]) -> bool:
    """A sample is correct when it has verdicts and every one is True (not 1: -1/-2 are error codes)."""
    return len(verdicts) > 0 and all(v is True for v in verdicts)


def _fraction_passed(verdicts: Sequence[Any], tests: int | None = None) -> float:
    """Tests passed / tests; `tests` (the problem's count) is larger than len(verdicts) after fail-fast."""
    n = max(len(verdicts), tests or 0)
    return sum(v is True for v in verdicts) / n if n else 0.0


def _validate(rec: Any, idx: int) -> None:
    if not isinstance(rec, dict) or "results" not in rec:
        raise ValueError(f"summarize: record {idx} must be a dict with 'results' (a list of per-sample verdict "
                         f"lists), got {type(rec).__name__}")
    res = rec["results"]
    if not isinstance(res, list) or not res or not all(isinstance(s, (list, tuple)) for s in res):
        raise ValueError(f"summarize: record {idx} ({rec.get('problem_id')!r}): 'results' must be a non-empty "
                         "list of per-sample verdict lists")
    tests = rec.get("tests")
    if tests is not None and (isinstance(tests, bool) or not isinstance(tests, int) or tests < 1):
        raise ValueError(f"summarize: record {idx} ({rec.get('problem_id')!r}): 'tests' must be the problem's "
                         f"test count (an int >= 1) or absent, got {tests!r}")


def summarize(records: Iterable[dict], ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Overall and per-difficulty metrics.

    records: one dict per problem, {"problem_id", "difficulty", "results": [[verdict per test] per sample],
    optionally "tests": the problem's test count}. Returns {"ks": [...], "groups": {"all": stats,
    "<difficulty>": stats, ...}} where stats = {"problems", "samples", "correct_samples", "strict_accuracy",
    "test_case_average", "test_case_average_partial", "pass_at_k": {k: mean pass@k or None},
    "pass_at_k_problems": {k: problems with n >= k}}.
    """
    ks = sorted(set(ks))
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"summarize: ks must be positive ints, got {ks!r}")
    groups: dict[str, list[dict]] = {OVERALL: []}
    for idx, rec in enumerate(records):
        _validate(rec, idx)
        groups[OVERALL].append(rec)
        groups.setdefault(str(rec.get("difficulty") or "unknown"), []).append(rec)
    order = [OVERALL] + [d for d in _DIFFICULTY_ORDER if d in groups] + sorted(
        d for d in groups if d != OVERALL and d not in _DIFFICULTY_ORDER)
    return {"ks": ks, "groups": {g: _group_stats(groups[g], ks) for g in order}}


def _group_stats(recs: list[dict], ks: list[int]) -> dict:
    per_k: dict[int, list[float]] = {k: [] for k in ks}
    strict, tca, samples, correct, partial = [], [], 0, 0, False
    for rec in recs:
        res, tests = rec["results"], rec.get("tests")
        n, c = len(res), sum(sample_passed(s) and (tests is None or len(s) >= tests) for s in res)
        samples += n
        correct += c
        strict.append(c / n)
        tca.append(sum(_fraction_passed(s, tests) for s in res) / n)
        partial = partial or (tests is not None and any(len(s) < tests for s in res))
        for k in ks:
            if k <= n:
                per_k[k].append(pass_at_k(n, c, k))
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "problems": len(recs),
        "samples": samples,
        "correct_samples": correct,
        "strict_accuracy": mean(strict),
        "test_case_average": mean(tca),
        "test_case_average_partial": partial,
        "pass_at_k": {k: mean(per_k[k]) for k in ks},
        "pass_at_k_problems": {k: len(per_k[k]) for k in ks},
    }


def format_table(summary: dict) -> str:
    """A Markdown table of `summarize`'s output, values in percent; '-' where no problem had n >= k."""
    ks = summary["ks"]
    head = ["group", "problems", "samples"] + [f"pass@{k}" for k in ks] + ["strict acc", "test avg"]
    rows = []
    pct = lambda v: "-" if v is None else f"{100.0 * v:.2f}"  # noqa: E731
    for name, st in summary["groups"].items():
        cells = [name, str(st["problems"]), str(st["samples"])]
        for k in ks:
            v = st["pass_at_k"].get(k, st["pass_at_k"].get(str(k)))  # str keys after a JSON round trip
            m = st["pass_at_k_problems"].get(k, st["pass_at_k_problems"].get(str(k), 0))
            cells.append(pct(v) + ("" if v is None or m == st["problems"] else f" ({m})"))
        cells += [pct(st["strict_accuracy"]),
                  pct(st["test_case_average"]) + (" (partial)" if st.get("test_case_average_partial") else "")]
        rows.append(cells)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]
    note = "pass@k in percent; '(m)': averaged over the m problems with at least k samples"
    if any(st.get("test_case_average_partial") for st in summary["groups"].values()):
        note += "; test avg (partial): --fail-fast left tests unrun, counted as failed (a lower bound)"
    return "\n".join(out) + "\n" + note
