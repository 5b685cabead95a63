"""Nested Hydragen tree attention: Triton kernels, their torch references, and the one public op.

This package imports nothing from `prompt_tree`: it takes tensors and small metadata objects, so it can be tested
and benchmarked alone.

    from kernels import Segment, build_tree_meta, tree_attention
    meta = build_tree_meta(q_lens, own_starts, own_lens, segments, num_q_heads, num_kv_heads, head_dim, device)
    out = tree_attention(q, k_cache, v_cache, meta)
"""
from .meta import Segment, TreeAttentionMeta, build_tree_meta
from .reference import attention_lse, merge_states, naive_tree_attention
from .tree_attention import cuda_graph_path, tree_attention

__all__ = ["Segment", "TreeAttentionMeta", "build_tree_meta", "tree_attention", "cuda_graph_path", "attention_lse",
           "merge_states", "naive_tree_attention"]
