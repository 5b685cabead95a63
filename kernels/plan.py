"""Plan once, run many: a tree-attention call with everything except q, k_cache and v_cache bound ahead of time.

FlashInfer's wrappers split plan() (metadata, buffers) from run() (the launches), and a decode step runs one
plan for every layer. The op `tree_attention` redoes the host work on every call: checks, ~30-argument tuples,
the launcher's specialization key, and inside Triton's launcher a data_ptr() call and a driver pointer query for
every tensor argument. On the H100 machine's host that is ~90 us per call, against 14 us of GPU time for a small
decode step (docs/benchmarks/launch_overhead.json).

A plan does that work once. It binds the metadata, `out`, the workspace and the launch configuration (the overlap
choice included), compiles the kernels, and keeps per launch the compiled launcher with every argument other
than q/k/v already an integer (Triton's launcher takes an int as a device pointer without querying the driver).
run() checks that q, k_cache and v_cache have the planned shapes, strides, dtypes and device, then issues the
launches.

A plan stays valid while the metadata's tensors keep their shapes and addresses, which is also what a CUDA-graph
capture needs. Editing their values in place is fine (the engine grows own lengths that way each decode step).
Every run writes the same `out` (and lse) tensors, as a replayed graph does: copy a result that must outlive the
next run.
"""
from __future__ import annotations

import torch

from . import launch
from .meta import TreeAttentionMeta
from .tree_attention import _check, _check_scale, use_triton


def _signature(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> tuple:
    """What a run's tensors must share with the planned ones: the kernels bake strides and dtypes in."""
    return (q.shape, q.stride(), q.dtype, q.get_device(), k_cache.shape, k_cache.stride(), k_cache.dtype,
            k_cache.get_device(), v_cache.shape, v_cache.stride(), v_cache.dtype, v_cache.get_device())


def _describe(x: torch.Tensor) -> str:
    return f"{tuple(x.shape)} strides {tuple(x.stride())} {x.dtype} on {x.device}"


class TreeAttentionPlan:
    """One layer-call of tree attention with its metadata, buffers and launches bound (see the module doc).

    plan = plan_tree_attention(q, k_cache, v_cache, meta)   # once per metadata (a decode step, a prefill call)
    o = plan.run(q, k_cache, v_cache)                         # per layer: same shapes, any data and addresses
    """

    def __init__(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta, *,
                 scale: float | None = None, return_lse: bool = False, out: torch.Tensor | None = None,
                 workspace: tuple[torch.Tensor, torch.Tensor] | None = None, overlap: bool | None = None,
                 backend: str = "auto"):
        _check(q, k_cache, v_cache, meta)
        _check_scale(scale, backend)
        if out is not None and (out.shape != q.shape or out.dtype != q.dtype or out.device != q.device):
            raise ValueError(f"out must match q: out {_describe(out)}, q {_describe(q)}")
        self.meta, self.scale, self.return_lse = meta, scale, return_lse
        self._sig = _signature(q, k_cache, v_cache)
        self._planned = [_describe(x) for x in (q, k_cache, v_cache)]  # for error messages
        self._device = q.device
        self._launches = None  # triton_tree.LaunchList on the Triton path
        self._raw = None  # per launch: the compiled launcher and its integer arguments (CUDA, direct launches)
        if backend == "triton" or (backend == "auto" and use_triton(q.device)):
            from .triton_tree import build_launches

            self._launches = build_launches(q, k_cache, v_cache, meta, scale, return_lse, out, workspace, overlap)
            self.out, self.lse = self._launches.out, self._launches.lse
            self.overlap = self._launches.overlap
            if q.is_cuda:
                with torch.cuda.device(q.device):  # Triton compiles and loads for the current device
                    self._raw = self._compile()
                for ln in self._launches.launches:  # runs pass their own q/k/v: do not keep the planning ones
                    if ln.qkv:
                        ln.args = (None, None, None) + ln.args[3:]
        else:
            if workspace is not None or overlap:
                raise ValueError("workspace= and overlap= apply to the Triton backend only")
            self.out = torch.empty_like(q) if out is None else out
            self.lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device) if return_lse else None
            self.overlap = False
        self._result = (self.out, self.lse) if return_lse else self.out

    def _compile(self) -> list | None:
        """The launches as (launcher, grid, integer arguments, flags), or None where any must go through Triton."""
        raw = []
        for ln in self._launches.launches:
            compiled = ln.launcher.compile(ln.grid, ln.args, ln.constexprs, ln.num_warps, ln.num_stages,
                                           ln.launch_pdl)
            if compiled is None:
                return None
            args = ln.args[3:] if ln.qkv else ln.args
            tail = tuple(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args)
            tail += ln.launcher.constexpr_values(len(ln.args), ln.constexprs)
            raw.append((compiled.run, launch.grid3(ln.grid), compiled.function, compiled.packed_metadata, tail,
                        ln.qkv, ln.side, ln.join))
        return raw

    def run(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor):
        """Attention for this plan's metadata -> out [T, Hq, D] (and lse [T, Hq] fp32 when planned with
        return_lse). q, k_cache, v_cache: the planned shapes, strides, dtypes and device; any data."""
        if _signature(q, k_cache, v_cache) != self._sig:
            raise ValueError(self._mismatch(q, k_cache, v_cache))
        raw = self._raw
        if raw is not None:
            ptrs = (q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr())
            # The kernels were specialized on 16-byte aligned pointers; a profiler's launch hook, direct launches
            # switched off, changed debug knobs or another current device need Triton's own path.
            if not (ptrs[0] | ptrs[1] | ptrs[2]) & 15 and launch.raw_launch_ok() \
                    and torch.cuda.current_device() == self._device.index:
                self._run_raw(raw, ptrs)
                return self._result
        if self._launches is not None:
            from .triton_tree import run_launches

            return run_launches(self._launches, q.device, (q, k_cache, v_cache))
        from .torch_path import tree_attention_torch

        res = tree_attention_torch(q, k_cache, v_cache, self.meta, scale=self.scale, return_lse=self.return_lse)
        if self.return_lse:
            self.out.copy_(res[0])
            self.lse.copy_(res[1])
        else:
            self.out.copy_(res)
        return self._result

    __call__ = run

    def _run_raw(self, raw: list, ptrs: tuple) -> None:
        dev = self._device.index
        stream = launch._current_stream(dev)
        side_stream = stream
        if self.overlap:
            main = torch.cuda.current_stream(dev)
            side = launch.side_stream(dev)
            side.wait_stream(main)
            side_stream = side.cuda_stream
        for run, grid, function, metadata, tail, qkv, on_side, join in raw:
            if join:
                main.wait_stream(side)
            run(grid[0], grid[1], grid[2], side_stream if on_side else stream, function, metadata, None, None, None,
                *(ptrs + tail if qkv else tail))

    def _mismatch(self, q, k_cache, v_cache) -> str:
        for i, (name, x) in enumerate(zip(("q", "k_cache", "v_cache"), (q, k_cache, v_cache))):
            if _signature(x, x, x)[:4] != self._sig[4 * i:4 * i + 4]:
                return (f"{name} is {_describe(x)} but the plan was made for {self._planned[i]}: make a new plan "
                        f"(kernels.plan_tree_attention) for these tensors")
        return "tensors differ from the planned ones"  # unreachable: some part of the signature differed


def plan_tree_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta,
                        **kwargs) -> TreeAttentionPlan:
    """Bind one layer-call of `kernels.tree_attention` ahead of time; see TreeAttentionPlan.

    q, k_cache, v_cache: tensors of the shapes, strides and dtypes every run will pass (their data is not read).
    kwargs: scale, return_lse, out, workspace, overlap, backend, as for tree_attention.
    """
    return TreeAttentionPlan(q, k_cache, v_cache, meta, **kwargs)
