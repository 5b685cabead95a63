"""prompt_tree.kernels.plan_tree_attention: a plan's runs must be the op's calls, for any q/k/v of the planned layout.

The op (tested against the fp64 ground truth in test_kernels.py) is the reference here: a plan runs the same
kernels with the same arguments, so its output must be bit-identical, on every backend.
"""
from __future__ import annotations

import random

import pytest
import torch

from prompt_tree.kernels import LaunchOptions, build_tree_meta, launch, plan_tree_attention, tree_attention, triton_tree
from prompt_tree.kernels.attention_plan import RawLaunch
from prompt_tree.kernels.reference import naive_tree_attention
from tests.test_kernels import DEVICE, make_case, rel_err


def _case(seed, dtype, heads=(8, 2), depth=3, q_per_seq=1):
    q, k, v, q_lens, own_starts, own_lens, segs = make_case(seed, heads[0], heads[1], 32 if DEVICE == "cpu" else 128,
                                                            depth, [1, 17, 97], [1, 17, 40], dtype,
                                                            q_per_seq=q_per_seq)
    meta = build_tree_meta(q_lens, own_starts, own_lens, segs, heads[0], heads[1], q.shape[2], q.device)
    return q, k, v, meta, (q_lens, own_starts, own_lens, segs)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("q_per_seq", [1, 5], ids=["decode", "prefill"])
def test_plan_runs_are_the_op(backend, dtype, q_per_seq):
    seed = random.randrange(1 << 30)
    q, k, v, meta, layout = _case(seed, dtype, q_per_seq=q_per_seq)
    plan = plan_tree_attention(q, k, v, meta, return_lse=True, backend=backend)
    # Two "layers": other data in tensors of the planned layout. A plan that kept the planning tensors' data
    # would return layer 0's result for layer 1.
    for layer in range(2):
        q1, k1, v1 = (torch.randn_like(x) for x in (q, k, v)) if layer else (q, k, v)
        o, lse = plan.run(q1, k1, v1)
        o_op, lse_op = tree_attention(q1, k1, v1, meta, return_lse=True, backend=backend)
        assert torch.equal(o, o_op) and torch.equal(lse, lse_op), f"layer {layer} (seed {seed})"
        ref, _ = naive_tree_attention(q1, k1, v1, *layout)
        if ref.norm() > 0:
            assert rel_err(o, ref) < (1e-5 if dtype == torch.float32 else 5e-3), f"seed {seed}"
    assert o.data_ptr() == plan.out.data_ptr()  # every run writes the planned out


def test_plan_rejects_other_layouts_with_a_clear_error():
    q, k, v, meta, _ = _case(3, torch.float32)
    plan = plan_tree_attention(q, k, v, meta, backend="torch")
    with pytest.raises(ValueError, match=r"q is .* but the plan was made for .*make a new plan"):
        plan.run(q.half(), k, v)
    with pytest.raises(ValueError, match=r"k_cache is .* make a new plan"):
        plan.run(q, k[:-1], v)
    wide = torch.zeros(v.shape[0], v.shape[1], 2 * v.shape[2], dtype=v.dtype, device=v.device)[..., ::2]
    with pytest.raises(ValueError, match="v_cache"):
        plan.run(q, k, wide)
    with pytest.raises(ValueError, match="out must match q"):
        plan_tree_attention(q, k, v, meta, out=torch.empty_like(q[:-1]))
    with pytest.raises(ValueError, match="scale must be a positive number"):
        plan_tree_attention(q, k, v, meta, scale=0.0)
    with pytest.raises(ValueError, match=r"workspace must be fp32 o_part \(12, 4, 8, \d+\)"):
        plan_tree_attention(q, k, v, meta, workspace=(q, q))
    t, slots, hq, d = q.shape[0], max(meta.max_slots, 1), q.shape[1], q.shape[2]
    ws = (torch.empty(t, slots, hq, d, device=q.device), torch.empty(t, slots, hq, device=q.device))
    with pytest.raises(ValueError, match="Triton backend only"):
        plan_tree_attention(q, k, v, meta, backend="torch", workspace=ws)
    with pytest.raises(ValueError, match="options must be a prompt_tree.kernels.LaunchOptions"):
        plan_tree_attention(q, k, v, meta, options={"overlap": True})


class _Recorder:
    """Stands in for a compiled kernel: its launcher records what it is called with."""

    def __init__(self, name, log):
        self.name, self.log = name, log
        self.function, self.packed_metadata = f"fn:{name}", f"md:{name}"

    def run(self, g0, g1, g2, stream, function, metadata, launch_metadata, enter, exit_, *args):
        assert (function, metadata) == (self.function, self.packed_metadata)
        assert (launch_metadata, enter, exit_) == (None, None, None)
        self.log.append((self.name, (g0, g1, g2), stream, args))


@pytest.mark.parametrize("q_per_seq", [1, 5], ids=["decode", "prefill"])
def test_plan_raw_launches_pass_what_the_launcher_would(monkeypatch, q_per_seq):
    """The CUDA-only direct path, driven on CPU with recording kernels: each launch gets the grid (padded to 3),
    the current stream, and the full argument list of DirectLauncher (runtime args with the run's q/k/v, pointers
    as ints, then every constexpr in signature order)."""
    q, k, v, meta, _ = _case(11, torch.float32, q_per_seq=q_per_seq)
    plan = plan_tree_attention(q, k, v, meta, backend="triton")
    lists = plan._launches.launches
    assert lists, "no launches planned"
    log = []
    for ln in lists:
        name = ln.launcher.kernel.__name__ if hasattr(ln.launcher.kernel, "__name__") else str(ln.launcher)
        monkeypatch.setattr(ln.launcher, "compile", lambda *a, _n=name, **kw: _Recorder(_n, log))
    raw = plan._compile()
    monkeypatch.setattr(launch, "_current_stream", lambda idx: 1234)
    monkeypatch.setattr(plan, "_device", torch.device("cuda", 0))
    q2, k2, v2 = (torch.randn_like(x) for x in (q, k, v))
    ptrs = (q2.data_ptr(), k2.data_ptr(), v2.data_ptr())
    plan._run_raw(raw, ptrs)
    assert len(log) == len(lists)
    for (name, grid, stream, args), ln in zip(log, lists):
        names = ln.launcher.arg_names
        runtime = (q2, k2, v2) + ln.args[3:] if ln.qkv else ln.args
        full = runtime + tuple(ln.constexprs[n] for n in names[len(ln.args):])
        assert len(full) == len(names), f"{name}: {len(full)} arguments for {len(names)} parameters"
        want = tuple(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in full)
        assert args == want, name
        assert grid == tuple(ln.grid) + (1,) * (3 - len(ln.grid)) and stream == 1234


class _Stream:
    def __init__(self, name, handle, log):
        self.name, self.cuda_stream, self.log = name, handle, log

    def wait_stream(self, other):
        self.log.append(("wait", self.name, other.name))


def test_plan_raw_overlap_forks_then_joins_before_the_merge(monkeypatch):
    """The side-stream path of the direct launches (CUDA only, so driven here with fake streams): the side stream
    first waits for the main one, the own kernel runs on it, and the main stream waits for it before the merge."""
    q, k, v, meta, _ = _case(5, torch.float32)
    plan = plan_tree_attention(q, k, v, meta, backend="triton")
    log = []
    main, side = _Stream("main", 1, log), _Stream("side", 2, log)
    monkeypatch.setattr(launch, "_current_stream", lambda idx: main.cuda_stream)
    monkeypatch.setattr(launch, "side_stream", lambda idx: side)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda idx=None: main)
    monkeypatch.setattr(plan, "_device", torch.device("cuda", 0))
    plan.overlap = True
    raw = [RawLaunch(_Recorder(n, log).run, (1, 1, 1), f"fn:{n}", f"md:{n}", (), False, on_side, join)
           for n, on_side, join in (("shared", False, False), ("own", True, False), ("merge", False, True))]
    plan._run_raw(raw, (0, 0, 0))
    assert [(e[0], e[1], e[2]) if e[0] == "wait" else (e[0], e[2]) for e in log] == [
        ("wait", "side", "main"), ("shared", 1), ("own", 2), ("wait", "main", "side"), ("merge", 1)]
    # one-stream calls never touch a stream object; an overlapped list without a join is refused
    log.clear()
    launch.fork_join(raw, False, 0, lambda ln, stream: log.append((ln.function, stream)))
    assert log == [("fn:shared", None), ("fn:own", None), ("fn:merge", None)]
    with pytest.raises(RuntimeError, match="must join its side stream"):
        launch.fork_join(raw[:2], True, 0, lambda ln, stream: None)


@pytest.mark.cuda
@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("q_per_seq", [1, 33], ids=["decode", "prefill"])
def test_cuda_plan_is_bit_identical_to_the_op(overlap, q_per_seq):
    seed = random.randrange(1 << 30)
    q, k, v, q_lens, own_starts, own_lens, segs = make_case(seed, 32, 8, 128, 3, [1, 17, 97, 600], [1, 17, 900],
                                                            torch.bfloat16, q_per_seq=q_per_seq)
    meta = build_tree_meta(q_lens, own_starts, own_lens, segs, 32, 8, 128, q.device)
    for return_lse in (False, True):
        plan = plan_tree_attention(q, k, v, meta, options=LaunchOptions(overlap=overlap), return_lse=return_lse)
        assert plan._raw is not None, "the plan did not take the direct path"
        for layer in range(3):
            xs = (q, k, v) if layer == 0 else tuple(torch.randn_like(x) for x in (q, k, v))
            got = plan.run(*xs)
            want = tree_attention(*xs, meta, options=LaunchOptions(overlap=overlap), return_lse=return_lse)
            got, want = (got, want) if return_lse else ((got,), (want,))
            for a, b in zip(got, want):
                assert torch.equal(a, b), f"layer {layer}, lse {return_lse} (seed {seed}, splits {meta.own_splits})"
    # a q that is not 16-byte aligned goes through Triton, and is still right
    buf = torch.empty(q.numel() + 1, dtype=q.dtype, device=q.device)
    q_odd = buf[1:].view_as(q).copy_(q)
    plan = plan_tree_attention(q, k, v, meta, options=LaunchOptions(overlap=overlap))
    direct = []
    run_raw = plan._run_raw
    plan._run_raw = lambda *a: (direct.append(1), run_raw(*a))
    assert torch.equal(plan.run(q_odd, k, v), tree_attention(q, k, v, meta, options=LaunchOptions(overlap=overlap)))
    assert not direct, "a misaligned q took the direct path"
    plan.run(q, k, v)
    assert direct, "an aligned q did not take the direct path"


def _replayed(plan, q, k, v) -> torch.Tensor:
    """plan.run captured in a CUDA graph, its output zeroed, then replayed: the output the replay wrote."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        plan.run(q, k, v)
    plan.out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    return plan.out


@pytest.mark.cuda
def test_cuda_plan_replays_in_a_graph():
    seed = random.randrange(1 << 30)
    q, k, v, q_lens, own_starts, own_lens, segs = make_case(seed, 32, 8, 128, 2, [17, 97, 300], [17, 200],
                                                            torch.bfloat16)
    meta = build_tree_meta(q_lens, own_starts, own_lens, segs, 32, 8, 128, q.device)
    plan = plan_tree_attention(q, k, v, meta, options=LaunchOptions(overlap=True))
    eager = plan.run(q, k, v).clone()
    assert torch.equal(_replayed(plan, q, k, v), eager), f"seed {seed}"


@pytest.mark.cuda
@pytest.mark.parametrize("q_per_seq", [1, 33], ids=["decode", "prefill"])
def test_cuda_pdl_gives_the_same_bits(q_per_seq):
    """Programmatic dependent launch (LaunchOptions.pdl) only changes when the own kernel starts: same bits as
    without it, plain, planned and replayed from a CUDA graph."""
    seed = random.randrange(1 << 30)
    q, k, v, q_lens, own_starts, own_lens, segs = make_case(seed, 32, 8, 128, 3, [1, 17, 97, 600], [1, 17, 900],
                                                            torch.bfloat16, q_per_seq=q_per_seq)
    meta = build_tree_meta(q_lens, own_starts, own_lens, segs, 32, 8, 128, q.device)
    off, on = LaunchOptions(overlap=False, pdl=False), LaunchOptions(overlap=False, pdl=True)
    want = tree_attention(q, k, v, meta, options=off)
    assert not any(ln.launch_pdl for ln in triton_tree.build_launches(q, k, v, meta, options=off).launches)
    launches = triton_tree.build_launches(q, k, v, meta, options=on).launches
    assert any(ln.launch_pdl for ln in launches), "PDL was not used"
    assert torch.equal(tree_attention(q, k, v, meta, options=on), want), f"seed {seed}"
    plan = plan_tree_attention(q, k, v, meta, options=on)
    assert plan._raw is not None
    assert torch.equal(plan.run(q, k, v), want), f"seed {seed}"
    assert torch.equal(_replayed(plan, q, k, v), want), f"seed {seed}"
