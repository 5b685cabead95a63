"""The one public op: tree attention of a batch of query rows over a KV pool, for decode and tree prefill."""
from __future__ import annotations

import os

import torch

from .meta import TreeAttentionMeta
from .options import DEFAULT_OPTIONS, LaunchOptions, cuda_graph_path, in_graph_path
from .torch_path import tree_attention_torch
from .triton_tree import tree_attention_triton

# cuda_graph_path and in_graph_path live in prompt_tree/kernels/options.py; kept importable from here for existing
# callers.
__all__ = ["tree_attention", "cuda_graph_path", "in_graph_path", "use_triton"]

_SUPPORTED = (torch.float16, torch.bfloat16, torch.float32)


def _check(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta) -> None:
    if q.dim() != 3 or k_cache.dim() != 3 or v_cache.dim() != 3:
        raise ValueError(f"expected q [T, Hq, D] and k_cache, v_cache [S, Hkv, D]; got q {tuple(q.shape)}, "
                         f"k_cache {tuple(k_cache.shape)}, v_cache {tuple(v_cache.shape)}")
    t, hq, d = q.shape
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} differ in shape")
    if (hq, k_cache.shape[1], d) != (meta.num_q_heads, meta.num_kv_heads, meta.head_dim):
        raise ValueError(f"tensor heads/dim (q heads {hq}, kv heads {k_cache.shape[1]}, head dim {d}) do not match "
                         f"the metadata ({meta.num_q_heads}, {meta.num_kv_heads}, {meta.head_dim}): rebuild it")
    if k_cache.shape[2] != d:
        raise ValueError(f"head dim of q ({d}) and k_cache ({k_cache.shape[2]}) differ")
    if t != meta.num_rows:
        raise ValueError(f"q has {t} rows but the metadata describes {meta.num_rows} (sum of q_lens)")
    if q.dtype not in _SUPPORTED or k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"dtypes must be one of fp16, bf16, fp32 and equal: q {q.dtype}, k {k_cache.dtype}, "
                         f"v {v_cache.dtype}")
    if q.device != k_cache.device or q.device != v_cache.device:
        raise ValueError(f"q, k_cache and v_cache must be on one device: {q.device}, {k_cache.device}, "
                         f"{v_cache.device}")
    if q.device != meta.own_len.device:
        raise ValueError(f"metadata lives on {meta.own_len.device} but q on {q.device}: build it with device=q.device")
    if meta.kv_extent > k_cache.shape[0]:
        kind, idx = meta.kv_extent_owner
        raise ValueError(f"the metadata reads KV slots up to {meta.kv_extent - 1} ({kind} {idx}) but the cache has "
                         f"only {k_cache.shape[0]} slots: grow the cache or fix that range")
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if x.stride(2) != 1:
            raise ValueError(f"{name} must be contiguous in its last (head_dim) dimension")


def _describe(x: torch.Tensor) -> str:
    return f"{tuple(x.shape)} strides {tuple(x.stride())} {x.dtype} on {x.device}"


def _check_buffers(q: torch.Tensor, meta: TreeAttentionMeta, out: torch.Tensor | None, workspace) -> None:
    """Preallocated buffers must be what the kernels write (they do not bound-check: a small one would be written
    past): out like q; the workspace (o_part [T, slots, Hq, D], l_part [T, slots, Hq], fp32, the last two / one
    dims contiguous) with slots = max(meta.max_slots, 1). Kept cheap: plain calls pay it every time."""
    dev = q.get_device()
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or out.get_device() != dev
                            or out.stride(2) != 1):
        raise ValueError(f"out must match q: out {_describe(out)}, q {_describe(q)}")
    if workspace is None:
        return
    t, hq, d = q.shape
    o_part, l_part = workspace
    slots = meta.max_slots or 1
    if o_part.shape != (t, slots, hq, d) or l_part.shape != (t, slots, hq) or o_part.dtype != torch.float32 \
            or l_part.dtype != torch.float32 or o_part.stride()[2:] != (d, 1) or l_part.stride(2) != 1 \
            or o_part.get_device() != dev or l_part.get_device() != dev:
        raise ValueError(f"workspace must be fp32 o_part {(t, slots, hq, d)} and l_part {(t, slots, hq)} on "
                         f"{q.device}, contiguous in the heads and head_dim dimensions; got o_part "
                         f"{_describe(o_part)}, l_part {_describe(l_part)}")


def _check_scale(scale: float | None, backend: str) -> None:
    if scale is not None and not scale > 0:  # the kernels take the row max before scaling: needs scale > 0
        raise ValueError(f"scale must be a positive number, not {scale!r}")
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', not {backend!r}")


def _check_options(options) -> None:
    if options is not None and not isinstance(options, LaunchOptions):
        raise ValueError(f"options must be a prompt_tree.kernels.LaunchOptions, not {type(options).__name__}")


def use_triton(device: torch.device) -> bool:
    """Triton on CUDA; on CPU only when the interpreter is explicitly on (tests)."""
    if device.type == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET") == "1" and os.environ.get("PROMPT_TREE_CPU_TRITON") == "1"


def tree_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta,
                   scale: float | None = None, return_lse: bool = False, backend: str = "auto", *,
                   out: torch.Tensor | None = None, workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
                   options: LaunchOptions | None = None):
    """Attention of packed query rows over a prompt tree's KV, each shared node read once for its whole group.

    q: [T, Hq, D] (rows packed by query-sequence, see prompt_tree.kernels.build_tree_meta); k_cache, v_cache:
    [S, Hkv, D] holding every node's and every sequence's own keys/values (the caller has written the new tokens' k/v,
    at prompt_tree.kernels.own_slots / query_slots for the own segments). Returns o [T, Hq, D] in q.dtype, and lse
    [T, Hq] (fp32, natural log) when return_lse. Rows that see no key at all (padding rows) get o = 0 and lse = -inf.
    backend: "auto" (Triton on CUDA, batched torch elsewhere), "triton" or "torch".
    out [T, Hq, D] / workspace (o_part [T, slots, Hq, D], l_part [T, slots, Hq] fp32, slots = max(meta.max_slots,
    1)): preallocated buffers (the torch path takes out only). options: prompt_tree.kernels.LaunchOptions (GPU
    launches). Calling it for every layer of a step repeats the host work; prompt_tree.kernels.plan_tree_attention
    does it once.
    """
    _check(q, k_cache, v_cache, meta)
    _check_scale(scale, backend)
    if out is not None or workspace is not None:
        _check_buffers(q, meta, out, workspace)
    if options is not None and type(options) is not LaunchOptions:
        _check_options(options)
    if backend == "triton" or (backend == "auto" and use_triton(q.device)):
        return tree_attention_triton(q, k_cache, v_cache, meta, scale=scale, return_lse=return_lse, out=out,
                                     workspace=workspace, options=options or DEFAULT_OPTIONS)
    if workspace is not None:
        raise ValueError("workspace= applies to the Triton backend only (the torch path allocates its own)")
    res = tree_attention_torch(q, k_cache, v_cache, meta, scale=scale, return_lse=return_lse)
    if out is None:
        return res
    out.copy_(res[0] if return_lse else res)
    return (out, res[1]) if return_lse else out
