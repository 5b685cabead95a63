"""The garbage-collector policy of a generate call (engine.collector): no automatic full collection inside it, the
young generations still collected, the caller's thresholds back after it (also when it raises).

The heap is grown on purpose: the oldest generation is collected automatically only once it has grown by a quarter
since the last full collection, so each block keeps as many new tracked objects alive as the process held before
it. The control runs the same block without the policy and must see a full collection: without it, the main
assertion could not fail."""
from __future__ import annotations

import gc
import sys

import pytest

from prompt_tree.engine import Engine
from prompt_tree.engine.collector import young_collections_only
from prompt_tree.sampling import SamplingParams
from prompt_tree.tree import PromptTree

# The policy's effect exists only where CPython collects by three generations and a third threshold.
generational = pytest.mark.skipif(
    sys.version_info >= (3, 14) or not getattr(sys, "_is_gil_enabled", lambda: True)(),
    reason="Python 3.14's incremental collector and free-threaded builds ignore the third threshold "
           "(engine.collector)")


class Collections:
    """Counts automatic and explicit collections per generation while it is installed."""

    def __init__(self):
        self.by_gen = {0: 0, 1: 0, 2: 0}

    def __call__(self, phase, info):
        if phase == "start":
            self.by_gen[info["generation"]] += 1

    def __enter__(self):
        gc.collect()  # the oldest generation's growth counts from here
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


def grow_heap(keep: list, n: int) -> None:
    keep.extend([i] for i in range(n))  # one tracked list each, kept alive


@generational
def test_block_runs_young_collections_only():
    keep: list = []
    with Collections() as seen, young_collections_only():
        grow_heap(keep, len(gc.get_objects()) * 2)
    assert seen.by_gen[2] == 0 and seen.by_gen[0] > 0, seen.by_gen
    keep.clear()
    with Collections() as control:
        grow_heap(keep, len(gc.get_objects()) * 2)
    assert control.by_gen[2] > 0, control.by_gen


def test_thresholds_come_back_nested_raised_and_own():
    before = gc.get_threshold()
    with young_collections_only():
        with young_collections_only():
            assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > 10**9
        assert gc.get_threshold()[2] > 10**9  # the outer block is still running
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError):
        with young_collections_only():
            raise RuntimeError("a failing run")
    assert gc.get_threshold() == before
    with young_collections_only(active=False):
        assert gc.get_threshold() == before
    try:
        with young_collections_only():
            gc.set_threshold(500, 5, 5)  # the caller's own choice meanwhile is kept
        assert gc.get_threshold() == (500, 5, 5)
        gc.set_threshold(*before)
        with young_collections_only():
            gc.set_threshold(1000)  # only the first: the third, still out of reach, must come back
        assert gc.get_threshold() == (1000, *before[1:])
    finally:
        gc.set_threshold(*before)


def _generate_growing(eng: Engine, keep: list, per_sample: int):
    tree = PromptTree()
    tree.root.add("ab", key="p").add("", samples=8, key="s")
    return eng.generate(tree, SamplingParams(max_new_tokens=3, temperature=0.8, seed=0), progress=False,
                        on_complete=lambda key, i, c: grow_heap(keep, per_sample))


@generational
def test_generate_pauses_full_collections_and_option_restores_them():
    before = gc.get_threshold()
    per_sample = len(gc.get_objects()) // 4  # 8 samples: the heap doubles during the call
    keep: list = []
    eng = Engine.random("tiny", seed=0, cuda_graphs=False)
    control_eng = Engine.random("tiny", seed=0, cuda_graphs=False, full_collections=True)
    with Collections() as seen:
        res = _generate_growing(eng, keep, per_sample)
    assert len(res.all()) == 8 and seen.by_gen[0] > 0 and seen.by_gen[2] == 0, seen.by_gen
    assert gc.get_threshold() == before
    keep.clear()
    with Collections() as control:
        _generate_growing(control_eng, keep, per_sample)
    assert control.by_gen[2] > 0, control.by_gen
    assert gc.get_threshold() == before

    def fail(key, i, c):
        raise RuntimeError("the caller's callback failed")

    tree = PromptTree()
    tree.root.add("ab", key="p").add("", samples=2, key="s")
    with pytest.raises(RuntimeError, match="callback failed"):
        eng.generate(
            tree, SamplingParams(max_new_tokens=2), progress=False, on_complete=fail)
    assert gc.get_threshold() == before


def test_option_is_validated():
    with pytest.raises(TypeError, match="full_collections"):
        Engine.random("tiny", full_collections="no")


def run_objects_left_in_cycles(eng: Engine) -> list[str]:
    """Generate twice (the first warms caches up) and name the run objects only a full collection would free."""
    from prompt_tree.engine.run import GenerationRun
    from prompt_tree.engine.scheduler import Scheduler
    from prompt_tree.engine.sequence import Sequence

    tree = PromptTree()
    few = tree.root.add("few-shot ", key="f")
    for p in range(3):
        few.add(f"problem {p}", key=f"p{p}").add("", samples=5, key=f"s{p}")
    params = SamplingParams(max_new_tokens=6, temperature=0.8, seed=1, stop=["\n\n"])
    eng.generate(tree, params, progress=False)  # compiles, caches: whatever they leave is not this run's
    gc.collect()
    flags = gc.get_debug()
    gc.disable()
    try:
        res = eng.generate(tree, params, progress=False)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, (GenerationRun, Scheduler, Sequence))]
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        gc.enable()
    assert len(res.all()) == 15
    return left


def test_a_finished_run_is_freed_by_reference_counting():
    """The run, its scheduler and every Sequence are freed when generate returns, not left to a full collection
    (the scheduler once pointed back at its run: a cycle holding ~800k objects at the GSM8K job's shape)."""
    left = run_objects_left_in_cycles(Engine.random("tiny", seed=0, cuda_graphs=False))
    assert left == [], f"{len(left)} run objects were in reference cycles: {sorted(set(left))}"
