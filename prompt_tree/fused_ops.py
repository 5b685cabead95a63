"""The decoder's fused elementwise ops: residual add + RMSNorm, RoPE in place on the fused qkv, SiLU(gate) * up.

Each op is a Triton kernel (used on CUDA), a pure-torch reference beside it (used elsewhere, and the ground truth
of tests/test_fused_ops.py) and one public function that checks its arguments and picks between them:

    normed, residual = add_rms_norm(x, residual, weight, eps)   # x, residual: [T, H]; residual None: layer 0
    rope_(qk, cos, sin)                                         # qk: [T, Hq + Hkv, D] view, rotated in place
    act = silu_mul(gate_up)                                     # gate_up: [T, 2I] -> [T, I]

Why fuse: in a decode step these are memory-bound passes over [T, H] / [T, 2I] activations between the GEMMs.
Unfused, the residual add, the norm's fp32 statistics, the cast and the weight multiply are ~6 passes; RoPE
splits, rotates and concatenates copies of q and k; SiLU and the product are two more passes. Each kernel here
reads its inputs once and writes its outputs once.

Rounding. The kernels compute in fp32 and round where the unfused torch ops (transformers' modelling code) round,
so fused and unfused differ only in the order of the norm's sum of squares and in the last fp32 bit of exp/rsqrt:
- add_rms_norm: s = x + r rounded to the model dtype (that rounded sum is the residual stream and is what gets
  normalised); y = round(round(s * rstd) * w), statistics in fp32 (fp32 also for a float64 model, as HF);
- rope_: both halves rotated in fp32 from the unrotated inputs, rounded once (rope.apply_rope's rule);
- silu_mul: round(round(silu(g)) * u), silu in fp32.

backend: "auto" (Triton on CUDA for fp16 / bf16 / fp32, torch otherwise), "triton" (the kernel; on CPU only under
TRITON_INTERPRET=1, which tests use) or "torch" (the reference; also what torch.compile traces and fuses).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from prompt_tree.kernels.launch import DirectLauncher

from .rope import apply_rope

BACKENDS = ("auto", "triton", "torch")
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _use_triton(backend: str, t: torch.Tensor) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "auto":
        return t.device.type == "cuda" and t.dtype in _TRITON_DTYPES
    if backend == "triton" and t.dtype not in _TRITON_DTYPES:
        raise ValueError(f"the Triton kernels take fp16, bf16 or fp32 tensors, not {t.dtype}: use backend='torch'")
    return backend == "triton"


def _check_rows(name: str, t: torch.Tensor, width: int | None = None) -> None:
    if t.dim() != 2 or t.stride(1) != 1:
        raise ValueError(f"{name} must be [T, features] with contiguous features, got shape {tuple(t.shape)} "
                         f"strides {t.stride()}")
    if width is not None and t.shape[1] != width:
        raise ValueError(f"{name} has {t.shape[1]} features, expected {width}")


def _num_warps(block: int) -> int:
    """Warps for a one-row tile of `block` elements: ~8 elements per thread, 1 to 16 warps."""
    return max(1, min(16, block // 256))


# ----- residual add + RMSNorm


def rms_norm_torch(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Reference RMSNorm as transformers computes it: x / rms(x) in fp32, cast to x's dtype, times weight.

    x: [T, H]; weight: [H]. Returns [T, H] in x's dtype (weight's if that is wider, as HF's type promotion)."""
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def add_rms_norm_torch(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of add_rms_norm: the residual add in the model dtype, then RMSNorm of the rounded sum."""
    summed = x if residual is None else x + residual
    return rms_norm_torch(summed, weight, eps), summed


@triton.jit
def _add_rms_norm_kernel(
    X,  # [T, H] input (the sublayer's output, or the embedding)
    R,  # [T, H] residual stream (unused without HAS_RESIDUAL)
    W,  # [H] norm weight
    Y,  # [T, H] out: normed
    S,  # [T, H] out: x + residual, the new residual stream (unused without HAS_RESIDUAL)
    stride_x, stride_r, stride_y, stride_s, n_cols, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(R + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        s = x.to(S.dtype.element_ty)  # the residual stream is kept in the model dtype ...
        tl.store(S + row * stride_s + cols, s, mask=mask)
        x = s.to(tl.float32)  # ... and the rounded sum is what gets normalised
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    y = (x * rstd).to(Y.dtype.element_ty).to(tl.float32) * w  # cast, then scale: HF's two roundings
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


_LAUNCH_NORM = DirectLauncher(_add_rms_norm_kernel)


def add_rms_norm_triton(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel of add_rms_norm (arguments checked by the caller). One program per row."""
    T, H = x.shape
    y = torch.empty_like(x)
    s = x if residual is None else torch.empty_like(x)
    r = x if residual is None else residual
    block = triton.next_power_of_2(H)
    if T:
        _LAUNCH_NORM((T,), (x, r, weight, y, s, x.stride(0), r.stride(0), y.stride(0), s.stride(0), H, float(eps)),
                     dict(HAS_RESIDUAL=residual is not None, BLOCK=block), num_warps=_num_warps(block), num_stages=1)
    return y, s


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
                 backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual) * weight, x + residual), vLLM's fused_add_rms_norm without the in-place writes.

    x: [T, H]; residual: [T, H] or None (the first norm of the first layer: returns (RMSNorm(x), x)); weight: [H]
    in x's dtype. Returns normed [T, H] and the new residual stream [T, H], both in x's dtype.
    """
    _check_rows("x", x)
    H = x.shape[1]
    if residual is not None:
        _check_rows("residual", residual, H)
        if residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device:
            raise ValueError(f"residual {tuple(residual.shape)} {residual.dtype} {residual.device} must match "
                             f"x {tuple(x.shape)} {x.dtype} {x.device}")
    if weight.shape != (H,):
        raise ValueError(f"norm weight has shape {tuple(weight.shape)}, expected ({H},)")
    if _use_triton(backend, x):
        if weight.dtype != x.dtype or weight.device != x.device or weight.stride(0) != 1:
            raise ValueError(f"the Triton norm needs a contiguous weight in x's dtype and device, got {weight.dtype} "
                             f"on {weight.device}")
        return add_rms_norm_triton(x, residual, weight, eps)
    return add_rms_norm_torch(x, residual, weight, eps)


# ----- RoPE in place


def rope_torch_(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Reference of rope_: rope.apply_rope's rotation, written back into qk."""
    qk.copy_(apply_rope(qk, cos, sin))


@triton.jit
def _rope_kernel(
    X,  # [T, H, D] (strided) heads to rotate in place
    COS, SIN,  # [T, D/2] fp32
    stride_xt, stride_xh, stride_ct, stride_st, n_heads, half,
    BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs = tl.arange(0, BLOCK_HALF)
    d_ok = offs < half
    c = tl.load(COS + t * stride_ct + offs, mask=d_ok, other=0.0)[None, :]
    s = tl.load(SIN + t * stride_st + offs, mask=d_ok, other=0.0)[None, :]
    ptrs = X + t * stride_xt + heads[:, None].to(tl.int64) * stride_xh + offs[None, :]  # first halves
    mask = (heads < n_heads)[:, None] & d_ok[None, :]
    x1 = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(ptrs + half, mask=mask, other=0.0).to(tl.float32)
    # each program reads and writes only its own elements, both halves read before either is written
    tl.store(ptrs, (x1 * c - x2 * s).to(X.dtype.element_ty), mask=mask)
    tl.store(ptrs + half, (x2 * c + x1 * s).to(X.dtype.element_ty), mask=mask)


_LAUNCH_ROPE = DirectLauncher(_rope_kernel)


def rope_triton_(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """The Triton kernel of rope_ (arguments checked by the caller). One program per (token, block of heads)."""
    T, H, D = qk.shape
    half = D // 2
    block_half = triton.next_power_of_2(half)
    block_h = max(1, min(triton.next_power_of_2(H), 2048 // block_half))
    if T:
        _LAUNCH_ROPE((T, triton.cdiv(H, block_h)),
                     (qk, cos, sin, qk.stride(0), qk.stride(1), cos.stride(0), sin.stride(0), H, half),
                     dict(BLOCK_H=block_h, BLOCK_HALF=block_half), num_warps=4, num_stages=1)


def rope_(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backend: str = "auto") -> None:
    """Rotate every head of qk in place by its token's angles (HF's rotate_half pairing: (i, i + D/2)).

    qk: [T, H, D], any strides with a contiguous head dim (the model passes the q and k heads of its fused qkv
    output, H = Hq + Hkv, without copying them out); cos, sin: fp32 [T, D/2] (fp64 accepted by the torch path).
    Returns None.
    """
    if qk.dim() != 3 or qk.stride(2) != 1 or qk.shape[2] % 2:
        raise ValueError(f"qk must be [T, H, D] with an even, contiguous head dim; got shape {tuple(qk.shape)} "
                         f"strides {qk.stride()}")
    T, _, D = qk.shape
    for name, t in (("cos", cos), ("sin", sin)):
        # fp64 tables come from a model cast with .to(float64) (its inv_freq buffer too): the torch path takes them
        if t.shape != (T, D // 2) or t.dtype not in (torch.float32, torch.float64) or t.device != qk.device \
                or t.stride(1) != 1:
            raise ValueError(f"{name} must be fp32 [{T}, {D // 2}] on {qk.device} with contiguous columns, got "
                             f"{t.dtype} {tuple(t.shape)} on {t.device}")
    if _use_triton(backend, qk):
        if cos.dtype != torch.float32 or sin.dtype != torch.float32:
            raise ValueError(f"the Triton RoPE takes fp32 cos/sin, got {cos.dtype}: use backend='torch'")
        rope_triton_(qk, cos, sin)
    else:
        rope_torch_(qk, cos, sin)


# ----- SiLU(gate) * up


def silu_mul_torch(gate_up: torch.Tensor) -> torch.Tensor:
    """Reference of silu_mul: F.silu(gate) * up in the input dtype, as transformers' SwiGLU."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


@triton.jit
def _silu_mul_kernel(
    GU,  # [T, 2I]: gate columns, then up columns
    OUT,  # [T, I]
    stride_g, stride_o, n_cols,
    BLOCK: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    g = tl.load(GU + t * stride_g + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(GU + t * stride_g + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    a = (g / (1.0 + tl.exp(-g))).to(OUT.dtype.element_ty).to(tl.float32)  # silu rounded, as F.silu's output
    tl.store(OUT + t * stride_o + cols, (a * u).to(OUT.dtype.element_ty), mask=mask)


_LAUNCH_SILU = DirectLauncher(_silu_mul_kernel)
_SILU_BLOCK = 1024


def silu_mul_triton(gate_up: torch.Tensor) -> torch.Tensor:
    """The Triton kernel of silu_mul (arguments checked by the caller). One program per (row, 1024 columns)."""
    T, width = gate_up.shape
    n = width // 2
    out = torch.empty((T, n), dtype=gate_up.dtype, device=gate_up.device)
    block = min(_SILU_BLOCK, triton.next_power_of_2(n))
    if T:
        _LAUNCH_SILU((T, triton.cdiv(n, block)), (gate_up, out, gate_up.stride(0), out.stride(0), n),
                     dict(BLOCK=block), num_warps=4, num_stages=1)
    return out


def silu_mul(gate_up: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """SwiGLU's activation: silu(gate) * up. gate_up: [T, 2I] (the fused gate/up projection's output, gate
    columns first). Returns [T, I] in gate_up's dtype."""
    _check_rows("gate_up", gate_up)
    if gate_up.shape[1] % 2:
        raise ValueError(f"gate_up must have an even number of columns (gate then up), got {gate_up.shape[1]}")
    if _use_triton(backend, gate_up):
        return silu_mul_triton(gate_up)
    return silu_mul_torch(gate_up)
