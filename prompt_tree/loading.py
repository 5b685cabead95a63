"""Building a `LlamaModel` with real weights: from a local HF checkpoint directory, or random of a real shape.

Both paths build the module on the "meta" device (no memory), allocate every parameter on the target device in
the target dtype, and fill it from the checkpoint's tensors one at a time: an 8B model never exists in host
memory as a whole, nor in fp32 anywhere. The module's fused projections (q/k/v as one weight, gate/up as one)
are filled from HF's separate tensors as `prompt_tree.model.checkpoint_tensors` places them; names on disk are
HF's. `resolve_device_dtype` is the one place that picks device and dtype.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import nn

from .config import ConfigError, ModelConfig, get_preset
from .jsonfile import read_json_object
from .model import CheckpointTensor, LlamaModel, checkpoint_tensors, hf_name
from .tokenizer import HFTokenizer, load_tokenizer

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}
# Names some older checkpoints carry that hold no weights this model needs (RoPE tables are recomputed).
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded: the message names the file or tensor and the fix."""


class WeightShard(Protocol):
    """Which part of each weight this process holds (tensor parallelism: prompt_tree.parallel.TensorShard).

    local_config(config): the shapes this process's module has (its heads, its MLP columns).
    part(name, full_shape): (dim, start, stop) of the full checkpoint tensor `name` (its HF name without "model.",
    e.g. "layers.0.self_attn.k_proj.weight": the unfused name, whatever the module fuses) that this process keeps,
    or None to keep the whole tensor (replicated weights).
    """

    def local_config(self, config: ModelConfig) -> ModelConfig: ...

    def part(self, name: str, full_shape: tuple[int, ...]) -> tuple[int, int, int] | None: ...


@dataclass
class LoadedModel:
    """A ready model: weights on the device, its config (eos ids merged from generation_config.json), tokenizer."""

    model: LlamaModel
    config: ModelConfig
    tokenizer: HFTokenizer | None
    eos_ids: tuple[int, ...]


def resolve_device_dtype(
    device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> tuple[torch.device, torch.dtype]:
    """The run's device and dtype. device None: cuda if available, else cpu. dtype None: bfloat16 on a GPU that
    supports it (float16 on one that does not), float32 on cpu. Names like "bf16" / "float16" are accepted.

    Raises ValueError for a device that is not there (cuda without a GPU), an unknown dtype name, bf16 on a GPU
    without bf16, or a dtype the device cannot multiply matrices in (checked with a tiny matmul).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"invalid device {device!r}: {e}") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} requested but CUDA is not available (torch {torch.__version__}); use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {device} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dtype is None:
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
    elif isinstance(dtype, str):
        if dtype.lower() not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}")
        dtype = _DTYPES[dtype.lower()]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{torch.cuda.get_device_name(device)} does not support bfloat16; use dtype='float16'")
    try:  # some builds lack matmul kernels for half types on some devices: find out now, not mid-run
        probe = torch.ones(2, 2, device=device, dtype=dtype)
        probe @ probe
    except RuntimeError as e:
        raise ValueError(f"dtype {dtype} is not supported for matmul on {device}: {e}") from e
    return device, dtype


# ----- checkpoint directories


def load_model(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    tokenizer: bool = True,
    shard: WeightShard | None = None,
) -> LoadedModel:
    """Load an HF checkpoint directory: config.json, model.safetensors or sharded *.safetensors with
    model.safetensors.index.json, tokenizer.json (needed unless tokenizer=False), optional generation_config.json.

    shard: load only this process's part of each weight (read as a slice of the file, never the whole tensor);
    the module then has `shard.local_config(config)`'s shapes while `LoadedModel.config` stays the checkpoint's.

    Every name and shape is checked from the safetensors headers before any weight is read. Missing weights,
    unexpected weights and shape mismatches are CheckpointErrors naming the tensor (an unexpected weight means
    the architecture is not what config.json says, so it is an error, not a warning). A tied checkpoint that
    still stores lm_head.weight is accepted and that tensor skipped, as HF does.
    """
    from safetensors import safe_open

    directory = os.fspath(path)
    if not os.path.exists(directory):
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory} is not a directory (pass the checkpoint directory holding config.json)")
    try:
        listing = sorted(os.listdir(directory))
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint directory {directory}: {e}") from e
    if "config.json" not in listing:
        raise CheckpointError(f"{directory} has no config.json (found: {', '.join(listing) or 'nothing'})")
    try:
        config = ModelConfig.from_hf(os.path.join(directory, "config.json"))
    except ConfigError as e:
        raise CheckpointError(f"{os.path.join(directory, 'config.json')}: {e}") from e

    gen = _read_json(os.path.join(directory, "generation_config.json"))
    eos_ids = _merge_ids(gen.get("eos_token_id"), config.eos_token_ids)
    try:
        config = replace(config, eos_token_ids=eos_ids)
    except ConfigError as e:
        raise CheckpointError(f"{os.path.join(directory, 'generation_config.json')}: {e}") from e
    device, dtype = resolve_device_dtype(device, dtype)

    weight_files = _weight_files(directory, listing)  # hf name -> file
    model = _meta_model(config if shard is None else shard.local_config(config))
    # names and shapes are checked against the full model; each tensor lands where the local model holds it
    places = _places(config, model)
    expected = {name: full.shape for name, (full, _) in places.items()}
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file in sorted(set(weight_files.values())):
        try:
            with safe_open(file, framework="pt", device="cpu") as f:
                for key in f.keys():
                    found[key] = (file, tuple(f.get_slice(key).get_shape()))
        except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
            raise CheckpointError(f"cannot read weights file {file}: {e}") from e
    _check_names_and_shapes(expected, found, weight_files, config)

    by_file: dict[str, list[str]] = {}
    for name in expected:
        by_file.setdefault(found[name][0], []).append(name)
    # safetensors maps cuda devices directly (no host staging); on cpu it memory-maps the file.
    if device.type == "cuda":
        load_device = f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    else:
        load_device = "cpu"
    params = _allocate(model, device, dtype)
    for file, names in sorted(by_file.items()):
        with safe_open(file, framework="pt", device=load_device) as f:
            for name in names:
                _place(params, places[name][1], _read_tensor(f, name, shard, expected[name]))
    _finish(model, device)

    tok = None
    if tokenizer:
        if "tokenizer.json" not in listing:
            raise CheckpointError(
                f"{directory} has no tokenizer.json; pass tokenizer=False to load the weights alone "
                "(prompts must then be token ids)"
            )
        tok = load_tokenizer(directory, bos_id=config.bos_token_id, eos_ids=eos_ids)
    return LoadedModel(model=model, config=config, tokenizer=tok, eos_ids=eos_ids)


def _read_tensor(f, name: str, shard: WeightShard | None, full_shape: tuple[int, ...]) -> torch.Tensor:
    """Tensor `name` (HF name) of an open safetensors file, or only this shard's slice of it."""
    part = None if shard is None else shard.part(_module_name(name), full_shape)
    if part is None:
        return f.get_tensor(name)
    dim, start, stop = part
    index = (slice(None),) * dim + (slice(start, stop),)
    return f.get_slice(name)[index]  # safetensors reads just these bytes


def _weight_files(directory: str, listing: list[str]) -> dict[str, str]:
    """HF tensor name -> absolute file, from model.safetensors.index.json, else model.safetensors."""
    index_path = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index_path):
        index = _read_json(index_path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path} has no weight_map")
        files = {name: os.path.join(directory, file) for name, file in weight_map.items()}
        for file in sorted(set(files.values())):
            if not os.path.isfile(file):
                raise CheckpointError(f"{index_path} lists shard {os.path.basename(file)}, which is missing from {directory}")
        return files
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(single):
        from safetensors import safe_open

        try:
            with safe_open(single, framework="pt", device="cpu") as f:
                return {name: single for name in f.keys()}
        except Exception as e:
            raise CheckpointError(f"cannot read {single}: {e}") from e
    hint = ""
    if any(name.endswith((".bin", ".pt", ".pth")) for name in listing):
        hint = " (PyTorch .bin checkpoints are not supported: convert to safetensors with transformers' save_pretrained)"
    raise CheckpointError(
        f"{directory} has neither model.safetensors nor model.safetensors.index.json{hint} "
        f"(found: {', '.join(listing)})"
    )


def _check_names_and_shapes(
    expected: dict[str, tuple[int, ...]],
    found: dict[str, tuple[str, tuple[int, ...]]],
    weight_map: dict[str, str],
    config: ModelConfig,
) -> None:
    for name in weight_map:
        if name not in found:
            raise CheckpointError(f"the index maps {name} to {os.path.basename(weight_map[name])}, which does not hold it")
    missing = [name for name in expected if name not in found]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"checkpoint is missing weight {missing[0]}{more} (needed by {config.architecture})")
    ignorable = {"lm_head.weight"} if config.tie_word_embeddings else set()
    unexpected = [
        name for name in found
        if name not in expected and name not in ignorable and not name.endswith(_IGNORED_SUFFIXES)
    ]
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        raise CheckpointError(
            f"checkpoint has unexpected weight {unexpected[0]}{more} that {config.architecture} with this "
            "config.json does not use (wrong architecture or config?)"
        )
    for name, shape in expected.items():
        file, got = found[name]
        if got != shape:
            raise CheckpointError(
                f"weight {name} in {os.path.basename(file)} has shape {list(got)}, but config.json implies {list(shape)}"
            )


# ----- random weights


def random_model(
    config: ModelConfig | str,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    std: float = 0.02,
    shard: WeightShard | None = None,
) -> LlamaModel:
    """A model of `config` (or a preset name) with weights ~ N(0, std^2) (biases too), norms 1.

    Each tensor is drawn directly on the device in the target dtype from one generator seeded with `seed`, so
    the same (seed, device, dtype) gives the same weights. An 8B preset needs ~16 GB in bf16: GPU only.
    shard: keep only this process's part of each tensor. Every full tensor is still drawn (one at a time), so
    the shards of a seed are exactly slices of the unsharded model of that seed.
    """
    if isinstance(config, str):
        config = get_preset(config)
    device, dtype = resolve_device_dtype(device, dtype)
    model = _meta_model(config if shard is None else shard.local_config(config))
    params = _allocate(model, device, dtype)
    generator = torch.Generator(device=device).manual_seed(seed)
    for full, local in _places(config, model).values():  # checkpoint order: the draws of every earlier version
        tensor = torch.empty(full.shape, device=device, dtype=dtype)
        if full.name.endswith("norm.weight"):
            tensor.fill_(1.0)
        else:
            tensor.normal_(0.0, std, generator=generator)
        part = None if shard is None else shard.part(full.name, full.shape)
        if part is not None:
            dim, start, stop = part
            tensor = tensor.narrow(dim, start, stop - start)
        _place(params, local, tensor)
    _finish(model, device)
    return model


# ----- helpers


def _meta_model(config: ModelConfig) -> LlamaModel:
    with torch.device("meta"):
        return LlamaModel(config)


def _module_name(hf: str) -> str:
    return hf[len("model."):] if hf.startswith("model.") else hf


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    setattr(module, leaf, nn.Parameter(tensor, requires_grad=False))


def _places(config: ModelConfig, model: LlamaModel) -> dict[str, tuple[CheckpointTensor, CheckpointTensor]]:
    """HF name -> (the tensor in the full checkpoint, where this (possibly sharded) model holds its part).

    Also checks that the local listing tiles every parameter of `model` exactly, so no allocated row is left
    unwritten (an internal error: tests check the listing on every preset)."""
    full, local = checkpoint_tensors(config), checkpoint_tensors(model.config)
    rows: dict[str, int] = {}
    for t in local:
        if t.offset != rows.get(t.param, 0):
            raise RuntimeError(f"checkpoint listing leaves a gap or overlap in {t.param} at {t.name}")
        rows[t.param] = t.offset + t.shape[0]
    shapes = {name: p.shape for name, p in model.named_parameters()}
    tiled = {t.param: (rows[t.param],) + t.shape[1:] for t in local}
    if tiled != {name: tuple(shape) for name, shape in shapes.items()}:
        odd = sorted(set(tiled) ^ set(shapes)) or sorted(tiled)
        raise RuntimeError(f"checkpoint listing does not tile the module's parameters: {odd}")
    return {hf_name(f.name): (f, t) for f, t in zip(full, local)}


def _allocate(model: LlamaModel, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Give every parameter uninitialised storage on the device (filled by _place). Returns name -> tensor."""
    for name, p in list(model.named_parameters()):
        _set_parameter(model, name, torch.empty(p.shape, device=device, dtype=dtype))
    return {name: p.data for name, p in model.named_parameters()}


def _place(params: dict[str, torch.Tensor], local: CheckpointTensor, tensor: torch.Tensor) -> None:
    """Copy one checkpoint tensor (or this shard's slice of it) into its rows of a (fused) parameter, casting to
    the parameter's dtype and device."""
    if tuple(tensor.shape) != local.shape:  # an internal error: shapes are checked against the headers first
        raise RuntimeError(f"{local.name}: got shape {list(tensor.shape)}, the module holds {list(local.shape)}")
    params[local.param].narrow(0, local.offset, local.shape[0]).copy_(tensor)


def _finish(model: LlamaModel, device: torch.device) -> None:
    """RoPE buffer on the device, inference mode flags, and a check that nothing stayed on meta."""
    model.reset_rope(device)
    model.eval()
    model.requires_grad_(False)
    left = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # an internal error: every parameter is assigned above
        raise RuntimeError(f"tensors left on the meta device: {left}")


def _merge_ids(first: Any, rest: tuple[int, ...]) -> tuple[int, ...]:
    ids = [] if first is None else ([first] if isinstance(first, int) else list(first))
    return tuple(dict.fromkeys(ids + list(rest)))


def _read_json(path: str) -> dict[str, Any]:
    return read_json_object(path, CheckpointError, strict=True)
