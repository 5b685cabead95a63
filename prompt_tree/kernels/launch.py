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
Floats are never specialized; an argument of any other kind (bool, None, tuple) sends the call through Triton.
So do calls off CUDA (the interpreter), with `direct=False` (prompt_tree.kernels.LaunchOptions), on Triton < 3.3, with
Triton's debug or instrumentation switches changed since import, and for a kernel with pre-run hooks.

`fork_join` is the one place that spreads a call's launches over the current stream and a side stream.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import triton

MAX_CACHED = 256  # compiled kernels kept per launcher (one per distinct key; a model uses a handful)


try:  # Triton >= 3.4: the runtime knobs hold the launch hooks and the debug/instrumentation switches
    from triton import knobs as _knobs
except ImportError:  # older Triton: only the public runner is used
    _knobs = None


def _version(v: str) -> tuple[int, int]:
    major, minor = v.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


# Triton >= 3.3 passes every argument, constexprs included, to the compiled launcher (what the direct path
# does); older versions take the runtime arguments only, so there everything goes through the dispatcher.
_SUPPORTED = _version(triton.__version__) >= (3, 3)


def _knob_state() -> tuple:
    """Switches that Triton folds into its own cache key: a cached kernel is only reused while they are off."""
    if _knobs is None:
        return ()
    return (bool(getattr(_knobs.runtime, "debug", False)),
            getattr(_knobs.compilation, "instrumentation_mode", None) or None,
            getattr(_knobs.runtime, "add_stages_inspection_hook", None))


_DEFAULT_KNOBS = _knob_state()


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


def _options(num_warps: int, num_stages: int, launch_pdl: bool) -> dict:
    """Launch options; launch_pdl only when on (Triton versions without the option reject the keyword)."""
    opts = {"num_warps": num_warps, "num_stages": num_stages}
    if launch_pdl:
        opts["launch_pdl"] = True
    return opts


def no_launch_hooks() -> bool:
    """No launch hook (a profiler such as Proton) is set: those are called by Triton's runner only."""
    rt = _knobs.runtime
    return not _hooked(rt.launch_enter_hook) and not _hooked(rt.launch_exit_hook)


def raw_launch_ok() -> bool:
    """Whether the compiled launcher may be called directly now: a supported Triton, its debug/instrumentation
    knobs as at import, and no launch hook (the caller also needs LaunchOptions direct and raw on)."""
    return _SUPPORTED and _knobs is not None and _knob_state() == _DEFAULT_KNOBS and no_launch_hooks()


_side_streams: dict[int, torch.cuda.Stream] = {}


def side_stream(index: int) -> torch.cuda.Stream:
    """One extra stream per device, for kernels that overlap with the current stream's."""
    if index not in _side_streams:
        _side_streams[index] = torch.cuda.Stream(device=index)
    return _side_streams[index]


def fork_join(launches: Sequence, overlap: bool, device_index: int, issue: Callable) -> None:
    """Issue `launches` in order; with `overlap`, those marked `.side` on the device's side stream.

    The side stream first waits for everything issued so far on the current stream (the fork); a launch marked
    `.join` makes the current stream wait for the side stream first (the merge after the own kernel). issue(ln,
    stream) launches one: stream None = the current stream, else the side stream (a torch.cuda.Stream)."""
    if not overlap:
        for ln in launches:
            issue(ln, None)
        return
    main = torch.cuda.current_stream(device_index)
    side = side_stream(device_index)
    side.wait_stream(main)
    joined = False
    for ln in launches:
        if ln.join:
            main.wait_stream(side)
            joined = True
        issue(ln, side if ln.side else None)
    if not joined:  # work left on the side stream would race with whatever the caller does next
        raise RuntimeError("an overlapped call must join its side stream")


def grid3(grid: tuple) -> tuple[int, int, int]:
    """A launch grid padded to three dimensions, as the compiled launcher takes it."""
    return (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)


class DirectLauncher:
    """kernel launches with Triton's compiled kernel cached per specialization key (see the module doc)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.arg_names = list(kernel.arg_names)  # signature order: runtime args, then our constexprs
        params = getattr(kernel, "params", None)
        if params is not None:  # the direct launch passes constexprs after the runtime args: they must come last
            flags = [bool(getattr(p, "is_constexpr", False)) for p in params]
            if flags != sorted(flags):
                raise ValueError(f"{self.arg_names}: DirectLauncher needs every constexpr after the runtime arguments")
        self.compiled: dict[tuple, object] = {}

    def compile(self, grid: tuple, args: tuple, constexprs: dict, num_warps: int, num_stages: int = 3,
                launch_pdl: bool = False):
        """The compiled kernel for these arguments without launching it (Triton's warm-up), or None where direct
        launches do not apply (off CUDA, changed knobs, hooks, misaligned pointers...)."""
        if not raw_launch_ok() or getattr(self.kernel, "pre_run_hooks", None):
            return None
        if any(isinstance(a, torch.Tensor) and (not _on_gpu(a) or a.data_ptr() & 15) for a in args) \
                or any(type(a) not in (int, float) and not isinstance(a, torch.Tensor) for a in args):
            return None
        compiled = self.kernel.warmup(*args, grid=grid, **constexprs, **_options(num_warps, num_stages, launch_pdl))
        init = getattr(compiled, "_init_handles", None)  # load the module on the current device now (idempotent)
        if init is not None:
            init()
        return compiled

    def _dispatch(self, grid, args, constexprs, num_warps, num_stages, launch_pdl=False):
        return self.kernel[grid](*args, **constexprs, **_options(num_warps, num_stages, launch_pdl))

    def __call__(self, grid: tuple, args: tuple, constexprs: dict, num_warps: int, num_stages: int = 3,
                 launch_pdl: bool = False, direct: bool = True, raw: bool = True):
        """Launch on the current stream. direct=False: always through Triton's dispatcher; raw=False: cached
        kernels through Triton's public runner instead of the compiled launcher (prompt_tree.kernels.LaunchOptions)."""
        first = args[0] if args else None
        if not _SUPPORTED or not direct or not isinstance(first, torch.Tensor) or not _on_gpu(first) \
                or _knob_state() != _DEFAULT_KNOBS or getattr(self.kernel, "pre_run_hooks", None):
            return self._dispatch(grid, args, constexprs, num_warps, num_stages, launch_pdl)
        ints, dtypes, ptrs = [], [], 0
        for a in args:  # one pass: the specialization-relevant parts of every runtime argument
            ta = type(a)
            if ta is int:
                ints.append(a)
            elif ta is float:
                continue  # floats are never specialized
            elif isinstance(a, torch.Tensor):
                dtypes.append(a.dtype)
                ptrs |= a.data_ptr()
            else:  # bools, None, tuples...: Triton specializes these in ways not keyed here
                return self._dispatch(grid, args, constexprs, num_warps, num_stages, launch_pdl)
        device = _current_device()  # Triton keeps one cache per device; so do we
        key = (device, tuple(ints), tuple(dtypes), tuple(constexprs.values()), num_warps, num_stages, launch_pdl)
        aligned = not ptrs & 15
        compiled = self.compiled.get(key) if aligned else None
        if compiled is None:
            compiled = self._dispatch(grid, args, constexprs, num_warps, num_stages, launch_pdl)
            if aligned and compiled is not None:
                if len(self.compiled) >= MAX_CACHED:  # many distinct shapes: start over rather than grow
                    self.compiled.clear()
                self.compiled[key] = compiled
            return compiled
        full = args + self.constexpr_values(len(args), constexprs)
        g = grid3(grid)
        if raw and _knobs is not None and no_launch_hooks():
            # The compiled launcher itself (signature of Triton >= 3.3): no per-call closure or metadata.
            stream = _current_stream(device)
            compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata, None, None, None,
                         *full)
        else:  # a launch hook (a profiler) is set: the public runner builds its metadata
            compiled[g](*full)
        return compiled

    def constexpr_values(self, n_args: int, constexprs: dict) -> tuple:
        """The constexprs in signature order, as the compiled launcher takes them after the n_args runtime args."""
        return tuple(constexprs[n] for n in self.arg_names[n_args:])
