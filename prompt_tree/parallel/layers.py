"""Tensor-parallel layers: which part of each Llama weight a rank holds, and the all-reduce that joins them.

Megatron-style split of one decoder block over `tp` ranks (Shoeybi et al. 2019, section 3):

    q/k/v_proj, gate/up_proj   column-parallel: output rows split, so each rank computes whole heads / whole MLP
                               columns from the full (replicated) input; no communication. Each checkpoint
                               tensor is split on its own, so a rank's fused qkv_proj is its q shard ‖ k shard ‖
                               v shard and its gate_up_proj its gate shard ‖ up shard (model.checkpoint_tensors)
    o_proj, down_proj          row-parallel: input columns split to match; each rank's product is a partial sum
                               of the full output, and one all-reduce per projection adds them up

so a block costs two all-reduces of [T, hidden] (after o_proj and after down_proj), and attention runs per rank on
its own heads: the engine, the KV pool and `prompt_tree.kernels.tree_attention` see num_heads / tp query heads and
num_kv_heads / tp KV heads and are unchanged. Rank r's query heads [r*H/tp, (r+1)*H/tp) read KV heads
[r*Hkv/tp, (r+1)*Hkv/tp): HF's GQA grouping (query head h reads KV head h // (H/Hkv)) maps within the rank.

The embedding and lm_head stay replicated. Sampling needs each sequence's whole distribution (top-p sorts it,
the inverse-CDF draw walks it in vocabulary order), so a vocabulary-split lm_head would all-gather [B, vocab] fp32
logits every step (for llama3-8b at B=512: 263 MB a step, as long on NVLink as the lm_head matmul it saves) or
need a distributed sampler. Replicated, every rank computes the same logits from the same all-reduced hidden
state, draws the same token with the hash-based sampler, and the ranks stay in lockstep without exchanging
tokens. The cost is the lm_head's memory and FLOPs on every rank (~7% of llama3-8b's decode FLOPs).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, replace
from ..model import GATE_UP_PROJ, QKV_PROJ
from .layout import ParallelError

# Name markers and the dimension a tensor-parallel rank slices: checkpoint tensors (e.g.
# "layers.3.self_attn.q_proj.weight") and the fused parameters holding them (".qkv_proj.", ".gate_up_proj.").
# nn.Linear weights are [out, in]: column-parallel slices dim 0, row-parallel dim 1.
COLUMN_PARALLEL = ("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.", "mlp.gate_proj.", "mlp.up_proj.",
                   QKV_PROJ + ".", GATE_UP_PROJ + ".")
ROW_PARALLEL = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def check_divisible(config: ModelConfig, tp: int) -> None:
    """ParallelError naming the first shape that `tp` ranks cannot split evenly."""
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise ParallelError(f"--tp must be an int >= 1, got {tp!r}")
    for name, value in (("num_heads", config.num_heads), ("num_kv_heads", config.num_kv_heads),
                        ("intermediate_size", config.intermediate_size)):
        if value % tp:
            raise ParallelError(
                f"tensor parallelism over {tp} ranks needs {name} divisible by {tp}, but the model has {name}="
                f"{value}: use a --tp that divides {name} (heads {config.num_heads}, KV heads "
                f"{config.num_kv_heads}, MLP width {config.intermediate_size})")


def shard_config(config: ModelConfig, tp: int) -> ModelConfig:
    """The shapes one of `tp` ranks holds: its query heads, KV heads and MLP columns (hidden and vocab whole)."""
    check_divisible(config, tp)
    if tp == 1:
        return config
    return replace(config, num_heads=config.num_heads // tp, num_kv_heads=config.num_kv_heads // tp,
                   intermediate_size=config.intermediate_size // tp)


def split_dim(name: str) -> int | None:
    """The dimension tensor-parallel ranks split parameter `name` along, or None if it is replicated."""
    if any(marker in name for marker in COLUMN_PARALLEL):
        return 0  # weight [out, in] and bias [out]: a rank's output features
    if name.endswith(ROW_PARALLEL):
        return 1  # weight [out, in]: a rank's input features
    return None


def tp_part(name: str, full_shape: tuple[int, ...], tp: int, rank: int) -> tuple[int, int, int] | None:
    """(dim, start, stop) of the full checkpoint tensor `name` that tensor-parallel rank `rank` of `tp` keeps; None
    for a replicated tensor (embedding, norms, lm_head). A fused parameter is never sliced whole (its rows are
    q ‖ k ‖ v, not rank-major): each of its checkpoint tensors is."""
    if f".{QKV_PROJ}." in f".{name}" or f".{GATE_UP_PROJ}." in f".{name}":
        raise ParallelError(f"{name} is a fused parameter: shard its checkpoint tensors (q/k/v, gate/up) instead")
    dim = split_dim(name)
    if tp == 1 or dim is None:
        return None
    size = full_shape[dim]
    if size % tp:  # check_divisible rules this out for a valid config; a mis-shaped tensor lands here
        raise ParallelError(f"{name}: dimension {dim} of shape {list(full_shape)} is not divisible by tp={tp}")
    step = size // tp
    return dim, rank * step, (rank + 1) * step


class RowParallelLinear(nn.Module):
    """y = all_reduce(x_r @ W_r^T) over the tensor-parallel group: x_r [T, in/tp] is this rank's slice of the
    input features (the heads or MLP columns it computed), W_r [out, in/tp] its columns of the weight.

    The all-reduce is in place on the matmul's output and is a plain collective call, so the module is
    capturable in a CUDA graph with NCCL. It sums partial products in the model dtype: in bf16 each rank's
    partial is already rounded before the sum, one rounding more than the single-GPU matmul (which accumulates in
    fp32 inside the GEMM); in fp32 only the order of the summation differs.
    """

    def __init__(self, weight: torch.Tensor, group: dist.ProcessGroup | None):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # [out, in / tp]
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, in/tp] -> [T, out]
        y = F.linear(x, self.weight)
        dist.all_reduce(y, group=self.group)
        return y


def parallelize(model: nn.Module, group: dist.ProcessGroup | None) -> nn.Module:
    """Turn a model holding one rank's shards (built from `shard_config`'s shapes) into that rank's part of the
    tensor-parallel model: o_proj and down_proj become RowParallelLinear over `group`. In place; returns it."""
    for layer in model.layers:
        for parent, child in ((layer.self_attn, "o_proj"), (layer.mlp, "down_proj")):
            linear = getattr(parent, child)
            if linear.bias is not None:  # a bias would be added tp times by the all-reduce
                raise ParallelError(f"{child} has a bias, which the row-parallel split does not support")
            setattr(parent, child, RowParallelLinear(linear.weight.data, group))
    return model
