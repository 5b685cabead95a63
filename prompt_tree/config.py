"""Model configuration: `ModelConfig` (validated, frozen), `ModelConfig.from_hf` and the shape `PRESETS`.

One config type covers the Llama family this project runs: Llama 2/3/3.1, CodeLlama, Mistral and Qwen2(.5).
They differ only in a few switches (qkv bias, tied embeddings, RoPE base and scaling), all fields here.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

# HF `architectures` names this project can run, and the `model_type` each one has in config.json.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}
_ARCH_BY_MODEL_TYPE = {model_type: arch for arch, model_type in SUPPORTED_ARCHITECTURES.items()}
TORCH_DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")


class ConfigError(ValueError):
    """A model configuration that is invalid or describes a model this project cannot run."""


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling, as HF's `rope_scaling` / `rope_parameters` describe it.

    type "linear": every inverse frequency is divided by `factor` (positions stretched uniformly).
    type "llama3": Llama 3.1's piecewise rule: long wavelengths divided by `factor`, short ones kept, the band
    between `original_max_position_embeddings / low_freq_factor` and `... / high_freq_factor` interpolated.
    """

    type: str
    factor: float
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None

    def __post_init__(self) -> None:
        if self.type not in ("linear", "llama3"):
            raise ConfigError(f"rope scaling type {self.type!r} is not supported; supported: 'linear', 'llama3'")
        if not (isinstance(self.factor, (int, float)) and math.isfinite(self.factor) and self.factor > 0):
            raise ConfigError(f"rope scaling factor must be a positive number, got {self.factor!r}")
        if self.type == "llama3":
            missing = [
                name
                for name in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
                if getattr(self, name) is None
            ]
            if missing:
                raise ConfigError(f"llama3 rope scaling needs {', '.join(missing)}")
            if not 0 < self.low_freq_factor < self.high_freq_factor:
                raise ConfigError(
                    "llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor, got "
                    f"{self.low_freq_factor} and {self.high_freq_factor}"
                )
            if self.original_max_position_embeddings <= 0:
                raise ConfigError("original_max_position_embeddings must be positive")


def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int = 2) -> int:
    """KV cache bytes of one token of one model: K and V, every layer, every KV head (bf16 = 2 bytes). The one
    place this is computed (ModelConfig.kv_bytes_per_token, plan.memory_report and the engine's pages use it)."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and switches of a Llama-family decoder. Validated on construction; lists become tuples.

    `head_dim` need not equal hidden_size / num_heads (q_proj maps hidden_size -> num_heads * head_dim).
    `eos_token_ids` are the ids that end a sequence (config.json's, merged with generation_config.json's by the
    loader). `torch_dtype` is the checkpoint's storage dtype (informational: the loader picks the run dtype).
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-5
    qkv_bias: bool = False
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(_unsupported_message(self.architecture))
        for name in (
            "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
            "head_dim", "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads}) "
                "for grouped-query attention"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for RoPE, got {self.head_dim}")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise ConfigError(f"rope_scaling must be a RopeScaling or None, got {type(self.rope_scaling).__name__}")
        if isinstance(self.eos_token_ids, int):
            object.__setattr__(self, "eos_token_ids", (self.eos_token_ids,))
        object.__setattr__(self, "eos_token_ids", tuple(self.eos_token_ids))
        for token in ((self.bos_token_id,) if self.bos_token_id is not None else ()) + self.eos_token_ids:
            if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < self.vocab_size:
                raise ConfigError(f"special token id {token!r} is outside the vocabulary [0, {self.vocab_size})")
        if self.torch_dtype not in TORCH_DTYPE_NAMES:
            raise ConfigError(f"torch_dtype must be one of {TORCH_DTYPE_NAMES}, got {self.torch_dtype!r}")

    # ----- derived sizes

    @property
    def q_per_kv(self) -> int:
        """Query heads per KV head (the GQA group size g)."""
        return self.num_heads // self.num_kv_heads

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Bytes of K and V cache one token takes over all layers (bytes_per_token: the one formula)."""
        return bytes_per_token(self.num_layers, self.num_kv_heads, self.head_dim, dtype_bytes)

    def num_parameters(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = self.hidden_size * (q + 2 * kv) + q * self.hidden_size + (q + 2 * kv if self.qkv_bias else 0)
        mlp = 3 * self.hidden_size * self.intermediate_size
        per_layer = attn + mlp + 2 * self.hidden_size
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embed + self.hidden_size

    # ----- Hugging Face config.json

    @classmethod
    def from_hf(cls, config: Mapping[str, Any] | str | os.PathLike) -> "ModelConfig":
        """Read an HF config: a dict, a config.json path, or a checkpoint directory holding config.json.

        Supported architectures: LlamaForCausalLM (Llama 2/3/3.1, CodeLlama), MistralForCausalLM, Qwen2ForCausalLM.
        Both the transformers 4 layout (`rope_theta`, `rope_scaling`) and the 5 layout (`rope_parameters`) are read.
        Mistral's `sliding_window` is ignored (a warning says so): attention is full, which equals HF's for
        sequences no longer than the window.
        """
        if not isinstance(config, Mapping):
            path = os.fspath(config)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            if not os.path.isfile(path):
                raise ConfigError(f"no config.json at {path}")
            try:
                with open(path, encoding="utf-8") as f:
                    config = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(f"cannot read {path}: {e}") from e
        return _from_hf_dict(dict(config))


def _unsupported_message(arch: str) -> str:
    return (
        f"unsupported architecture {arch!r}; supported architectures: "
        + ", ".join(SUPPORTED_ARCHITECTURES)
    )


def _from_hf_dict(c: dict[str, Any]) -> ModelConfig:
    archs = c.get("architectures") or []
    if archs:
        arch = archs[0]
    elif c.get("model_type") in _ARCH_BY_MODEL_TYPE:
        arch = _ARCH_BY_MODEL_TYPE[c["model_type"]]
    else:
        arch = f"model_type={c.get('model_type')!r}"
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(_unsupported_message(arch))

    def need(key: str) -> Any:
        if key not in c:
            raise ConfigError(f"config.json for {arch} lacks required key {key!r}")
        return c[key]

    if c.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"hidden_act {c['hidden_act']!r} is not supported (only 'silu')")
    if c.get("mlp_bias"):
        raise ConfigError("mlp_bias=True is not supported (Llama-family MLPs here have no bias)")
    if arch == "LlamaForCausalLM" and c.get("attention_bias"):
        raise ConfigError("attention_bias=True (bias on q/k/v and o_proj) is not supported for Llama")
    if c.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError("partial_rotary_factor != 1 is not supported")

    hidden = need("hidden_size")
    heads = need("num_attention_heads")
    kv_heads = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or hidden // heads

    rope_theta, rope_scaling = _rope_from_hf(c)

    if arch == "MistralForCausalLM" and c.get("sliding_window") is not None:
        warnings.warn(
            f"Mistral sliding_window={c['sliding_window']} is ignored: attention is over the full context, "
            "which equals the sliding-window model only for sequences no longer than the window",
            stacklevel=3,
        )
    if arch == "Qwen2ForCausalLM" and c.get("use_sliding_window"):
        warnings.warn("Qwen2 use_sliding_window=True is ignored: attention is over the full context", stacklevel=3)

    default_special = (None, None) if arch == "Qwen2ForCausalLM" else (1, 2)
    bos = c.get("bos_token_id", default_special[0])
    eos = c.get("eos_token_id", default_special[1])
    eos_ids = () if eos is None else ((eos,) if isinstance(eos, int) else tuple(eos))
    dtype = c.get("torch_dtype") or c.get("dtype") or "bfloat16"
    try:
        return ModelConfig(
            architecture=arch,
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_layers=need("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rope_theta=float(rope_theta),
            rope_scaling=rope_scaling,
            rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            qkv_bias=arch == "Qwen2ForCausalLM",
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            max_position_embeddings=int(c.get("max_position_embeddings", 2048)),
            bos_token_id=bos,
            eos_token_ids=eos_ids,
            torch_dtype=dtype,
        )
    except ConfigError as e:
        raise ConfigError(f"invalid {arch} config: {e}") from e


def _rope_from_hf(c: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from either `rope_parameters` (transformers 5) or `rope_theta`/`rope_scaling` (4)."""
    params = c.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        theta = params["rope_theta"]
        scaling = params
    else:
        theta = c.get("rope_theta", 10000.0)
        scaling = c.get("rope_scaling")
    if not scaling:
        return theta, None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, RopeScaling("linear", float(scaling["factor"]))
    if kind == "llama3":
        return theta, RopeScaling(
            "llama3",
            float(scaling["factor"]),
            float(scaling["low_freq_factor"]),
            float(scaling["high_freq_factor"]),
            int(scaling["original_max_position_embeddings"]),
        )
    raise ConfigError(f"rope scaling type {kind!r} is not supported; supported: 'linear', 'llama3' (or none)")


def _llama(**kw: Any) -> ModelConfig:
    return ModelConfig(architecture="LlamaForCausalLM", **kw)


# Real shapes, from each model's published config.json. Random weights of these shapes drive the GPU
# benchmarks; "tiny" (byte vocabulary: 256 bytes + BOS 256, EOS 257, PAD 258) drives the CPU tests.
PRESETS: dict[str, ModelConfig] = {
    # Llama 3.1 8B (the llama3 RoPE scaling is 3.1's; Llama 3.0 differs only in that and the context length).
    "llama3-8b": _llama(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
        num_kv_heads=8, head_dim=128, rope_theta=500000.0,
        rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192), rms_norm_eps=1e-5,
        max_position_embeddings=131072, bos_token_id=128000, eos_token_ids=(128001, 128008, 128009),
    ),
    # Llama 3.2 1B (tied embeddings): the Large Language Monkeys / tokasaurus GSM8K shape.
    "llama-3.2-1b": _llama(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
        num_kv_heads=8, head_dim=64, rope_theta=500000.0,
        rope_scaling=RopeScaling("llama3", 32.0, 1.0, 4.0, 8192), rms_norm_eps=1e-5, tie_word_embeddings=True,
        max_position_embeddings=131072, bos_token_id=128000, eos_token_ids=(128001, 128008, 128009),
    ),
    "llama2-7b": _llama(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
        num_kv_heads=32, head_dim=128, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=4096,
        bos_token_id=1, eos_token_ids=(2,), torch_dtype="float16",
    ),
    "codellama-7b": _llama(
        vocab_size=32016, hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
        num_kv_heads=32, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-5, max_position_embeddings=16384,
        bos_token_id=1, eos_token_ids=(2,),
    ),
    "codellama-13b": _llama(
        vocab_size=32016, hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40,
        num_kv_heads=40, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-5, max_position_embeddings=16384,
        bos_token_id=1, eos_token_ids=(2,),
    ),
    "codellama-34b": _llama(
        vocab_size=32000, hidden_size=8192, intermediate_size=22016, num_layers=48, num_heads=64,
        num_kv_heads=8, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-5, max_position_embeddings=16384,
        bos_token_id=1, eos_token_ids=(2,),
    ),
    "qwen2.5-coder-7b": ModelConfig(
        architecture="Qwen2ForCausalLM", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
        num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
        qkv_bias=True, tie_word_embeddings=False, max_position_embeddings=32768, bos_token_id=151643,
        eos_token_ids=(151643,),
    ),
    # 2 layers, hidden 128, 4 query / 2 KV heads (GQA group 2), head_dim 32: seconds on a CPU.
    "tiny": _llama(
        vocab_size=259, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=32, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=4096,
        bos_token_id=256, eos_token_ids=(257,), torch_dtype="float32",
    ),
}


def get_preset(name: str) -> ModelConfig:
    """The preset called `name`, or a ConfigError listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


def random_preset(spec: str) -> str | None:
    """The preset of a random-weight model spec, "tiny" or "random:PRESET"; None for anything else (a checkpoint
    directory). The one parser of that syntax, shared by the commands and the parallel engine."""
    if spec == "tiny":
        return "tiny"
    if spec.startswith("random:"):
        return spec[len("random:"):]
    return None


def replace(config: ModelConfig, **changes: Any) -> ModelConfig:
    """A copy of `config` with `changes` (validated again)."""
    return dataclasses.replace(config, **changes)
