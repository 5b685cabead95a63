"""tools/rebuild_host.py times the composition it says, and a rebuild into a bucket whose metadata capacity is
set keeps the host mirrors equal to the rows (the path the tool times is the engine's path with CUDA graphs)."""
from __future__ import annotations

import numpy as np
import torch

from prompt_tree.engine.blocks import pages_for

from tests.tool_modules import load_tool


def _tool():
    return load_tool("rebuild_host")


def test_the_timed_rebuild_is_the_stated_composition_and_its_mirrors_match_the_rows():
    with torch.inference_mode():
        run = _tool().build_run(problems=3, samples=5, generated=37)
        run._rebuild()
        first = run.batch.meta.buffer.clone()
        run._rebuild()  # the timed case: same rows, the bucket's capacity reused, metadata written in place
    rows = run.rows
    assert len(rows) == 15 and run.batch.rows == run.opts.bucket(15)
    assert [s.index for s in rows] == sorted(s.index for s in rows)
    assert {s.path for s in rows} == {("shots", f"q{p}") for p in range(3)}  # three problems under one root
    ps = run.page_size
    for r, s in enumerate(rows):
        assert s.generated == 37 and len(s.pages) == pages_for(37, ps)
        assert run.table[r, :len(s.pages)].tolist() == s.pages and not run.table[r, len(s.pages):].any()
    assert not run.table[15:].any()  # padding rows read the scratch page
    assert run.next_gen.tolist() == [37] * 15 and run.covered.tolist() == [len(s.pages) * ps for s in rows]
    assert np.array_equal(run.batch.gen.cpu().numpy()[:15], run.next_gen)
    assert run.batch.live.cpu().tolist() == [True] * 15 + [False] * (run.batch.rows - 15)
    assert torch.equal(run.batch.meta.buffer, first)


def test_the_timed_admission_attempts_admit_nothing_and_leave_the_pages_as_they_were():
    with torch.inference_mode():
        run = _tool().build_run(problems=4, samples=80, generated=20, max_rows=160)
        assert len(run.rows) == 160 and len(run.scheduler.waiting) == 2  # two problems decode, two wait
        ms = _tool().admit_cases(run, generated=20, repeats=2)
    assert set(ms) == {"full", "pages"} and all(v > 0 for v in ms.values())
    assert len(run.scheduler.active) == 160 - 64 and len(run.scheduler.waiting) == 2
    run.blocks.check()  # the pages held aside for the "pages" case are back in the pool
