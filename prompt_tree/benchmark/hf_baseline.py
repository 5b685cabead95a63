"""The baseline users try first: Hugging Face transformers `generate` on the engine's own weights.

The transformers model is built on the meta device from our ModelConfig and given our parameter tensors themselves
(under their HF names, as views of our fused weights: `prompt_tree.model.hf_state_dict`), so it holds no second
copy of the weights and computes the same function. Every row of its batch holds its whole prompt (the shared prefix repeated, left-padded to the longest
prompt), greedy, `min_new_tokens = max_new_tokens` and no EOS, so each row runs to length as in the engine runs.
Prefill and decode are timed apart through a stopping criterion, which generate calls once per new token (after
the device has produced it): the first call ends the prefill.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from prompt_tree.model import hf_state_dict

# Activations of a transformers prefill, per prompt token, in elements of the run dtype: residual stream and norms,
# q/k/v, and the MLP's gate, up, activation and product (it runs the whole padded batch in one forward).
_HF_ACT_HIDDEN = 4
_HF_ACT_INTERMEDIATE = 4
# fp32 vocabulary rows per sequence in a generate step: the last position's logits, their copy, the processed
# scores.
_HF_VOCAB_ROWS = 3


def hf_unavailable_reason(config) -> str | None:
    """Why the transformers baseline cannot run for this model (None when it can)."""
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        return f"transformers is not importable ({e}); pip install 'prompt-tree[test]'"
    if config.architecture != "LlamaForCausalLM" or config.qkv_bias:
        return f"the baseline builds LlamaForCausalLM only, not {config.architecture}"
    return None


def hf_config(config):
    """A transformers LlamaConfig of our ModelConfig's shapes, without EOS (legacy rope keys: read by transformers 4
    and 5)."""
    from transformers import LlamaConfig

    rope_scaling = None
    if config.rope_scaling is not None:
        rs = config.rope_scaling
        rope_scaling = {"rope_type": rs.type, "factor": rs.factor}
        if rs.type == "llama3":
            rope_scaling.update(low_freq_factor=rs.low_freq_factor, high_freq_factor=rs.high_freq_factor,
                                original_max_position_embeddings=rs.original_max_position_embeddings)
    cfg = LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim, rope_theta=config.rope_theta,
        rope_scaling=rope_scaling, rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=config.tie_word_embeddings,
        max_position_embeddings=config.max_position_embeddings, bos_token_id=config.bos_token_id,
        eos_token_id=None, attention_bias=False, mlp_bias=False,  # no EOS: the benchmark runs rows to length
    )
    cfg._attn_implementation = "sdpa"  # what users get by default on a GPU
    return cfg


def hf_model(model, config):
    """A transformers LlamaForCausalLM sharing `model`'s parameter tensors (no copy)."""
    from torch import nn
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    reason = hf_unavailable_reason(config)
    if reason:
        raise ValueError(reason)
    param = next(model.parameters())
    cfg = hf_config(config)
    with torch.device("meta"):
        hf = LlamaForCausalLM(cfg)
    ours = hf_state_dict(model)
    theirs = dict(hf.named_parameters())
    missing = sorted(set(theirs) - set(ours) - ({"lm_head.weight"} if config.tie_word_embeddings else set()))
    if missing:
        raise ValueError(f"transformers' model has parameters ours lacks: {missing[:3]}")
    for target, tensor in ours.items():
        module_name, _, leaf = target.rpartition(".")
        setattr(hf.get_submodule(module_name), leaf, nn.Parameter(tensor, requires_grad=False))
    if config.tie_word_embeddings:
        hf.lm_head.weight = hf.model.embed_tokens.weight
    # RoPE tables are buffers computed at construction: build them again off the meta device.
    hf.model.rotary_emb = LlamaRotaryEmbedding(config=cfg).to(param.device)
    left = [n for n, t in list(hf.named_parameters()) + list(hf.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"transformers model tensors left on the meta device: {left[:3]}")
    # generate fills a GenerationConfig's unset fields from the model's: an EOS left there would be suppressed by
    # min_new_tokens, so greedy decoding could never pick it while the engine (eos_ids=()) can.
    hf.generation_config.eos_token_id = None
    hf.eval()
    hf.requires_grad_(False)
    return hf


def hf_predicted_bytes(config, dtype: torch.dtype, batch: int, prompt_len: int, new_tokens: int) -> int:
    """Memory a transformers generate needs beyond the weights: every row's KV for prompt + new tokens (its cache
    grows by concatenation, one layer's copy at a time), the prefill's activations over all rows and the vocabulary
    rows of a step."""
    el = torch.empty((), dtype=dtype).element_size()
    kv = batch * (prompt_len + new_tokens) * config.kv_bytes_per_token(el)
    kv += kv // config.num_layers  # the concatenation's transient copy of one layer
    act = batch * prompt_len * el * (_HF_ACT_HIDDEN * config.hidden_size + _HF_ACT_INTERMEDIATE
                                     * config.intermediate_size + (config.num_heads + 2 * config.num_kv_heads)
                                     * config.head_dim)
    logits = batch * _HF_VOCAB_ROWS * 4 * config.vocab_size
    return kv + act + logits


@dataclass
class HFRun:
    """One transformers generate: token_ids [B][new_tokens]; times in seconds; peak memory in bytes (CUDA:
    max allocated during the call, weights included; CPU: None)."""

    token_ids: list[list[int]]
    prefill_seconds: float
    decode_seconds: float
    decode_tokens: int
    peak_memory_bytes: int | None

    @property
    def decode_tokens_per_second(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


def left_padded(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask: both [B, T] int64, T = the longest prompt, shorter prompts padded on the left
    (generate appends on the right, so every row's last prompt token must sit in the last column)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(prompts), width), dtype=torch.int64)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.int64)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def hf_generate(hf, prompts: list[list[int]], new_tokens: int) -> HFRun:
    """Greedy generate of `new_tokens` tokens for every prompt (one batch), timed: prefill (to the first token)
    and decode (the rest) apart."""
    from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

    device = next(hf.parameters()).device
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    class StepClock(StoppingCriteria):
        """Never stops; records when each new token exists (the first: end of prefill)."""

        def __init__(self):
            self.times: list[float] = []

        def __call__(self, input_ids, scores, **kwargs):
            sync()
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    pad_id = 0
    ids, mask = left_padded(prompts, pad_id, device)
    gen = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           eos_token_id=None, pad_token_id=pad_id, bos_token_id=None)
    clock = StepClock()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(input_ids=ids, attention_mask=mask, generation_config=gen,
                          stopping_criteria=StoppingCriteriaList([clock]))
    sync()
    t1 = time.perf_counter()
    tokens = out[:, ids.shape[1]:].tolist()  # [B, new_tokens]
    first = clock.times[0] if clock.times else t1
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    return HFRun(token_ids=tokens, prefill_seconds=first - t0, decode_seconds=t1 - first,
                 decode_tokens=len(prompts) * max(0, new_tokens - 1), peak_memory_bytes=peak)
