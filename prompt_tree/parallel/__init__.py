"""Tensor and data parallelism through torch.distributed (started by torchrun; NCCL on GPUs, gloo on CPU).

    layout.py         the tp x dp layout (torch-free)
    env.py            torchrun's variables, the tp x dp layout, process groups, errors
    health.py         heartbeats through the rendezvous store: a failed or dead rank stops the others, named
    layers.py         which slice of each weight a TP rank holds; the row-parallel all-reduce
    shard_loading.py  a TP rank's model from checkpoint slices or random weights
    rank_engine.py    an Engine whose TP ranks agree on the sub-batch schedule
    dp.py             splitting work into balanced subtrees; per-group result files and their merge
    dp_generate.py    `prompt-tree generate` under torchrun

Names are imported lazily so that the torch-free parts (dp.py, the layout) stay cheap to import.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ParallelError": "env", "RankFailedError": "env", "ParallelLayout": "env", "TorchrunEnv": "env",
    "DistTimeouts": "env", "DistContext": "env", "init_distributed": "env", "PEER_FAILED_EXIT": "env",
    "shard_config": "layers", "tp_part": "layers", "parallelize": "layers", "RowParallelLinear": "layers",
    "TensorShard": "shard_loading", "load_sharded": "shard_loading", "random_sharded": "shard_loading",
    "ParallelEngine": "rank_engine", "engine_for_rank": "rank_engine",
    "split_by_cost": "dp", "split_tree": "dp", "part_path": "dp", "part_paths": "dp", "merge_parts": "dp",
    "expected_tokens": "dp",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prompt_tree.parallel' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
