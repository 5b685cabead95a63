"""Refuse a run that cannot fit before it starts, with the numbers (not a MemoryError traceback later).

A run holds one record per (problem, sample) in memory (prompt_tree.tasks.results.RunStore: the completion and the code
extracted from it, plus the verdicts), so problems x samples x bytes per sample must fit in the memory this
machine has available. Bytes per sample: the completion and the code, each up to max_new_tokens tokens of
about 4 bytes, plus ~1 KiB of record and bookkeeping (measured: a 64-token record with its verdict costs
~0.9 KiB in CPython).
"""
from __future__ import annotations

import os

BYTES_PER_TOKEN = 4
RECORD_OVERHEAD_BYTES = 1024


class RunSizeError(ValueError):
    """A run too large for this machine; the message has the numbers and what to lower."""


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_run_size(problems: int, samples: int, max_new_tokens: int, available: int | None = None) -> None:
    """Raise RunSizeError if problems x samples completions cannot be held in memory here."""
    total = problems * samples
    per_sample = 2 * BYTES_PER_TOKEN * max_new_tokens + RECORD_OVERHEAD_BYTES
    need = total * per_sample
    have = available if available is not None else available_memory_bytes()
    if have is not None and need > have:
        raise RunSizeError(
            f"--samples {samples:,} x {problems:,} problems = {total:,} completions; holding them needs about "
            f"{_gib(need)} ({per_sample:,} bytes each at --max-new-tokens {max_new_tokens}), more than the "
            f"{_gib(have)} this machine has available: lower --samples, --limit or --max-new-tokens")
