"""CPython's cyclic garbage collector during a generate call: the young generations only.

Why. A full collection walks every tracked object of the process. A generate call adds a few tracked objects per
sample (its Sequence, token list and Completion, the job's result rows), and CPython runs a full collection each
time the oldest generation has grown by a quarter, so their number grows with the log of the job's size and each
walks the whole heap while the device waits for the next step. Reproduced on the development CPU (2 cores,
Python 3.11) with the GSM8K job's shape (128 problems x 1,024 samples, APPS stop strings, lengths lognormal around
60 capped at 160, tiny model, no attention): 28 full collections took 12.2-12.8 s of the call's host time (two
runs), the longest 0.79-0.82 s, with 1.09M tracked objects at the end; the same loop with this module took
12.9 s less. The GPU host's Python 3.12 ran fewer: 11 full collections, 2.0 s, in the whole H100 job process
(docs/benchmarks.md, seventeenth session), whose wall time this did not move.

What changes. Inside `young_collections_only()` the oldest generation's threshold is set out of reach; the first
two generations are collected as before, so a cycle made and dropped within a few steps dies as it did. A cycle
that survives into the oldest generation waits for the end of the call, when the thresholds the caller had come
back and the collector runs by its own rule again. What the oldest generation holds during a run is the plan, the
batch and the finished samples: they outlive the call, so a full collection inside it frees next to nothing.
An explicit `gc.collect()` still runs a full collection (the runner's one before its first graph capture does).

Python 3.14's incremental collector ignores the third threshold and bounds each pause itself; there the context
changes nothing, and so does a free-threaded build, whose collector has no generations.

What it costs. Full collections are deferred, not removed: once the thresholds are back, the oldest generation's
count is far past its trigger, so CPython runs one full collection soon after the call, over the whole heap, at
a moment when no device waits for the host. Measured on the H100 host before the run's reference cycle was broken
(engine.scheduler): one 4.0 s collection after the job, which had freed ~800k objects of that cycle, against 11
collections of 2.0 s in all inside it. The thresholds are process-wide: other threads (the APPS checker's, an
on_complete that builds cycles) run under the same rule during the call; concurrent and nested generate calls
share one saved value, restored when the last of them leaves.
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Iterator

# Young collections between two full ones; gen2's count grows by one per gen1 collection, so at ~10 steps per
# gen1 collection this is never reached.
_OUT_OF_REACH = 2**31 - 1

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, ...] | None = None


@contextmanager
def young_collections_only(active: bool = True) -> Iterator[None]:
    """Run the block with CPython's full automatic collections paused (active=False: a no-op)."""
    global _depth, _saved
    if not active:
        yield
        return
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(*_saved[:2], _OUT_OF_REACH)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                # Only the third threshold was this block's; whatever else was set meanwhile stays, and a third
                # threshold someone else chose stays too. `gc.set_threshold(1000)` inside the call keeps the
                # third value as it was, out of reach: comparing all three would leave it there for good.
                now = gc.get_threshold()
                if now[2] == _OUT_OF_REACH:
                    gc.set_threshold(now[0], now[1], _saved[2])
                _saved = None
