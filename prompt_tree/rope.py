"""Rotary position embedding (RoPE) in Hugging Face's convention (rotate_half: the head is split into halves).

The inverse frequencies follow HF's `rope_type` rules exactly ("default", "linear", "llama3") so that a checkpoint
gives the same logits here as in transformers. Angles and rotation are computed in fp32 and cast back at the end
(HF rotates in the model dtype; in fp32 the two agree bit for bit, in bf16 this is the more accurate of the two).
"""
from __future__ import annotations

import math

import torch

from .config import ModelConfig


def rope_inv_freq(config: ModelConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """Inverse frequencies theta^(-2i/D), rescaled per `config.rope_scaling`. Returns fp32 [head_dim // 2]."""
    dim = config.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=device).to(torch.float32) / dim
    inv_freq = 1.0 / (config.rope_theta ** exponents)
    scaling = config.rope_scaling
    if scaling is None:
        return inv_freq
    if scaling.type == "linear":
        # positions / factor == inv_freq / factor for the angle position * inv_freq
        return inv_freq / scaling.factor
    # llama3 (Llama 3.1): wavelengths longer than old_ctx / low_freq_factor are slowed down by `factor`, those
    # shorter than old_ctx / high_freq_factor kept, and the band between interpolated linearly in old_ctx/wavelen.
    old_ctx = scaling.original_max_position_embeddings
    low_wavelen = old_ctx / scaling.low_freq_factor
    high_wavelen = old_ctx / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_ctx / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles position * inv_freq.

    positions: [T] int64; inv_freq: [D/2] fp32. Returns (cos, sin), each fp32 [T, D/2] (the halves of HF's
    [T, D] table, which repeats them).
    """
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [T, D/2]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each head of x by its token's angles (HF rotate_half layout: pairs are (i, i + D/2)).

    x: [T, H, D]; cos, sin: fp32 [T, D/2]. Returns [T, H, D] in x's dtype, computed in fp32 (fp64 for fp64 x).
    """
    work = torch.promote_types(x.dtype, torch.float32)  # fp32, or fp64 for a float64 model
    x1, x2 = x.to(work).chunk(2, dim=-1)  # [T, H, D/2] each
    c, s = cos[:, None, :].to(work), sin[:, None, :].to(work)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)
