"""The launches of one tree-attention call on the Triton path: configurations, launch lists, issuing them.

The kernels are in prompt_tree/kernels/triton_kernels.py. A call is a short list of launches, built once
(`build_launches`) and issued by `run_launches` here or by a plan (prompt_tree/kernels/attention_plan.py), whatever
the tree:
  one _shared_kernel launch per non-empty tile class (at most three), then the _own_kernel launch, then, when the
  own segments are split or the own kernel overlaps the shared ones on a side stream, the _merge_kernel launch.
How they are spread over streams (overlap, PDL) and launched (direct, raw) is prompt_tree.kernels.LaunchOptions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton

from .launch import DirectLauncher, fork_join
from .meta import TreeAttentionMeta
from .options import DEFAULT_OPTIONS, LaunchOptions, in_graph_path
from .triton_kernels import HAS_PDL, _merge_kernel, _own_kernel, _shared_kernel

LOG2E = 1.4426950408889634
SPLIT_ALIGN = 64  # own-segment split chunks are multiples of this (must match prompt_tree/kernels/torch_path.py)

# Launch configurations (BLOCK_N, num_warps, num_stages) per kernel and query-block height. Chosen on an H100
# with prompt_tree/kernels/tune.py (numbers in docs/benchmarks/); the interpreter ignores warps and stages. Measured and
# rejected (docs/benchmarks/tune_v3.json, triton 3.6): BLOCK_N=128 for the 128-row class (13x slower: the
# 128 x 128 fp32 score tile spills), 4 warps for it (19x), and TMA descriptor loads of whole KV blocks (2.6-3x
# slower: Triton 3.6 does not pipeline host-descriptor loads in this loop).
SHARED_CFG = {16: (64, 4, 3), 64: (64, 4, 3), 128: (64, 8, 3)}
# The decode own (suffix) kernel: one warp, 16 keys a block, on the H200 (tune.json of 2026-12-02, run 3: the
# job's shape and the step benchmark's, 3% less attention time than (64, 4, 2) in the graph path). Suffixes of a
# few hundred tokens are a handful of blocks per program, so many small programs per SM hide the page gathers'
# latency better than a few wide ones.
OWN_CFG = {16: (16, 1, 2), 64: (64, 4, 3)}

_PDL_CAPABLE: dict[int, bool] = {}


def _pdl_ok(device: torch.device, options: LaunchOptions) -> bool:
    if not options.pdl or not HAS_PDL:
        return False
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _PDL_CAPABLE:
        _PDL_CAPABLE[idx] = torch.cuda.get_device_capability(idx)[0] >= 9
    return _PDL_CAPABLE[idx]


_LAUNCH_SHARED = DirectLauncher(_shared_kernel)
_LAUNCH_OWN = DirectLauncher(_own_kernel)
_LAUNCH_MERGE = DirectLauncher(_merge_kernel)


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


@dataclass
class Launch:
    """One kernel launch of a tree-attention call: what DirectLauncher needs, plus where it runs.

    args are the runtime arguments in signature order; when `qkv`, the first three are q, k_cache, v_cache (a plan
    swaps them per call). `side`: on the side stream (the own kernel while overlapping); `join`: the main stream
    waits for the side stream before this launch (the merge). direct/raw: prompt_tree.kernels.LaunchOptions."""
    launcher: DirectLauncher
    grid: tuple
    args: tuple
    constexprs: dict
    num_warps: int
    num_stages: int
    qkv: bool
    side: bool = False
    join: bool = False
    launch_pdl: bool = False  # launched as a programmatic dependent of the previous kernel (LaunchOptions.pdl)
    direct: bool = True
    raw: bool = True

    def __call__(self, qkv: tuple | None = None):
        args = self.args if qkv is None or not self.qkv else qkv + self.args[3:]
        return self.launcher(self.grid, args, self.constexprs, self.num_warps, self.num_stages, self.launch_pdl,
                             self.direct, self.raw)


@dataclass
class LaunchList:
    """Every launch of one call, in issue order, and the buffers they write. overlap: fork a side stream first."""
    launches: list[Launch]
    overlap: bool
    out: torch.Tensor  # [T, Hq, D] q.dtype
    lse: torch.Tensor  # [T, Hq] fp32 (the LSE workspace itself when return_lse is off)
    return_lse: bool


def resolve_overlap(meta: TreeAttentionMeta, q: torch.Tensor, options: LaunchOptions, has_shared: bool) -> bool:
    """Whether the own kernel runs on a side stream (LaunchOptions.overlap; None = the automatic rule)."""
    if not (has_shared and q.is_cuda):
        return False
    if options.overlap is not None:
        return options.overlap
    return (torch.cuda.is_current_stream_capturing() or in_graph_path()
            or meta.kv_tokens_read * meta.num_kv_heads * q.shape[2] * q.element_size() * 2
            >= options.overlap_min_bytes)


def build_launches(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta,
                   scale: float | None = None, return_lse: bool = False, out: torch.Tensor | None = None,
                   workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
                   options: LaunchOptions = DEFAULT_OPTIONS) -> LaunchList:
    """The launches of one call (allocating out / workspace where not given), without running them.

    q: [T, Hq, D]; k_cache, v_cache: [S, Hkv, D]; workspace: (o_part [T, slots, Hq, D] fp32, l_part [T, slots, Hq]
    fp32) with slots = max(meta.max_slots, 1)."""
    t, hq, d = q.shape
    g = hq // meta.num_kv_heads
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qk_scale = scale * LOG2E
    ieee = q.dtype == torch.float32
    block_d = _block_d(d)
    slots = max(meta.max_slots, 1)
    if workspace is None:
        o_part = torch.empty((t, slots, hq, d), dtype=torch.float32, device=q.device)
        l_part = torch.empty((t, slots, hq), dtype=torch.float32, device=q.device)
    else:
        o_part, l_part = workspace
    if out is None:
        out = torch.empty_like(q)
    lse = torch.empty((t, hq), dtype=torch.float32, device=q.device) if return_lse else l_part
    if t == 0:
        return LaunchList([], False, out, lse, return_lse)

    has_shared = any(c.tiles.shape[0] for c in meta.shared_classes)
    overlap = resolve_overlap(meta, q, options, has_shared)
    fuse = meta.own_splits == 1 and not overlap
    pdl = not overlap and has_shared and q.is_cuda and _pdl_ok(q.device, options)
    flags = dict(direct=options.direct, raw=options.raw)
    # not paged: the page-table pointer is never read; pass a valid int32 tensor of the meta (row stride 0)
    table = meta.own_page_table if meta.paged else meta.own_start
    stride_pg = table.stride(0) if meta.paged else 0

    launches = []
    for cls in meta.shared_classes:
        n_tiles = cls.tiles.shape[0]
        if n_tiles == 0:
            continue
        block_n, warps, stages = SHARED_CFG[cls.block_m]
        launches.append(Launch(
            _LAUNCH_SHARED, (n_tiles, meta.num_kv_heads),
            (q, k_cache, v_cache, cls.tiles, o_part, l_part, qk_scale,
             q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1),
             o_part.stride(0), o_part.stride(1), l_part.stride(0), l_part.stride(1)),
            dict(G=g, HEAD_DIM=d, BLOCK_M=cls.block_m, BLOCK_N=block_n, BLOCK_D=block_d, IEEE=ieee, PDL=pdl),
            warps, stages, qkv=True, **flags))
    if meta.own_tiles.shape[0]:
        block_n, warps, stages = OWN_CFG[meta.own_block_m]
        launches.append(Launch(
            _LAUNCH_OWN, (meta.own_tiles.shape[0], meta.num_kv_heads, meta.own_splits),
            (q, k_cache, v_cache, meta.own_tiles, meta.seq_q_start, meta.seq_q_len, meta.own_start, meta.own_len,
             meta.seq_shared_slots, table, o_part, l_part, out, lse, qk_scale,
             q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1),
             o_part.stride(0), o_part.stride(1), l_part.stride(0), l_part.stride(1), out.stride(0), out.stride(1),
             lse.stride(0), stride_pg),
            dict(G=g, HEAD_DIM=d, BLOCK_M=meta.own_block_m, BLOCK_N=block_n, BLOCK_D=block_d, NSPLIT=meta.own_splits,
                 SPLIT_ALIGN_=SPLIT_ALIGN, CAUSAL=meta.causal_own, FUSE_MERGE=fuse, WRITE_LSE=return_lse, IEEE=ieee,
                 PDL=pdl, PAGED=meta.paged, PAGE_SIZE=max(meta.page_size, 1)),
            warps, stages, qkv=True, side=overlap, launch_pdl=pdl, **flags))
    if not fuse:
        # Enough programs to fill the GPU even for a handful of rows: fewer heads per program when T is small.
        block_h = min(triton.next_power_of_2(hq), max(1, 4096 // block_d))
        while block_h > 1 and t * triton.cdiv(hq, block_h) < 256:
            block_h //= 2
        launches.append(Launch(
            _LAUNCH_MERGE, (t, triton.cdiv(hq, block_h)),
            (o_part, l_part, meta.row_seq, meta.seq_shared_slots, out, lse,
             o_part.stride(0), o_part.stride(1), l_part.stride(0), l_part.stride(1), out.stride(0), out.stride(1),
             lse.stride(0)),
            dict(NUM_HEADS=hq, HEAD_DIM=d, EXTRA_SLOTS=meta.own_splits, BLOCK_H=block_h, BLOCK_D=block_d,
                 WRITE_LSE=return_lse),
            4, 3, qkv=False, join=overlap, **flags))
    return LaunchList(launches, overlap, out, lse, return_lse)


def run_launches(plan: LaunchList, device: torch.device, qkv: tuple | None = None):
    """Issue a call's launches (with q, k_cache, v_cache swapped for `qkv` when given) -> out (, lse)."""
    if not plan.overlap:  # one stream: the plain loop (plain calls pay every function call in host time)
        for ln in plan.launches:
            ln(qkv)
    else:
        def issue(ln: Launch, stream) -> None:
            if stream is None:
                ln(qkv)
            else:
                with torch.cuda.stream(stream):
                    ln(qkv)

        fork_join(plan.launches, True, device.index if device.index is not None else torch.cuda.current_device(),
                  issue)
    return (plan.out, plan.lse) if plan.return_lse else plan.out


def tree_attention_triton(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta,
                          scale: float | None = None, return_lse: bool = False, out: torch.Tensor | None = None,
                          workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
                          options: LaunchOptions = DEFAULT_OPTIONS):
    """Launch the tree-attention kernels. Shapes and dtypes are checked by prompt_tree.kernels.tree_attention.

    q: [T, Hq, D]; k_cache, v_cache: [S, Hkv, D] (last dim contiguous). Returns o [T, Hq, D] in q.dtype (and lse
    [T, Hq] fp32 natural log). `out` and `workspace` may be preallocated (CUDA graphs reuse them).
    """
    plan = build_launches(q, k_cache, v_cache, meta, scale, return_lse, out, workspace, options)
    return run_launches(plan, q.device)
