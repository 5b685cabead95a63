"""The host side of decode metadata at engine scale: the page table given as one array, shared segments from
run boundaries, capacity overflow as its own error, and which Triton kernels compile.

The engine rebuilds a batch's metadata from its numpy page table (thousands of rows): that path must give the
very buffer the per-row page lists give (those are checked against naive attention in tests/test_kernels_paged.py
and tests/test_kernels_capacity.py), and shared_segments, which scans runs of equal paths rather than rows, must find
the segments a plain scan finds.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from prompt_tree.kernels import CapacityOverflow, build_tree_meta, required_capacity, triton_compiles
from prompt_tree.kernels import compiles
from prompt_tree.engine.segments import Heads, decode_meta, shared_segments
from tests.test_kernels_capacity import bucket_case


def padded_table(pages: list[list[int]]) -> np.ndarray:
    """Page lists as one [rows, width] array, each row padded with its last page (empty rows: page 0)."""
    width = max([len(p) for p in pages] + [1])
    return np.array([p + [p[-1] if p else 0] * (width - len(p)) for p in pages], dtype=np.int32)


@pytest.mark.parametrize("trial", range(6))
def test_array_page_table_builds_the_page_list_meta(trial):
    seed = random.randrange(1 << 30) + trial
    _, _, _, kw = bucket_case(seed, 24, paged=True, depth=1 + trial % 4)
    want = build_tree_meta(**kw)
    for table in (padded_table(kw["own_pages"]), torch.from_numpy(padded_table(kw["own_pages"])).long()):
        got = build_tree_meta(**{**kw, "own_pages": table})
        assert torch.equal(got.buffer, want.buffer), f"seed {seed}"
        assert got.layout == want.layout and got.splits == want.splits and got.needed == want.needed
        assert (got.kv_extent, got.kv_extent_owner) == (want.kv_extent, want.kv_extent_owner)
        cap = required_capacity(want).grow(1.5)
        assert torch.equal(build_tree_meta(**{**kw, "own_pages": table}, capacity=cap).buffer,
                           build_tree_meta(**kw, capacity=cap).buffer)


def test_array_page_table_is_checked():
    _, _, _, kw = bucket_case(3, 8, paged=True)
    table = padded_table(kw["own_pages"])
    with pytest.raises(ValueError, match="2-D integer"):
        build_tree_meta(**{**kw, "own_pages": table.astype(np.float32)})
    with pytest.raises(ValueError, match="own_pages has 7 rows but there are 8"):
        build_tree_meta(**{**kw, "own_pages": table[:7]})
    bad = table.copy()
    bad[5, 0] = -2
    with pytest.raises(ValueError, match=r"own_pages\[5\] holds a negative page id -2"):
        build_tree_meta(**{**kw, "own_pages": bad})
    caps = kw["own_capacity"]
    b = max(range(8), key=lambda i: caps[i])
    if -(-caps[b] // 16) > 1:  # a table one page too narrow for the longest row
        with pytest.raises(ValueError, match=rf"own_pages\[\d+\] has \d+ pages"):
            build_tree_meta(**{**kw, "own_pages": table[:, :-(-caps[b] // 16) - 1]})


def scan_segments(paths, node_runs):
    """The plain scan: at each depth, a maximal run of consecutive rows reading the same node is one segment."""
    out = []
    for a in range(max((len(p) for p in paths), default=0)):
        lo = 0
        while lo < len(paths):
            key = paths[lo][a] if a < len(paths[lo]) else None
            hi = lo + 1
            while hi < len(paths) and (paths[hi][a] if a < len(paths[hi]) else None) == key:
                hi += 1
            if key is not None:
                out += [(s, n, lo, hi) for s, n in node_runs(key)]
            lo = hi
    return out


@pytest.mark.parametrize("trial", range(20))
def test_shared_segments_equal_the_plain_scan(trial):
    rng = random.Random(trial)
    runs = {}
    paths = []
    # a random tree in plan order: depths 1..4, unequal branching, nodes stored in one or two runs
    def walk(prefix, depth):
        for _ in range(rng.randint(1, 4)):
            node = f"n{len(runs)}"
            runs[node] = [(rng.randrange(1000), rng.randint(1, 50)) for _ in range(rng.choice([1, 1, 2]))]
            if depth < 4 and rng.random() < 0.6:
                walk(prefix + (node,), depth + 1)
            else:
                paths.extend([prefix + (node,)] * rng.randint(1, 3))
    walk((), 1)
    if rng.random() < 0.3:
        paths.append(())  # a row reading no shared node
    assert [tuple(s) for s in shared_segments(paths, runs.__getitem__)] == scan_segments(paths, runs.__getitem__)


@pytest.mark.parametrize("trial", range(20))
def test_shared_segments_take_maximal_runs_of_any_row_order(trial):
    """Not only plan order: equal paths as distinct objects, a node read again after other rows, rows of other
    depths (and none) between readers of one node: every maximal run at each depth is one segment."""
    rng = random.Random(1000 + trial)
    names = [f"n{i}" for i in range(4)]
    runs = {k: [(rng.randrange(1000), rng.randint(1, 9)) for _ in range(rng.choice([1, 2]))] for k in names}
    paths = []
    for _ in range(rng.randint(0, 40)):
        path = tuple(rng.choice(names[:2] if a == 0 else names) for a in range(rng.randint(0, 4)))
        paths.extend([tuple(list(path)) if rng.random() < 0.5 else path for _ in range(rng.randint(1, 4))])
    assert [tuple(s) for s in shared_segments(paths, runs.__getitem__)] == scan_segments(paths, runs.__getitem__)


def test_decode_meta_takes_the_engine_page_table():
    rng = random.Random(5)
    n, bucket, cap_pages, ps = 11, 16, 4, 16
    paths = [("a", "b" if r < 6 else "c") for r in range(n)]
    runs = {"a": [(0, 40)], "b": [(40, 9)], "c": [(49, 30)]}.__getitem__
    gens = [rng.randint(1, cap_pages * ps) for _ in range(n)]
    pages = [[8 + 4 * r + j for j in range(-(-g // ps))] for r, g in enumerate(gens)]
    table = np.zeros((bucket, cap_pages), dtype=np.int32)
    for r, p in enumerate(pages):
        table[r, :len(p)] = p
    heads = Heads(8, 2, 16)
    common = (cap_pages, bucket, runs, heads, ps, torch.device("cpu"), True, 132)
    want = decode_meta(paths, pages, gens, *common)
    got = decode_meta(paths, table, gens, *common)
    assert torch.equal(got.buffer, want.buffer) and got.layout == want.layout
    with pytest.raises(ValueError, match=r"the page table is \(16, 3\)"):
        decode_meta(paths, table[:, :3], gens, *common)


def test_capacity_overflow_is_a_value_error_that_carries_the_need():
    _, _, _, small = bucket_case(11, 12, depth=1)
    cap = required_capacity(build_tree_meta(**small))
    for seed in range(12, 60):
        _, _, _, big = bucket_case(seed, 12, depth=3, lengths=(1, 17, 40, 70))
        try:
            build_tree_meta(**big, capacity=cap)
        except CapacityOverflow as e:
            assert isinstance(e, ValueError) and cap.overflow(e.needed)
            unsplit = build_tree_meta(**big, num_sms=1)  # one SM: no shared splits, the smallest need
            assert e.needed == required_capacity(unsplit)
            return
    pytest.fail("no composition overflowed the small capacity")


def test_triton_compiles_chains_and_restores_the_hook():
    runtime = compiles._hooks()
    if runtime is None:
        pytest.skip("this triton has no jit_post_compile_hook")
    seen, got = [], []
    before = runtime.jit_post_compile_hook

    def outer(*args, **kwargs):
        seen.append(kwargs["repr"])

    runtime.jit_post_compile_hook = outer
    try:
        with triton_compiles(got):
            runtime.jit_post_compile_hook(repr="kernel_a(i32)")  # what triton calls after a compile
        assert got == ["kernel_a(i32)"] and seen == ["kernel_a(i32)"]
        assert runtime.jit_post_compile_hook is outer
    finally:
        runtime.jit_post_compile_hook = before


@pytest.mark.cuda
def test_triton_compiles_names_a_real_compile():
    import triton
    import triton.language as tl

    @triton.jit
    def fill_kernel(x, n, value: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        tl.store(x + i, value, mask=i < n)

    x = torch.zeros(37, device="cuda")
    got = []
    with triton_compiles(got):
        fill_kernel[(1,)](x, 37, 3.0, BLOCK=64)
    torch.cuda.synchronize()
    assert len(got) == 1 and "fill_kernel" in got[0]
    assert torch.equal(x, torch.full_like(x, 3.0))
    with triton_compiles(got):
        fill_kernel[(1,)](x, 37, 3.0, BLOCK=64)  # cached: no second compile
    assert len(got) == 1
