"""Paged own segments and padding rows: the kernels read a sequence's own KV through its page table.

The yardstick is the same data stored contiguously: the kernels compute the same blocks in the same order and
only the addresses differ, so paged and contiguous outputs must be bit-identical (torch path, interpreter, GPU),
and both must meet the fp64 ground truth's error bound (tests/test_kernels.py's check_case, whose `out` is
NaN-poisoned so that an unwritten element fails). Every slot of the paged cache that holds no segment's data is
NaN: a read of a wrong page, or past a segment's end, would poison the output.
"""
from __future__ import annotations

import math
import random

import pytest
import torch

from prompt_tree.kernels import (LaunchOptions, Segment, build_tree_meta, naive_tree_attention, own_slots, query_slots,
                     tree_attention)
from prompt_tree.kernels.reference import own_slot_list
from tests.test_kernels import BACKENDS, CPU_DTYPES, DEVICE, check_case, make_case


def paged_copy(k, v, own_starts, own_lens, segments, page_size: int, rng: random.Random, extra_pages: int = 3):
    """The cache with each own segment moved into shuffled, non-contiguous pages (some with room to spare) after
    the shared region; every other slot NaN. Returns (k_paged, v_paged, own_pages, own_capacity)."""
    shared_end = max([s.kv_start + s.kv_len for s in segments] + [0])
    first = math.ceil(shared_end / page_size)
    caps = [n + rng.choice([0, 0, 1, page_size]) if n else 0 for n in own_lens]
    need = [math.ceil(c / page_size) for c in caps]
    ids = list(range(first, first + sum(need) + extra_pages))
    rng.shuffle(ids)
    pages, i = [], 0
    for n in need:
        pages.append(ids[i:i + n])
        i += n
    size = (first + len(ids)) * page_size
    k_p = torch.full((size,) + k.shape[1:], float("nan"), dtype=k.dtype, device=k.device)
    v_p = torch.full_like(k_p, float("nan"))
    k_p[:shared_end], v_p[:shared_end] = k[:shared_end], v[:shared_end]
    src = [own_starts[b] + p for b in range(len(own_lens)) for p in range(own_lens[b])]
    dst = [s for b in range(len(own_lens)) for s in own_slot_list(b, None, own_lens, pages, page_size)]
    if src:
        src_t = torch.tensor(src, device=k.device)
        dst_t = torch.tensor(dst, device=k.device)
        k_p[dst_t], v_p[dst_t] = k[src_t], v[src_t]
    return k_p, v_p, pages, caps


def check_paged(seed, heads, d, depth, lengths, own_lengths, dtype, backend, page_size, q_per_seq=1,
                own_splits=None, **op_kwargs):
    """Paged == contiguous (bitwise), both within the ground truth's bound."""
    q, k, v, q_lens, own_starts, own_lens, segs = make_case(seed, heads[0], heads[1], d, depth, lengths,
                                                            own_lengths, dtype, q_per_seq=q_per_seq)
    rng = random.Random(seed + 1)
    k_p, v_p, pages, caps = paged_copy(k, v, own_starts, own_lens, segs, page_size, rng)
    o_c, lse_c, meta_c = check_case(q, k, v, q_lens, own_starts, own_lens, segs, backend, own_splits=own_splits,
                                    **op_kwargs)
    hq, hkv = heads
    meta_p = build_tree_meta(q_lens, None, own_lens, segs, hq, hkv, d, q.device, own_pages=pages,
                             page_size=page_size, own_capacity=caps, own_splits=meta_c.own_splits)
    meta_p.check()
    assert meta_p.paged and meta_p.own_page_table.shape == (len(q_lens), max([len(p) for p in pages] + [1]))
    out = torch.full_like(q, float("nan"))
    o_p, lse_p = tree_attention(q, k_p, v_p, meta_p, return_lse=True, backend=backend, out=out, **op_kwargs)
    assert torch.equal(o_p, o_c) and torch.equal(lse_p, lse_c), "paged differs from the same data contiguous"
    # and against the reference reading the pages itself (the fp64 bound of check_case, through the pages)
    check_case(q, k_p, v_p, q_lens, None, own_lens, segs, backend, own_pages=pages, page_size=page_size,
               own_splits=meta_c.own_splits, **op_kwargs)
    return meta_p


PAGED_CASES = [
    # name, (hq, hkv), d, depth, node lengths, own lengths, q per sequence, page size
    ("decode_mha_p16", (4, 4), 16, 1, [17], [0, 1, 15, 16, 17, 33], 1, 16),
    ("decode_gqa4_p32_depth2", (8, 2), 16, 2, [1, 17], [1, 31, 32, 33, 70], 1, 32),
    ("decode_gqa8_p16_depth3", (16, 2), 16, 3, [0, 5, 17], [1, 16, 17, 65], 1, 16),
    ("decode_gqa4_p32_depth4", (8, 2), 32, 4, [1, 9], [0, 1, 33], 1, 32),
    ("prefill_gqa4_p16", (8, 2), 16, 2, [17], [16, 17, 40], 5, 16),
    ("prefill_mha_p32_depth3", (4, 4), 16, 3, [0, 9], [32, 33, 70], 17, 32),
    ("prefill_gqa8_p16_long", (16, 2), 16, 1, [20], [17, 65, 70], 70, 16),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("name,heads,d,depth,lengths,own,q_per_seq,page", PAGED_CASES, ids=[c[0] for c in PAGED_CASES])
def test_paged_equals_contiguous_and_reference(name, heads, d, depth, lengths, own, q_per_seq, page, dtype, backend):
    seed = random.randrange(1 << 30)
    try:
        check_paged(seed, heads, d, depth, lengths, own, dtype, backend, page, q_per_seq=q_per_seq)
    except AssertionError as e:
        raise AssertionError(f"seed {seed}: {e}") from None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("page", [16, 32])
def test_paged_own_splits_cross_pages(backend, page):
    """Own KV splits (64-aligned chunks, then the merge kernel) over pages of 16 or 32 slots."""
    seed = random.randrange(1 << 30)
    meta = check_paged(seed, (8, 2), 16, 2, [17], [100, 129, 1], torch.float32, backend, page, own_splits=3)
    assert meta.own_splits == 3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("page", [16, 32])
def test_chunked_prefill_reads_earlier_chunks_through_pages(backend, page):
    """A node of 45 tokens prefilled in chunks of 25 and 20: the second chunk's queries read the first chunk's
    keys through the node's pages. Chunk by chunk, and both chunks in one call (two query-sequences sharing the
    page list) equal the whole node at once and the ground truth."""
    g = torch.Generator().manual_seed(11)
    hq, hkv, d, n = 8, 2, 16, 45
    pages = [7, 2, 5, 0][:math.ceil(n / page)]  # shuffled; page 0 is slots 0..page-1
    shared = Segment(8 * page, 30, 0, 1)  # a parent node after the pages
    k = torch.randn(8 * page + 30, hkv, d, generator=g).to(DEVICE)
    v = torch.randn_like(k)
    q = torch.randn(n, hq, d, generator=g).to(DEVICE)

    def run(rows: slice, q_lens, own_lens):
        segs = [Segment(shared.kv_start, shared.kv_len, 0, len(q_lens))]
        meta = build_tree_meta(q_lens, None, own_lens, segs, hq, hkv, d, DEVICE, own_pages=[pages] * len(q_lens),
                               page_size=page)
        return tree_attention(q[rows], k, v, meta, backend=backend)

    ref, _ = naive_tree_attention(q, k, v, [n], None, [n], [shared], own_pages=[pages], page_size=page)
    for rows, q_lens, own_lens in ((slice(0, n), [n], [n]),  # the whole node at once
                                   (slice(0, 25), [25], [25]), (slice(25, n), [20], [n]),  # chunk by chunk
                                   (slice(0, n), [25, 20], [25, n])):  # both chunks in one call
        got = run(rows, q_lens, own_lens)
        # fp32 against fp64 over <= 75 keys: errors ~1e-6; a wrong key would be O(1)
        assert (got.double() - ref[rows]).abs().max() < 1e-5, (rows, q_lens)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
def test_padding_rows_are_exactly_zero(backend, paged):
    """A decode batch padded to a bucket with padding query-sequences (q_len 1, own_len 0, no segment, no pages):
    their rows are exactly 0 with lse -inf (never NaN), the real rows are bit-identical to the unpadded batch."""
    seed = random.randrange(1 << 30)
    q, k, v, q_lens, own_starts, own_lens, segs = make_case(seed, 8, 2, 16, 2, [17, 40], [1, 17, 33],
                                                            torch.float32)
    nb, pad = len(q_lens), 5
    layout, layout_pad = {}, {}
    if paged:
        k, v, pages, _ = paged_copy(k, v, own_starts, own_lens, segs, 16, random.Random(seed))
        own_starts = None
        layout, layout_pad = dict(own_pages=pages, page_size=16), dict(own_pages=pages + [[]] * pad, page_size=16)
    meta = build_tree_meta(q_lens, own_starts, own_lens, segs, 8, 2, 16, q.device, **layout)
    starts_pad = None if own_starts is None else own_starts + [0] * pad
    meta_pad = build_tree_meta(q_lens + [1] * pad, starts_pad, own_lens + [0] * pad, segs, 8, 2, 16, q.device,
                               own_splits=meta.own_splits, **layout_pad)
    q_pad = torch.cat([q, torch.randn(pad, 8, 16, device=q.device)])
    o, lse = tree_attention(q, k, v, meta, return_lse=True, backend=backend)
    out = torch.full_like(q_pad, float("nan"))
    o_pad, lse_pad = tree_attention(q_pad, k, v, meta_pad, return_lse=True, backend=backend, out=out)
    t = q.shape[0]
    assert torch.equal(o_pad[:t], o) and torch.equal(lse_pad[:t], lse)
    assert torch.all(o_pad[t:] == 0) and torch.all(lse_pad[t:] == float("-inf"))
    assert own_slots(meta_pad, empty_slot=-7)[nb:].tolist() == [-7] * pad


def _host_slots(q_lens, own_starts, own_lens, pages, page_size, empty):
    """own_slots and query_slots computed the plain way from the reference's slot rule."""
    own, rows = [], []
    for b, n in enumerate(own_lens):
        slots = own_slot_list(b, own_starts, own_lens, pages, page_size)
        own.append(slots[-1] if n else empty)
        rows += [slots[n - q_lens[b] + i] if n else empty for i in range(q_lens[b])]
    return own, rows


@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
def test_own_slots_follow_the_slot_rule(paged):
    """own_slots / query_slots (device ops) against the reference's slot list, before and after an in-place
    decode step (own_len + 1), padding rows giving the caller's scratch slot."""
    rng = random.Random(5)
    nb = 9
    own_lens = [rng.choice([0, 1, 15, 16, 17, 31, 32, 33]) for _ in range(nb)]
    q_lens = [min(n, rng.choice([1, 3])) if n else 1 for n in own_lens]
    pages, size, starts = None, None, None
    if paged:
        size = rng.choice([16, 32])
        pool = list(range(40))
        rng.shuffle(pool)
        pages = [[pool.pop() for _ in range(math.ceil((n + 1) / size))] for n in own_lens]
    else:
        starts = [200 * b + rng.randint(0, 9) for b in range(nb)]
    meta = build_tree_meta(q_lens, starts, own_lens, [], 4, 2, 16, own_pages=pages, page_size=size,
                           own_capacity=[n + 1 for n in own_lens])
    want_own, want_rows = _host_slots(q_lens, starts, own_lens, pages, size, -3)
    assert own_slots(meta, -3).tolist() == want_own and query_slots(meta, -3).tolist() == want_rows
    assert own_slots(meta).dtype == torch.int64
    meta.own_len.add_((meta.own_len > 0).int())  # one decode step for the non-empty ones
    grown = [n + 1 if n else 0 for n in own_lens]
    assert own_slots(meta, -3).tolist() == _host_slots(q_lens, starts, grown, pages, size, -3)[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_range_segments_are_one_node(backend):
    """One node stored in three runs of slots (three segments with the same sequence range) reads as the node
    stored in one run: each run is a slot of its own, merged like any other."""
    g = torch.Generator().manual_seed(3)
    hq, hkv, d = 8, 2, 16
    k = torch.randn(300, hkv, d, generator=g).to(DEVICE)
    v = torch.randn_like(k)
    q = torch.randn(4, hq, d, generator=g).to(DEVICE)
    # node 0..69 contiguous at 0, a child run for sequences 2..3; the same node as runs 100..119, 150..179, 200..219
    k[100:120], k[150:180], k[200:220] = k[0:20], k[20:50], k[50:70]
    v[100:120], v[150:180], v[200:220] = v[0:20], v[20:50], v[50:70]
    child = Segment(70, 9, 2, 4)
    own = dict(q_lens=[1] * 4, own_starts=[230, 240, 250, 260], own_lens=[3, 5, 1, 7])
    whole = [Segment(0, 70, 0, 4), child]
    runs = [Segment(100, 20, 0, 4), child, Segment(150, 30, 0, 4), Segment(200, 20, 0, 4)]
    o_runs, _, meta = check_case(q, k, v, *own.values(), runs, backend)
    assert meta.seq_shared_slots.tolist() == [3, 3, 4, 4]
    o_whole, _, _ = check_case(q, k, v, *own.values(), whole, backend)
    assert (o_runs - o_whole).abs().max() < 1e-5


def test_paged_metadata_errors_name_the_problem():
    ok = dict(q_lens=[1, 1], own_starts=None, own_lens=[3, 17], segments=[], num_q_heads=4, num_kv_heads=2,
              head_dim=16)
    with pytest.raises(ValueError, match="own_pages and page_size go together"):
        build_tree_meta(**ok, own_pages=[[0], [1, 2]])
    with pytest.raises(ValueError, match="power of two"):
        build_tree_meta(**ok, own_pages=[[0], [1, 2]], page_size=12)
    with pytest.raises(ValueError, match=r"own_pages\[1\] has 1 pages \(16 slots\) but query-sequence 1 may hold 17"):
        build_tree_meta(**ok, own_pages=[[0], [1]], page_size=16)
    with pytest.raises(ValueError, match=r"give it at least 3 pages"):
        build_tree_meta(**ok, own_pages=[[0], [1, 2]], page_size=16, own_capacity=[3, 40])
    with pytest.raises(ValueError, match="negative page id"):
        build_tree_meta(**ok, own_pages=[[0], [1, -2]], page_size=16)
    with pytest.raises(ValueError, match="own_starts must be None or all 0"):
        build_tree_meta(**{**ok, "own_starts": [0, 5]}, own_pages=[[0], [1, 2]], page_size=16)
    with pytest.raises(ValueError, match="own_pages has 1 rows but there are 2"):
        build_tree_meta(**ok, own_pages=[[0]], page_size=16)
    with pytest.raises(ValueError, match="own_starts is needed"):
        build_tree_meta(**ok)
    with pytest.raises(ValueError, match="own_splits must be None"):
        build_tree_meta(**{**ok, "own_starts": [0, 5]}, own_splits=0)
    # the cache must hold the largest page, named in the op's error
    meta = build_tree_meta(**ok, own_pages=[[0], [1, 6]], page_size=16)
    assert meta.kv_extent == 7 * 16
    q, kv = torch.randn(2, 4, 16), torch.randn(100, 2, 16)
    with pytest.raises(ValueError, match=r"slots up to 111 \(own pages of query-sequence 1\) but the cache has only 100"):
        tree_attention(q, kv, kv, meta)


def test_launch_options_are_validated():
    with pytest.raises(ValueError, match="overlap must be None, True or False"):
        LaunchOptions(overlap="yes")
    with pytest.raises(ValueError, match="pdl must be True or False"):
        LaunchOptions(pdl=1)
    with pytest.raises(ValueError, match="overlap_min_bytes must be an int >= 0"):
        LaunchOptions(overlap_min_bytes=-1)
    meta = build_tree_meta([1], [0], [1], [], 4, 2, 16)
    with pytest.raises(ValueError, match="options must be a prompt_tree.kernels.LaunchOptions"):
        tree_attention(torch.randn(1, 4, 16), torch.randn(2, 2, 16), torch.randn(2, 2, 16), meta, options=True)


@pytest.mark.cuda
@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("page", [16, 32])
@pytest.mark.parametrize("q_per_seq", [1, 33], ids=["decode", "prefill"])
def test_cuda_paged_equals_contiguous(overlap, page, q_per_seq):
    seed = random.randrange(1 << 30)
    try:
        check_paged(seed, (32, 8), 128, 3, [1, 17, 97, 300], [1, 16, 17, 200, 513], torch.bfloat16, "triton", page,
                    q_per_seq=q_per_seq, options=LaunchOptions(overlap=overlap))
    except AssertionError as e:
        raise AssertionError(f"seed {seed}: {e}") from None
    assert DEVICE == "cuda"
