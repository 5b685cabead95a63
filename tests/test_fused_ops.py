"""prompt_tree.fused_ops: each Triton kernel against its torch reference (CPU: under Triton's interpreter, fp32 and
fp16, the interpreter has no bf16), on small odd shapes; argument errors; the kernels compile for sm_90.

Tolerances, per op (u = 2^-24, the fp32 unit roundoff; eps_d = the output dtype's machine epsilon):
- add_rms_norm. The residual output is x + r computed in fp32 and rounded once on both sides: bit-equal. The
  normed output differs only through rstd: both sum H positive squares in fp32 in different orders, each within
  (H - 1) u of the exact sum (recursive summation's worst case), so rstd differs by at most ~H u relative and y
  by H u / 2, plus the last-bit difference of rsqrt (2 u). In fp16 the two roundings to the output dtype
  (of x * rstd, then of the product with w) can each land on the neighbouring value: 2 eps_d more.
- rope_. Both rotate in fp32 from the same inputs with the same formula; a GPU may contract a*b - c*d into an
  FMA (1 ulp of fp32 on the larger term), and the rounding to the output dtype may then flip: at most eps_d of
  the largest input magnitude, absolute.
- silu_mul. Each side computes silu(g) * u in fp32 with an exp accurate to 2 ulps (4 u) and three roundings
  (1 + e, the division, the product): within 7 u of exact, so within 14 u (16 u allowed) of each other. In fp16
  silu is rounded to the output dtype and the product too: 2 eps_d more.
Any real defect (wrong pairing, a missed residual, eps outside the sqrt, gate and up swapped) is off by >1%.
"""
from __future__ import annotations

import pytest
import torch
from sm90_compile import run_compile_script

from prompt_tree import fused_ops as fo

U32 = 2.0**-24
DTYPES = [torch.float32, torch.float16]


def _eps_out(dtype: torch.dtype) -> float:
    """Rounding-flip allowance of the output dtype: 0 in fp32 (the fp32 bounds already cover it)."""
    return 0.0 if dtype == torch.float32 else torch.finfo(dtype).eps


def _tiny(dtype: torch.dtype) -> float:
    """The smallest subnormal: absolute slack for outputs that round into the subnormal range."""
    return 2 * torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps


def _assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.isfinite(got).all() and torch.isfinite(want).all()
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,H", [(1, 1), (5, 97), (97, 128), (3, 1025)])
@pytest.mark.parametrize("with_residual", [True, False])
def test_add_rms_norm_matches_reference(dtype, T, H, with_residual):
    gen = torch.Generator().manual_seed(T * 1000 + H)
    x = (3 * torch.randn(T, H, generator=gen)).to(dtype)
    residual = torch.randn(T, H, generator=gen).to(dtype) if with_residual else None
    weight = (1 + 0.3 * torch.randn(H, generator=gen)).to(dtype)
    y, s = fo.add_rms_norm(x, residual, weight, 1e-5, backend="triton")
    y_ref, s_ref = fo.add_rms_norm_torch(x, residual, weight, 1e-5)
    assert torch.equal(s, s_ref)
    if residual is None:
        assert s is x  # layer 0: the residual stream is the embedding itself, not a copy
    rtol = (H / 2 + 2) * U32 + 2 * _eps_out(dtype)
    _assert_close(y, y_ref, rtol=rtol, atol=_tiny(dtype))


def test_add_rms_norm_strided_rows_and_eps():
    """Rows with a stride (a slice of a wider buffer) and a large eps (it must sit inside the square root)."""
    gen = torch.Generator().manual_seed(1)
    wide = torch.randn(6, 80, generator=gen) * 0.01
    x, residual = wide[:, :33], wide[:, 40:73]
    weight = torch.randn(33, generator=gen)
    y, s = fo.add_rms_norm(x, residual, weight, 0.5, backend="triton")
    y_ref, s_ref = fo.add_rms_norm_torch(x, residual, weight, 0.5)
    assert torch.equal(s, s_ref)
    _assert_close(y, y_ref, rtol=(33 / 2 + 2) * U32, atol=0)


def _qkv(T, H, Hv, D, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(T, H + Hv, D, generator=gen)).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,H,D", [(1, 1, 2), (7, 3, 6), (97, 5, 34), (4, 12, 128)])
def test_rope_in_place_matches_reference(dtype, T, H, D):
    """The q and k heads of a fused buffer (a strided view) rotate in place; the v heads after them stay."""
    qkv = _qkv(T, H, 2, D, dtype, seed=T + H + D)
    gen = torch.Generator().manual_seed(D)
    angles = torch.rand(T, D // 2, generator=gen) * 100  # positions up to ~100: angles over many turns
    cos, sin = angles.cos(), angles.sin()
    got, want = qkv.clone(), qkv.clone()
    fo.rope_(got[:, :H], cos, sin, backend="triton")
    fo.rope_torch_(want[:, :H], cos, sin)
    assert torch.equal(got[:, H:], qkv[:, H:])  # v untouched
    _assert_close(got, want, rtol=0, atol=max(_eps_out(dtype), 2 * U32) * qkv.abs().max().item())
    assert not torch.equal(got[:, :H], qkv[:, :H])  # it did rotate


def test_rope_reference_is_apply_rope():
    """The in-place reference is rope.apply_rope written back (one rotation rule), and position 0 is identity."""
    from prompt_tree.rope import apply_rope

    qkv = _qkv(5, 4, 1, 16, torch.float32, seed=3)
    angles = torch.arange(5.0)[:, None] * torch.rand(8)[None, :]
    cos, sin = angles.cos(), angles.sin()
    x = qkv.clone()
    fo.rope_(x[:, :4], cos, sin, backend="torch")
    assert torch.equal(x[:, :4], apply_rope(qkv[:, :4], cos, sin))
    assert torch.equal(x[0], qkv[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,I", [(1, 1), (3, 37), (9, 1024), (2, 1500)])
def test_silu_mul_matches_reference(dtype, T, I):
    gen = torch.Generator().manual_seed(T + I)
    gate_up = (3 * torch.randn(T, 2 * I, generator=gen)).to(dtype)
    got = fo.silu_mul(gate_up, backend="triton")
    want = fo.silu_mul_torch(gate_up)
    assert got.shape == (T, I)
    _assert_close(got, want, rtol=16 * U32 + 2 * _eps_out(dtype), atol=_tiny(dtype))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # the interpreter's numpy exp(100): inf
@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_extremes(dtype):
    """Large |gate| (exp overflow for very negative gates must give -0, not NaN) and zeros."""
    g = torch.tensor([[-100.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 60000.0 if dtype == torch.float16 else 1e30]])
    gate_up = torch.cat([g, torch.full_like(g, 0.5)], dim=1).to(dtype)
    got = fo.silu_mul(gate_up, backend="triton")
    _assert_close(got, fo.silu_mul_torch(gate_up), rtol=16 * U32 + 2 * _eps_out(dtype), atol=_tiny(dtype))


def test_auto_uses_torch_off_cuda_and_empty_inputs():
    x = torch.randn(0, 8)
    w = torch.ones(8)
    for backend in ("auto", "triton", "torch"):
        y, s = fo.add_rms_norm(x, x, w, 1e-5, backend=backend)
        assert y.shape == (0, 8) and s.shape == (0, 8)
        assert fo.silu_mul(torch.randn(0, 8), backend=backend).shape == (0, 4)
    assert not fo._use_triton("auto", torch.randn(2))  # CPU: the reference
    assert not fo._use_triton("auto", torch.randn(2, dtype=torch.float64))


def test_bad_arguments_are_named():
    x, w = torch.randn(4, 8), torch.ones(8)
    with pytest.raises(ValueError, match="backend must be one of"):
        fo.add_rms_norm(x, None, w, 1e-5, backend="cuda")
    with pytest.raises(ValueError, match=r"x must be \[T, features\]"):
        fo.add_rms_norm(x[None], None, w, 1e-5)
    with pytest.raises(ValueError, match=r"residual has 7 features, expected 8"):
        fo.add_rms_norm(x, torch.randn(4, 7), w, 1e-5)
    with pytest.raises(ValueError, match=r"residual .* must match x"):
        fo.add_rms_norm(x, torch.randn(4, 8, dtype=torch.float64), w, 1e-5)
    with pytest.raises(ValueError, match=r"norm weight has shape \(9,\), expected \(8,\)"):
        fo.add_rms_norm(x, None, torch.ones(9), 1e-5)
    with pytest.raises(ValueError, match="fp16, bf16 or fp32 tensors, not torch.float64"):
        fo.add_rms_norm(x.double(), None, w.double(), 1e-5, backend="triton")
    with pytest.raises(ValueError, match="Triton norm needs a contiguous weight in x's dtype"):
        fo.add_rms_norm(x, None, w.half(), 1e-5, backend="triton")
    with pytest.raises(ValueError, match="even, contiguous head dim"):
        fo.rope_(torch.randn(2, 3, 5), torch.randn(2, 2), torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"cos must be fp32 \[2, 4\]"):
        fo.rope_(torch.randn(2, 3, 8), torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="Triton RoPE takes fp32 cos/sin"):
        fo.rope_(torch.randn(2, 3, 8), torch.randn(2, 4).double(), torch.randn(2, 4).double(), backend="triton")
    with pytest.raises(ValueError, match="even number of columns"):
        fo.silu_mul(torch.randn(2, 7))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_kernels_on_cuda_match_reference(dtype):
    """The same comparisons on a GPU, bf16 included, at a real model width."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    T, H, I, D = 33, 4096, 14336, 128
    x = torch.randn(T, H, device="cuda", generator=gen).to(dtype)
    r = torch.randn(T, H, device="cuda", generator=gen).to(dtype)
    w = (1 + 0.3 * torch.randn(H, device="cuda", generator=gen)).to(dtype)
    y, s = fo.add_rms_norm(x, r, w, 1e-5, backend="triton")
    y_ref, s_ref = fo.add_rms_norm_torch(x, r, w, 1e-5)
    assert torch.equal(s, s_ref)
    _assert_close(y, y_ref, rtol=(H / 2 + 2) * U32 + 2 * _eps_out(dtype), atol=_tiny(dtype))
    qkv = torch.randn(T, 48, D, device="cuda", generator=gen).to(dtype)
    angles = torch.rand(T, D // 2, device="cuda", generator=gen) * 1000
    got, want = qkv.clone(), qkv.clone()
    fo.rope_(got[:, :40], angles.cos(), angles.sin(), backend="triton")
    fo.rope_torch_(want[:, :40], angles.cos(), angles.sin())
    _assert_close(got, want, rtol=0, atol=max(_eps_out(dtype), 2 * U32) * qkv.abs().max().item())
    gu = (3 * torch.randn(T, 2 * I, device="cuda", generator=gen)).to(dtype)
    _assert_close(fo.silu_mul(gu, backend="triton"), fo.silu_mul_torch(gu), rtol=16 * U32 + 2 * _eps_out(dtype),
                  atol=_tiny(dtype))


# ----- the real compiler (the interpreter never meets it), as tests/test_kernels_compile.py does for attention

COMPILE_SCRIPT = r'''
import inspect
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from prompt_tree import fused_ops as fo

try:
    from triton.backends import backends
    assert "nvidia" in backends
except Exception:
    print("SKIP no nvidia backend"); raise SystemExit(0)

def compile_one(fn, ptr_types, consts, warps):
    names = list(inspect.signature(fn.fn).parameters)
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in consts]
    assert not missing, f"{fn.fn.__name__}: no value for constexpr {missing}"
    sig = {n: "constexpr" if n in consts else ptr_types.get(n, "fp32" if n == "eps" else "i32") for n in names}
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=1))
    assert "cubin" in k.asm, fn.fn.__name__

n = 0
for dt in ("bf16", "fp16"):
    ptrs = {p: "*" + dt for p in ("X", "R", "W", "Y", "S")}
    for has_residual in (False, True):
        for block in (4096, 8192):
            compile_one(fo._add_rms_norm_kernel, ptrs, dict(HAS_RESIDUAL=has_residual, BLOCK=block),
                        fo._num_warps(block)); n += 1
    compile_one(fo._rope_kernel, {"X": "*" + dt, "COS": "*fp32", "SIN": "*fp32"}, dict(BLOCK_H=32, BLOCK_HALF=64),
                4); n += 1
    compile_one(fo._silu_mul_kernel, {"GU": "*" + dt, "OUT": "*" + dt}, dict(BLOCK=1024), 4); n += 1
print("compiled", n)
'''


def test_fused_kernels_compile_for_sm90():
    out = run_compile_script(COMPILE_SCRIPT)
    assert out.strip().startswith("compiled 12"), out


def test_num_warps_is_bounded():
    assert [fo._num_warps(b) for b in (1, 256, 4096, 8192, 1 << 20)] == [1, 1, 16, 16, 16]
