"""SamplingParams validation, the filters against a slow per-row reference, seeded batch-independent draws, seeds
that do not alias, stops."""
import math
import os
import subprocess
import sys

import pytest
import torch

from prompt_tree.sampling import (SamplingParams, StopChecker, filtered_probs, sample, sample_reference, seed_key,
                                  sequence_id, uniforms)
from prompt_tree.tokenizer import ByteTokenizer


# ----- validation

@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-0.1), r"temperature: must be >= 0"),
    (dict(temperature=float("nan")), r"temperature: must be a finite number"),
    (dict(temperature="1"), r"temperature: must be a finite number"),
    (dict(top_p=0.0), r"top_p: must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p: must be in \(0, 1\]"),
    (dict(top_k=-1), r"top_k: must be >= 0"),
    (dict(top_k=2.5), r"top_k: must be an int"),
    (dict(min_p=1.0), r"min_p: must be in \[0, 1\)"),
    (dict(min_p=-0.1), r"min_p: must be in \[0, 1\)"),
    (dict(max_new_tokens=0), r"max_new_tokens: must be >= 1"),
    (dict(max_new_tokens=3.0), r"max_new_tokens: must be an int"),
    (dict(max_new_tokens=True), r"max_new_tokens: must be an int"),
    (dict(seed="1"), r"seed: must be an int"),
    (dict(stop=["a", 3]), r"stop: must be a string or a list of strings"),
    (dict(stop=[""]), r"stop: must not contain the empty string"),
    (dict(stop_token_ids=[-1]), r"stop_token_ids: must be a list of non-negative ints"),
    (dict(stop_token_ids=5), r"stop_token_ids: must be a list of non-negative ints"),
    (dict(logprobs=1), r"logprobs: must be a bool"),
    (dict(include_stop_str_in_output="yes"), r"include_stop_str_in_output: must be a bool"),
])
def test_invalid_params_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match="SamplingParams." + match):
        SamplingParams(**kwargs)


def test_valid_params_are_normalized():
    p = SamplingParams(stop="\n\n", stop_token_ids=[3, 4], temperature=0)
    assert p.stop == ("\n\n",) and p.stop_token_ids == (3, 4) and p.greedy
    hash(p)  # frozen and hashable


# ----- filters against a slow reference

def _reference_probs(row: list[float], p: SamplingParams) -> list[float]:
    """Straight-line per-row version of the documented filter order: temperature, top-k, top-p, min-p."""
    x = [v / p.temperature for v in row]
    keep = [True] * len(x)
    if 0 < p.top_k < len(x):
        kth = sorted(x, reverse=True)[p.top_k - 1]
        keep = [v >= kth for v in x]
    m = max(v for v, k in zip(x, keep) if k)
    w = [math.exp(v - m) if k else 0.0 for v, k in zip(x, keep)]
    probs = [v / sum(w) for v in w]
    if p.top_p < 1:
        order = sorted(range(len(x)), key=lambda i: -probs[i])  # Python's sort is stable, like torch's stable sort
        mass, kept = 0.0, set()
        for j, i in enumerate(order):
            if j == 0 or mass < p.top_p:
                kept.add(i)
            mass += probs[i]
        probs = [q if i in kept else 0.0 for i, q in enumerate(probs)]
    if p.min_p > 0:
        top = max(probs)
        probs = [q if q >= p.min_p * top else 0.0 for q in probs]
    s = sum(probs)
    return [q / s for q in probs]


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.7),
    SamplingParams(temperature=1.0, top_k=3),
    SamplingParams(temperature=1.3, top_p=0.6),
    SamplingParams(temperature=0.9, min_p=0.2),
    SamplingParams(temperature=1.0, top_k=5, top_p=0.8, min_p=0.05),
    SamplingParams(temperature=1.0, top_k=1),
    SamplingParams(temperature=2.0, top_p=1e-6),
])
def test_filtered_probs_match_reference(params):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 11, generator=g, dtype=torch.float64).float() * 2
    logits[0, 3] = logits[0, 5]  # a tie at the top-k / top-p border region
    got = filtered_probs(logits, params)
    want = torch.tensor([_reference_probs(r, params) for r in logits.double().tolist()], dtype=torch.float64)
    # fp32 softmax of O(1) logits: ~1e-7 relative error per entry; 1e-5 is far below any filter's effect
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def test_greedy_is_argmax_and_logprobs_are_raw():
    logits = torch.randn(5, 17, generator=torch.Generator().manual_seed(1))
    toks, lps = sample(logits, SamplingParams(temperature=0), torch.arange(5), 0)
    assert toks.tolist() == logits.argmax(-1).tolist()
    torch.testing.assert_close(lps, torch.log_softmax(logits, -1)[torch.arange(5), toks])


def test_draws_follow_the_filtered_distribution():
    """Many sequences drawing from one row: empirical frequencies within 5 standard errors of the probabilities."""
    n = 40000
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    for params in (SamplingParams(temperature=1.0, seed=3), SamplingParams(temperature=0.8, top_p=0.9, seed=4)):
        probs = filtered_probs(logits, params)[0].double()
        toks, _ = sample(logits.expand(n, -1), params, torch.arange(n), step=7)
        freq = torch.bincount(toks, minlength=6).double() / n
        se = (probs * (1 - probs) / n).sqrt()
        assert ((freq - probs).abs() <= 5 * se + 1e-12).all(), (freq, probs)
        assert (freq[probs == 0] == 0).all()


def test_draws_are_batch_independent_and_seeded():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(64, 50, generator=g)
    ids = torch.tensor([sequence_id(f"node{i % 7}", i) for i in range(64)])
    params = SamplingParams(temperature=1.0, top_k=20, seed=11)
    full, _ = sample(logits, params, ids, 3)
    perm = torch.randperm(64, generator=g)[:23]
    part, _ = sample(logits[perm], params, ids[perm], 3)
    assert part.tolist() == full[perm].tolist()
    again, _ = sample(logits, params, ids, 3)
    assert again.tolist() == full.tolist()
    other_seed, _ = sample(logits, SamplingParams(temperature=1.0, top_k=20, seed=12), ids, 3)
    other_step, _ = sample(logits, params, ids, 4)
    assert other_seed.tolist() != full.tolist() and other_step.tolist() != full.tolist()


def test_uniforms_are_uniform_and_per_step_tensor_matches_scalar():
    key = seed_key(5)
    u = uniforms(key, torch.arange(200000), 9)
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 5 * (1 / 12 / 200000) ** 0.5
    hist = torch.histc(u.float(), bins=10, min=0, max=1) / 200000
    assert (hist - 0.1).abs().max() < 5 * (0.09 / 200000) ** 0.5
    steps = torch.tensor([0, 1, 2, 9, 2**40])
    per = uniforms(key, torch.tensor([4] * 5), steps)
    assert per.tolist() == [uniforms(key, torch.tensor([4]), int(s))[0].item() for s in steps]
    assert uniforms(key, torch.tensor([4]), torch.tensor(9)).item() == per[3].item()
    assert sequence_id("a", 0) == sequence_id("a", 0) != sequence_id("a", 1)
    assert 2**32 <= max(sequence_id(("k", i), 0) for i in range(64)) < 2**63  # 63-bit ids, all of them used
    # the high words of the id and the step count: ids or steps equal in their low 32 bits still differ
    assert uniforms(key, torch.tensor([7, 7 + 2**32]), 0).unique().numel() == 2
    assert uniforms(key, torch.tensor([7, 7]), torch.tensor([3, 3 + 2**32])).unique().numel() == 2


# ----- seeds (issue 15, part 5)

ALIASES_OF_ZERO_BEFORE = [-1, 2**32 + 1, 2**64, (2**32 + 1) << 32]  # seeds the old 32-bit XOR fold sent to 0


def test_seeds_that_used_to_alias_draw_differently():
    ids = torch.arange(256)
    logits = torch.randn(256, 50, generator=torch.Generator().manual_seed(0))
    base = uniforms(seed_key(0), ids, 3)
    draws0 = sample(logits, SamplingParams(seed=0), ids, 3)[0]
    seeds = ALIASES_OF_ZERO_BEFORE + [2**200 + 5, -(2**100), 1, 2**63, -(2**63)]
    assert len({seed_key(s) for s in seeds + [0]}) == len(seeds) + 1
    for s in seeds:
        assert not torch.equal(uniforms(seed_key(s), ids, 3), base), s
        assert not torch.equal(sample(logits, SamplingParams(seed=s), ids, 3)[0], draws0), s
        assert not torch.equal(sample_reference(logits, SamplingParams(seed=s), ids, 3)[0], draws0), s


def test_seed_keys_and_uniforms_are_stable_across_processes():
    seeds = [0, -1, 2**64, 12345678901234567890123, -7]
    code = ("import torch; from prompt_tree.seeds import seed_key, uniforms, sequence_id;"
            f"print([seed_key(s) for s in {seeds}]);"
            "print(uniforms(seed_key(-1), torch.tensor([0, 5, 2**40]), 11).tolist());"
            "print(sequence_id(('node', 3), 7))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.splitlines()
    assert out[0] == str([seed_key(s) for s in seeds])
    assert out[1] == str(uniforms(seed_key(-1), torch.tensor([0, 5, 2**40]), 11).tolist())
    assert out[2] == str(sequence_id(("node", 3), 7))


def test_seed_key_refuses_non_ints():
    for bad in (1.0, "1", True, None):
        with pytest.raises(TypeError, match="seed must be an int"):
            seed_key(bad)
    with pytest.raises(ValueError, match="SamplingParams.seed: must be an int"):
        SamplingParams(seed=2.0)
    with pytest.raises(TypeError, match="key must be seed_key"):
        uniforms(5, torch.arange(3), 0)


# ----- stop strings

def test_stop_checker_window_and_cut():
    tok = ByteTokenizer()
    checker = StopChecker(("\n\n", "END"), tok.decode)
    ids = tok.encode("x = 1" * 50)
    assert not checker.hit(ids)
    assert checker.hit(ids + tok.encode("\n\n"))
    assert checker.hit(ids + tok.encode("EN") + tok.encode("D"))
    # a 2-byte character split across tokens still matches once complete
    snow = StopChecker(("é!",), tok.decode)
    assert not snow.hit(ids + list("é".encode())[:1]) and snow.hit(ids + list("é!".encode()))
    text = "a END b\n\nc END"
    assert checker.cut(text, include=False) == "a "
    assert checker.cut(text, include=True) == "a END"
    assert checker.cut("nothing here", include=False) == "nothing here"
    assert checker.window == 4 * 3 + 2
    # tokens that decode to nothing (PAD 258, BOS 256) between the text and the stop string: the window grows
    q = StopChecker(("\nQUESTION:",), tok.decode)
    assert q.hit(tok.encode("x=1\n") + [258] * 40 + tok.encode("QUESTION:"))
    assert not q.hit(tok.encode("x=1\n") + [258] * 40 + tok.encode("QUESTION"))
    assert q.hit([256] * 100 + tok.encode("\nQUESTION:"))
