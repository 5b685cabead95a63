"""Nested Hydragen tree attention: Triton kernels, their torch references, the public op and its plan/run form.

This package imports nothing from the rest of `prompt_tree`: it takes tensors and small metadata objects, so it can
be tested and benchmarked alone. docs/kernels.md is the guide.

It lives under prompt_tree rather than as a top-level `kernels` package: that name clashed with Hugging Face's
`kernels` distribution, which transformers >= 5.25 requires and imports at import time (`from kernels import
CUDAProperties, ...`), so a top-level `kernels` of ours shadowed it and broke `import transformers`.

    from prompt_tree.kernels import Segment, build_tree_meta, plan_tree_attention, tree_attention
    meta = build_tree_meta(q_lens, own_starts, own_lens, segments, num_q_heads, num_kv_heads, head_dim, device)
    out = tree_attention(q, k_cache, v_cache, meta)
    plan = plan_tree_attention(q, k_cache, v_cache, meta)  # or bind the host work once, then per layer:
    out = plan.run(q, k_cache, v_cache)

Paged own segments: build_tree_meta(..., own_starts=None, own_pages=[[page ids] per sequence], page_size=16);
write new keys at own_slots(meta). Fixed shapes for CUDA graphs: capacity=MetaCapacity(...) and meta.update_().
"""
from .meta import (CapacityOverflow, MetaCapacity, Segment, TreeAttentionMeta, own_slots, position_slots,
                   query_slots, required_capacity)
from .options import LaunchOptions, cuda_graph_path, in_graph_path
from .compiles import triton_compiles
from .reference import attention_lse, merge_states, naive_tree_attention
from .worklist import build_tree_meta
from .attention_plan import TreeAttentionPlan, plan_tree_attention
from .tree_attention import tree_attention

__all__ = ["CapacityOverflow", "Segment", "TreeAttentionMeta", "MetaCapacity", "build_tree_meta",
           "required_capacity", "own_slots", "query_slots", "position_slots", "tree_attention",
           "plan_tree_attention", "TreeAttentionPlan", "LaunchOptions", "cuda_graph_path", "in_graph_path",
           "attention_lse", "merge_states", "naive_tree_attention", "triton_compiles"]
