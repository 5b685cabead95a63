"""The Triton kernels compile for a Hopper GPU (sm_90), on a machine without one.

The kernel tests on CPU run under Triton's interpreter, which executes the Python body and never meets the
compiler: a construct the compiler rejects (a variable typed differently in two branches, a bad constexpr) would
pass them and fail only on the GPU. Here the real compiler lowers every kernel, in every tile class and flag
combination the launcher uses, down to a cubin for sm_90 with the ptxas Triton ships. It runs in a subprocess
because tests/conftest.py turns the interpreter on for this process. Skips when this Triton has no NVIDIA
backend.
"""
from __future__ import annotations

from sm90_compile import run_compile_script

SCRIPT = r'''
import inspect, itertools
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from prompt_tree.kernels import triton_kernels as tk, triton_tree as tt

try:
    from triton.backends import backends
    assert "nvidia" in backends
except Exception:
    print("SKIP no nvidia backend"); raise SystemExit(0)

F32_PTRS = {"OPart", "LPart", "LseOut"}
FLOATS = {"qk_scale"}

def compile_one(fn, consts, warps, stages):
    names = list(inspect.signature(fn.fn).parameters)
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in consts]
    assert not missing, f"{fn.fn.__name__}: no value for constexpr {missing}"  # else it compiles as a pointer
    sig = {}
    for n in names:
        if n in consts:
            sig[n] = "constexpr"
        elif n in FLOATS:
            sig[n] = "fp32"
        elif n[0].isupper():
            sig[n] = "*fp32" if n in F32_PTRS else "*bf16" if n in ("Q", "K", "V", "Out") else "*i32"
        else:
            sig[n] = "i32"
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    assert "cubin" in k.asm, fn.fn.__name__

n = 0
for bm, (bn, w, s) in tt.SHARED_CFG.items():
    for d in (64, 128, 96):  # 96: a head dim below its power-of-two block (masked d)
        compile_one(tk._shared_kernel, dict(G=4, HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=tt._block_d(d),
                                            IEEE=False, PDL=False), w, s); n += 1
for bm, (bn, w, s) in tt.OWN_CFG.items():
    for causal, fuse, nsplit in itertools.product((False, True), (False, True), (1, 4)):
        compile_one(tk._own_kernel, dict(G=4, HEAD_DIM=128, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=128, NSPLIT=nsplit,
                                         SPLIT_ALIGN_=tt.SPLIT_ALIGN, CAUSAL=causal, FUSE_MERGE=fuse,
                                         WRITE_LSE=True, IEEE=False, PDL=False, PAGED=False, PAGE_SIZE=1), w, s)
        n += 1
# Paged own segments (the page-table gather): decode and prefill, each fused and split, pages of 16 and 32.
for bm, causal, page, fuse, nsplit in ((16, False, 16, True, 1), (16, False, 32, False, 4),
                                       (64, True, 32, True, 1), (64, True, 16, False, 4)):
    bn, w, s = tt.OWN_CFG[bm]
    compile_one(tk._own_kernel, dict(G=4, HEAD_DIM=128, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=128, NSPLIT=nsplit,
                                     SPLIT_ALIGN_=tt.SPLIT_ALIGN, CAUSAL=causal, FUSE_MERGE=fuse, WRITE_LSE=True,
                                     IEEE=False, PDL=False, PAGED=True, PAGE_SIZE=page), w, s); n += 1
# Programmatic dependent launch (one-stream calls): the grid-dependency instructions in both kernels.
bn, w, s = tt.SHARED_CFG[16]
compile_one(tk._shared_kernel, dict(G=4, HEAD_DIM=128, BLOCK_M=16, BLOCK_N=bn, BLOCK_D=128, IEEE=False, PDL=True),
            w, s); n += 1
for bm, causal, paged in ((16, False, False), (64, True, False), (16, False, True)):  # fused with the merge
    bn, w, s = tt.OWN_CFG[bm]
    compile_one(tk._own_kernel, dict(G=4, HEAD_DIM=128, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=128, NSPLIT=1,
                                     SPLIT_ALIGN_=tt.SPLIT_ALIGN, CAUSAL=causal, FUSE_MERGE=True, WRITE_LSE=False,
                                     IEEE=False, PDL=True, PAGED=paged, PAGE_SIZE=16 if paged else 1), w, s); n += 1
compile_one(tk._merge_kernel, dict(NUM_HEADS=32, HEAD_DIM=128, EXTRA_SLOTS=1, BLOCK_H=8, BLOCK_D=128,
                                   WRITE_LSE=True), 4, 1); n += 1
print("compiled", n)
'''


def test_kernels_compile_for_sm90():
    out = run_compile_script(SCRIPT)
    assert out.strip().startswith("compiled 34"), out
