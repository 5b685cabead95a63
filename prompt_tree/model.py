"""The Llama-family decoder (Llama 2/3, CodeLlama, Mistral, Qwen2) in plain torch, flat token layout.

Tokens of many sequences are packed along one axis T (no batch dimension); the model never looks across tokens
except through the `attention` callback, which owns the KV cache and the tree structure. So one forward serves
tree prefill and decode alike:

    hidden = model(input_ids [T], positions [T], attention)   # [T, hidden]
    logits = model.logits(hidden[last_rows])                  # [N, vocab] fp32

Module and parameter names mirror HF's checkpoint names without the leading "model." (see `hf_name`).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .rope import apply_rope, rope_cos_sin, rope_inv_freq

# attention(layer_idx, q [T, Hq, D], k [T, Hkv, D], v [T, Hkv, D]) -> [T, Hq, D]; q and k already rotated.
AttentionFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class RMSNorm(nn.Module):
    """x / rms(x) * weight, statistics in fp32 (as HF: normalise in fp32, cast, then scale)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [T, hidden]
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Attention(nn.Module):
    """q/k/v projections, RoPE, the attention callback, o_proj."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        q_size, kv_size = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention: AttentionFn
    ) -> torch.Tensor:
        """x: [T, hidden]; cos, sin: fp32 [T, D/2]. Returns [T, hidden]."""
        T = x.shape[0]
        q = self.q_proj(x).view(T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(T, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = attention(self.layer_idx, q, k, v)  # [T, Hq, D]
        return self.o_proj(out.reshape(T, self.num_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, hidden] -> [T, hidden]
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + mlp(norm(.))."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention: AttentionFn) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attention)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """Embedding, `num_layers` decoder layers, final RMSNorm, lm_head (tied to the embedding when configured).

    Build on the "meta" device and fill with `prompt_tree.loading` (load_model / random_model); a model built
    directly holds torch's default init, which is only good for shape checks.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # fp32 [D/2]; not in checkpoints (persistent=False); `reset_rope` recomputes it after meta-device builds.
        self.register_buffer("inv_freq", rope_inv_freq(config, device=self.embed_tokens.weight.device), persistent=False)

    def reset_rope(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the RoPE inverse frequencies on `device` (default: the embedding's device)."""
        device = device if device is not None else self.embed_tokens.weight.device
        self.inv_freq = rope_inv_freq(self.config, device=device)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attention: AttentionFn) -> torch.Tensor:
        """input_ids: int64 [T]; positions: int64 [T] (each token's index in its own sequence).

        Returns the final-normed hidden states [T, hidden] in the model dtype. No host sync, no data-dependent
        Python branches: the same call is capturable in a CUDA graph if `attention` is.
        """
        if input_ids.dim() != 1 or positions.shape != input_ids.shape:
            raise ValueError(
                f"input_ids and positions must both be [T]; got {tuple(input_ids.shape)} and {tuple(positions.shape)}"
            )
        cos, sin = rope_cos_sin(positions, self.inv_freq)  # fp32 [T, D/2], shared by every layer
        x = self.embed_tokens(input_ids)  # [T, hidden]
        for layer in self.layers:
            x = layer(x, cos, sin, attention)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, hidden] -> fp32 logits [N, vocab] (matmul in the model dtype, then upcast)."""
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight).float()

    def forward_dense(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Reference: fp32 logits [T, vocab] of one sequence input_ids [T] with dense causal attention."""
        positions = torch.arange(input_ids.shape[0], device=input_ids.device)
        return self.logits(self.forward(input_ids, positions, causal_attention()))


def hf_name(name: str) -> str:
    """This module's parameter name -> the HF checkpoint name ("layers.0.mlp..." -> "model.layers.0.mlp...")."""
    return name if name.startswith("lm_head.") else "model." + name


# ----- reference attention (tests, and the engine's equivalence checks)


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_offset: int = 0, scale: float | None = None
) -> torch.Tensor:
    """Causal softmax attention of one sequence, in fp32 (fp64 for fp64 q). Query i sits at position q_offset + i.

    q: [Tq, Hq, D]; k, v: [Tk, Hkv, D] with Tk >= q_offset + Tq; returns [Tq, Hq, D] in q's dtype.
    Query head h reads KV head h // (Hq / Hkv) (HF's repeat_kv grouping).
    """
    Tq, Hq, D = q.shape
    Tk, Hkv, _ = k.shape
    group = Hq // Hkv
    scale = D**-0.5 if scale is None else scale
    work = torch.promote_types(q.dtype, torch.float32)
    kf = k.to(work).repeat_interleave(group, dim=1)  # [Tk, Hq, D]
    vf = v.to(work).repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.to(work), kf) * scale  # [Hq, Tq, Tk]
    q_pos = torch.arange(Tq, device=q.device)[:, None] + q_offset
    k_pos = torch.arange(Tk, device=q.device)[None, :]
    scores = scores.masked_fill(k_pos > q_pos, float("-inf"))
    out = torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), vf)
    return out.to(q.dtype)


def causal_attention(scale: float | None = None) -> AttentionFn:
    """An attention callback for one whole sequence at once (no cache): token i attends to tokens 0..i."""

    def attention(layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return dense_attention(q, k, v, scale=scale)

    return attention


class DenseKVCache:
    """Reference incremental attention for one sequence: appends each call's k/v per layer, attends causally.

    Call the model with consecutive chunks (positions continuing from `length`); the result equals one dense
    forward of the concatenation. Python lists and torch.cat: a test oracle, not a fast path.
    """

    def __init__(self, num_layers: int):
        self.k: list[torch.Tensor | None] = [None] * num_layers  # each [Tk, Hkv, D]
        self.v: list[torch.Tensor | None] = [None] * num_layers

    @property
    def length(self) -> int:
        """Tokens stored (in layer 0, the one written first)."""
        return 0 if self.k[0] is None else self.k[0].shape[0]

    def __call__(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        old = self.k[layer_idx]
        offset = 0 if old is None else old.shape[0]
        self.k[layer_idx] = k if old is None else torch.cat([old, k])
        self.v[layer_idx] = v if old is None else torch.cat([self.v[layer_idx], v])
        return dense_attention(q, self.k[layer_idx], self.v[layer_idx], q_offset=offset)
