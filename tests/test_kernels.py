"""Tree attention kernels against the torch ground truth, over named awkward cases.

Error bound (argued, not tuned): a kernel's relative error against the fp64 ground truth must be at most twice the
error of torch doing the same computation plainly in the same precision (scores, softmax and weighted sum in the
input dtype), plus, in fp32 only, the known cost of the base-2 softmax: scores are multiplied by log2(e) before
exp2, which rounds the exponent argument by up to |s log2 e| * 2^-24 and so perturbs each weight relatively by as
much; we allow twice that for the largest score. In fp16 that term is ~1e-6 against errors of ~1e-3 and is
negligible. NaN never passes. Kernels run under the Triton interpreter on CPU (fp16 and fp32; the interpreter
cannot do bf16, triton-lang/triton#11584) and natively on CUDA (bf16 too).
"""
from __future__ import annotations

import math
import random

import pytest
import torch

from prompt_tree.kernels import (LaunchOptions, Segment, build_tree_meta, cuda_graph_path, launch, merge_states,
                     naive_tree_attention, tree_attention, triton_tree)
from prompt_tree.kernels.reference import attention_lse, naive_tree_attention_lowp

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["torch", "triton"]
CPU_DTYPES = [torch.float32, torch.float16]


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(x).any(), "NaN in output"
    return ((x.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def random_tree(rng: random.Random, depth: int, max_children: int, lengths: list[int], samples_max: int = 3):
    """A random prompt tree as (segments, number of sequences): node KV lengths drawn from `lengths`, unequal
    branching (0..max_children children; a childless node takes 1..samples_max samples), exactly `depth` levels
    on at least one path."""
    segments = []
    cursor = [0]  # next free KV slot
    nseq = [0]

    def node(level: int, force_deep: bool):
        n = rng.choice(lengths)
        kv_start = cursor[0]
        cursor[0] += n
        lo = nseq[0]
        kids = 0 if level == depth - 1 else rng.randint(1 if force_deep else 0, max_children)
        if kids == 0:
            nseq[0] += rng.randint(1, samples_max)
        for c in range(kids):
            node(level + 1, force_deep and c == 0)
        segments.append(Segment(kv_start, n, lo, nseq[0]))

    node(0, True)
    if rng.random() < 0.5:  # a second root-level node: a forest under the implicit root
        node(0, False)
    return segments, nseq[0], cursor[0]


def make_case(seed: int, hq: int, hkv: int, d: int, depth: int, lengths, suffix_lengths, dtype, q_per_seq=1):
    rng = random.Random(seed)
    segments, nseq, used = random_tree(rng, depth, 3, lengths)
    own_lens = [rng.choice(suffix_lengths) for _ in range(nseq)]
    q_lens = [min(q_per_seq, n) if n else (q_per_seq if rng.random() < 0.5 else 0) for n in own_lens]
    own_starts = []
    cursor = used + 3
    for n in own_lens:
        own_starts.append(cursor)
        cursor += n + rng.randint(0, 5)  # gaps: unused capacity between suffixes
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(cursor + 1, hkv, d, generator=g).to(dtype)
    v = torch.randn(cursor + 1, hkv, d, generator=g).to(dtype)
    q = torch.randn(sum(q_lens), hq, d, generator=g).to(dtype)
    return q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), q_lens, own_starts, own_lens, segments


def check_case(q, k, v, q_lens, own_starts, own_lens, segments, backend, *, share=True, num_sms=None,
               own_pages=None, page_size=None, own_splits=None, capacity=None, **op_kwargs):
    """Build the metadata, run the op with a NaN-poisoned `out` and check it against the fp64 ground truth
    (error bound in the module doc). Returns (o, lse, meta)."""
    hq, d, hkv = q.shape[1], q.shape[2], k.shape[1]
    layout = dict(own_pages=own_pages, page_size=page_size)
    ref, ref_lse = naive_tree_attention(q, k, v, q_lens, own_starts, own_lens, segments, **layout)
    meta = build_tree_meta(q_lens, own_starts, own_lens, segments, hq, hkv, d, q.device, share=share,
                           num_sms=num_sms, own_splits=own_splits, capacity=capacity, **layout)
    meta.check()
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    o, lse = tree_attention(q, k, v, meta, return_lse=True, backend=backend, out=out, **op_kwargs)
    assert o.data_ptr() == out.data_ptr()
    low = naive_tree_attention_lowp(q, k, v, q_lens, own_starts, own_lens, segments, **layout)
    if ref.norm() == 0:  # every row sees nothing: exactly zero output, -inf lse
        assert torch.all(o == 0) and torch.all(torch.isinf(lse))
        return o, lse, meta
    err, err_torch = rel_err(o, ref), rel_err(low, ref)
    slack = 0.0
    if q.dtype == torch.float32:
        max_score = (q.double().abs().sum(-1).max() * k.double().nan_to_num().abs().max() / math.sqrt(d)).item()
        slack = 2 * max_score * math.log2(math.e) * 2.0**-24
    assert err <= 2 * err_torch + slack, f"{backend}: error {err:.3g} vs torch {err_torch:.3g} (+{slack:.2g})"
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), "LSE is -inf exactly where a row sees no key"
    assert torch.all(o[~finite.all(-1)] == 0), "a row that sees no key must be exactly 0"
    lse_err = (lse.double() - ref_lse)[finite].abs().max().item() if finite.any() else 0.0
    assert lse_err <= (1e-4 if q.dtype == torch.float32 else 2e-2), f"lse error {lse_err}"
    return o, lse, meta


# --- the reference itself ------------------------------------------------------------------------------------


def test_attention_lse_matches_definition():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(5, 4, 16, generator=g, dtype=torch.float64) for _ in range(3))
    o, lse = attention_lse(q, k, v, dtype=torch.float64)
    s = torch.einsum("qhd,khd->hqk", q, k) / 4.0
    w = torch.exp(s) / torch.exp(s).sum(-1, keepdim=True)
    assert torch.allclose(o, torch.einsum("hqk,khd->qhd", w, v), atol=1e-12)
    assert torch.allclose(lse, torch.log(torch.exp(s).sum(-1)).T, atol=1e-12)


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_merge_is_attention_over_the_concatenation(parts):
    g = torch.Generator().manual_seed(parts)
    q = torch.randn(7, 8, 32, generator=g, dtype=torch.float64)
    lens = [1, 17, 0, 97, 3][:parts]
    ks = [torch.randn(n, 2, 32, generator=g, dtype=torch.float64) for n in lens]
    vs = [torch.randn(n, 2, 32, generator=g, dtype=torch.float64) for n in lens]
    pieces = [attention_lse(q, k, v, dtype=torch.float64) for k, v in zip(ks, vs)]
    o, lse = merge_states([p[0] for p in pieces], [p[1] for p in pieces])
    o_all, lse_all = attention_lse(q, torch.cat(ks), torch.cat(vs), dtype=torch.float64)
    assert torch.allclose(o, o_all, atol=1e-12) and torch.allclose(lse, lse_all, atol=1e-12)


def test_merge_of_empty_states_is_zero_not_nan():
    o = torch.randn(3, 4, 8)
    ninf = torch.full((3, 4), float("-inf"))
    out, lse = merge_states([o, o], [ninf, ninf])
    assert torch.all(out == 0) and torch.all(torch.isinf(lse)) and not torch.isnan(out).any()
    out, lse = merge_states([o, torch.randn(3, 4, 8)], [torch.zeros(3, 4), ninf])
    assert torch.allclose(out, o) and torch.all(lse == 0)


def test_causal_reference_matches_masked_definition():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(3, 2, 8, generator=g, dtype=torch.float64)
    k = torch.randn(5, 2, 8, generator=g, dtype=torch.float64)
    v = torch.randn(5, 2, 8, generator=g, dtype=torch.float64)
    o, _ = attention_lse(q, k, v, causal=True, dtype=torch.float64)
    for i in range(3):  # query i is key position i + 2
        oi, _ = attention_lse(q[i:i + 1], k[:i + 3], v[:i + 3], dtype=torch.float64)
        assert torch.allclose(o[i], oi[0], atol=1e-12)


# --- tree attention: decode ----------------------------------------------------------------------------------


DECODE_CASES = [
    # name, (hq, hkv), d, depth, node lengths, suffix lengths
    ("mha_depth1_odd", (4, 4), 32, 1, [97], [1, 17]),
    ("gqa4_depth2", (8, 2), 32, 2, [1, 17, 97], [1, 5, 17]),
    ("gqa7_depth3_empty_nodes", (7, 1), 16, 3, [0, 1, 17], [1, 2, 33]),
    ("gqa8_depth4", (16, 2), 16, 4, [1, 17, 0], [1, 3]),
    ("empty_suffix", (8, 2), 32, 2, [17, 97], [0, 0, 1]),
    ("headdim_40", (4, 2), 40, 2, [17, 1], [1, 9]),
    ("whole_kv_blocks", (8, 2), 32, 2, [64, 128, 65], [1, 64]),  # unmasked block loop with and without a tail
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("name,heads,d,depth,lengths,suffixes", DECODE_CASES, ids=[c[0] for c in DECODE_CASES])
def test_decode_matches_naive_tree(name, heads, d, depth, lengths, suffixes, dtype, backend):
    seed = random.randrange(1 << 30)  # fresh inputs each run; the seed is in the failure message
    case = make_case(seed, heads[0], heads[1], d, depth, lengths, suffixes, dtype)
    try:
        check_case(*case, backend)
    except AssertionError as e:
        raise AssertionError(f"seed {seed}: {e}") from None


@pytest.mark.parametrize("backend", BACKENDS)
def test_flat_equals_shared(backend):
    seed = random.randrange(1 << 30)
    case = make_case(seed, 8, 2, 32, 3, [1, 17, 40], [1, 9], torch.float32)
    check_case(*case, backend, share=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=["fp32", "fp16"])
def test_kv_splits_many_sms(backend, dtype):
    """A pretend GPU of 4096 SMs forces flash-decoding splits of shared and own segments."""
    seed = random.randrange(1 << 30)
    case = make_case(seed, 8, 2, 16, 2, [600, 530], [530], dtype)
    meta = build_tree_meta(*case[3:], 8, 2, 16, num_sms=4096)
    assert meta.own_splits > 1 and len(meta.splits) > len([s for s in case[6] if s.kv_len])
    check_case(*case, backend, num_sms=4096)


# --- tree attention: prefill (several query rows per sequence, causal own segment) -----------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("q_per_seq", [3, 17, 70])
def test_prefill_matches_naive_tree(q_per_seq, dtype, backend):
    seed = random.randrange(1 << 30)
    case = make_case(seed, 8, 2, 32, 3, [0, 1, 17, 97], [1, 17, 97], dtype, q_per_seq=q_per_seq)
    try:
        check_case(*case, backend)
    except AssertionError as e:
        raise AssertionError(f"seed {seed}: {e}") from None


def test_prefill_chunks_equal_whole():
    """A node prefilled in two chunks (the second chunk's own segment = the node's first tokens up to its end)
    gives the rows the same result as one call over the whole node."""
    g = torch.Generator().manual_seed(7)
    k = torch.randn(200, 2, 16, generator=g)
    v = torch.randn(200, 2, 16, generator=g)
    q = torch.randn(40, 4, 16, generator=g)
    segs = [Segment(0, 30, 0, 1)]
    whole = tree_attention(q, k, v, build_tree_meta([40], [50], [40], segs, 4, 2, 16), backend="torch")
    chunks = tree_attention(q, k, v, build_tree_meta([25, 15], [50, 50], [25, 40], [Segment(0, 30, 0, 2)], 4, 2,
                                                     16), backend="torch")
    assert torch.allclose(whole, chunks, atol=1e-6)


# --- metadata and errors -----------------------------------------------------------------------------------------


def test_metadata_slots_and_launches_do_not_grow_with_depth():
    for depth in (1, 2, 4):
        segs = [Segment(100 * i, 50, 0, 8 >> i if i < 3 else 1) for i in range(depth)]
        meta = build_tree_meta([1] * 8, [1000 + 10 * b for b in range(8)], [3] * 8, segs, 8, 2, 16)
        assert meta.num_launches <= 4
        assert meta.seq_shared_slots.tolist()[0] == depth


def test_metadata_rejects_crossing_segments():
    with pytest.raises(ValueError, match="overlap without nesting"):
        build_tree_meta([1] * 4, [10, 20, 30, 40], [1] * 4, [Segment(0, 5, 0, 3), Segment(5, 5, 2, 4)], 4, 2, 16)


def test_metadata_rejects_bad_lengths_and_heads():
    with pytest.raises(ValueError, match="query rows but an own segment"):
        build_tree_meta([3], [0], [2], [], 4, 2, 16)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        build_tree_meta([1], [0], [1], [], 6, 4, 16)
    with pytest.raises(ValueError, match="out of range"):
        build_tree_meta([1], [0], [1], [Segment(0, 5, 0, 2)], 4, 2, 16)


def test_op_rejects_mismatched_tensors():
    meta = build_tree_meta([1, 1], [0, 5], [1, 1], [], 4, 2, 16)
    q, k = torch.randn(2, 4, 16), torch.randn(10, 2, 16)
    with pytest.raises(ValueError, match="rows but the metadata"):
        tree_attention(torch.randn(3, 4, 16), k, k, meta)
    with pytest.raises(ValueError, match="do not match the metadata"):
        tree_attention(torch.randn(2, 8, 16), k, k, meta)
    with pytest.raises(ValueError, match="dtypes"):
        tree_attention(q.half(), k, k, meta)
    with pytest.raises(ValueError, match="scale must be a positive"):
        tree_attention(q, k, k, meta, scale=-0.5, backend="triton")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_op_rejects_kv_ranges_past_the_cache(backend):
    """The kernels do not bound-check slots, so the op refuses metadata that reads past the cache, naming what."""
    k = torch.randn(120, 2, 16, device=DEVICE)
    q = torch.randn(2, 4, 16, device=DEVICE)
    seg_meta = build_tree_meta([1, 1], [0, 5], [1, 1], [Segment(100, 60, 0, 2)], 4, 2, 16, DEVICE)
    with pytest.raises(ValueError, match=r"slots up to 159 \(segment 0\) but the cache has only 120"):
        tree_attention(q, k, k, seg_meta, backend=backend)
    own_meta = build_tree_meta([1, 1], [0, 118], [1, 1], [], 4, 2, 16, DEVICE, own_capacity=[1, 5])
    with pytest.raises(ValueError, match=r"slots up to 122 \(own segment of query-sequence 1\)"):
        tree_attention(q, k, k, own_meta, backend=backend)
    ok = build_tree_meta([1, 1], [0, 115], [1, 1], [Segment(100, 20, 0, 2)], 4, 2, 16, DEVICE, own_capacity=[1, 5])
    assert torch.isfinite(tree_attention(q, k, k, ok, backend=backend)).all()


def test_workspace_is_bounded_by_levels():
    """The fp32 workspace is O(T x heads x head_dim x slots), with slots = levels (+ splits), never O(KV)."""
    segs = [Segment(0, 4096, 0, 64), Segment(4096, 512, 0, 32), Segment(4608, 512, 32, 64)]
    meta = build_tree_meta([1] * 64, [6000 + 300 * b for b in range(64)], [256] * 64, segs, 32, 8, 128)
    assert meta.max_slots <= 2 + 1 + 64  # levels, own, bounded splits
    assert meta.workspace_bytes == 64 * meta.max_slots * 32 * 129 * 4


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("heads", [(32, 8), (40, 40), (28, 4), (14, 2)])
def test_cuda_decode_and_prefill(dtype, heads):
    seed = random.randrange(1 << 30)
    for q_per_seq in (1, 33):
        case = make_case(seed, heads[0], heads[1], 128, 3, [1, 17, 97, 300], [1, 17, 200], dtype,
                         q_per_seq=q_per_seq)
        # own kernel merging in its epilogue; own kernel on a side stream, then the merge kernel
        check_case(*case, "triton", options=LaunchOptions(overlap=False))
        check_case(*case, "triton", options=LaunchOptions(overlap=True))


@pytest.mark.cuda
@pytest.mark.parametrize("raw", [True, False], ids=["launcher", "runner"])
@pytest.mark.parametrize("overlap", [False, True])
def test_cuda_direct_launch_runs_the_same_kernels(overlap, raw):
    """Repeat launches skip Triton's dispatcher (prompt_tree/kernels/launch.py) and must give bit-identical results."""
    seed = random.randrange(1 << 30)
    q, k, v, q_lens, own_starts, own_lens, segs = make_case(seed, 32, 8, 128, 3, [1, 17, 97, 300], [1, 17, 200],
                                                            torch.bfloat16)
    meta = build_tree_meta(q_lens, own_starts, own_lens, segs, 32, 8, 128, q.device)
    q2 = torch.randn_like(q)
    jit = LaunchOptions(overlap=overlap, direct=False)
    want = [tree_attention(x, k, v, meta, options=jit) for x in (q, q2)]
    opts = LaunchOptions(overlap=overlap, raw=raw)
    got = [tree_attention(x, k, v, meta, options=opts) for x in (q, q2, q, q2)]
    assert triton_tree._LAUNCH_OWN.compiled, "the own kernel was never launched directly"
    for i, o in enumerate(got):
        assert torch.equal(o, want[i % 2]), f"call {i} (seed {seed})"
    # a q that is not 16-byte aligned goes through Triton every time, and is still right
    buf = torch.empty(q.numel() + 1, dtype=q.dtype, device=q.device)
    q_odd = buf[1:].view_as(q).copy_(q)
    assert torch.equal(tree_attention(q_odd, k, v, meta, options=opts), want[0])


@pytest.mark.cuda
def test_cuda_graph_path_warm_up_matches_the_replay():
    """A small plain call stays on one stream (fused merge); a capture overlaps on two. Inside cuda_graph_path()
    an eager call takes the capture's path: same kernels, same bits as the replay."""
    seed = random.randrange(1 << 30)
    q, k, v, q_lens, own_starts, own_lens, segs = make_case(seed, 32, 8, 128, 2, [17, 97, 300], [17, 200],
                                                            torch.bfloat16)
    meta = build_tree_meta(q_lens, own_starts, own_lens, segs, 32, 8, 128, q.device)
    out = torch.empty_like(q)
    ws = (torch.empty(q.shape[0], max(meta.max_slots, 1), 32, 128, device=q.device),
          torch.empty(q.shape[0], max(meta.max_slots, 1), 32, device=q.device))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), cuda_graph_path():
        eager = tree_attention(q, k, v, meta, out=out, workspace=ws).clone()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        tree_attention(q, k, v, meta, out=out, workspace=ws)
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager), f"seed {seed}"
    check_case(q, k, v, q_lens, own_starts, own_lens, segs, "triton")  # and the plain path is right too


class _FakeCompiled:
    function, packed_metadata = "function", "metadata"

    def __init__(self, log):
        self.log = log

    def __getitem__(self, grid):  # the public runner
        return lambda *args: self.log.append(("runner", grid, args))

    def run(self, g0, g1, g2, stream, function, metadata, launch_metadata, enter, exit_, *args):  # the launcher
        assert (function, metadata, launch_metadata, enter, exit_) == ("function", "metadata", None, None, None)
        self.log.append(("launcher", (g0, g1, g2), args))


class _FakeKernel:
    """Stands in for a @triton.jit function: records dispatcher launches, returns a recording 'compiled' kernel."""

    arg_names = ["X", "stride", "scale", "BLOCK"]

    def __init__(self):
        self.log = []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.log.append(("dispatch", grid, args, kwargs))
            return _FakeCompiled(self.log)
        return run


@pytest.mark.parametrize("raw", [True, False], ids=["launcher", "runner"])
def test_direct_launcher_caches_per_specialization(monkeypatch, raw):
    """The launcher's key: ints, dtypes, constexprs and options pick the compiled kernel; floats do not; a
    misaligned pointer always goes through the dispatcher."""
    monkeypatch.setattr(launch, "_on_gpu", lambda t: True)
    monkeypatch.setattr(launch, "_current_stream", lambda idx: 0)
    device = [0]
    monkeypatch.setattr(launch, "_current_device", lambda: device[0])
    kern = _FakeKernel()
    launcher = launch.DirectLauncher(kern)

    def run(grid, args, consts, warps, direct=True):
        return launcher(grid, args, consts, warps, direct=direct, raw=raw)

    x = torch.zeros(64)
    run((2,), (x, 16, 0.5), {"BLOCK": 32}, 4)  # compiles (dispatcher)
    run((3, 2), (x, 16, 0.25), {"BLOCK": 32}, 4)  # same key: direct, with the new float and a padded grid
    run((2,), (x, 17, 0.5), {"BLOCK": 32}, 4)  # another stride: dispatcher
    run((2,), (x, 16, 0.5), {"BLOCK": 64}, 4)  # another constexpr: dispatcher
    run((2,), (x.half(), 16, 0.5), {"BLOCK": 32}, 4)  # another dtype: dispatcher
    run((2,), (x[1:], 16, 0.5), {"BLOCK": 32}, 4)  # misaligned: dispatcher ...
    run((2,), (x[1:], 16, 0.5), {"BLOCK": 32}, 4)  # ... every time
    device[0] = 1
    run((2,), (x, 16, 0.5), {"BLOCK": 32}, 4)  # another current device: dispatcher (compiles and loads there)
    device[0] = 0
    run((2,), (x, 16, 0.5), {"BLOCK": 32}, 8)  # other launch options: dispatcher
    run((2,), (x, True, 0.5), {"BLOCK": 32}, 4)  # a bool (specialized apart from ints): dispatcher, uncached
    run((2,), (x, True, 0.5), {"BLOCK": 32}, 4)
    monkeypatch.setattr(launch, "_knob_state", lambda: ("debug",))
    run((2,), (x, 16, 0.5), {"BLOCK": 32}, 4)  # Triton's debug switch flipped since import: dispatcher
    kinds = [e[0] for e in kern.log]
    direct = "launcher" if raw else "runner"
    assert kinds == ["dispatch", direct] + ["dispatch"] * 10
    assert kern.log[1][1] == (3, 2, 1) and kern.log[1][2] == (x, 16, 0.25, 32)
    monkeypatch.setattr(launch, "_knob_state", lambda: launch._DEFAULT_KNOBS)
    run((2,), (x, 16, 0.5), {"BLOCK": 32}, 4)
    assert kern.log[-1][0] == direct  # back to the cached kernel
    run((2,), (x, 16, 0.5), {"BLOCK": 32}, 4, direct=False)
    assert kern.log[-1][0] == "dispatch"


def test_direct_launcher_needs_constexprs_last():
    class Param:
        def __init__(self, c):
            self.is_constexpr = c

    kern = _FakeKernel()
    kern.params = [Param(False), Param(True), Param(False)]
    with pytest.raises(ValueError, match="constexpr after the runtime arguments"):
        launch.DirectLauncher(kern)
    kern.params = [Param(False), Param(False), Param(True)]
    launch.DirectLauncher(kern)
    for k in (triton_tree._shared_kernel, triton_tree._own_kernel, triton_tree._merge_kernel):
        launch.DirectLauncher(k)  # the real kernels pass
