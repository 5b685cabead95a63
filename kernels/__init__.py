"""Nested Hydragen tree attention: Triton kernels, their torch references, the public op and its plan/run form.

This package imports nothing from `prompt_tree`: it takes tensors and small metadata objects, so it can be tested
and benchmarked alone.

    from kernels import Segment, build_tree_meta, plan_tree_attention, tree_attention
    meta = build_tree_meta(q_lens, own_starts, own_lens, segments, num_q_heads, num_kv_heads, head_dim, device)
    out = tree_attention(q, k_cache, v_cache, meta)
    plan = plan_tree_attention(q, k_cache, v_cache, meta)  # or bind the host work once, then per layer:
    out = plan.run(q, k_cache, v_cache)
"""
from .meta import Segment, TreeAttentionMeta, build_tree_meta
from .reference import attention_lse, merge_states, naive_tree_attention
from .plan import TreeAttentionPlan, plan_tree_attention
from .tree_attention import cuda_graph_path, tree_attention

__all__ = ["Segment", "TreeAttentionMeta", "build_tree_meta", "tree_attention", "plan_tree_attention",
           "TreeAttentionPlan", "cuda_graph_path", "attention_lse",
           "merge_states", "naive_tree_attention"]
