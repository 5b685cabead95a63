"""The benchmark's "peaked" output head (prompt_tree/benchmark/bench_logits.py): a model's own logits get nucleus
sizes like a trained model's, and the shaping is undone bit for bit."""
from dataclasses import replace

import pytest
import torch

from prompt_tree.benchmark import bench_logits
from prompt_tree.config import get_preset
from prompt_tree.loading import random_model
from prompt_tree.model import causal_attention

VOCAB = 32016  # codellama-7b's vocabulary


def _config(tied: bool):
    return replace(get_preset("tiny"), vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_layers=2,
                   num_heads=4, num_kv_heads=2, head_dim=64, bos_token_id=1, eos_token_ids=(2,),
                   tie_word_embeddings=tied)


def _nucleus_sizes(model, config, rows: int = 96) -> torch.Tensor:
    """[rows] the T 0.8 / top-p 0.95 nucleus size of the model's next-token distribution at each position of a
    random prompt (a sort: the obviously right reference)."""
    ids = torch.randint(3, config.vocab_size, (rows,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        hidden = model.forward(ids, torch.arange(rows), causal_attention())
        p = torch.softmax(model.logits(hidden) / 0.8, -1)
    assert torch.isfinite(p).all()
    s = p.sort(-1, descending=True).values
    return (s.cumsum(-1) < 0.95).sum(-1) + 1


@pytest.mark.parametrize("spread", [1.28, 0.905])  # 0.02 * sqrt(hidden): llama3-8b / codellama-7b, llama-3.2-1b
@pytest.mark.parametrize("tied", [False, True])
def test_peaked_head_gives_trained_model_nuclei_and_is_undone_exactly(spread, tied):
    """The random model's logits spread as the benchmark presets' do when std * sqrt(256) equals theirs (the final
    RMSNorm leaves the hidden state at rms 1, so the logits' sd is std * sqrt(hidden)). Flat: most of the
    vocabulary is in the nucleus. Peaked: the median nucleus is a few tokens, the p90 a few tens (the range the
    module docstring states; at 32k ids rather than 128k the bulk's share is smaller still)."""
    config = _config(tied)
    model = random_model(config, seed=3, device="cpu", dtype=torch.float32, std=spread / 256 ** 0.5)
    weight = bench_logits.output_weight(model)
    before = weight.clone()
    flat = _nucleus_sizes(model, config)
    assert flat.median() > VOCAB // 4, flat.median()
    with bench_logits.peaked_head(model, config.eos_token_ids, seed=5) as ids:
        assert 2 not in set(ids.tolist()) and len(ids) == min(bench_logits.HOT_TOKENS, VOCAB // 8)
        peaked = _nucleus_sizes(model, config).float()
        changed = (weight != before).any(-1)
        assert changed.nonzero().flatten().tolist() == ids.tolist()  # those rows alone, and each of them
    assert torch.equal(weight, before)  # x * 4 / 4 == x: the engine's weights are as drawn again
    p50, p90 = peaked.quantile(0.5).item(), peaked.quantile(0.9).item()
    assert 1.5 <= p50 <= 15 and p90 <= 60, (p50, p90)
    assert peaked.min() >= 1


def test_hot_ids_are_seeded_sorted_and_avoid_eos():
    a = bench_logits.hot_ids(1000, exclude=(7, 9), seed=0)
    assert torch.equal(a, bench_logits.hot_ids(1000, exclude=(7, 9), seed=0))
    assert len(a) == 125 and 7 not in a.tolist() and 9 not in a.tolist()
    assert torch.equal(a, a.sort().values) and len(set(a.tolist())) == len(a)
    assert not torch.equal(a, bench_logits.hot_ids(1000, exclude=(7, 9), seed=1))


def test_logits_context_names_the_choices():
    with pytest.raises(ValueError, match="flat, peaked"):
        bench_logits.logits_context("sharp", None)
