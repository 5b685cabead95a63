"""The one public op: tree attention of a batch of query rows over a KV pool, for decode and tree prefill."""
from __future__ import annotations

import contextlib
import os

import torch

from .meta import TreeAttentionMeta

_SUPPORTED = (torch.float16, torch.bfloat16, torch.float32)
_GRAPH_PATH = {"depth": 0}


@contextlib.contextmanager
def cuda_graph_path():
    """Plain calls inside take the launch path a CUDA-graph capture takes.

    Small plain calls stay on one stream (kernels.triton_tree.OVERLAP); a capture always overlaps the own-suffix
    kernel on a side stream. Run the warm-up before a capture inside this, and it compiles and runs exactly the
    kernels the capture records (and gives the same bits as the replay).
    """
    _GRAPH_PATH["depth"] += 1
    try:
        yield
    finally:
        _GRAPH_PATH["depth"] -= 1


def in_graph_path() -> bool:
    return _GRAPH_PATH["depth"] > 0


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


def _check_scale(scale: float | None, backend: str) -> None:
    if scale is not None and not scale > 0:  # the kernels take the row max before scaling: needs scale > 0
        raise ValueError(f"scale must be a positive number, not {scale!r}")
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', not {backend!r}")


def use_triton(device: torch.device) -> bool:
    """Triton on CUDA; on CPU only when the interpreter is explicitly on (tests)."""
    if device.type == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET") == "1" and os.environ.get("PROMPT_TREE_CPU_TRITON") == "1"


def tree_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta,
                   scale: float | None = None, return_lse: bool = False, backend: str = "auto", **kwargs):
    """Attention of packed query rows over a prompt tree's KV, each shared node read once for its whole group.

    q: [T, Hq, D] (rows packed by query-sequence, see kernels.meta.build_tree_meta); k_cache, v_cache: [S, Hkv, D]
    holding every node's and every sequence's own keys/values (the caller has written the new tokens' k/v).
    Returns o [T, Hq, D] in q.dtype, and lse [T, Hq] (fp32, natural log) when return_lse.
    backend: "auto" (Triton on CUDA, batched torch elsewhere), "triton" or "torch".
    kwargs: `out=` / `workspace=` preallocated buffers for the Triton path (CUDA graphs).
    Calling it for every layer of a step repeats the host work; kernels.plan_tree_attention does it once.
    """
    _check(q, k_cache, v_cache, meta)
    _check_scale(scale, backend)
    if backend == "triton" or (backend == "auto" and use_triton(q.device)):
        from .triton_tree import tree_attention_triton

        return tree_attention_triton(q, k_cache, v_cache, meta, scale=scale, return_lse=return_lse, **kwargs)
    from .torch_path import tree_attention_torch

    return tree_attention_torch(q, k_cache, v_cache, meta, scale=scale, return_lse=return_lse)
