"""Sampling: validated parameters, the sort-based reference sampler, the public `sample`, and stop-string matching.

Reproducibility: a sequence's random draw at a step depends only on (seed, sequence id, step),
never on which other sequences share the batch. Each sequence gets ONE counter-based uniform per step
(`prompt_tree.seeds`), and the token is chosen by inverse CDF over the filtered distribution in vocabulary order.
A sequence id is a stable hash of (node key, sample index), so the same sample drawn inside two different trees
(or sub-batches) sees the same noise.

`sample` is the sorting-free sampler (`prompt_tree.sampler`); `sample_reference` is the obviously right sort-based
version it is tested against. Incremental stop matching for the engine is `prompt_tree.stops`; `StopChecker` here
is the window-decoding matcher the synchronous engine uses, and the behaviour the incremental one reproduces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .sampler import Sampler, inverse_cdf, inverse_temperature
from .seeds import seed_key, sequence_id, uniforms
from .stops import StopChecker, cut_at_stop

__all__ = ["SamplingParams", "Sampler", "StopChecker", "filtered_probs", "inverse_cdf", "sample", "sample_reference", "seed_key",
           "sequence_id", "uniforms", "cut_at_stop"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample each sequence. Validated on construction; a bad value raises ValueError naming the field.

    temperature 0 means greedy (argmax; the filters are then irrelevant). top_k 0 and top_p 1 and min_p 0 mean off.
    `stop` strings end a sequence with finish_reason "stop"; the text is cut before the stop string unless
    include_stop_str_in_output. `stop_token_ids` end it with "stop" (the token is kept in token_ids only with
    include_stop_str_in_output); the model's EOS ids end it with "eos" (never kept). `logprobs` asks for each chosen
    token's log-probability under the model's unmodified distribution (log_softmax of the raw logits).
    """

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int = 0
    logprobs: bool = False
    include_stop_str_in_output: bool = False

    def __post_init__(self):
        def fail(name, why):
            raise ValueError(f"SamplingParams.{name}: {why} (got {getattr(self, name)!r})")

        def is_int(x):
            return isinstance(x, int) and not isinstance(x, bool)

        def is_num(x):
            return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)

        if not is_int(self.max_new_tokens):
            fail("max_new_tokens", "must be an int")
        if self.max_new_tokens < 1:
            fail("max_new_tokens", "must be >= 1")
        if not is_num(self.temperature):
            fail("temperature", "must be a finite number")
        if self.temperature < 0:
            fail("temperature", "must be >= 0 (0 means greedy)")
        if not is_num(self.top_p):
            fail("top_p", "must be a finite number")
        if not (0 < self.top_p <= 1):
            fail("top_p", "must be in (0, 1] (1 means off)")
        if not is_int(self.top_k):
            fail("top_k", "must be an int")
        if self.top_k < 0:
            fail("top_k", "must be >= 0 (0 means off)")
        if not is_num(self.min_p):
            fail("min_p", "must be a finite number")
        if not (0 <= self.min_p < 1):
            fail("min_p", "must be in [0, 1) (0 means off)")
        if not is_int(self.seed):
            fail("seed", "must be an int")
        if not isinstance(self.logprobs, bool):
            fail("logprobs", "must be a bool")
        if not isinstance(self.include_stop_str_in_output, bool):
            fail("include_stop_str_in_output", "must be a bool")
        # Accept a single string or any sequence of strings; store a tuple so the dataclass stays hashable.
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
            fail("stop", "must be a string or a list of strings")
        if any(s == "" for s in stop):
            fail("stop", "must not contain the empty string")
        object.__setattr__(self, "stop", tuple(stop))
        ids = self.stop_token_ids
        if not isinstance(ids, (list, tuple)) or not all(is_int(t) and t >= 0 for t in ids):
            fail("stop_token_ids", "must be a list of non-negative ints")
        object.__setattr__(self, "stop_token_ids", tuple(ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# ---------------------------------------------------------------------------------------------------------------
# filtering and choice


def filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities after temperature, top-k, top-p and min-p. logits: [B, V] fp32 -> [B, V] fp32 (rows sum to 1).

    The logits are scaled by multiplying with fp32(1/T) (`inverse_temperature`, the one rule every path uses).
    top-k keeps every token tied with the k-th largest; top-p keeps the smallest prefix of the descending-sorted
    distribution whose mass reaches top_p (always at least the top token); min-p drops tokens whose probability is
    below min_p times the row's largest. The filters apply in that order, each to the previous one's output.
    """
    x = logits.float() * inverse_temperature(params.temperature)
    V = x.shape[-1]
    if 0 < params.top_k < V:
        kth = torch.topk(x, params.top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if params.top_p < 1:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p
        keep_sorted = mass_before < params.top_p
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
        probs = probs * keep
    if params.min_p > 0:
        top = probs.max(dim=-1, keepdim=True).values
        probs = probs * (probs >= params.min_p * top)
    return probs / probs.sum(dim=-1, keepdim=True)


def _check_sample_args(logits: torch.Tensor, seq_ids: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"sample: logits must be [B, V], got shape {tuple(logits.shape)}")
    B = logits.shape[0]
    if seq_ids.shape != (B,):
        raise ValueError(f"sample: seq_ids must be [B]={B}, got shape {tuple(seq_ids.shape)}")


def sample_reference(
    logits: torch.Tensor, params: SamplingParams, seq_ids: torch.Tensor, step: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sort-based reference sampler. logits: [B, V] fp32/fp16/bf16, seq_ids: [B] int64, step: int or [B] int64.

    Returns (tokens [B] int64, logprobs [B] fp32), logprobs under log_softmax(logits) (the unmodified model).
    Greedy takes the first maximal index. Otherwise the token is the first index whose cumulative filtered
    probability exceeds u * total for the sequence's counter-based uniform u: a zero-probability token has the same
    cumulative value as its predecessor, so it can never be chosen (see `inverse_cdf`).
    """
    _check_sample_args(logits, seq_ids)
    logits = logits.float()
    if params.greedy:
        tokens = torch.argmax(logits, dim=-1)
    else:
        probs = filtered_probs(logits, params)
        tokens = inverse_cdf(probs, uniforms(seed_key(params.seed), seq_ids.to(probs.device), step))
    # log p(token) = logit - logsumexp(logits): no second [B, V] tensor
    logprobs = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return tokens, logprobs


_SAMPLERS: dict = {}  # (params, device) -> Sampler: the constants are built once per parameter set and device


def sample(
    logits: torch.Tensor, params: SamplingParams, seq_ids: torch.Tensor, step: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose one token per row with the sorting-free sampler. logits: [B, V] fp32/fp16/bf16, seq_ids: [B] int64,
    step: int or int64 tensor [] / [B]. Returns (tokens [B] int64, logprobs [B] fp32).

    The same tokens as `sample_reference` for the same uniforms, ties at the top-p threshold and float rounding
    aside (see `prompt_tree.sampler`). For CUDA-graph capture build a `Sampler(params, device)` before capturing
    and call it with device tensors.
    """
    key = (params, logits.device)
    sampler = _SAMPLERS.get(key)
    if sampler is None:
        if len(_SAMPLERS) > 64:  # many parameter sets (a sweep): keep the cache bounded
            _SAMPLERS.clear()
        sampler = _SAMPLERS[key] = Sampler(params, logits.device)
    return sampler(logits, seq_ids, step)
