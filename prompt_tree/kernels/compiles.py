"""triton_compiles(): which Triton kernels compile inside a block (a diagnostic for capture and warm-up time).

A Triton kernel compiles once per specialization (constexprs, dtypes, and ints equal to 1 or divisible by 16),
and the first step of each new batch shape can pay seconds of compiles inside a CUDA-graph capture's warm-up.
The engine logs the names compiled per capture so that a slow capture says which specialization it met.
"""
from __future__ import annotations

import contextlib

try:  # triton >= 3.4 keeps its hooks in triton.knobs
    from triton import knobs as _knobs
except ImportError:  # pragma: no cover - older triton, or none: nothing is recorded
    _knobs = None


def _hooks():
    runtime = getattr(_knobs, "runtime", None)
    return runtime if runtime is not None and hasattr(runtime, "jit_post_compile_hook") else None


@contextlib.contextmanager
def triton_compiles(into: list):
    """Append "<kernel>(<specialized signature>)" to `into` for every Triton compile inside the block. Chains to
    a hook set before (and restores it after); records nothing where this triton has no compile hook."""
    runtime = _hooks()
    if runtime is None:
        yield into
        return
    previous = runtime.jit_post_compile_hook

    def hook(*args, **kwargs):
        into.append(str(kwargs.get("repr", getattr(kwargs.get("fn"), "name", "?"))))
        return previous(*args, **kwargs) if previous is not None else None

    runtime.jit_post_compile_hook = hook
    try:
        yield into
    finally:
        runtime.jit_post_compile_hook = previous
