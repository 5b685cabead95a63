"""The shape of the benchmark model's next-token distributions: "flat" (random weights as drawn) or "peaked"
(an output head shaped so that its distributions look like a trained model's).

Why: the sorting-free sampler's cost depends on the logits (prompt_tree.sampler_split). A random-weight model's
logits are ~N(0, (0.02 sqrt(hidden))^2) over the whole vocabulary, so at T 0.8 / top-p 0.95 the nucleus holds
~90% of a 128k vocabulary: the sampler's worst case (a count, two refinements, a compaction, a pick over the
row), which no trained model presents. "peaked" scales the output-head rows of HOT_TOKENS ids, drawn once from
the seed, so that their logits spread HOT_SPREAD nats (sd) where the rest spread as drawn. For any hidden state
the top few hot ids then hold the mass, and which ids those are changes with the hidden state, as in a trained
model. Measured on N(0, 1.28^2) logits over 128,256 ids (llama3-8b's spread) with 4,096 of them at sd 5.12, at
T 0.8 / top-p 0.95, 256 rows: nucleus sizes p10 / p50 / p90 / p99 = 2 / 7.5 / 22 / 41 tokens, top-token
probability median 0.55, mass outside the hot ids 5e-5. That is the range tools/bench_sampler.py's "peaked" logits
were built for (1-40 tokens). tests/test_bench_logits.py checks it on a model's own logits, at llama3-8b's and
llama-3.2-1b's spreads (0.02 sqrt(hidden): 1.28 and 0.905).

The final RMSNorm leaves the hidden state at rms 1, so a row's logit has sd = its norm / sqrt(hidden) * sqrt(hidden)
= the row's norm; the scale is HOT_SPREAD over the hot rows' mean norm as drawn. `peaked_head` keeps the hot rows as drawn
and puts them back on exit, so one engine (its weights, its captured graphs) serves rows of both shapes. Only the
logits change; every other weight, and so every other kernel's cost, is as drawn. EOS ids are never hot (a hot
EOS would end samples early and change the job's lengths, which the length budget sets)."""
from __future__ import annotations

import contextlib

import torch

LOGIT_SHAPES = ("flat", "peaked")
HOT_TOKENS = 4096
HOT_SPREAD = 5.12  # nats: the sd of the hot ids' logits (4x llama3-8b's drawn spread)


def output_weight(model) -> torch.Tensor:
    """[vocab, hidden]: the weight logits_raw multiplies by (the embedding when tied)."""
    return model.embed_tokens.weight if model.lm_head is None else model.lm_head.weight


def hot_ids(vocab: int, exclude=(), seed: int = 0, hot: int = HOT_TOKENS) -> torch.Tensor:
    """[n] int64, sorted: the ids whose rows are scaled, min(hot, vocab // 8) of them, none in `exclude`."""
    keep = torch.ones(vocab, dtype=torch.bool)
    for t in exclude:
        if 0 <= t < vocab:
            keep[t] = False
    pool = keep.nonzero().flatten()
    n = min(hot, vocab // 8, pool.numel())
    g = torch.Generator().manual_seed(seed)
    return pool[torch.randperm(pool.numel(), generator=g)[:n]].sort().values


@contextlib.contextmanager
def peaked_head(model, exclude=(), seed: int = 0, enabled: bool = True):
    """Within the block, logits of `model` are "peaked" (module docstring); on exit its weights are as before."""
    if not enabled:
        yield None
        return
    w = output_weight(model)
    ids = hot_ids(w.shape[0], exclude, seed).to(w.device)
    with torch.no_grad():
        kept = w[ids].clone()  # [hot, hidden]: restored exactly on exit
        spread = kept.float().norm(dim=1).mean()  # the drawn logits' sd (module docstring), from the hot rows
        w[ids] = (kept.float() * (HOT_SPREAD / spread)).to(w.dtype)  # index_put: in place, graphs see it
    try:
        yield ids
    finally:
        with torch.no_grad():
            w[ids] = kept


def logits_context(shape: str, model, exclude=(), seed: int = 0):
    """The context of one logit shape by name (a ValueError names the choices)."""
    if shape not in LOGIT_SHAPES:
        raise ValueError(f"logit shape {shape!r} is not one of {', '.join(LOGIT_SHAPES)}")
    return peaked_head(model, exclude, seed, enabled=shape == "peaked")
