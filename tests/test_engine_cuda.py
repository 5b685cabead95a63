"""The engine on a GPU: Triton kernels and CUDA-graph decode against the dense reference (skipped on CPU).

fp32 weights (the kernels use IEEE fp32 dots for fp32 inputs) so that greedy tokens are comparable exactly with
the dense causal forward; see tests/test_engine.py for the tolerance argument. Then bf16 at a real head shape:
tree and flat must agree with each other within bf16 rounding on the first step's logits.
"""
import pytest
import torch

from prompt_tree.config import get_preset, replace
from prompt_tree.engine import Engine
from prompt_tree.loading import random_model
from prompt_tree.sampling import SamplingParams
from prompt_tree.tokenizer import ByteTokenizer

from test_engine import dense_check, random_tree

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def cuda_engine_factory():
    config = get_preset("tiny")
    model = random_model(config, seed=0, std=0.1, device="cuda", dtype=torch.float32)

    def make(**kw):
        return Engine(model, config, ByteTokenizer(), config.eos_token_ids, **kw)

    return make


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_cuda_tree_equals_flat_equals_dense(cuda_engine_factory, seed, graphs):
    eng = cuda_engine_factory(cuda_graphs=graphs, compact_fraction=0.0)
    tree = random_tree(seed, max_depth=1 + seed % 4)
    plan = eng.plan(tree)
    params = SamplingParams(max_new_tokens=6, temperature=0, logprobs=True)
    tree_res = eng.generate(plan, params, progress=False)
    flat_res = eng.generate(plan, params, attention="flat", progress=False)
    for key in tree_res:
        assert [c.token_ids for c in tree_res[key]] == [c.token_ids for c in flat_res[key]]
    cpu = Engine(eng.model.to("cpu"), eng.config, ByteTokenizer(), eng.eos_ids)
    try:
        dense_check(cpu, plan, tree_res, atol=1e-3)
    finally:
        eng.model.to("cuda")


def test_cuda_bf16_real_head_shape_tree_vs_flat():
    """Llama-3-like heads (32/8, head dim 128) in bf16, 2 layers: first-token logits of tree and flat agree to
    bf16 rounding of the attention output (relative 1e-2) and the sampled first tokens agree."""
    config = replace(get_preset("tiny"), hidden_size=4096, num_heads=32, num_kv_heads=8, head_dim=128,
                     intermediate_size=1024, num_layers=2)
    model = random_model(config, seed=1, std=0.02, device="cuda", dtype=torch.bfloat16)
    eng = Engine(model, config, ByteTokenizer(), config.eos_token_ids)
    tree = random_tree(3, max_depth=3)
    params = SamplingParams(max_new_tokens=4, temperature=0, logprobs=True)
    a = eng.generate(tree, params, progress=False)
    b = eng.generate(tree, params, attention="flat", progress=False)
    agree = sum(x.token_ids[0] == y.token_ids[0] for k in a for x, y in zip(a[k], b[k]))
    total = sum(len(a[k]) for k in a)
    assert agree == total
