"""The roofline limit of a decode run, from ceilings measured in the same run.

    limit = measured decode time with attention skipped ("none": every other layer op on the real shapes)
          + the attention floor: for each decode step and layer, max(bytes read once / copy bandwidth,
            flops / matmul rate) at that step's real lengths (each sequence's suffix grows by one per step)

Bytes read once: every tree node's KV once (whatever its sharing), each sequence's own suffix, q and o. Flops:
QK^T and PV over every sequence's whole context (2 x 2 flops per query head, key and head-dim element). So the
limit is what the best possible attention (hierarchical sharing, perfectly efficient) would add to the measured
rest of the model; measured/limit says how far a mode is from it. The same limit serves every mode of a row.

Ceilings are measured like prompt_tree/kernels/bench.py does (the same function on CUDA): a 2 GiB bf16 device copy,
counted as bytes read + written, and a bf16 8192^3 matmul.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

# Time estimates (only used to decide whether a row still fits the time budget; never reported as results).
# The rest of the model runs at about this multiple of its floor (weights read once vs matmul rate) ...
ESTIMATE_MODEL_INEFFICIENCY = 1.4
# ... plus a fixed cost per decode step (graph replay, sampling, host bookkeeping).
ESTIMATE_STEP_OVERHEAD_S = 0.002
# Attention time / its floor, per kind of mode. Shared: our tree kernels ran at 1.1-2.6x their floor on an H100
# (docs/benchmarks/attention_v1.json). Paged without sharing: 0.37-0.45x the floor of reading every sequence's
# path from memory (the shared pages hit in L2). Copied prefixes (transformers): no L2 reuse across sequences.
ESTIMATE_ATTENTION_FACTOR = {"shared": 2.0, "paged": 0.45, "copied": 1.2}
# transformers' generate runs eagerly: each layer costs Python and launch time however small the batch.
ESTIMATE_HF_LAYER_OVERHEAD_S = 0.0008


@dataclass(frozen=True)
class Ceilings:
    """copy_bytes_per_s: bytes read + written per second by a large device copy; matmul_flops_per_s: dense matmul
    rate in the run dtype (bf16 on CUDA)."""

    copy_bytes_per_s: float
    matmul_flops_per_s: float

    def __post_init__(self) -> None:
        if not (self.copy_bytes_per_s > 0 and self.matmul_flops_per_s > 0):
            raise ValueError(f"ceilings must be positive, got {self}")


def measure_ceilings(device: torch.device) -> Ceilings:
    """Copy bandwidth and matmul rate of `device`. CUDA: prompt_tree.kernels.bench.ceilings (2 GiB copy, bf16 8192^3
    matmul, triton.testing.do_bench medians). CPU: the same two measurements, smaller, best of a few repeats (tests)."""
    if device.type == "cuda":
        from prompt_tree.kernels.bench import ceilings

        with torch.cuda.device(device):
            bw, tf = ceilings()
        return Ceilings(bw, tf)
    a = torch.randn(1 << 22)  # 16 MiB fp32
    b = torch.empty_like(a)
    x = torch.randn(512, 512)

    def best(fn, repeats=5) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    copy_s = best(lambda: b.copy_(a))
    mm_s = best(lambda: x @ x)
    return Ceilings(2 * a.numel() * a.element_size() / copy_s, 2 * 512**3 / mm_s)


@dataclass(frozen=True)
class DecodeWork:
    """The attention work of one decode run, per layer. Step s (1 .. decode_steps) attends over each sequence's
    prompt plus its s own tokens (the one just fed back included)."""

    num_sequences: int
    unique_prompt_tokens: int  # prompt KV tokens stored, each node once
    prompt_tokens_attended: int  # sum over sequences of their prompt length
    decode_steps: int  # new_tokens - 1: the first token comes from the prefill logits
    num_layers: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    dtype_bytes: int

    def step_bytes(self, s: int) -> int:
        """Bytes of one layer's attention at step s if every KV row is read once: K and V, plus q in and o out."""
        kv_tokens = self.unique_prompt_tokens + self.num_sequences * s
        kv = 2 * self.num_kv_heads * self.head_dim * self.dtype_bytes * kv_tokens
        qo = 2 * self.num_sequences * self.num_q_heads * self.head_dim * self.dtype_bytes
        return kv + qo

    def step_flops(self, s: int) -> int:
        """Flops of one layer's attention at step s: QK^T and PV, 2 flops per multiply-add each."""
        keys = self.prompt_tokens_attended + self.num_sequences * s
        return 4 * self.num_q_heads * self.head_dim * keys


def decode_work(plan, new_tokens: int, config, dtype: torch.dtype, *, shared: bool = True) -> DecodeWork:
    """The DecodeWork of decoding `plan`. shared=False counts each sequence's whole prompt as read by it (the
    bytes a mode without sharing moves: for time estimates only, never for the limit)."""
    el = torch.empty((), dtype=dtype).element_size()
    unique = plan.kv_tokens_shared if shared else plan.kv_tokens_flat
    return DecodeWork(plan.num_sequences, unique, plan.kv_tokens_flat, max(0, new_tokens - 1), config.num_layers,
                      config.num_heads, config.num_kv_heads, config.head_dim, el)


def attention_floor_seconds(work: DecodeWork, ceilings: Ceilings) -> float:
    """Sum over decode steps and layers of max(bytes / copy bandwidth, flops / matmul rate)."""
    bw, rate = ceilings.copy_bytes_per_s, ceilings.matmul_flops_per_s
    per_layer = sum(max(work.step_bytes(s) / bw, work.step_flops(s) / rate) for s in range(1, work.decode_steps + 1))
    return work.num_layers * per_layer


# ----- the physical floor of a whole decode step: the no-attention step has a floor too


def activation_elements_per_row(config) -> int:
    """Elements one decode row writes per layer on the dense path once each op is fused (each is then read
    once): the normed input, q/k/v, the attention output, o_proj's output, the second norm, gate|up, the
    activation, down's output, plus the residual stream updated twice."""
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    h, i = config.hidden_size, config.intermediate_size
    return h + (q + 2 * kv) + q + h + h + 2 * i + i + h + 2 * h


def dense_step_bytes(config, dtype_bytes: int, batch: int) -> int:
    """Bytes a decode step's dense path must move at least: every weight once (the embedding only for the rows
    it gathers; the LM head whole), each activation written and read once, the logits written and read once."""
    embed = config.vocab_size * config.hidden_size
    weights = config.num_parameters() - (0 if config.tie_word_embeddings else embed)
    acts = 2 * batch * config.num_layers * activation_elements_per_row(config)
    logits = 2 * batch * config.vocab_size
    return dtype_bytes * (weights + acts + logits + batch * config.hidden_size)


def dense_step_flops(config, batch: int) -> int:
    """Matmul flops of a decode step's dense path: 2 per weight per row (the embedding gather is not a matmul;
    the LM head is)."""
    embed = config.vocab_size * config.hidden_size
    matmul_params = config.num_parameters() - (0 if config.tie_word_embeddings else embed)
    return 2 * matmul_params * batch


def physical_step_seconds(config, dtype_bytes: int, batch: int, ceilings: Ceilings, *, kv_tokens_read: int = 0,
                          keys_attended: int = 0) -> float:
    """The floor of one whole decode step: max(bytes read once / copy bandwidth, flops / matmul rate), with the
    dense path (dense_step_bytes / dense_step_flops) plus attention: kv_tokens_read distinct KV tokens (each
    node once, each suffix) and keys_attended = the sum over rows of their context length."""
    kv = 2 * config.num_layers * config.num_kv_heads * config.head_dim * dtype_bytes * kv_tokens_read
    qo = 2 * config.num_layers * batch * config.num_heads * config.head_dim * dtype_bytes if keys_attended else 0
    attn_flops = 4 * config.num_layers * config.num_heads * config.head_dim * keys_attended
    nbytes = dense_step_bytes(config, dtype_bytes, batch) + kv + qo
    flops = dense_step_flops(config, batch) + attn_flops
    return max(nbytes / ceilings.copy_bytes_per_s, flops / ceilings.matmul_flops_per_s)


def physical_run_seconds(work: DecodeWork, config, ceilings: Ceilings, *, attention: bool = True) -> float:
    """The physical floor of a decode run: physical_step_seconds summed over its steps at their real lengths."""
    total = 0.0
    for s in range(1, work.decode_steps + 1):
        kv = work.unique_prompt_tokens + work.num_sequences * s if attention else 0
        keys = work.prompt_tokens_attended + work.num_sequences * s if attention else 0
        total += physical_step_seconds(config, work.dtype_bytes, work.num_sequences, ceilings, kv_tokens_read=kv,
                                       keys_attended=keys)
    return total


# ----- time estimates (the time budget's guard; not results)


def model_step_floor_seconds(config, dtype: torch.dtype, batch: int, ceilings: Ceilings) -> float:
    """One decode step without attention at its floor: weights read once vs the matmul flops of `batch` rows."""
    weight_bytes = config.num_parameters() * torch.empty((), dtype=dtype).element_size()
    flops = 2 * config.num_parameters() * batch
    return max(weight_bytes / ceilings.copy_bytes_per_s, flops / ceilings.matmul_flops_per_s)


def estimate_run_seconds(config, dtype: torch.dtype, work: DecodeWork, prefill_tokens: int, ceilings: Ceilings,
                         *, reads: str, none_step_seconds: float | None = None, hf: bool = False) -> float:
    """A rough wall time of one measured run (prefill + decode): the guard that keeps a row from starting when it
    would end past the time budget. `work` counts the bytes this mode moves (decode_work(..., shared=False) for
    modes without sharing); reads: "shared", "paged", "copied" or "none" (no attention)."""
    step = none_step_seconds
    if step is None:
        step = ESTIMATE_MODEL_INEFFICIENCY * model_step_floor_seconds(config, dtype, work.num_sequences, ceilings)
        step += ESTIMATE_STEP_OVERHEAD_S
    if hf:
        step += config.num_layers * ESTIMATE_HF_LAYER_OVERHEAD_S
    attn = 0.0 if reads == "none" else ESTIMATE_ATTENTION_FACTOR[reads] * attention_floor_seconds(work, ceilings)
    prefill = ESTIMATE_MODEL_INEFFICIENCY * 2 * config.num_parameters() * prefill_tokens / ceilings.matmul_flops_per_s
    return work.decode_steps * step + attn + prefill
