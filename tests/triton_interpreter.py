"""Test helper: make Triton's interpreter skip a redundant re-patch on device-function calls.

Under TRITON_INTERPRET=1 every call of a @triton.jit helper (ours, and the ones tl.sort is built from) re-patches
triton.language by walking its members with inspect (~10 ms a call) even though the launch already patched it;
the sampler kernel makes hundreds of such calls per row. `quick_device_calls()` skips the patch exactly when the
function's triton.language modules are already patched (their `where` is no longer the raw builtin), so the
interpreted semantics are unchanged; when the interpreter's internals differ from what this expects, it does
nothing and the tests are only slower.
"""
from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def quick_device_calls():
    try:
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:
        yield
        return
    cls = getattr(interpreter, "InterpretedFunction", None)
    patch = getattr(interpreter, "_patch_lang", None)
    if not os.environ.get("TRITON_INTERPRET") or cls is None or patch is None or not hasattr(tl.core, "is_builtin"):
        yield
        return

    def patched(fn) -> bool:
        langs = [v for v in fn.__globals__.values() if v is tl or v is tl.core]
        return bool(langs) and all(not tl.core.is_builtin(lang.where) for lang in langs)

    class _NothingToRestore:
        def restore(self):
            pass

    def skip_if_patched(fn):
        return _NothingToRestore() if patched(fn) else patch(fn)

    interpreter._patch_lang = skip_if_patched
    try:
        yield
    finally:
        interpreter._patch_lang = patch
