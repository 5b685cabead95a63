"""prompt_tree.skinny_gemm against F.linear: fp32 and fp16 under Triton's interpreter on CPU (compiled where a GPU is
present), bf16 on CUDA (skipped here).

Tolerance. Both sides form each output as a sum of K products, accumulated in fp32, rounded once to the output
dtype. The reference here is the float64 product, so each side is within K u sum|x_k w_k| of it (u = 2^-24, the
recursive-summation bound, whatever the order or the split into partial sums), plus half an ulp of the output
dtype from the final rounding: |y - exact| <= K u S + eps_d / 2 |exact|, S = sum_k |x_k w_k| per output. fp16 and
fp32 products of fp16/fp32 inputs are exact in fp32's 24 bits for fp16 (11 x 11 bits) and rounded once (u) for
fp32, inside the same bound with K + 1 for K. A real defect (a missed K slice, a wrong transpose, a row of the
wrong tile, a masked column) is off by O(S), far beyond it.
"""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from sm90_compile import run_compile_script

from prompt_tree import skinny_gemm as sg
from prompt_tree.config import PRESETS
from prompt_tree.skinny_gemm import (SkinnyConfig, block_m_for, clear_tables, config_for, dense_linear, linear_torch,
                                     projection_shapes, read_table_file, register_sweep, register_table, registered,
                                     reset_tables, skinny_linear, table_document, table_from_sweep)

U32 = 2.0**-24
# The interpreter runs CPU tensors; with a GPU present the Triton launcher takes only device tensors, so the same
# tests run compiled there.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _check(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    assert y.shape == (x.shape[0], w.shape[0]) and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    exact = x.double() @ w.double().T
    s = x.double().abs() @ w.double().abs().T
    eps_d = 0.0 if x.dtype == torch.float32 else torch.finfo(x.dtype).eps
    bound = (x.shape[1] + 1) * U32 * s + (eps_d / 2 + U32) * exact.abs()
    err = (y.double() - exact).abs()
    assert (err <= bound).all(), f"max excess {(err - bound).max().item():.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("M,N,K,cfg", [
    (1, 1, 16, SkinnyConfig(block_n=16, block_k=16)),                       # one row, one output
    (3, 50, 128, SkinnyConfig(block_n=32, block_k=32, split=2)),             # N not a multiple of the tile
    (17, 33, 64, SkinnyConfig(block_n=16, block_k=16, split=4)),             # odd M: a padded MMA side
    (20, 64, 96, SkinnyConfig(block_n=64, block_k=32, split=3)),             # split 3: K slices of 32
    (130, 40, 32, SkinnyConfig(block_n=32, block_k=32)),                     # M > 128: two row tiles
    (3, 50, 128, SkinnyConfig(block_n=32, block_k=32, split=2, tma=True)),   # the TMA kernel: zero-filled edges
    (130, 40, 64, SkinnyConfig(block_n=64, block_k=16, split=1, tma=True)),
])
def test_skinny_matches_reference(dtype, M, N, K, cfg):
    gen = torch.Generator().manual_seed(M * 7 + N * 3 + K)
    x = torch.randn(M, K, generator=gen).to(DEVICE, dtype)
    w = torch.randn(N, K, generator=gen).to(DEVICE, dtype)
    y = skinny_linear(x, w, cfg)
    _check(y, x, w)
    _check(linear_torch(x, w), x, w)  # the reference meets its own bound (the bound is not loose by accident)


def test_strided_rows_and_empty():
    gen = torch.Generator().manual_seed(5)
    wide = torch.randn(5, 80, generator=gen).to(DEVICE)
    x = wide[:, :64]  # rows with a stride: a view of a wider activation buffer
    w = torch.randn(24, 64, generator=gen).to(DEVICE)
    _check(skinny_linear(x, w, SkinnyConfig(block_n=16, block_k=32, split=2)), x, w)
    assert skinny_linear(x[:0], w).shape == (0, 24)
    with pytest.raises(ValueError, match="16-byte aligned"):  # 70 fp32 = 280 bytes a row: no TMA descriptor
        skinny_linear(torch.randn(5, 70).to(DEVICE)[:, :64], w, SkinnyConfig(block_n=16, block_k=32, tma=True))


def test_bad_arguments_are_named():
    x, w = torch.randn(2, 64), torch.randn(8, 64)
    with pytest.raises(ValueError, match="multiple of block_k"):
        skinny_linear(x, w, SkinnyConfig(block_k=64, split=2))
    with pytest.raises(ValueError, match="x \\[M, K\\] and w \\[N, K\\]"):
        skinny_linear(x, torch.randn(8, 32))
    with pytest.raises(ValueError, match="share a device"):
        skinny_linear(x, w.half())
    with pytest.raises(ValueError, match="contiguous"):
        skinny_linear(x, torch.randn(64, 8).T)
    with pytest.raises(ValueError, match="power of two"):
        SkinnyConfig(block_n=48)
    with pytest.raises(ValueError, match="split"):
        SkinnyConfig(split=0)
    with pytest.raises(ValueError, match="TMA tile side"):
        SkinnyConfig(block_n=512, tma=True)


def test_block_m():
    assert [block_m_for(m) for m in (0, 1, 16, 17, 100, 128, 129, 2048)] == [16, 16, 16, 32, 128, 128, 128, 128]


@pytest.mark.cuda
@pytest.mark.parametrize("M", [1, 32, 77, 128, 200])
@pytest.mark.parametrize("split", [1, 4])
@pytest.mark.parametrize("tma", [False, True])
def test_cuda_bf16_matches_cublas(M, split, tma):
    """bf16 on the GPU against cuBLAS and float64: both within the bound above (eps_d = bf16's)."""
    gen = torch.Generator(device="cuda").manual_seed(M + split)
    x = torch.randn(M, 4096, device="cuda", generator=gen).bfloat16()
    w = (torch.randn(6144, 4096, device="cuda", generator=gen) * 0.02).bfloat16()
    y = skinny_linear(x, w, SkinnyConfig(block_n=128, block_k=64, split=split, num_stages=4, num_warps=8,
                                                 tma=tma))
    _check(y, x, w)
    _check(linear_torch(x, w), x, w)


# ----- the table and the model's dispatch


def _row(variant, us, N=4096, K=4096, M=128, ok=True, retimed=False, **cfg):
    r = {"variant": variant, "us": us, "N": N, "K": K, "M": M, "retimed": retimed}
    if variant == "skinny":
        r.update(dict(block_n=128, block_k=64, split=1, num_stages=4, num_warps=8, tma=False), **cfg, ok=ok)
    return r


def test_table_from_sweep_keeps_clear_wins_only():
    report = {"device": "NVIDIA H200", "rows": [
        _row("cublas", 10.0), _row("skinny", 9.0, split=2), _row("skinny", 8.0, ok=False),  # o: 1.11x, the ok one
        _row("cublas", 20.0, N=6144), _row("skinny", 19.8, N=6144),                          # qkv: 1.01x, kept off
        _row("cublas", 5.0, M=48), _row("skinny", 4.0, M=48, block_n=64),                    # exact M: its own key
        _row("skinny", 1.0, N=8), _row("cublas", 9.0, M=256), _row("skinny", 1.0, M=256),    # no cublas; > 128
    ]}
    name, entries = table_from_sweep(report)
    assert name == "NVIDIA H200"
    assert entries == {(4096, 4096, 128): SkinnyConfig(block_n=128, block_k=64, split=2, num_stages=4, num_warps=8),
                       (4096, 4096, 48): SkinnyConfig(block_n=64, block_k=64, split=1, num_stages=4, num_warps=8)}


def test_retimed_rows_decide_where_present():
    """A sweep that re-timed its finalists against cuBLAS: the single timings (a lucky 7.0) no longer count."""
    report = {"device": "d", "rows": [
        _row("cublas", 10.0), _row("skinny", 7.0, split=4),
        _row("cublas", 9.8, retimed=True), _row("skinny", 9.6, split=4, retimed=True),      # 1.02x: off
        _row("cublas", 10.0, N=6144), _row("skinny", 7.0, N=6144, split=2),
        _row("cublas", 10.0, N=6144, retimed=True), _row("skinny", 8.0, N=6144, split=2, retimed=True)]}
    assert table_from_sweep(report)[1] == {
        (6144, 4096, 128): SkinnyConfig(block_n=128, block_k=64, split=2, num_stages=4, num_warps=8)}


def test_register_table_checks_entries():
    with pytest.raises(ValueError, match="table entry"):
        register_table("x", {(1, 2): SkinnyConfig()})
    with pytest.raises(ValueError, match="table entry"):
        register_table("x", {(1, 2, 3): {"block_n": 64}})
    with pytest.raises(ValueError, match="not a multiple of block_k"):
        register_table("x", {(64, 96, 16): SkinnyConfig(block_k=64)})


def test_cpu_and_unregistered_devices_use_f_linear(monkeypatch):
    clear_tables()
    register_table("cpu", {(8, 64, 16): SkinnyConfig(block_n=16, block_k=16)})
    try:
        x, w = torch.randn(4, 64), torch.randn(8, 64)
        assert config_for(x, w) is None  # CPU tensors never take the kernel
        calls = []
        monkeypatch.setattr(sg, "skinny_linear", lambda *a: calls.append(a))
        torch.testing.assert_close(dense_linear(x, w), F.linear(x, w), rtol=0, atol=0)
        assert not calls
    finally:
        clear_tables()


@pytest.mark.parametrize("mode", ["auto", "cublas"])
def test_model_routes_every_projection_through_the_table(monkeypatch, mode):
    """With a table entry for every shape (config_for patched: CPU has no device name), "auto" runs all four
    projections of each layer and the lm_head on the kernel (under the interpreter here) and the logits stay
    within fp32 summation order of cuBLAS mode's; "cublas" never calls it."""
    from prompt_tree.loading import random_model
    from prompt_tree.model import DenseOptions, causal_attention

    model = random_model("tiny", seed=3, device=DEVICE)
    shapes = []
    real = sg.skinny_linear

    def spy(x, w, cfg):
        shapes.append(tuple(w.shape))
        return real(x, w, cfg)

    monkeypatch.setattr(sg, "config_for", lambda x, w: SkinnyConfig(block_n=16, block_k=16, split=2))
    monkeypatch.setattr(sg, "skinny_linear", spy)
    ids = torch.tensor([256, 72, 105, 33, 10], device=DEVICE)
    pos = torch.arange(5, device=DEVICE)
    with torch.no_grad():
        model.set_dense_options(DenseOptions(gemm="cublas"))
        want = model.logits_raw(model(ids, pos, causal_attention()))
        shapes.clear()
        model.set_dense_options(DenseOptions(gemm=mode))
        got = model.logits_raw(model(ids, pos, causal_attention()))
    c = model.config
    p = projection_shapes(c)
    per_layer = [p["qkv"], p["o"], p["gate_up"], p["down"]]
    assert shapes == ([] if mode == "cublas" else per_layer * c.num_layers + [p["lm_head"]])
    assert torch.isfinite(got).all()
    # fp32 throughout: each GEMM within K u of cuBLAS's (K <= 256), compounded over 2 layers: 1e-4 of the scale.
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * want.abs().max().item())


@pytest.mark.cuda
def test_cuda_model_with_a_table_equals_cublas_and_replays(monkeypatch):
    """bf16: eagerly the model with every projection in the table is cuBLAS mode bit for bit (the table serves
    graphs only); on the graph's launch path it runs every projection on the kernel and equals cuBLAS mode within
    the bf16 bound of tests/test_model_fused.py (5% of the logit scale over 2 layers); a captured graph replays
    that path exactly."""
    from prompt_tree.config import get_preset, replace
    from prompt_tree.kernels import cuda_graph_path
    from prompt_tree.loading import random_model
    from prompt_tree.model import DenseOptions

    cfg = replace(get_preset("tiny"), hidden_size=512, intermediate_size=1376, num_heads=8, num_kv_heads=2, head_dim=64,
                  vocab_size=1000, bos_token_id=1, eos_token_ids=(2,))
    model = random_model(cfg, seed=0, device="cuda", dtype=torch.bfloat16, std=0.05)
    ids = torch.randint(0, 1000, (32,), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    pos = torch.arange(32, device="cuda")
    skip = lambda layer, q, k, v: q  # noqa: E731
    c = cfg
    one, split = SkinnyConfig(block_n=64, block_k=32, num_stages=3), SkinnyConfig(block_n=128, block_k=32, split=2,
                                                                              num_warps=8, tma=True)
    # down's K = 1376 = 43 x 32: one slice
    kind = {"qkv": split, "o": one, "gate_up": split, "down": one, "lm_head": split}
    entries = {(N, K, 32): kind[name] for name, (N, K) in projection_shapes(c).items()}
    calls = []
    real = sg.skinny_linear
    monkeypatch.setattr(sg, "skinny_linear", lambda x, w, cfg: calls.append(cfg) or real(x, w, cfg))
    clear_tables()
    register_table(torch.cuda.get_device_name(), entries)
    try:
        with torch.no_grad():
            model.set_dense_options(DenseOptions(gemm="cublas"))
            want = model.logits_raw(model(ids, pos, skip)).float()
            model.set_dense_options(DenseOptions(gemm="auto"))
            eager = model.logits_raw(model(ids, pos, skip))
            assert not calls
            torch.testing.assert_close(eager.float(), want, rtol=0, atol=0)
            with cuda_graph_path():
                got = model.logits_raw(model(ids, pos, skip))
            assert len(calls) == 4 * c.num_layers + 1
            assert torch.isfinite(got).all()
            assert (got.float() - want).abs().max() <= 0.05 * want.abs().max()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = model.logits_raw(model(ids, pos, skip))
            assert len(calls) == 2 * (4 * c.num_layers + 1)
            graph.replay()
            torch.testing.assert_close(out, got, rtol=0, atol=0)
    finally:
        clear_tables()


def test_table_serves_the_graph_path_only(monkeypatch):
    """config_for answers from the table only on a CUDA graph's launch path (capture, or cuda_graph_path's
    warm-up): eager launches would cost more host time than the kernel saves. A CUDA-looking x stands in (CPU)."""
    from types import SimpleNamespace

    from prompt_tree.kernels import cuda_graph_path

    cfg = SkinnyConfig(block_n=64, block_k=64)
    clear_tables()
    register_table("dev", {(1000, 512, 32): cfg})
    monkeypatch.setattr(sg, "_device_name", lambda device: "dev")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    x = SimpleNamespace(is_cuda=True, dtype=torch.bfloat16, shape=(32, 512), device=torch.device("cuda", 0))
    w = SimpleNamespace(shape=(1000, 512))
    try:
        assert config_for(x, w) is None
        with cuda_graph_path():
            assert config_for(x, w) == cfg
            assert config_for(SimpleNamespace(**{**vars(x), "shape": (48, 512)}), w) is None  # exact M only
        monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
        assert config_for(x, w) == cfg
    finally:
        clear_tables()


def test_table_document_round_trips_and_registers(tmp_path):
    report = {"device": "NVIDIA H200", "torch": "2.11", "triton": "3.6", "rows": [
        _row("cublas", 10.0), _row("skinny", 9.0, split=2, tma=True), _row("cublas", 20.0, N=6144),
        _row("skinny", 19.8, N=6144)]}
    doc = table_document(report)
    assert doc["device"] == "NVIDIA H200" and doc["triton"] == "3.6"
    assert [(e["N"], e["M"], e["gain"]) for e in doc["entries"]] == [(4096, 128, round(10 / 9, 4))]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    assert read_table_file(path) == table_from_sweep(report)
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(report))
    clear_tables()
    try:
        assert register_sweep(str(path)) == ("NVIDIA H200", 1) == register_sweep(str(sweep))
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**doc, "format": "other"}))
        with pytest.raises(ValueError, match="not a GEMM table.*format is 'other'"):
            register_sweep(str(bad))
    finally:
        clear_tables()


def test_shipped_tables_are_measured_decode_shapes():
    """Every shipped table parses, registers, and names only what a sweep can have measured: the projection
    shapes of a preset at a decode graph bucket of at most MAX_ROWS rows, each a win of at least its min_gain."""
    from prompt_tree.engine.options import DEFAULT_GRAPH_BUCKETS

    files = sorted(sg.SHIPPED_DIR.glob("*.json"))
    assert files, "prompt_tree/gemm_tables/ ships no table"
    projections = {nk for c in PRESETS.values() for nk in projection_shapes(c).values()}
    for path in files:
        doc = json.loads(path.read_text())
        name, entries = read_table_file(path)
        assert name and entries
        for e in doc["entries"]:
            assert (e["N"], e["K"]) in projections and e["M"] in DEFAULT_GRAPH_BUCKETS and e["M"] <= sg.MAX_ROWS
            assert e["gain"] >= doc["min_gain"] >= 1.0
        clear_tables()
        register_table(name, entries)  # its checks: K tiles, key shapes
    clear_tables()


def test_registered_tables_win_over_shipped(tmp_path, monkeypatch):
    doc = {"format": sg.TABLE_FORMAT, "device": "dev", "min_gain": 1.03, "entries": [
        {"N": 64, "K": 64, "M": 32, "gain": 1.1, **asdict(SkinnyConfig(block_n=16, block_k=16))},
        {"N": 64, "K": 64, "M": 16, "gain": 1.1, **asdict(SkinnyConfig(block_n=32, block_k=16))}]}
    (tmp_path / "dev.json").write_text(json.dumps(doc))
    monkeypatch.setattr(sg, "SHIPPED_DIR", tmp_path)
    mine = SkinnyConfig(block_n=64, block_k=64)
    reset_tables()
    try:
        register_table("dev", {(64, 64, 32): mine})
        assert registered() == {"dev": 2}  # loads the shipped table under the registered one
        assert sg._TABLES["dev"] == {(64, 64, 32): mine, (64, 64, 16): SkinnyConfig(block_n=32, block_k=16)}
        clear_tables()
        assert registered() == {}  # --gemm-table none: the shipped table stays off
    finally:
        clear_tables()


# ----- the real compiler for sm_90 (the interpreter never meets it; tests/test_kernels_compile.py's reasoning)

COMPILE_SCRIPT = r'''
import inspect
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from prompt_tree import skinny_gemm as sg

try:
    from triton.backends import backends
    assert "nvidia" in backends
except Exception:
    print("SKIP no nvidia backend"); raise SystemExit(0)

def compile_one(fn, types, consts, warps, stages, divisible):
    # divisible: the arguments the JIT sees as multiples of 16 at real shapes (aligned pointers, strides, K):
    # without that knowledge the compiler cannot issue 16-byte asynchronous copies and does not pipeline.
    names = list(inspect.signature(fn.fn).parameters)
    sig = {n: "constexpr" if n in consts else types.get(n, "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in consts.items()}, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    ptx = k.asm["ptx"]
    stage_bytes = (consts["BLOCK_N"] + consts["BLOCK_M"]) * consts["BLOCK_K"] * 2
    copies = "cp.async.bulk.tensor" if "W_DESC" in names else "cp.async"
    assert "wgmma" in ptx, f"{fn.fn.__name__} {consts}: no wgmma (Hopper tensor-core MMA) in the PTX"
    assert copies in ptx and k.metadata.shared >= (stages - 1) * stage_bytes, \
        f"{fn.fn.__name__} {consts} stages {stages}: not pipelined ({k.metadata.shared} bytes of shared memory)"

n = 0
for bn, bm, bk, warps, stages in ((128, 128, 64, 8, 4), (64, 32, 128, 4, 5), (256, 16, 64, 8, 3)):
    consts = dict(BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=bk)
    compile_one(sg._skinny_kernel, {"X": "*bf16", "W": "*bf16", "Y": "*bf16"}, consts, warps, stages,
                ("X", "W", "Y", "N", "K", "k_per_split", "stride_xm", "stride_wn", "stride_ys", "stride_ym")); n += 1
    compile_one(sg._skinny_tma_kernel, {"W_DESC": f"tensordesc<bf16[{bn}, {bk}]>",
                                        "X_DESC": f"tensordesc<bf16[{bm}, {bk}]>", "Y": "*fp32"},
                dict(consts, IEEE=False), warps, stages, ("Y", "N", "k_per_split", "stride_ys", "stride_ym")); n += 1
# The fixed-order sum, also with its int arguments specialised as the JIT does when they equal 1 (M = N = 1: a
# one-output head at batch 1 makes stride_ps a compile-time 1, which has no .to()).
for specialised in ({}, dict(stride_ps=1, stride_pm=1, N=1, M=1)):
    names = list(inspect.signature(sg._split_sum_kernel.fn).parameters)
    consts = dict(specialised, SPLIT=4, BLOCK=1024)
    sig = {k: "constexpr" if k in consts else {"P": "*fp32", "Y": "*bf16"}.get(k, "i32") for k in names}
    src = ASTSource(sg._split_sum_kernel, sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, num_stages=1)); n += 1
print("compiled", n)
'''


def test_kernels_compile_for_sm90_with_wgmma_and_pipelined_copies():
    out = run_compile_script(COMPILE_SCRIPT)
    assert out.strip().startswith("compiled 8"), out
