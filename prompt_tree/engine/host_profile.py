"""Where the host's time between two decode launches goes, and which of it the device waited for.

The device idles before step j when the host's work since it launched step j-1 took longer than step j-1 ran.
That work is the read of an earlier step's tokens (stop strings, finishes, on_complete), admission, new KV
pages, and the launch itself; the time the host spends waiting for the device (a step's outputs, the first-token
sampling) is its own part, `wait`, since it is not host work. `HostClock` sums those parts between two launches;
the runner keeps each launch's parts beside its CUDA events; `gap_profile` then says how long the gaps were and,
over the launches that came late, which parts their time went to. Rebuilds, prefill calls and graph captures
break the chain (their own columns count them), so they are in no gap. Device work enqueued between two steps
(the first tokens of slices admitted beside the batch) runs in the gap; queued behind a step in flight, it is
timed, taken out of the idle and given apart as `between_s`.
"""
from __future__ import annotations

import time

PARTS = ("read", "finish", "admit", "pages", "launch", "wait", "other")
# A gap shorter than this is the launch latency of a graph replay, not a stall (~10-20 us on H100).
LATE_GAP_S = 0.5e-3


class HostClock:
    """Seconds per part of the host's work since the last launch. The host is in one part at a time: `switch`
    charges the time since the last switch to the part it leaves (so a finish inside a read counts once, as a
    finish), and `lap` returns the sums and starts over."""

    def __init__(self, now=time.perf_counter):
        self.now = now  # the time source (seconds); a test gives a fake one
        self.parts = dict.fromkeys(PARTS, 0.0)
        self.part = "other"
        self.t = now()

    def switch(self, part: str) -> str:
        """Enter `part`; returns the part left (to switch back to)."""
        now = self.now()
        self.parts[self.part] += now - self.t
        self.t = now
        left, self.part = self.part, part
        return left

    def lap(self) -> dict:
        self.switch(self.part)
        parts, self.parts = self.parts, dict.fromkeys(PARTS, 0.0)
        return parts


def _quantile(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def gap_profile(records: list[tuple[float, dict | None, float]]) -> dict:
    """records: (device idle seconds before a step, the host parts of its launch or None, device seconds of work
    enqueued between it and the step before), one per back-to-back step. -> gap quantiles in ms, the late steps'
    count and idle seconds, the work between steps (`between_s`), and per part the host seconds over all steps
    and over the late ones."""
    gaps = sorted(g for g, _, _ in records)
    late = [(g, p) for g, p, _ in records if g >= LATE_GAP_S]
    out = {"steps": len(records), "p50_ms": _quantile(gaps, 0.5) * 1e3, "p90_ms": _quantile(gaps, 0.9) * 1e3,
           "p99_ms": _quantile(gaps, 0.99) * 1e3, "max_ms": (gaps[-1] if gaps else 0.0) * 1e3,
           "late_steps": len(late), "late_idle_s": sum(g for g, _ in late),
           "between_s": sum(w for _, _, w in records)}
    for name, rows in (("host_s", [(g, p) for g, p, _ in records]), ("late_host_s", late)):
        out[name] = {k: sum(p[k] for _, p in rows if p is not None) for k in PARTS}
    return out
