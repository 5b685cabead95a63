"""The Llama-family decoder (Llama 2/3, CodeLlama, Mistral, Qwen2) in torch, flat token layout, fused dense path.

Tokens of many sequences are packed along one axis T (no batch dimension); the model never looks across tokens
except through the `attention` callback, which owns the KV cache and the tree structure. So one forward serves
tree prefill and decode alike:

    hidden = model(input_ids [T], positions [T], attention)   # [T, hidden]
    logits = model.logits(hidden[last_rows])                  # [N, vocab] fp32 (= logits_raw(...).float())

The fused layout (docs/model.md). A layer holds one q/k/v projection, `self_attn.qkv_proj` [(Hq + 2 Hkv) D,
hidden] (rows: q, then k, then v; bias likewise for Qwen2), and one gate/up projection, `mlp.gate_up_proj`
[2 I, hidden] (gate rows, then up rows), so each is one GEMM. Checkpoints keep HF's separate tensors:
`checkpoint_tensors` says where each lands (prompt_tree.loading fills the fused weights from it) and
`hf_state_dict` hands them back under their HF names as views. Around the GEMMs: the residual add fused with the
next RMSNorm (vLLM's scheme: every norm but the first returns the normed value and the updated residual), RoPE
rotating q and k in place inside the qkv output, and one SiLU(gate) * up kernel (prompt_tree.fused_ops).
prompt_tree.plain_model is the unfused op-for-op reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from prompt_tree.kernels.reference import attention_lse

from .config import ModelConfig
from .fused_ops import BACKENDS, add_rms_norm, rope_, silu_mul
from .skinny_gemm import GEMM_MODES, dense_linear
from .rope import rope_cos_sin, rope_inv_freq

# attention(layer_idx, q [T, Hq, D], k [T, Hkv, D], v [T, Hkv, D]) -> [T, Hq, D]; q and k already rotated.
# q, k and v are strided views of one [T, (Hq + 2 Hkv) D] buffer (contiguous head dim); the callback may return q.
AttentionFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# This module's names of the fused projections, and the checkpoint tensors each one concatenates (row order).
QKV_PROJ = "self_attn.qkv_proj"
GATE_UP_PROJ = "mlp.gate_up_proj"
_FUSED_PARTS = {QKV_PROJ: ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                GATE_UP_PROJ: ("mlp.gate_proj", "mlp.up_proj")}


@dataclass(frozen=True)
class DenseOptions:
    """How the dense part of a forward runs (everything but attention). Validated on construction.

    kernels: "auto" (the Triton kernels of prompt_tree.fused_ops on CUDA, their torch references elsewhere),
    "triton" or "torch".
    compile: torch.compile the two dense regions of each layer (add+norm, qkv GEMM, RoPE; add+norm, gate/up GEMM,
    SiLU*up). Inside them the torch references are traced and inductor generates its own fused kernels; the
    attention callback, o_proj and down_proj (row-parallel all-reduces under TP) stay eager between them. Off by
    default: use it only where tools/bench_dense.py shows it wins. The first call of each shape compiles (seconds
    to a minute): warm up before capturing a CUDA graph, as the engine does.
    compile_backend: torch.compile's backend ("inductor"; tests may use "aot_eager").
    gemm: "auto" (on a CUDA graph's launch path, a projection with at most 128 rows runs on
    prompt_tree.skinny_gemm's kernel where a table shipped or registered for this device names a configuration
    for its shape, cuBLAS otherwise) or "cublas" (always F.linear). A table ships for the H100 80GB HBM3 only;
    tools/gemm_sweep.py measures one for another device and `prompt-tree bench --gemm-table` registers it. With
    compile on, every GEMM is F.linear.
    """

    kernels: str = "auto"
    compile: bool = False
    compile_backend: str = "inductor"
    gemm: str = "auto"

    def __post_init__(self) -> None:
        if self.kernels not in BACKENDS:
            raise ValueError(f"DenseOptions.kernels must be one of {BACKENDS}, not {self.kernels!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"DenseOptions.compile must be a bool, not {self.compile!r}")
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise ValueError(f"DenseOptions.compile_backend must be a backend name, not {self.compile_backend!r}")
        if self.gemm not in GEMM_MODES:
            raise ValueError(f"DenseOptions.gemm must be one of {GEMM_MODES}, not {self.gemm!r}")


# ----- the dense regions of a layer (free functions of tensors, so one compiled graph serves every layer)


def attention_input(x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
                    qkv_weight: torch.Tensor, qkv_bias: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
                    num_heads: int, num_kv_heads: int, head_dim: int, backend: str, gemm: str = "cublas"):
    """Residual add + input RMSNorm, the fused q/k/v GEMM, RoPE in place on the q and k heads.

    x: [T, hidden] (the previous layer's output; the embedding when residual is None); residual: [T, hidden] or
    None; qkv_weight: [(Hq + 2 Hkv) D, hidden]; cos, sin: fp32 [T, D/2]. Returns q [T, Hq, D], k [T, Hkv, D],
    v [T, Hkv, D] (views of one buffer: no copies) and the residual stream [T, hidden].
    """
    h, residual = add_rms_norm(x, residual, norm_weight, eps, backend)
    T = h.shape[0]
    qkv = dense_linear(h, qkv_weight, qkv_bias, gemm).view(T, num_heads + 2 * num_kv_heads, head_dim)
    rope_(qkv[:, :num_heads + num_kv_heads], cos, sin, backend)  # q and k heads are adjacent: one pass
    q = qkv[:, :num_heads]
    k = qkv[:, num_heads:num_heads + num_kv_heads]
    v = qkv[:, num_heads + num_kv_heads:]
    return q, k, v, residual


def mlp_input(x: torch.Tensor, residual: torch.Tensor, norm_weight: torch.Tensor, eps: float,
              gate_up_weight: torch.Tensor, backend: str, gemm: str = "cublas"):
    """Residual add + post-attention RMSNorm, the fused gate/up GEMM, SiLU(gate) * up.

    x: [T, hidden] (o_proj's output); residual: [T, hidden]; gate_up_weight: [2 I, hidden]. Returns the
    activation [T, I] (down_proj's input) and the residual stream [T, hidden]."""
    h, residual = add_rms_norm(x, residual, norm_weight, eps, backend)
    return silu_mul(dense_linear(h, gate_up_weight, None, gemm), backend), residual


class RMSNorm(nn.Module):
    """The norm's weight [size] and eps; applied by fused_ops.add_rms_norm (fp32 statistics, as HF)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None, backend: str = "auto"):
        """x, residual: [T, size] -> (normed, x + residual) (residual None: (normed x, x))."""
        return add_rms_norm(x, residual, self.weight, self.eps, backend)


class Attention(nn.Module):
    """The fused q/k/v projection and o_proj (RoPE and the attention callback run between them)."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        q_size, kv_size = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, q_size + 2 * kv_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=False)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), gate and up as one projection."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)


@dataclass(frozen=True)
class _DenseFns:
    """The dense regions as called (plain or compiled), the backend they pass to fused_ops and the GEMM mode
    (DenseOptions.gemm; "cublas" in compiled regions, where inductor traces F.linear)."""

    attention_input: Callable
    mlp_input: Callable
    backend: str
    gemm: str = "cublas"


def _project(layer: nn.Module, x: torch.Tensor, gemm: str) -> torch.Tensor:
    """o_proj / down_proj: a plain nn.Linear through dense_linear; any other module (a tensor-parallel
    RowParallelLinear, which all-reduces) as it is."""
    if type(layer) is nn.Linear:
        return dense_linear(x, layer.weight, layer.bias, gemm)
    return layer(x)


def _compiled(region: Callable, backend: str, token_args: tuple[int, ...]) -> Callable:
    """torch.compile of a dense region whose token dimension is dynamic from the first call.

    fullgraph: the region must trace as one graph (a break would silently leave part of it eager). The token
    dimension of the `token_args` (x, residual, cos, sin) is marked dynamic before each call, so one graph serves
    every batch size instead of a static graph for the first size and a dynamic one after (each compile costs
    seconds); T = 1 still gets its own (torch specializes sizes 0 and 1). Every other size (hidden, heads) stays static.
    """
    compiled = torch.compile(region, backend=backend, fullgraph=True)

    def call(*args):
        for i in token_args:  # the positional arguments with a token dimension (residual may be None)
            if args[i] is not None:
                torch._dynamo.maybe_mark_dynamic(args[i], 0)
        return compiled(*args)

    return call


class DecoderLayer(nn.Module):
    """Pre-norm block: residual + attn(norm(residual)), then + mlp(norm(.)), each add fused into the next norm."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
                attention: AttentionFn, dense: _DenseFns) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [T, hidden], the previous layer's MLP output not yet added (the embedding for layer 0, with residual
        None); residual: [T, hidden]. Returns this layer's MLP output and the residual stream before it."""
        attn, norm1, norm2 = self.self_attn, self.input_layernorm, self.post_attention_layernorm
        q, k, v, residual = dense.attention_input(
            x, residual, norm1.weight, norm1.eps, attn.qkv_proj.weight, attn.qkv_proj.bias, cos, sin,
            attn.num_heads, attn.num_kv_heads, attn.head_dim, dense.backend, dense.gemm)
        out = attention(attn.layer_idx, q, k, v)  # [T, Hq, D]
        x = _project(attn.o_proj, out.reshape(out.shape[0], attn.num_heads * attn.head_dim), dense.gemm)
        act, residual = dense.mlp_input(x, residual, norm2.weight, norm2.eps, self.mlp.gate_up_proj.weight,
                                        dense.backend, dense.gemm)
        return _project(self.mlp.down_proj, act, dense.gemm), residual


class LlamaModel(nn.Module):
    """Embedding, `num_layers` decoder layers, final RMSNorm, lm_head (tied to the embedding when configured).

    Build on the "meta" device and fill with `prompt_tree.loading` (load_model / random_model); a model built
    directly holds torch's default init, which is only good for shape checks.
    """

    def __init__(self, config: ModelConfig, options: DenseOptions | None = None):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # fp32 [D/2]; not in checkpoints (persistent=False); `reset_rope` recomputes it after meta-device builds.
        self.register_buffer("inv_freq", rope_inv_freq(config, device=self.embed_tokens.weight.device), persistent=False)
        self.set_dense_options(options or DenseOptions())

    def set_dense_options(self, options: DenseOptions) -> None:
        """Choose how the dense path runs (see DenseOptions). Takes effect on the next forward; a CUDA graph
        captured before keeps what it captured."""
        if not isinstance(options, DenseOptions):
            raise TypeError(f"options must be a DenseOptions, not {type(options).__name__}")
        self.dense_options = options
        if options.compile:
            self._dense = _DenseFns(_compiled(attention_input, options.compile_backend, (0, 1, 6, 7)),
                                    _compiled(mlp_input, options.compile_backend, (0, 1)), "torch", "cublas")
        else:
            self._dense = _DenseFns(attention_input, mlp_input, options.kernels, options.gemm)

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
        x, residual = self.embed_tokens(input_ids), None  # [T, hidden]
        for layer in self.layers:
            x, residual = layer(x, residual, cos, sin, attention, self._dense)
        hidden, _ = self.norm(x, residual, self.dense_options.kernels)  # outside the compiled regions
        return hidden

    def logits_raw(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, hidden] -> logits [N, vocab] in the model dtype (one GEMM; fp32 accumulation inside it)."""
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return dense_linear(hidden, weight, None, self._dense.gemm)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, hidden] -> fp32 logits [N, vocab]: logits_raw upcast (what sampling reads)."""
        return self.logits_raw(hidden).float()

    def forward_dense(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Reference: fp32 logits [T, vocab] of one sequence input_ids [T] with dense causal attention."""
        positions = torch.arange(input_ids.shape[0], device=input_ids.device)
        return self.logits(self.forward(input_ids, positions, causal_attention()))


# ----- checkpoint names: HF's separate tensors <-> the fused parameters


@dataclass(frozen=True)
class CheckpointTensor:
    """One tensor of an HF checkpoint and where it lives in this module.

    name: its checkpoint name without the leading "model." (hf_name adds it), e.g. "layers.0.self_attn.k_proj.weight";
    shape: its shape for the config it was listed for; param: this module's parameter holding it
    ("layers.0.self_attn.qkv_proj.weight"); offset: its first row in that parameter (dim 0).
    """

    name: str
    shape: tuple[int, ...]
    param: str
    offset: int


def checkpoint_tensors(config: ModelConfig) -> list[CheckpointTensor]:
    """Every checkpoint tensor of a model of `config`, in HF's order (the order random_model draws them).

    The tensors listed for one parameter tile it exactly along dim 0 (tests check it on every preset): the fused
    q/k/v weight is q ‖ k ‖ v, the fused gate/up weight gate ‖ up. For a tensor-parallel rank's config
    (parallel.shard_config) the shapes are its shards, so the rank's fused weight is its q shard ‖ k shard ‖ v
    shard.
    """
    H, D, inter = config.hidden_size, config.head_dim, config.intermediate_size
    q, kv = config.num_heads * D, config.num_kv_heads * D
    rows = {"self_attn.q_proj": q, "self_attn.k_proj": kv, "self_attn.v_proj": kv, "mlp.gate_proj": inter,
            "mlp.up_proj": inter}
    out = [CheckpointTensor("embed_tokens.weight", (config.vocab_size, H), "embed_tokens.weight", 0)]

    def fused(prefix: str, fused_name: str, bias: bool) -> None:
        offset = 0
        for part in _FUSED_PARTS[fused_name]:
            n = rows[part]
            out.append(CheckpointTensor(f"{prefix}.{part}.weight", (n, H), f"{prefix}.{fused_name}.weight", offset))
            if bias:
                out.append(CheckpointTensor(f"{prefix}.{part}.bias", (n,), f"{prefix}.{fused_name}.bias", offset))
            offset += n

    for i in range(config.num_layers):
        p = f"layers.{i}"
        out.append(CheckpointTensor(f"{p}.input_layernorm.weight", (H,), f"{p}.input_layernorm.weight", 0))
        fused(p, QKV_PROJ, config.qkv_bias)
        out.append(CheckpointTensor(f"{p}.self_attn.o_proj.weight", (H, q), f"{p}.self_attn.o_proj.weight", 0))
        out.append(CheckpointTensor(f"{p}.post_attention_layernorm.weight", (H,),
                                    f"{p}.post_attention_layernorm.weight", 0))
        fused(p, GATE_UP_PROJ, False)
        out.append(CheckpointTensor(f"{p}.mlp.down_proj.weight", (H, inter), f"{p}.mlp.down_proj.weight", 0))
    out.append(CheckpointTensor("norm.weight", (H,), "norm.weight", 0))
    if not config.tie_word_embeddings:
        out.append(CheckpointTensor("lm_head.weight", (config.vocab_size, H), "lm_head.weight", 0))
    return out


def hf_name(name: str) -> str:
    """A checkpoint tensor's name here -> its HF name ("layers.0.mlp.up_proj.weight" -> "model.layers.0...")."""
    return name if name.startswith("lm_head.") else "model." + name


def hf_state_dict(model: LlamaModel) -> dict[str, torch.Tensor]:
    """The model's weights under their HF checkpoint names, as views of its parameters (no copy): what
    transformers' LlamaForCausalLM or a safetensors export needs. A tensor-parallel rank gives its shards.
    Tied models list no lm_head.weight, as HF's checkpoints."""
    params = dict(model.named_parameters())
    return {hf_name(t.name): params[t.param].detach().narrow(0, t.offset, t.shape[0])
            for t in checkpoint_tensors(model.config)}


# ----- reference attention (tests, and the engine's equivalence checks)


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_offset: int = 0, scale: float | None = None
) -> torch.Tensor:
    """Causal softmax attention of one sequence, in fp32 (fp64 for fp64 q). Query i sits at position q_offset + i.

    q: [Tq, Hq, D]; k, v: [Tk, Hkv, D] with Tk >= q_offset + Tq; returns [Tq, Hq, D] in q's dtype.
    Query head h reads KV head h // (Hq / Hkv) (HF's repeat_kv grouping).
    """
    Tq, Tk = q.shape[0], k.shape[0]
    work = torch.promote_types(q.dtype, torch.float32)
    # prompt_tree.kernels.reference is the one reference attention; the mask puts query i at position q_offset + i
    visible = torch.arange(Tk, device=q.device)[None, :] <= torch.arange(Tq, device=q.device)[:, None] + q_offset
    out, _ = attention_lse(q, k, v, mask=visible, scale=scale, dtype=work)
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
