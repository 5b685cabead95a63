"""A tensor-parallel rank's model: its shards of a checkpoint (read as slices) or of random weights.

    shard = TensorShard(tp=2, rank=ctx.layout.tp_rank)
    loaded = load_sharded("/models/CodeLlama-34b-hf", shard, ctx.tp_group, device=ctx.device)
    model = random_sharded("tiny", shard, ctx.tp_group, seed=0)        # exactly slices of random_model("tiny")

Both go through prompt_tree.loading with `shard=`, so names, shapes and dtypes are checked as for one GPU, each
rank reads only its slice of each tensor from the safetensors files (`get_slice`), and the module it builds has
`shard_config`'s per-rank shapes; `parallelize` then adds the all-reduces.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ModelConfig, get_preset
from ..loading import LoadedModel, load_model, random_model, resolve_device_dtype
from .layout import ParallelError
from .layers import parallelize, shard_config, split_dim, tp_part


@dataclass(frozen=True)
class TensorShard:
    """Rank `rank` of a `tp`-way tensor-parallel split: the loading hook (prompt_tree.loading.WeightShard)."""

    tp: int
    rank: int

    def __post_init__(self) -> None:
        if not isinstance(self.tp, int) or self.tp < 1 or not 0 <= self.rank < self.tp:
            raise ParallelError(f"TensorShard needs tp >= 1 and 0 <= rank < tp, got tp={self.tp}, rank={self.rank}")

    def local_config(self, config: ModelConfig) -> ModelConfig:
        return shard_config(config, self.tp)

    def part(self, name: str, full_shape: tuple[int, ...]) -> tuple[int, int, int] | None:
        return tp_part(name, full_shape, self.tp, self.rank)


def load_sharded(path, shard: TensorShard, group, device=None, dtype=None, *, tokenizer: bool = True) -> LoadedModel:
    """This rank's part of an HF checkpoint, ready to run in its tensor-parallel group. `.config` is the
    checkpoint's (full) config; `.model.config` holds this rank's shapes (what the engine and KV pool use)."""
    loaded = load_model(path, device, dtype, tokenizer=tokenizer, shard=shard)
    if shard.tp > 1:
        parallelize(loaded.model, group)
    return loaded


def random_sharded(config: ModelConfig | str, shard: TensorShard, group, seed: int = 0, device=None, dtype=None,
                   std: float = 0.02, *, exact: bool = True):
    """This rank's part of a random model.

    exact=True: every full tensor is drawn as `random_model(config, seed)` draws it and sliced, so tp ranks
    together hold exactly the tp=1 model (tests compare them). exact=False (benchmarks of models too big for
    one GPU): each rank draws only its own shards, from seed + rank, and the replicated tensors (embedding,
    lm_head) from `seed` so that they agree across ranks; weights then differ from tp=1 but shapes and speed
    do not, and the draw is tp times less work and never needs a full tensor.
    """
    config = get_preset(config) if isinstance(config, str) else config
    if exact:
        model = random_model(config, seed=seed, device=device, dtype=dtype, std=std, shard=shard)
    else:
        model = random_model(shard.local_config(config), seed=seed + 7919 * shard.rank, device=device, dtype=dtype,
                             std=std)
        device, _ = resolve_device_dtype(device, dtype)
        generator = torch.Generator(device=device).manual_seed(seed)
        for name, param in model.named_parameters():
            if split_dim(name) is None and not name.endswith("norm.weight"):
                param.data.normal_(0.0, std, generator=generator)  # same on every rank
    if shard.tp > 1:
        parallelize(model, group)
    return model
