"""KV pool layout and cost, and the memory scheduler's sub-batches."""
import pytest
import torch

from prompt_tree.config import get_preset
from prompt_tree.kv import KVLayout, KVPool, bytes_needed, bytes_per_slot, node_keys_in_order
from prompt_tree.scheduler import SchedulingError, batch_cost, schedule
from prompt_tree.tree import PromptTree

CONFIG = get_preset("tiny")


def shared_tree() -> PromptTree:
    """A 1000-token prefix shared by 3 problems (each with 8 samples and a 200-token statement), one empty node."""
    tree = PromptTree()
    shots = tree.root.add(list(range(1000)), key="shots")
    for p in range(3):
        q = shots.add([7] * (200 + p), key=f"p{p}")
        q.add([], samples=8, key=f"p{p}/empty")
    return tree


def test_layout_stores_each_node_once_and_suffixes_apart():
    plan = shared_tree().flatten()
    lay = KVLayout.for_plan(plan, max_new_tokens=16)
    keys = node_keys_in_order(plan)
    assert keys[0] == "shots" and "p0/empty" not in keys  # empty nodes take no slots
    ranges = sorted((lay.node_start[k], lay.node_start[k] + lay.node_len[k]) for k in keys)
    ranges += [(s, s + lay.suffix_capacity) for s in lay.suffix_start]
    ranges.sort()
    assert ranges[0][0] == 0 and ranges[-1][1] == lay.num_slots
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, disjoint, no gaps
    assert lay.shared_slots == 1000 + 200 + 201 + 202 == plan.kv_tokens_shared
    assert lay.suffix_capacity == 15  # the last sampled token is never fed back
    assert lay.num_slots == lay.shared_slots + 24 * 15


def test_pool_bytes_match_prediction():
    plan = shared_tree().flatten()
    for dtype in (torch.float32, torch.bfloat16):
        pool = KVPool.for_plan(plan, 16, CONFIG, "cpu", dtype)
        predicted = bytes_needed(plan, 16, CONFIG, dtype)
        assert pool.nbytes == predicted == pool.layout.num_slots * bytes_per_slot(CONFIG, dtype)
        assert pool.k.shape == (CONFIG.num_layers, pool.layout.num_slots, CONFIG.num_kv_heads, CONFIG.head_dim)
        assert pool.k.data_ptr() != pool.v.data_ptr() and pool.kv.is_contiguous()
    # sharing: far below giving every sequence its own copy of its prompt
    flat_slots = sum(plan.prompt_len(i) for i in range(plan.num_sequences)) + plan.num_sequences * 15
    assert bytes_needed(plan, 16, CONFIG, torch.float32) < flat_slots * bytes_per_slot(CONFIG, torch.float32) / 5


def test_pool_write_targets_slots():
    plan = shared_tree().flatten()
    pool = KVPool.for_plan(plan, 4, CONFIG, "cpu", torch.float32)
    k = torch.randn(3, CONFIG.num_kv_heads, CONFIG.head_dim)
    slots = torch.tensor([5, 1000, pool.layout.num_slots - 1])
    pool.write(1, slots, k, -k)
    assert torch.equal(pool.k[1, slots], k) and torch.equal(pool.v[1, slots], -k)


def test_schedule_fits_budget_and_keeps_subtrees():
    plan = shared_tree().flatten()
    kw = dict(prefill_chunk_tokens=256)
    whole = batch_cost(plan, 16, CONFIG, torch.float32, **kw).total
    assert schedule(plan, 16, CONFIG, torch.float32, budget_bytes=whole, **kw) == [plan]
    budget = batch_cost(plan.subplan(0, 16), 16, CONFIG, torch.float32, **kw).total  # two problems fit, not three
    parts = schedule(plan, 16, CONFIG, torch.float32, budget_bytes=budget, **kw)
    assert [p.num_sequences for p in parts] == [16, 8]
    assert sum(p.num_sequences for p in parts) == plan.num_sequences
    assert [s for p in parts for s in p.sequences] == plan.sequences
    assert all(batch_cost(p, 16, CONFIG, torch.float32, **kw).total <= budget for p in parts)
    # a problem's 8 samples are never split over two sub-batches when a whole problem fits
    for p in parts:
        keys = {k for k, _ in p.sequences}
        assert all(sum(1 for k2, _ in p.sequences if k2 == k) == 8 for k in keys)
    explicit = schedule(plan, 16, CONFIG, torch.float32, budget_bytes=1, max_batch_sequences=5, **kw)
    assert max(p.num_sequences for p in explicit) == 5 and sum(p.num_sequences for p in explicit) == 24
    with pytest.raises(SchedulingError, match="one sequence needs"):
        schedule(plan, 16, CONFIG, torch.float32, budget_bytes=1000, **kw)
    with pytest.raises(ValueError, match="max_batch_sequences"):
        schedule(plan, 16, CONFIG, torch.float32, budget_bytes=whole, max_batch_sequences=0, **kw)
