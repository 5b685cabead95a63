"""The sorting-free sampler's torch path against the sort-based reference: same token for the same uniform.

`sampler_oracle.ambiguous_rows` marks the rows the reference itself decides within float rounding (or by its tie
rule at the top-p threshold); every other row must agree exactly. candidates=16 forces the radix-select fallback
on most rows of the wider vocabularies, so both the candidate path and the fallback are compared.
"""
import math

import pytest
import torch

from sampler_oracle import ambiguous_rows, assert_same_tokens
from prompt_tree.sampler import Sampler, inverse_cdf, keys_to_values, ordered_keys, radix_select
from prompt_tree.sampling import SamplingParams, filtered_probs, sample, sample_reference

PARAMS = [
    dict(temperature=0.7),
    dict(top_k=3),
    dict(top_k=40, temperature=1.2),
    dict(top_p=0.6, temperature=1.3),
    dict(top_p=0.95, temperature=0.8),  # the APPS setting
    dict(min_p=0.2, temperature=0.9),
    dict(top_k=5, top_p=0.8, min_p=0.05),
    dict(top_k=1),
    dict(top_p=1e-6, temperature=2.0),
    dict(top_k=100, top_p=0.99),
    dict(top_k=30, min_p=0.01),
    dict(top_p=0.999, min_p=0.001),
]


def _logits(B, V, scale, seed):
    return torch.randn(B, V, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("candidates", [1024, 16])
@pytest.mark.parametrize("kw", PARAMS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_torch_path_equals_reference(kw, candidates):
    params = SamplingParams(seed=len(str(kw)), **kw)
    sampler = Sampler(params, "cpu", backend="torch", candidates=candidates)
    for i, (V, scale) in enumerate(((1, 1.0), (2, 1.0), (11, 2.0), (97, 3.0), (1000, 1.0), (1000, 5.0))):
        B = 100
        logits = _logits(B, V, scale, seed=100 * i + candidates)
        ids = torch.randint(0, 2**62, (B,), generator=torch.Generator().manual_seed(i))
        want, want_lp = sample_reference(logits, params, ids, 7)
        got, got_lp = sampler(logits, ids, 7)
        assert got.dtype == torch.int64 and got_lp.dtype == torch.float32
        assert_same_tokens(got, want, ambiguous_rows(logits, params, ids, 7))
        # the same fp32 logsumexp on the same raw logits: equal to rounding of the gather
        torch.testing.assert_close(got_lp, want_lp, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits(dtype):
    params = SamplingParams(temperature=0.9, top_p=0.9, top_k=50)
    logits = _logits(64, 500, 3.0, seed=1).to(dtype)
    ids = torch.arange(64)
    want, want_lp = sample_reference(logits, params, ids, 3)
    got, got_lp = Sampler(params, backend="torch")(logits, ids, 3)
    amb = ambiguous_rows(logits, params, ids, 3)
    assert_same_tokens(got, want, amb)
    torch.testing.assert_close(got_lp, want_lp, rtol=0, atol=1e-6)


@pytest.mark.parametrize("candidates", [1024, 4])
def test_awkward_rows(candidates):
    """Masked vocabulary (-inf), a whole row tied, ties at the top-k border, a single finite logit, huge logits."""
    V = 64
    rows = [
        torch.where(torch.arange(V) % 3 == 0, torch.randn(V), torch.tensor(float("-inf"))),
        torch.zeros(V),
        torch.cat([torch.full((10,), 2.0), torch.full((10,), 1.0), torch.randn(V - 20) - 3]),
        torch.where(torch.arange(V) == 17, 0.5, float("-inf")),
        torch.randn(V) * 1e4,
        torch.linspace(-50, 50, V),
    ]
    logits = torch.stack(rows)
    ids = torch.arange(len(rows)) * 1000003
    for kw in (dict(top_k=15), dict(top_k=5, top_p=0.5), dict(top_p=0.9), dict(min_p=0.3), dict(temperature=1.0),
               dict(top_k=63, top_p=0.999), dict(top_k=64)):
        params = SamplingParams(seed=9, **kw)
        for step in range(6):
            want, _ = sample_reference(logits, params, ids, step)
            got, _ = Sampler(params, backend="torch", candidates=candidates)(logits, ids, step)
            assert torch.isfinite(logits.gather(1, got[:, None])).all(), (kw, got)  # never a masked token
            assert_same_tokens(got, want, ambiguous_rows(logits, params, ids, step), max_ambiguous=0.5)


def test_ties_at_the_top_p_threshold_are_all_kept():
    """The one designed difference: at the top-p threshold the reference's stable sort keeps tied tokens in
    vocabulary order until the mass is reached; the sorting-free sampler keeps every token tied there."""
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.3]]))
    params = SamplingParams(top_p=0.5)
    assert filtered_probs(logits, params)[0, 2] == 0  # reference: token 2 (tied with token 1) is dropped
    n = 4000
    ids = torch.arange(n)
    ref, _ = sample_reference(logits.expand(n, -1), params, ids, 0)
    ours, _ = sample(logits.expand(n, -1), params, ids, 0)
    assert (ref == 2).sum() == 0
    freq = torch.bincount(ours, minlength=3).double() / n  # ours: 0.4 : 0.3 : 0.3 renormalised
    assert ((freq - torch.tensor([0.4, 0.3, 0.3])).abs() < 5 * (0.25 / n) ** 0.5).all(), freq


def test_greedy_is_the_first_maximal_index():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0], [float("-inf"), 2.0, float("-inf"), 2.0]])
    toks, lps = Sampler(SamplingParams(temperature=0), backend="torch")(logits, torch.arange(3), 0)
    assert toks.tolist() == [1, 0, 1]
    torch.testing.assert_close(lps, torch.log_softmax(logits, -1)[torch.arange(3), toks])


def test_step_as_tensor_matches_int_steps():
    params = SamplingParams(top_p=0.9)
    logits = _logits(8, 100, 2.0, seed=3)
    ids = torch.arange(8)
    s = Sampler(params, backend="torch")
    steps = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    per = s(logits, ids, steps)[0]
    assert per.tolist() == [s(logits[i:i + 1], ids[i:i + 1], i)[0].item() for i in range(8)]
    assert s(logits, ids, torch.tensor(5))[0].tolist() == s(logits, ids, 5)[0].tolist()


def test_inverse_cdf_never_picks_a_zero_weight_token_when_u_rounds_up():
    """u = 1 - 2^-54 (the largest uniform) rounds u * total up to the total: the last positive token, not V - 1."""
    w = torch.tensor([[0.2, 0.5, 0.3, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    u = torch.tensor([1 - 2.0**-54, 1 - 2.0**-54], dtype=torch.float64)
    assert inverse_cdf(w, u).tolist() == [2, 0]
    assert inverse_cdf(w, torch.tensor([0.0, 0.5], dtype=torch.float64)).tolist() == [0, 0]


def test_ordered_keys_keep_the_order_and_invert():
    x = torch.tensor([float("-inf"), -3e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 1.0, 3e38, float("inf")])
    k = ordered_keys(x)
    assert (k[1:] >= k[:-1]).all() and k[4] == k[5]  # -0.0 and +0.0 are one key
    assert ((k >= 0) & (k < 2**32)).all()
    back = keys_to_values(k)
    assert torch.equal(back[[0, 1, 2, 3, 5, 6, 7, 8, 9]], x[[0, 1, 2, 3, 5, 6, 7, 8, 9]])
    r = torch.randn(10000) * 10
    assert torch.equal(torch.argsort(ordered_keys(r)), torch.argsort(r))


def test_radix_select_against_brute_force():
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-20, 20, (50, 300), generator=g).float() / 4  # many duplicates
    x[0] = 1.0  # one value
    w = torch.rand(50, 300, generator=g, dtype=torch.float64)
    keys = ordered_keys(x)
    k = torch.randint(1, 301, (50,), generator=g).double()
    target = torch.rand(50, generator=g, dtype=torch.float64) * w.sum(-1)
    for weights, tgt in ((None, k), (w, target)):
        t, F = radix_select(keys, weights, tgt)
        g_ = torch.ones_like(w) if weights is None else w
        for r in range(50):
            vals = sorted(set(x[r].tolist()), reverse=True)
            F_of = {v: g_[r][x[r] >= v].sum().item() for v in vals}
            want = next(v for v in vals if F_of[v] >= tgt[r].item())  # the largest value reaching the target
            assert keys_to_values(t[r]).item() == want
            assert math.isclose(F[r].item(), F_of[want], rel_tol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda s: s(torch.zeros(3), torch.arange(3), 0), r"logits must be a \[B, V\] tensor"),
    (lambda s: s(torch.zeros(3, 0), torch.arange(3), 0), r"V >= 1"),
    (lambda s: s(torch.zeros(3, 4, dtype=torch.float64), torch.arange(3), 0), r"fp32, fp16 or bf16"),
    (lambda s: s(torch.zeros(3, 4), torch.arange(4), 0), r"seq_ids must be an int64 tensor of shape \[B\]=3"),
    (lambda s: s(torch.zeros(3, 4), torch.arange(3).int(), 0), r"seq_ids must be an int64"),
    (lambda s: s(torch.zeros(3, 4), torch.arange(3), -1), r"step must be an int >= 0"),
    (lambda s: s(torch.zeros(3, 4), torch.arange(3), 1.5), r"step must be an int >= 0"),
    (lambda s: s(torch.zeros(3, 4), torch.arange(3), torch.zeros(2, dtype=torch.int64)), r"shape \[\] or \[B\]=3"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(Sampler(SamplingParams(top_p=0.5), backend="torch"))


def test_bad_sampler_options_are_named(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="only under Triton's interpreter"):
        Sampler(SamplingParams(), "cpu", backend="triton")
    with pytest.raises(ValueError, match="backend must be"):
        Sampler(SamplingParams(), backend="cuda")
    with pytest.raises(ValueError, match="candidates must be a power of two"):
        Sampler(SamplingParams(), candidates=100)
