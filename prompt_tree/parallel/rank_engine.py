"""The engine of one rank: a tensor-parallel shard of the model, or (tp == 1) a whole model per data-parallel group.

The Engine itself is unchanged under tensor parallelism: it is given the rank's module and the rank's config
(num_heads / tp query heads, num_kv_heads / tp KV heads), so the KV pool, the tree-attention metadata and the
memory estimate are all per rank. What must hold is that the ranks of a TP group make the SAME sequence of model
calls, since every call runs 2 all-reduces per layer that must pair up one to one:

- the plan, the sampled tokens and the finishing decisions are deterministic functions of replicated data
  (the same tree, the same logits from the all-reduced hidden state, the hash-based sampler);
- the one rank-local input is the memory budget that picks the sub-batches: `ParallelEngine` takes the
  minimum over the group, so all ranks schedule the same sub-batches.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from ..config import get_preset, random_preset
from ..engine import Engine
from ..tokenizer import random_model_tokenizer
from .env import DistContext
from .shard_loading import TensorShard, load_sharded, random_sharded


class ParallelEngine(Engine):
    """An Engine over one tensor-parallel rank's model, whose sub-batch schedule is agreed across `tp_group`."""

    def __init__(self, model, config, tokenizer=None, eos_ids=None, *, tp_group=None, **kwargs):
        super().__init__(model, config, tokenizer, eos_ids, **kwargs)
        self.tp_group = tp_group

    def budget_bytes(self) -> int:
        local = super().budget_bytes()
        if self.tp_group is None:
            return local
        budget = torch.tensor([local], dtype=torch.int64, device=self.device)
        dist.all_reduce(budget, op=dist.ReduceOp.MIN, group=self.tp_group)
        return int(budget.item())


def engine_for_rank(spec: str, ctx: DistContext, dtype=None, seed: int = 0, **engine_kwargs) -> Engine:
    """This rank's engine for a model spec: "tiny", "random:PRESET" (random weights of `seed`, the same as one
    process gets) or a checkpoint directory (each rank reads only its slices)."""
    tp = ctx.layout.tp
    device = ctx.device
    preset = random_preset(spec)
    if tp == 1:  # pure data parallelism: a whole model per rank
        return Engine.load(spec, device=device, dtype=dtype, seed=seed, **engine_kwargs)
    shard = TensorShard(tp, ctx.layout.tp_rank)
    if preset is not None:
        config = get_preset(preset)
        model = random_sharded(config, shard, ctx.tp_group, seed=seed, device=device, dtype=dtype)
        return ParallelEngine(model, model.config, random_model_tokenizer(config), config.eos_token_ids, tp_group=ctx.tp_group,
                              **engine_kwargs)
    import os

    if not os.path.isdir(os.fspath(spec)):
        raise FileNotFoundError(f"model directory {spec!r} does not exist: pass a local checkpoint directory")
    loaded = load_sharded(spec, shard, ctx.tp_group, device=device, dtype=dtype)
    return ParallelEngine(loaded.model, loaded.model.config, loaded.tokenizer, loaded.eos_ids,
                          tp_group=ctx.tp_group, **engine_kwargs)
