"""The sampler kernels (one program per row, and the split ones) compile for a Hopper GPU (sm_90), on a machine
without one.

The CPU tests run the kernel under Triton's interpreter, which never meets the compiler: a construct the
compiler rejects (a loop-carried variable changing type, a variable typed differently in two branches, a scalar
argument specialised to a constexpr) would pass them and fail only on the GPU. Here the real compiler lowers the
kernel through every branch the launcher can reach, with fp32 and bf16 logits and both kinds of step, down to
a cubin with the ptxas Triton ships. It runs in a subprocess because tests/conftest.py turns the interpreter on
for this process. Skips when this Triton has no NVIDIA backend.
"""
from __future__ import annotations

from sm90_compile import run_compile_script

SCRIPT = r'''
import inspect
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from prompt_tree import sampler_triton as st

try:
    from triton.backends import backends
    assert "nvidia" in backends
except Exception:
    print("SKIP no nvidia backend"); raise SystemExit(0)

# argument types of every kernel below (logits_ptr: the logits dtype of each call)
TYPES = dict(stride_row="i32", seq_ptr="*i64", step_ptr="*i64", step_stride="i32", step_val="i32",
             tok_ptr="*i64", lp_ptr="*fp32", u_ptr="*fp64", bv_ptr="*fp32", bi_ptr="*i32", piv_off_ptr="*fp32",
             V="i32", S="i32", inv_t="fp32", top_k="i32", top_p="fp32", log_min_p="fp32", key_lo="i64",
             key_hi="i32", pz_ptr="*fp32", pmax_ptr="*fp32", psum_ptr="*fp32", parg_ptr="*i32", fs_ptr="*fp32",
             is_ptr="*i32", piv_ptr="*fp32", fix_ptr="*fp32", part_c_ptr="*i32", part_m_ptr="*fp32")


def compile_kernel(fn, logits, warps, **consts):
    names = list(inspect.signature(fn.fn).parameters)
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in consts]
    assert not missing, f"no value for constexpr {missing}"  # else it would compile as a pointer
    sig = {n: "constexpr" if n in consts else logits if n == "logits_ptr" else TYPES[n] for n in names}
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    assert "cubin" in k.asm


def compile_row(logits, **flags):
    compile_kernel(st._sample_kernel, logits, 8, BLOCK=st.BLOCK, PB=st.PIVOT_BLOCK, C=1024, P=st.PIVOTS, **flags)


# every branch of the one-program kernel: greedy; plain temperature; all three filters (the register path and both
# refining selects); top-p alone (its own lower-bound rule) with bf16 logits and an int step. About 20 s each.
n = 0
compile_row("*bf16", GREEDY=True, NEED_Z=False, HAS_TOPK=False, HAS_TOPP=False, HAS_MINP=False, STEP_TENSOR=True)
n += 1
compile_row("*fp32", GREEDY=False, NEED_Z=True, HAS_TOPK=False, HAS_TOPP=False, HAS_MINP=False, STEP_TENSOR=True)
n += 1
compile_row("*fp32", GREEDY=False, NEED_Z=False, HAS_TOPK=True, HAS_TOPP=True, HAS_MINP=True, STEP_TENSOR=True)
n += 1
compile_row("*bf16", GREEDY=False, NEED_Z=False, HAS_TOPK=False, HAS_TOPP=True, HAS_MINP=False, STEP_TENSOR=False)
n += 1

# the split sampler (prompt_tree.sampler_split): every kernel, and the decision kernel with each filter set the
# APPS and vLLM-style settings reach (top-p; top-k + top-p + min-p; min-p alone)
from prompt_tree import sampler_split as ss

compile_kernel(ss._stats_kernel, "*bf16", 4, NEED_Z=True, CH=ss.CHUNK, BLOCK=ss.BLOCK)
for g, f, t, k_, p_, m_ in ((True, False, True, False, False, False), (False, True, False, False, True, False),
                            (False, True, True, True, True, True), (False, False, True, False, False, False)):
    compile_kernel(ss._start_kernel, "*fp32", 1, GREEDY=g, ANY_FILTER=f, STEP_TENSOR=t, HAS_TOPK=k_, HAS_TOPP=p_,
                   HAS_MINP=m_, S_PAD=32, C=1024, P=st.PIVOTS)
for cpp in (1, ss.LATE_CHUNKS_PER_PROGRAM):  # the early rounds' grid and the late rounds'
    compile_kernel(ss._pass_kernel, "*bf16", 4, CH=ss.CHUNK, BLOCK=ss.BLOCK, PB=ss.PIVOT_BLOCK, C=1024, P=st.PIVOTS,
                   CPP=cpp)
for k_, p_, m_ in ((False, True, False), (True, True, True), (False, False, True)):
    compile_kernel(ss._decide_kernel, "*bf16", 8, HAS_TOPK=k_, HAS_TOPP=p_, HAS_MINP=m_, S_PAD=32, C=1024,
                   P=st.PIVOTS)
n += 1
print("compiled", n)
'''


def test_sampler_kernel_compiles_for_sm90():
    out = run_compile_script(SCRIPT, timeout=900)
    assert "compiled 5" in out, out
