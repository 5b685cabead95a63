"""The paged KV pool's bookkeeping, admission units and the length model: property tests that nothing leaks
or is handed out twice, against a plain set-of-pages reference."""
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prompt_tree.engine.blocks import KVBlocks, OutOfPages, PagePool, pages_for
from prompt_tree.engine.scheduler import PRIOR_SAMPLES, LengthModel
from prompt_tree.engine.sequence import Sequence, make_units
from prompt_tree.tree import PromptTree


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 80), st.lists(st.tuples(st.sampled_from(["run", "page", "free"]), st.integers(1, 9)),
                                   max_size=60), st.randoms(use_true_random=False))
def test_page_pool_never_hands_a_page_out_twice(num_pages, ops, rnd):
    pool = PagePool(num_pages)
    held: list[list[int]] = []
    owned: set[int] = set()
    for op, n in ops:
        if op == "free" and held:
            pages = held.pop(rnd.randrange(len(held)))
            pool.free(pages)
            owned -= set(pages)
        elif op in ("run", "page"):
            want = n if op == "run" else 1
            if want > pool.free_pages:
                with pytest.raises(OutOfPages):
                    pool.alloc_run(want) if op == "run" else pool.alloc_page()
                continue
            pages = pool.alloc_run(want) if op == "run" else [pool.alloc_page()]
            assert len(pages) == want and len(set(pages)) == want
            assert not owned & set(pages), "a page handed out twice"
            assert all(1 <= p < num_pages for p in pages), "page 0 is the scratch page"
            owned |= set(pages)
            held.append(pages)
        free = {p for a, b in pool.free_runs() for p in range(a, b)}
        assert free.isdisjoint(owned) and len(free) + len(owned) == num_pages - 1 == pool.free_pages + len(owned)
        runs = pool.free_runs()
        assert all(a < b for a, b in runs) and all(r1[1] < r2[0] for r1, r2 in zip(runs, runs[1:])), \
            "runs must be sorted, disjoint and coalesced"
    for pages in held:
        pool.free(pages)
    assert pool.free_runs() == [(1, num_pages)]


def test_runs_are_contiguous_when_space_allows_and_suffixes_come_from_the_top():
    pool = PagePool(100)
    assert pool.alloc_run(10) == list(range(1, 11))
    assert pool.alloc_page() == 99
    pool.free([5])
    with pytest.raises(ValueError, match="twice"):
        pool.free([5])
    assert pool.alloc_run(3) == list(range(11, 14))  # first fit skips the 1-page hole
    frag = PagePool(8)
    pages = [frag.alloc_page() for _ in range(7)]
    frag.free(pages[::2])  # holes 7, 5, 3, 1
    assert sorted(frag.alloc_run(4)) == [1, 3, 5, 7]  # no run of 4: several runs


def test_node_runs_and_slots():
    blocks = KVBlocks(64, page_size=16)
    blocks.place_node("a", 40)
    assert blocks.node_pages["a"] == [1, 2, 3]
    assert blocks.node_runs("a") == [(16, 40)]
    blocks.place_node("empty", 0)
    assert blocks.node_runs("empty") == []
    # a node over two runs becomes two segments
    split = KVBlocks(6, page_size=16)
    split.place_node("x", 16)
    s = Sequence(0, "k", 0, 0, 1, ("x",), "x")
    split.ensure_suffix(s, 1)
    split.drop_node("x")
    split.place_node("y", 16 * 4)  # pages 1..4 are free but 5 holds the suffix: [1, 2, 3, 4]
    assert split.node_runs("y") == [(16, 64)]
    split.check()


def test_pins_and_suffixes_are_accounted():
    blocks = KVBlocks(40, page_size=16)
    blocks.place_node("root", 20)
    blocks.place_node("leaf", 5)
    seqs = [Sequence(i, "leaf", i, i, 25, ("root", "leaf"), "leaf") for i in range(3)]
    for s in seqs:
        blocks.pin(s.path)
        assert blocks.ensure_suffix(s, 1) == [(0, s.pages[0])]
        assert blocks.ensure_suffix(s, 16) == []  # positions 0..15 fit the first page
        assert [c for c, _ in blocks.ensure_suffix(s, 33)] == [1, 2]
    blocks.check()
    assert blocks.unpinned_nodes() == []
    with pytest.raises(AssertionError, match="dropped while"):
        blocks.drop_node("root")
    for s in seqs[:2]:
        assert blocks.unpin(s.path) == []
        blocks.release_suffix(s)
    assert blocks.unpin(seqs[2].path) == ["root", "leaf"]
    blocks.release_suffix(seqs[2])
    blocks.drop_node("leaf")
    blocks.drop_node("root")
    blocks.check()
    assert blocks.free_pages == 39


def _tree(rng: random.Random) -> PromptTree:
    tree = PromptTree()

    def grow(node, depth):
        for _ in range(rng.choice([1, 2, 3])):
            child = node.add([1] * rng.randrange(1, 3), samples=rng.choice([0, 1, 3, 7]))
            if depth < 3 and rng.random() < 0.6:
                grow(child, depth + 1)
            elif not child.samples:
                child.add([2], samples=rng.choice([1, 5]))

    grow(tree.root, 0)
    return tree


@pytest.mark.parametrize("seed", range(20))
def test_units_cover_the_plan_and_keep_small_subtrees_whole(seed):
    rng = random.Random(seed)
    plan = _tree(rng).flatten()
    cap = rng.choice([1, 2, 3, 5, 8, 1000])
    units = make_units(plan, cap)
    assert [a for a, _ in units] == [0] + [b for _, b in units[:-1]] and units[-1][1] == plan.num_sequences
    assert all(0 < b - a <= cap for a, b in units)
    for g in plan.groups():
        if g.size <= cap:  # a subtree that fits is one unit or lies inside one
            assert any(a <= g.start and g.stop <= b for a, b in units), (g, units)


def test_length_model_learns_from_finished_samples():
    static = LengthModel(512, static=True)
    assert static.expected(0) == 512
    m = LengthModel(512, static=False)
    assert m.expected(0) == 512  # nothing known: as cautious as a reservation
    for _ in range(1000):
        m.add(100)
    assert 100 <= m.expected(0) <= 100 + (512 - 100) * PRIOR_SAMPLES / 1000 + 1
    assert m.expected(100) == 512  # nobody finished after 100 tokens: the prior
    assert m.expected(511) == 512 and m.expected(300) >= 301
    assert pages_for(0, 16) == 0 and pages_for(16, 16) == 1 and pages_for(17, 16) == 2


def _km_reference(finished: list, running: list, max_new: int, x: int) -> float:
    """The product-limit estimate of P(length > x) written out: at each length t <= x, the share of those known
    to reach t (finished with length >= t, running with g >= t, the prior at max_new) that end at t."""
    ends = list(finished) + [max_new] * PRIOR_SAMPLES
    s = 1.0
    for t in range(1, x + 1):
        at_risk = sum(1 for L in ends if L >= t) + sum(1 for g in running if g >= t)
        d = sum(1 for L in ends if L == t)
        s *= 1 - d / at_risk
    return s


def test_length_model_counts_running_samples_as_censored():
    rng = np.random.default_rng(3)
    max_new = 40
    for trial in range(5):
        m = LengthModel(max_new, static=False)
        finished = [int(x) for x in rng.integers(1, max_new + 1, int(rng.integers(0, 30)))]
        running = [int(x) for x in rng.integers(0, max_new, int(rng.integers(0, 30)))]
        for x in finished:
            m.add(x)
        m.censor(np.bincount(running, minlength=max_new + 1))
        got = m.survival(np.arange(max_new + 5))
        want = [_km_reference(finished, running, max_new, min(x, max_new)) for x in range(max_new + 5)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)  # float64 products of a few dozen terms
        assert got[max_new] == 0 and np.all(np.diff(got) <= 0)
    # nothing running: the plain empirical survival of the finished lengths and the prior
    m = LengthModel(max_new, static=False)
    for x in (3, 3, 7, 40):
        m.add(x)
    m.censor(np.zeros(max_new + 1, dtype=np.int64))
    n = 4 + PRIOR_SAMPLES
    assert np.allclose(m.survival(np.array([0, 2, 3, 6, 7, 39])), np.array([n, n, n - 2, n - 2, n - 3, n - 3]) / n)


def test_censored_lengths_remove_the_early_bias():
    """A cohort of 2000 lognormal samples (median 180, sigma 0.6, cap 512) started together, seen at step 200:
    the finished ones alone (the short half) put a fresh sample's expected length far below the truth, which
    admits too much and preempts later; counting the running ones at risk, it is no lower than the truth (the
    lengths past 200 are only known to be long, the prior puts them at the cap)."""
    rng = np.random.default_rng(5)
    lengths = np.clip(np.round(np.exp(np.log(180) + 0.6 * rng.standard_normal(2000))), 1, 512).astype(int)
    step = 200
    naive, km = LengthModel(512, static=False), LengthModel(512, static=False)
    for x in lengths[lengths <= step]:
        naive.add(int(x))
        km.add(int(x))
    km.censor(np.bincount(np.full(int((lengths > step).sum()), step), minlength=513))
    truth = lengths.mean()
    assert naive.expected(0) < 0.75 * truth, (naive.expected(0), truth)
    assert truth <= km.expected(0) <= 1.5 * truth, (km.expected(0), truth)
    # and below step the estimate is the cohort's own survival, up to the prior's share
    x = np.arange(step + 1)
    cohort = (lengths[None, :] > x[:, None]).mean(1)
    assert np.max(np.abs(km.survival(x) - cohort)) < PRIOR_SAMPLES / 2000 + 1e-12


def _peak(model, page_size, gens, held):
    """Scheduler.peak_pages on its own: the admission rule without an engine."""
    from types import SimpleNamespace

    from prompt_tree.engine.scheduler import Scheduler

    me = SimpleNamespace(run=SimpleNamespace(page_size=page_size), lengths=model)
    counts = np.bincount(gens, minlength=model.max_new + 1)
    return Scheduler.peak_pages(me, counts, held)


def test_usage_table_is_the_expected_pages_held():
    """Monte Carlo against the model's own distribution: a sequence at g draws its final length from the
    finished lengths above g plus the prior at max_new, and holds pages_for(g + t + 1) while it runs."""
    rng = np.random.default_rng(0)
    max_new, ps = 64, 4
    m = LengthModel(max_new, static=False)
    finished = rng.integers(1, max_new + 1, 300)
    for x in finished:
        m.add(int(x))
    table = m.usage_table(ps)
    assert table.shape == (max_new + 1, max_new // ps + 1)
    pool = np.concatenate([finished, np.full(PRIOR_SAMPLES, max_new)])
    for g in (0, 5, 17, 40, 63):
        above = pool[pool > g]
        lengths = rng.choice(above, 20000)
        for h in range(table.shape[1]):
            t = h * ps
            held = np.where(lengths > g + t, -(-(g + t + 1) // ps), 0)
            se = held.std() / np.sqrt(len(held)) + 1e-12
            assert abs(held.mean() - table[g, h]) < 5 * se + 1e-9, (g, h, held.mean(), table[g, h])


def test_peak_admission_starts_as_cautious_as_a_reservation_and_learns():
    m = LengthModel(512, static=False)
    # nothing finished: fresh sequences are expected to reach max_new_tokens together
    assert _peak(m, 16, [0] * 10, 0) == 10 * pages_for(512, 16)
    rng = np.random.default_rng(1)
    lengths = np.clip(np.round(np.exp(np.log(180) + 0.6 * rng.standard_normal(2000))), 1, 512).astype(int)
    for x in lengths:
        m.add(int(x))
    # a batch at staggered points of its completions (a continuous batch's steady state)
    gens = [int(rng.integers(0, x)) for x in rng.choice(lengths, 1000)]
    held = sum(pages_for(g + 1, 16) for g in gens)
    peak = _peak(m, 16, gens, held)
    summed = sum(max(0, pages_for(max(1, m.expected(g) - 1), 16) - pages_for(g + 1, 16)) for g in gens)
    # never below what the batch holds at the next step (the peak includes h = 0), and well below the earlier
    # rule's, which kept every final length at once
    assert 0 <= peak < 0.6 * summed
