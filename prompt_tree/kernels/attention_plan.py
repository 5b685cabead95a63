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
capture needs. Editing their values in place is fine: the engine grows own lengths that way each decode step, and
TreeAttentionMeta.update_ rewrites a padded meta (prompt_tree.kernels.MetaCapacity) for another batch composition.
Every run writes the same `out` (and lse) tensors, as a replayed graph does: copy a result that must outlive the
next run.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import launch
from .meta import TreeAttentionMeta
from .options import DEFAULT_OPTIONS, LaunchOptions
from .torch_path import tree_attention_torch
from .tree_attention import _check, _check_buffers, _check_options, _check_scale, _describe, use_triton
from .triton_tree import build_launches, run_launches


def _signature(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> tuple:
    """What a run's tensors must share with the planned ones: the kernels bake strides and dtypes in."""
    return (q.shape, q.stride(), q.dtype, q.get_device(), k_cache.shape, k_cache.stride(), k_cache.dtype,
            k_cache.get_device(), v_cache.shape, v_cache.stride(), v_cache.dtype, v_cache.get_device())


class RawLaunch(NamedTuple):
    """One launch of a plan's direct path: the compiled launcher and every argument but q/k/v as an integer."""
    run: object  # CompiledKernel.run
    grid: tuple  # 3 ints
    function: object
    metadata: object
    tail: tuple  # runtime args after q/k/v (all of them when not qkv), pointers as ints, then the constexprs
    qkv: bool
    side: bool
    join: bool


class TreeAttentionPlan:
    """One layer-call of tree attention with its metadata, buffers and launches bound (see the module doc).

    plan = plan_tree_attention(q, k_cache, v_cache, meta)   # once per metadata (a decode step, a prefill call)
    o = plan.run(q, k_cache, v_cache)                         # per layer: same shapes, any data and addresses
    """

    def __init__(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta, *,
                 scale: float | None = None, return_lse: bool = False, out: torch.Tensor | None = None,
                 workspace: tuple[torch.Tensor, torch.Tensor] | None = None, options: LaunchOptions | None = None,
                 backend: str = "auto"):
        _check(q, k_cache, v_cache, meta)
        _check_scale(scale, backend)
        _check_buffers(q, meta, out, workspace)
        _check_options(options)
        options = options or DEFAULT_OPTIONS
        self.meta, self.scale, self.return_lse, self.options = meta, scale, return_lse, options
        self._sig = _signature(q, k_cache, v_cache)
        self._planned = [_describe(x) for x in (q, k_cache, v_cache)]  # for error messages
        self._device = q.device
        self._launches = None  # triton_tree.LaunchList on the Triton path
        self._raw = None  # per launch: the compiled launcher and its integer arguments (CUDA, direct launches)
        if backend == "triton" or (backend == "auto" and use_triton(q.device)):
            self._launches = build_launches(q, k_cache, v_cache, meta, scale, return_lse, out, workspace, options)
            self.out, self.lse = self._launches.out, self._launches.lse
            self.overlap = self._launches.overlap
            if q.is_cuda and options.direct and options.raw:
                with torch.cuda.device(q.device):  # Triton compiles and loads for the current device
                    self._raw = self._compile()
            for ln in self._launches.launches:  # runs pass their own q/k/v: do not keep the planning ones
                if ln.qkv and q.is_cuda:
                    ln.args = (None, None, None) + ln.args[3:]
        else:
            if workspace is not None:
                raise ValueError("workspace= applies to the Triton backend only (the torch path allocates its own)")
            self.out = torch.empty_like(q) if out is None else out
            self.lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device) if return_lse else None
            self.overlap = False
        self._result = (self.out, self.lse) if return_lse else self.out

    def _compile(self) -> list[RawLaunch] | None:
        """The launches with integer arguments, or None where any must go through Triton."""
        raw = []
        for ln in self._launches.launches:
            compiled = ln.launcher.compile(ln.grid, ln.args, ln.constexprs, ln.num_warps, ln.num_stages,
                                           ln.launch_pdl)
            if compiled is None:
                return None
            args = ln.args[3:] if ln.qkv else ln.args
            tail = tuple(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args)
            tail += ln.launcher.constexpr_values(len(ln.args), ln.constexprs)
            raw.append(RawLaunch(compiled.run, launch.grid3(ln.grid), compiled.function, compiled.packed_metadata,
                                 tail, ln.qkv, ln.side, ln.join))
        return raw

    def run(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor):
        """Attention for this plan's metadata -> out [T, Hq, D] (and lse [T, Hq] fp32 when planned with
        return_lse). q, k_cache, v_cache: the planned shapes, strides, dtypes and device; any data. The metadata
        may have been changed in place since planning (own_len, TreeAttentionMeta.update_)."""
        if _signature(q, k_cache, v_cache) != self._sig:
            raise ValueError(self._mismatch(q, k_cache, v_cache))
        if self.meta.kv_extent > k_cache.shape[0]:  # update_ may have brought wider ranges than planned with
            _check(q, k_cache, v_cache, self.meta)
        raw = self._raw
        if raw is not None:
            ptrs = (q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr())
            # The kernels were specialized on 16-byte aligned pointers; a profiler's launch hook, changed debug
            # knobs or another current device need Triton's own path.
            if not (ptrs[0] | ptrs[1] | ptrs[2]) & 15 and launch.raw_launch_ok() \
                    and torch.cuda.current_device() == self._device.index:
                self._run_raw(raw, ptrs)
                return self._result
        if self._launches is not None:
            return run_launches(self._launches, q.device, (q, k_cache, v_cache))
        res = tree_attention_torch(q, k_cache, v_cache, self.meta, scale=self.scale, return_lse=self.return_lse)
        if self.return_lse:
            self.out.copy_(res[0])
            self.lse.copy_(res[1])
        else:
            self.out.copy_(res)
        return self._result

    __call__ = run

    def _run_raw(self, raw: list[RawLaunch], ptrs: tuple) -> None:
        dev = self._device.index
        current = launch._current_stream(dev)

        def issue(ln: RawLaunch, stream) -> None:
            g = ln.grid
            ln.run(g[0], g[1], g[2], current if stream is None else stream.cuda_stream, ln.function, ln.metadata,
                   None, None, None, *(ptrs + ln.tail if ln.qkv else ln.tail))

        launch.fork_join(raw, self.overlap, dev, issue)

    def _mismatch(self, q, k_cache, v_cache) -> str:
        for i, (name, x) in enumerate(zip(("q", "k_cache", "v_cache"), (q, k_cache, v_cache))):
            if _signature(x, x, x)[:4] != self._sig[4 * i:4 * i + 4]:
                return (f"{name} is {_describe(x)} but the plan was made for {self._planned[i]}: make a new plan "
                        f"(prompt_tree.kernels.plan_tree_attention) for these tensors")
        return "tensors differ from the planned ones"  # unreachable: some part of the signature differed


def plan_tree_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: TreeAttentionMeta,
                        **kwargs) -> TreeAttentionPlan:
    """Bind one layer-call of `prompt_tree.kernels.tree_attention` ahead of time; see TreeAttentionPlan.

    q, k_cache, v_cache: tensors of the shapes, strides and dtypes every run will pass (their data is not read).
    kwargs: scale, return_lse, out, workspace, options, backend, as for tree_attention.
    """
    return TreeAttentionPlan(q, k_cache, v_cache, meta, **kwargs)
