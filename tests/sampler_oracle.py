"""Shared by the sampler tests: which rows the reference itself decides within float rounding, in fp64.

The sorting-free sampler must give the reference's token for the same uniform, except (1) tokens tied with the
top-p threshold, which it keeps all of, and (2) decisions that float rounding can flip: a token whose
mass-before is within EPS of top_p, a probability within EPS (relative) of min_p * p_max, or a uniform within EPS
of a bucket edge of the normalised CDF. EPS is argued: the fp32 sums involved (softmax normaliser, cumulative
mass over V <= 4096 terms) carry relative errors of at most a few 1e-7 in the blocked/tree orders used by torch and
Triton (about sqrt(V) * 6e-8 for random-walk rounding, V * 6e-8 = 2.5e-4 only in a worst case no test input comes
near), so 2e-5 leaves a factor of > 10 over the typical error while flagging only ~1-5% of random rows.
"""
from __future__ import annotations

import torch

from prompt_tree.sampler import inverse_temperature
from prompt_tree.seeds import seed_key, uniforms

EPS = 2e-5


def ambiguous_rows(logits: torch.Tensor, params, seq_ids: torch.Tensor, step) -> torch.Tensor:
    """[B] bool: rows whose reference token may legitimately differ (ties at top-p, rounding). logits: [B, V].

    A token is uncertain when rounding (or the tie rule) could flip whether it is kept: its mass-before within
    EPS of top_p (the first token is always kept), its probability within EPS (relative) of min_p * p_max, or a
    tie with the top-p threshold. Flipping uncertain tokens moves the normalised CDF by at most their mass D, so
    the row is ambiguous when the uniform lies within EPS + D of a bucket edge."""
    x = (logits.float() * inverse_temperature(params.temperature)).double()
    B, V = x.shape
    uncertain = torch.zeros(B, V, dtype=torch.bool)
    if 0 < params.top_k < V:
        kth = torch.topk(x, params.top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    p0 = torch.softmax(x, dim=-1)
    p = p0
    if params.top_p < 1:
        sp, order = torch.sort(p, dim=-1, descending=True, stable=True)
        before = torch.cumsum(sp, dim=-1) - sp
        keep_sorted = before < params.top_p
        keep_sorted[:, 0] = True
        near = (before - params.top_p).abs() < EPS
        near[:, 0] = False
        # a tie across the cut (a dropped token equal to the last kept one): this sampler keeps them all
        sv = x.gather(1, order)
        cut = keep_sorted.sum(-1, keepdim=True)
        tied = (sv == sv.gather(1, cut - 1)) & (sp > 0)
        near |= tied & (tied & ~keep_sorted).any(-1, keepdim=True)
        uncertain |= torch.zeros_like(near).scatter_(-1, order, near)
        keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
        p = p * keep
    if params.min_p > 0:
        top = p.max(dim=-1, keepdim=True).values
        ratio = p / top
        uncertain |= (ratio - params.min_p).abs() < EPS * params.min_p
        p = p * (ratio >= params.min_p)
    total = p.sum(-1, keepdim=True)
    q = p / total
    drift = (p0 * uncertain).sum(-1) / total.squeeze(-1)
    cdf = torch.cumsum(q, dim=-1)
    u = uniforms(seed_key(params.seed), seq_ids, step)
    return ((cdf - u[:, None]).abs().min(-1).values < EPS + drift)


def assert_same_tokens(got: torch.Tensor, want: torch.Tensor, ambiguous: torch.Tensor, max_ambiguous: float = 0.25):
    """Equal on every unambiguous row; at most max_ambiguous of the rows ambiguous (else the test says nothing)."""
    got, want = got.cpu(), want.cpu()
    bad = (got != want) & ~ambiguous
    assert not bad.any(), f"rows {bad.nonzero().flatten().tolist()[:10]}: got {got[bad][:10].tolist()}, " \
                          f"reference {want[bad][:10].tolist()}"
    frac = ambiguous.float().mean().item()
    assert frac <= max_ambiguous, f"{frac:.1%} of rows ambiguous: the inputs test too little"
