"""Launching a Triton kernel through its compiled handle, past the JIT dispatcher's per-call work.

`kernel[grid](...)` binds and specializes every argument, builds a cache key and looks the compiled kernel up on
every call. On the H100 machine's host a plain decode call of the op (two launches of ~30-argument kernels) took
150 us of host time through the dispatcher and 99 us with this launcher (tools/launch_overhead.py,
docs/benchmarks/launch_overhead.json), against 14 us of GPU time for a small step. Decode replays CUDA graphs,
where host time is paid once at capture, but plain calls (prefill, a user calling the op eagerly) pay it on
every launch.

`DirectLauncher` sends the first launch of a configuration through Triton, which compiles and returns the
CompiledKernel, and launches later calls with the same key directly. The key holds everything Triton
specializes on in these launches:
- the current device (Triton compiles and loads per device) and the stream is that device's current one;
- the constexprs and the launch options (num_warps, num_stages);
- the dtype of every tensor argument;
- the exact value of every int argument (strides here). Triton specializes ints on == 1, divisibility by 16
  and the 32-bit range, and equal values specialize equally;
- whether every pointer is 16-byte aligned. Only the all-aligned case is cached; any other goes through Triton
  every time, as before.
Floats are never specialized. Off CUDA (the interpreter) and with `DIRECT["enabled"]` false, every call goes
through Triton.
"""
from __future__ import annotations

import torch

DIRECT = {"enabled": True, "raw": True}
MAX_CACHED = 256  # compiled kernels kept per launcher (one per distinct key; a model uses a handful)


try:  # Triton >= 3.4: the runtime knobs hold the launch hooks
    from triton import knobs as _knobs
except ImportError:  # older Triton: only the public runner is used
    _knobs = None


def _on_gpu(t: torch.Tensor) -> bool:
    return t.is_cuda


def _hooked(hook) -> bool:
    """Whether a launch hook is set (None, or an empty HookChain in newer Triton, means no hook)."""
    return hook is not None and getattr(hook, "calls", True) != []


def _current_device() -> int:
    return torch.cuda.current_device()


def _current_stream(device_index: int) -> int:
    """The raw handle of the current stream (what Triton's own dispatcher passes)."""
    return torch._C._cuda_getCurrentRawStream(device_index)


class DirectLauncher:
    """kernel launches with Triton's compiled kernel cached per specialization key (see the module doc)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.arg_names = list(kernel.arg_names)  # signature order: runtime args, then our constexprs
        self.compiled: dict[tuple, object] = {}

    def __call__(self, grid: tuple, args: tuple, constexprs: dict, num_warps: int, num_stages: int = 3):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not DIRECT["enabled"] or not tensors or not _on_gpu(tensors[0]):
            return self.kernel[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)
        aligned = not any(t.data_ptr() & 15 for t in tensors)
        device = _current_device()  # Triton keeps one cache per device; so do we
        key = (device, tuple(a for a in args if type(a) is int), tuple(t.dtype for t in tensors),
               tuple(constexprs.values()), num_warps, num_stages)
        compiled = self.compiled.get(key) if aligned else None
        if compiled is None:
            compiled = self.kernel[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)
            if aligned and compiled is not None:
                if len(self.compiled) >= MAX_CACHED:  # many distinct shapes: start over rather than grow
                    self.compiled.clear()
                self.compiled[key] = compiled
            return compiled
        full = args + tuple(constexprs[n] for n in self.arg_names[len(args):])
        g1 = grid[1] if len(grid) > 1 else 1
        g2 = grid[2] if len(grid) > 2 else 1
        if DIRECT["raw"] and _knobs is not None and not _hooked(_knobs.runtime.launch_enter_hook) \
                and not _hooked(_knobs.runtime.launch_exit_hook):
            # The compiled launcher itself (signature of Triton >= 3.3): no per-call closure or metadata.
            stream = _current_stream(device)
            compiled.run(grid[0], g1, g2, stream, compiled.function, compiled.packed_metadata, None, None, None,
                         *full)
        else:  # a launch hook (a profiler) is set: the public runner builds its metadata
            compiled[(grid[0], g1, g2)](*full)
        return compiled
