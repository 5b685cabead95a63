"""Sampling: validated parameters, batch-independent seeded token choice, and stop-string matching.

Reproducibility (issue 4): a sequence's random draw at a step depends only on (seed, sequence id, step), never on
which other sequences share the batch. Each sequence gets ONE counter-based uniform per step, computed by an
integer hash in torch (vectorized, no per-sequence torch.Generator), and the token is chosen by inverse CDF over the
filtered distribution in vocabulary order. A sequence id is a stable hash of (node key, sample index), so the same
sample drawn inside two different trees (or sub-batches) sees the same noise.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

_MASK32 = 0xFFFFFFFF


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
# counter-based noise


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche mix (murmur3's finalizer) on int64 tensors holding values in [0, 2^32).

    Products of two 32-bit values may wrap int64; the low 32 bits kept by the mask are still exact.
    """
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    x = x ^ (x >> 16)
    return x


def sequence_id(key, sample_index: int) -> int:
    """A stable 31-bit id of (node key, sample index): the same in every tree, batch and process."""
    digest = hashlib.blake2b(repr((key, int(sample_index))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def uniforms(seed: int, seq_ids: torch.Tensor, step: int | torch.Tensor) -> torch.Tensor:
    """One uniform in (0, 1) per sequence, a pure function of (seed, seq id, step).

    seq_ids: [B] int64; step: int or [B] int64 (each sequence's own step) -> [B] fp64 on seq_ids' device.
    """
    seq_ids = seq_ids.to(torch.int64)
    step = torch.as_tensor(step, dtype=torch.int64, device=seq_ids.device)
    s = _fmix32(torch.tensor((seed & _MASK32) ^ ((seed >> 32) & _MASK32), dtype=torch.int64, device=seq_ids.device))
    x = _fmix32(seq_ids ^ ((s * 0x9E3779B1) & _MASK32))
    x = _fmix32(x ^ (((step & _MASK32) * 0x632BE5AB) & _MASK32))
    y = _fmix32(x ^ 0x5BD1E995)
    # 53 bits from two 32-bit words, centred in their cell so the value is never exactly 0 or 1.
    bits = ((x << 21) ^ (y >> 11)) & ((1 << 53) - 1)
    return (bits.to(torch.float64) + 0.5) / float(1 << 53)


# ---------------------------------------------------------------------------------------------------------------
# filtering and choice


def filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities after temperature, top-k, top-p and min-p. logits: [B, V] fp32 -> [B, V] fp32 (rows sum to 1).

    top-k keeps every token tied with the k-th largest; top-p keeps the smallest prefix of the descending-sorted
    distribution whose mass reaches top_p (always at least the top token); min-p drops tokens whose probability is
    below min_p times the row's largest. The filters apply in that order, each to the previous one's output.
    """
    x = logits.float() / params.temperature
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


def sample(
    logits: torch.Tensor, params: SamplingParams, seq_ids: torch.Tensor, step: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose one token per row. logits: [B, V] fp32, seq_ids: [B] int64, step: int or [B] int64.

    Returns (tokens [B] int64, logprobs [B] fp32), logprobs under log_softmax(logits) (the unmodified model).
    Greedy takes the first maximal index. Otherwise the token is the first index whose cumulative filtered
    probability exceeds u * total for the sequence's counter-based uniform u: a zero-probability token has the same
    cumulative value as its predecessor, so it can never be chosen.
    """
    if logits.dim() != 2:
        raise ValueError(f"sample: logits must be [B, V], got shape {tuple(logits.shape)}")
    B = logits.shape[0]
    if seq_ids.shape != (B,):
        raise ValueError(f"sample: seq_ids must be [B]={B}, got shape {tuple(seq_ids.shape)}")
    logits = logits.float()
    if params.greedy:
        tokens = torch.argmax(logits, dim=-1)
    else:
        probs = filtered_probs(logits, params)
        # fp32 is enough: rounding moves the bucket edges by ~1e-7, far below any sampling effect, and a
        # cumulative sum is still monotone, so a zero-probability token keeps an empty bucket.
        cdf = torch.cumsum(probs, dim=-1)
        u = uniforms(params.seed, seq_ids.to(cdf.device), step)
        target = (u * cdf[:, -1].double()).float().unsqueeze(-1)
        tokens = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=logits.shape[-1] - 1)
    # log p(token) = logit - logsumexp(logits): no second [B, V] tensor
    logprobs = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return tokens, logprobs


# ---------------------------------------------------------------------------------------------------------------
# stop strings


@dataclass
class StopChecker:
    """Incremental stop-string matching on each sequence's generated text.

    Each step decodes only a tail window of the sequence's tokens, long enough to hold any stop string: a stop
    string of c characters that ends in the newest token starts at most c characters before that token's text
    ends, so the window grows (doubling) until its text is that long. It starts at 4c + 2 tokens (a byte-level
    token carries at least one byte, a character at most four) and only grows past tokens that decode to nothing
    (BOS, PAD, other special tokens). A match in the window is new (an older one would have stopped the sequence
    earlier). The final cut (`cut`) decodes the whole completion once and cuts at the earliest match.
    """

    stops: Sequence[str]
    decode: object  # callable(list[int]) -> str
    window: int = field(init=False)

    def __post_init__(self):
        self.longest = max((len(s) for s in self.stops), default=0)
        self.window = 4 * self.longest + 2
        self._token_chars: dict[int, int] = {}  # token id -> length of its text alone (a pure function of the id)

    def hit(self, token_ids: list[int]) -> bool:
        if not self.stops:
            return False
        last = token_ids[-1]
        chars = self._token_chars.get(last)
        if chars is None:  # once per distinct token id: one decode per sequence and step, not two
            chars = self._token_chars[last] = len(self.decode([last]))
        need = self.longest + chars + 1
        w = self.window
        tail = self.decode(token_ids[-w:])
        while len(tail) < need and w < len(token_ids):
            w *= 2
            tail = self.decode(token_ids[-w:])
        return any(s in tail for s in self.stops)

    def cut(self, text: str, include: bool) -> str:
        """The text up to the earliest stop string (through it when include); unchanged when none occurs."""
        best = None
        for s in self.stops:
            i = text.find(s)
            if i >= 0 and (best is None or i < best[0] or (i == best[0] and len(s) > len(best[1]))):
                best = (i, s)
        if best is None:
            return text
        return text[: best[0] + (len(best[1]) if include else 0)]
