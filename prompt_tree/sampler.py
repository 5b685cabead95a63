"""Sorting-free sampling: top-k / top-p / min-p by threshold search, then the inverse-CDF pick.

The contract is the sort-based reference's (`sampling.sample_reference`): for the same counter-based uniform u, the
token is the first index, in vocabulary order, whose cumulative filtered probability exceeds u * total. Only the
way the filters are found changes. Every filter keeps an upper set of the scaled logits x = logits * (1/T), so the
kept set is {x >= T*} for one threshold T* = max(t_k, t_p, t_min):
  t_k    the k-th largest x (counted with multiplicity);
  t_p    the largest x value t with mass{x >= t} >= top_p * mass{x >= t_k} (mass: sum of exp(x - max));
  t_min  max + log(min_p): exp(x - max) >= min_p is p >= min_p * p_max.
A threshold is an element value, so finding it is a selection problem, never a sort of the vocabulary.

Ties. Top-k and min-p keep every token equal to their threshold, as the reference does. At the top-p threshold
the reference's stable sort keeps tied tokens in vocabulary order only until the mass is reached; here every
token tied with t_p is kept. That is the one designed difference; the other is rounding: masses are summed in a
different order, so a token whose mass-before lies within float rounding (~1e-6 relative) of top_p, or a uniform
within rounding of a bucket edge, may be decided the other way.

Two implementations of the same function:
- torch (any device; the CPU path): candidates by `torch.topk` (a selection of 64, then C = 1024 per row, not a
  sort of V), thresholds resolved exactly among them; a row whose kept set may reach past the candidates (a flat
  nucleus, or k > C) is redone exactly by a 4-pass radix select (`radix_select`). Passes over [B, V]: scale,
  max, logsumexp and topk (about 4), the normaliser for top-p without top-k (1); plain temperature skips the
  selection (a pick over the row); fallback rows about 12 more. Because it picks the
  fallback rows on the host, this path reads one flag back per call on an accelerator.
- Triton (CUDA): backend "triton", `prompt_tree.sampler_split`, every row split over chunks on a (B, S) grid with
  per-row decisions between passes (the default); backend "triton-row", `prompt_tree.sampler_triton`, one program
  per row. Both take 3 passes in the common case and never sync with the host; see those modules.
Greedy (temperature 0) is the first maximal index on both.
"""
from __future__ import annotations

import math
import os
import struct

import torch

from .seeds import seed_key, uniforms

try:
    from . import sampler_split, sampler_triton
except ImportError:  # no Triton on this platform (it is a Linux-only dependency): the torch path only
    sampler_split = sampler_triton = None

BACKENDS = ("auto", "torch", "triton", "triton-row")
CANDIDATES = 1024  # the torch path's top-C candidates per row, and the Triton path's compaction buffer
FIRST_CANDIDATES = 64  # the torch path tries this many candidates first
_ROW_CHUNK_ELEMENTS = 1 << 24  # the torch path works on rows in chunks of about this many logits (64 MiB fp32)
_LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def inverse_temperature(temperature: float) -> float:
    """1/T rounded to fp32: logits are scaled by MULTIPLYING with this everywhere (the reference, torch and
    Triton), because torch itself divides by a scalar exactly on the CPU but multiplies by a reciprocal on CUDA."""
    return struct.unpack("f", struct.pack("f", 1.0 / temperature))[0]


def fp32(value: float) -> float:
    """A Python float rounded to the nearest fp32 (how torch and Triton see a scalar next to fp32 tensors)."""
    return struct.unpack("f", struct.pack("f", value))[0]


# ---------------------------------------------------------------------------------------------------------------
# exact radix select (the torch fallback)

_SIGN = 1 << 31


def ordered_keys(x: torch.Tensor) -> torch.Tensor:
    """Order-preserving int64 keys in [0, 2^32) of fp32 values: a < b iff key(a) < key(b). x: [...] fp32, no NaN.

    -0.0 is first made +0.0 (x + 0.0), so equal floats have equal keys."""
    b = (x + 0.0).view(torch.int32).to(torch.int64)
    return torch.where(b < 0, b ^ 0x7FFFFFFF, b) + _SIGN


def keys_to_values(keys: torch.Tensor) -> torch.Tensor:
    """The inverse of `ordered_keys`. keys: [...] int64 -> [...] fp32."""
    k = keys - _SIGN
    return torch.where(k < 0, k ^ 0x7FFFFFFF, k).to(torch.int32).view(torch.float32)


def radix_select(keys: torch.Tensor, weights: torch.Tensor | None, target: torch.Tensor,
                 valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest key t with F(t) >= target, F(t) = sum of g over valid elements with key >= t (g = weights, or 1).

    keys: [R, V] int64 from `ordered_keys`; weights: [R, V] fp64 or None (count); target: [R] fp64 with
    0 < target <= F(min key); valid: [R, V] bool or None. Returns (t [R] int64, F(t) [R] fp64).
    Four passes, one per 8-bit digit from the top: a 256-bin histogram of the elements whose higher digits equal
    the prefix chosen so far, and the largest digit whose suffix sum (plus everything above the prefix) still
    reaches the target. Exact: the result is an element's key.
    """
    R = keys.shape[0]
    g = torch.ones(keys.shape, dtype=torch.float64, device=keys.device) if weights is None else weights
    prefix = torch.zeros(R, dtype=torch.int64, device=keys.device)
    above = torch.zeros(R, dtype=torch.float64, device=keys.device)  # F of the elements above the prefix
    own = above
    for shift in (24, 16, 8, 0):
        match = (keys >> (shift + 8)) == prefix[:, None]
        if valid is not None:
            match &= valid
        digit = torch.where(match, (keys >> shift) & 255, 256)
        hist = torch.zeros(R, 257, dtype=torch.float64, device=keys.device).scatter_add_(1, digit, g)[:, :256]
        suffix = hist.flip(-1).cumsum(-1).flip(-1)  # [R, 256]: sum over digits >= d
        reach = (above[:, None] + suffix) >= target[:, None]  # true for d <= d*, by monotonicity
        d = (reach.sum(-1) - 1).clamp_(min=0)  # clamp: rounding may lose the invariant F(prefix) >= target
        own = hist.gather(1, d[:, None]).squeeze(1)
        above = above + suffix.gather(1, d[:, None]).squeeze(1) - own
        prefix = prefix * 256 + d
    return prefix, above + own


# ---------------------------------------------------------------------------------------------------------------
# the sampler


def resolve_backend(backend: str, device) -> str:
    """The backend a Sampler on `device` runs for the name given ("auto": the split Triton kernels on CUDA, the torch
    path elsewhere); raises ValueError for a name it does not know or cannot run there."""
    if backend not in BACKENDS:
        raise ValueError(f"Sampler: backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        return "triton" if device.type == "cuda" and sampler_triton is not None else "torch"
    if backend.startswith("triton"):
        if sampler_triton is None:
            raise ValueError("Sampler: backend 'triton' needs the triton package (pip install triton)")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(f"Sampler: backend {backend!r} on {device} runs only under Triton's "
                             "interpreter (TRITON_INTERPRET=1, for tests); use backend 'torch' or a CUDA device")
    return backend


class Sampler:
    """Token choice for one SamplingParams on one device, with its constants built once.

    `sampler(logits, seq_ids, step) -> (tokens [B] int64, logprobs [B] fp32)`; logits: [B, V] fp32/fp16/bf16,
    seq_ids: [B] int64, step: int or int64 tensor [] / [B] (pass a device tensor under CUDA-graph capture: an int
    is baked into the graph). logprobs are log_softmax of the raw logits at the chosen tokens.

    backend: "auto" (split Triton kernels on CUDA, torch elsewhere), "torch", "triton" (the split kernels) or
    "triton-row" (one program per row); a Triton backend on the CPU only under TRITON_INTERPRET=1, for tests.
    candidates: C above; block, chunk: the split kernels' step and chunk sizes (None: their defaults). The Triton
    paths allocate nothing that depends on the data and never read back to the host, so a call can be captured
    in a CUDA graph.
    """

    def __init__(self, params, device=None, *, backend: str = "auto", candidates: int = CANDIDATES,
                 block: int | None = None, chunk: int | None = None):
        if not isinstance(candidates, int) or candidates < 2 or candidates & (candidates - 1):
            raise ValueError(f"Sampler: candidates must be a power of two >= 2, got {candidates!r}")
        self.params = params
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.backend = backend = resolve_backend(backend, self.device)
        self.candidates = candidates
        self.key = seed_key(params.seed)
        self.greedy = params.temperature == 0
        self.inv_t = None if self.greedy else inverse_temperature(params.temperature)
        self.top_p = fp32(params.top_p)
        self.log_min_p = fp32(math.log(params.min_p)) if params.min_p > 0 else None
        if backend == "triton":
            self._triton = sampler_split.SplitSampler(self, block=block, chunk=chunk)
        elif backend == "triton-row":
            self._triton = sampler_triton.TritonSampler(self, block=block)
        else:
            self._triton = None

    def __call__(self, logits: torch.Tensor, seq_ids: torch.Tensor, step: int | torch.Tensor):
        self._check(logits, seq_ids, step)
        if self._triton is not None:
            return self._triton(logits, seq_ids, step)
        return self._torch(logits, seq_ids, step)

    def top_k_for(self, vocab: int) -> int:
        """The effective k: 0 (off) unless 0 < top_k < V, as in the reference."""
        k = self.params.top_k
        return k if 0 < k < vocab else 0

    def filters_for(self, vocab: int) -> tuple[bool, bool, bool]:
        """Which filters a sampled call applies: (top-k, top-p, min-p); all False when greedy."""
        if self.greedy:
            return False, False, False
        return self.top_k_for(vocab) > 0, self.top_p < 1, self.log_min_p is not None

    # ----- checks

    def _check(self, logits, seq_ids, step) -> None:
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] == 0:
            raise ValueError(f"sample: logits must be a [B, V] tensor with V >= 1, got "
                             f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        if logits.dtype not in _LOGIT_DTYPES:
            raise ValueError(f"sample: logits must be fp32, fp16 or bf16, got {logits.dtype} (cast them first)")
        B = logits.shape[0]
        if not isinstance(seq_ids, torch.Tensor) or seq_ids.shape != (B,) or seq_ids.dtype != torch.int64:
            raise ValueError(f"sample: seq_ids must be an int64 tensor of shape [B]={B}, got "
                             f"{tuple(seq_ids.shape) if isinstance(seq_ids, torch.Tensor) else type(seq_ids).__name__}"
                             f"{' ' + str(seq_ids.dtype) if isinstance(seq_ids, torch.Tensor) else ''}")
        if seq_ids.device != logits.device:
            raise ValueError(f"sample: seq_ids are on {seq_ids.device} but logits on {logits.device}; move them")
        if logits.device.type != self.device.type:
            raise ValueError(f"sample: this Sampler was built for {self.device}, logits are on {logits.device}")
        if isinstance(step, torch.Tensor):
            if step.dtype != torch.int64 or step.shape not in ((), (B,)) or step.device != logits.device:
                raise ValueError(f"sample: a tensor step must be int64 of shape [] or [B]={B} on {logits.device}, "
                                 f"got {step.dtype} {tuple(step.shape)} on {step.device}")
        elif not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"sample: step must be an int >= 0 or an int64 tensor, got {step!r}")

    # ----- torch path

    def _torch(self, logits, seq_ids, step):
        raw = logits.float()
        B, V = raw.shape
        lse = torch.logsumexp(raw, dim=-1)
        if self.greedy:
            tokens = torch.argmax(raw, dim=-1)
        else:
            u = uniforms(self.key, seq_ids, step)
            rows = max(1, _ROW_CHUNK_ELEMENTS // V)
            tokens = torch.cat([self._torch_rows(raw[i:i + rows], u[i:i + rows]) for i in range(0, B, rows)])
        logprobs = raw.gather(-1, tokens[:, None]).squeeze(-1) - lse
        return tokens, logprobs

    def _torch_rows(self, raw: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Tokens of a chunk of rows. raw: [R, V] fp32, u: [R] fp64 -> [R] int64.

        Candidates first FIRST_CANDIDATES per row (a language model's nucleus is usually that small, and a smaller
        selection is cheaper), then C for the rows that did not fit, then the exact radix select for the rest."""
        R, V = raw.shape
        x = raw if self.inv_t == 1.0 else raw * self.inv_t
        m = x.amax(dim=-1)  # [R]
        k, top_p, log_min_p = self.top_k_for(V), self.top_p, self.log_min_p
        if not k and top_p >= 1 and log_min_p is None:  # plain temperature
            return _pick_full(x, m, torch.full_like(m, float("-inf")), u)
        z = torch.exp(x - m[:, None]).sum(-1) if not k else None  # top-p's normaliser without top-k
        tokens = torch.empty(R, dtype=torch.int64, device=x.device)
        todo = torch.arange(R, device=x.device)
        for C in sorted({min(FIRST_CANDIDATES, self.candidates, V), min(self.candidates, V)}):
            xs = x if len(todo) == R else x[todo]
            got, valid = self._from_candidates(xs, m[todo], None if z is None else z[todo], u[todo], C)
            tokens[todo] = got
            if C == V or bool(valid.all()):
                return tokens
            todo = todo[~valid]
        tokens[todo] = self._exact_rows(x[todo], m[todo], u[todo])
        return tokens

    def _from_candidates(self, x, m, z, u, C: int):
        """(tokens [R], valid [R] bool) from the top-C candidates of each row; a row is valid when every token it
        keeps, and everything its thresholds depend on, is among them. x: [R, V], m, z, u: [R] (z: None with
        top-k)."""
        R, V = x.shape
        k, top_p, log_min_p = self.top_k_for(V), self.top_p, self.log_min_p
        neg_inf = torch.full_like(m, float("-inf"))
        complete = C == V
        vals, idx = torch.topk(x, C, dim=-1)  # [R, C] descending, a selection (not a sort of V)
        w = torch.exp(vals - m[:, None])
        t_k, z_k, valid = neg_inf, z, torch.ones(R, dtype=torch.bool, device=x.device)
        if k:
            if k <= C:
                t_k = vals[:, k - 1]
                z_k = (w * (vals >= t_k[:, None])).sum(-1)
                if not complete:  # ties of t_k may lie outside the candidates: then z_k is short
                    valid &= t_k > vals[:, -1]
            else:
                valid &= False
                z_k = w.sum(-1)  # any value: these rows are redone
        t_p = neg_inf
        if top_p < 1:
            wk = w * (vals >= t_k[:, None])
            reach = torch.cumsum(wk, dim=-1) >= top_p * z_k[:, None]
            first = torch.argmax(reach.int(), dim=-1)  # the first position whose inclusive mass reaches the target
            t_p = torch.where(reach.any(-1), vals.gather(1, first[:, None]).squeeze(1), neg_inf)
        t_min = m + log_min_p if log_min_p is not None else neg_inf
        T = torch.maximum(torch.maximum(t_k, t_p), t_min)
        if not complete:
            valid &= T > vals[:, -1]  # every kept token is then among the candidates
        return _pick_candidates(vals, idx, w, T, u, V), valid

    def _exact_rows(self, x: torch.Tensor, m: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The thresholds by radix select, for rows whose kept set may reach past the candidates.
        x: [R, V] fp32 scaled logits, m: [R] their max, u: [R] -> [R] int64."""
        R, V = x.shape
        w = torch.exp(x - m[:, None]).double()
        keys = ordered_keys(x)
        neg_inf = torch.full_like(m, float("-inf"))
        k = self.top_k_for(V)
        t_k, z_k = neg_inf, w.sum(-1)
        if k:
            t_k = keys_to_values(radix_select(keys, None, torch.full_like(z_k, float(k)))[0])
            z_k = (w * (x >= t_k[:, None])).sum(-1)
        t_p = neg_inf
        if self.top_p < 1:
            t_p = keys_to_values(radix_select(keys, w, self.top_p * z_k, x >= t_k[:, None])[0])
        t_min = m + self.log_min_p if self.log_min_p is not None else neg_inf
        return _pick_full(x, m, torch.maximum(torch.maximum(t_k, t_p), t_min), u)


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The first index whose cumulative weight exceeds u * total. weights: [R, N] fp32 >= 0, u: [R] fp64 -> [R].

    The one pick rule (the reference uses it too). A zero-weight index has the cumulative value of its predecessor,
    so it is never chosen. When u is so close to 1 that u * total rounds up to the total, no index exceeds it and
    the result is the last index of positive weight (in the earlier sampler this clamped to N - 1, often a token of
    probability zero, about once per 3e7 draws). fp32 is enough: rounding moves the bucket edges by ~1e-7, far
    below any sampling effect, and a cumulative sum of non-negative terms is still monotone.
    """
    cdf = torch.cumsum(weights, dim=-1)
    total = cdf[:, -1:].contiguous()  # [R, 1]
    first = torch.searchsorted(cdf, (u[:, None] * total.double()).float(), right=True).squeeze(-1)
    # the last index of positive weight: where the cumulative weight reaches its total (no extra pass over N)
    last = torch.searchsorted(cdf, total, right=False).squeeze(-1)
    return torch.minimum(first, last)


def _pick_full(x: torch.Tensor, m: torch.Tensor, T: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse CDF over the whole row in vocabulary order, keeping x >= T. x: [R, V], m, T: [R], u: [R]."""
    return inverse_cdf(torch.where(x >= T[:, None], torch.exp(x - m[:, None]), 0.0), u)


def _pick_candidates(vals, idx, w, T, u, V: int) -> torch.Tensor:
    """Inverse CDF over the kept candidates in vocabulary order. vals, w: [R, C] fp32, idx: [R, C] int64, T: [R].

    Sorting C candidate indices (not V logits) puts them in vocabulary order; non-kept ones go last."""
    keep = vals >= T[:, None]
    order, perm = torch.sort(torch.where(keep, idx, V), dim=-1)
    j = inverse_cdf(torch.where(keep, w, 0.0).gather(1, perm), u)
    return order.gather(1, j[:, None]).squeeze(1)
