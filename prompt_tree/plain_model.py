"""The plain (unfused) Llama forward, op for op as transformers computes it, over weights by HF checkpoint name.

    plain = PlainModel.of(model)                     # views of `model`'s weights (model.hf_state_dict): no copy
    hidden = plain(input_ids [T], positions [T], attention)
    logits = plain.logits(hidden)                    # [N, vocab] fp32

Separate q, k and v projections, RoPE on copies (rope.apply_rope), the residual add apart from the norm, separate
gate and up projections with F.silu(gate) * up: what LlamaModel computed before its dense path was fused. It is
the reference the fused model is tested against (tests/test_model.py) and the "unfused" row of
tools/bench_dense.py, so it shares no code path with the fused one beyond fused_ops.rms_norm_torch (HF's norm
rule, written once) and rope.apply_rope. Same calling convention as LlamaModel, so an engine can run it.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .fused_ops import rms_norm_torch
from .model import AttentionFn, LlamaModel, hf_state_dict
from .rope import apply_rope, rope_cos_sin, rope_inv_freq


class PlainModel:
    """weights: HF name -> tensor (e.g. "model.layers.0.self_attn.q_proj.weight"), all on one device and dtype;
    config: the shapes they have."""

    def __init__(self, weights: Mapping[str, torch.Tensor], config: ModelConfig):
        self.w = dict(weights)
        self.config = config
        first = self.w["model.embed_tokens.weight"]
        self.inv_freq = rope_inv_freq(config, device=first.device)

    @classmethod
    def of(cls, model: LlamaModel) -> "PlainModel":
        """The plain forward over a (fused) LlamaModel's own weights, shared as views."""
        return cls(hf_state_dict(model), model.config)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[name + ".weight"], self.w.get(name + ".bias"))

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return rms_norm_torch(x, self.w[name + ".weight"], self.config.rms_norm_eps)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, attention: AttentionFn) -> torch.Tensor:
        return self.forward(input_ids, positions, attention)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attention: AttentionFn) -> torch.Tensor:
        """input_ids, positions: int64 [T] -> final-normed hidden states [T, hidden] in the weights' dtype."""
        c = self.config
        T = input_ids.shape[0]
        cos, sin = rope_cos_sin(positions, self.inv_freq)  # fp32 [T, D/2]
        x = F.embedding(input_ids, self.w["model.embed_tokens.weight"])  # [T, hidden]
        for i in range(c.num_layers):
            p = f"model.layers.{i}"
            h = self._norm(x, f"{p}.input_layernorm")
            q = self._linear(h, f"{p}.self_attn.q_proj").view(T, c.num_heads, c.head_dim)
            k = self._linear(h, f"{p}.self_attn.k_proj").view(T, c.num_kv_heads, c.head_dim)
            v = self._linear(h, f"{p}.self_attn.v_proj").view(T, c.num_kv_heads, c.head_dim)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            out = attention(i, q, k, v)  # [T, Hq, D]
            x = x + self._linear(out.reshape(T, c.num_heads * c.head_dim), f"{p}.self_attn.o_proj")
            h = self._norm(x, f"{p}.post_attention_layernorm")
            act = F.silu(self._linear(h, f"{p}.mlp.gate_proj")) * self._linear(h, f"{p}.mlp.up_proj")
            x = x + self._linear(act, f"{p}.mlp.down_proj")
        return self._norm(x, "model.norm")

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, hidden] -> fp32 logits [N, vocab] (matmul in the weights' dtype, then upcast)."""
        head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])  # tied: the embedding
        return F.linear(hidden, head).float()
