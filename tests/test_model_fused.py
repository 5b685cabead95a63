"""The fused dense path (LlamaModel) against the plain unfused reference (plain_model.PlainModel), the fused
layout of the weights, the options, and CUDA-graph capture.

Tolerances (scale = max |reference|):
- torch kernels: fused and plain run the same ops with the same roundings; they differ only where a fused GEMM
  (wider N) may block its K-sums differently from the separate ones. A K <= 256 dot product in fp32 has typical
  relative error ~sqrt(K) u (u = 2^-24, ~1e-6), so three layers stay within 1e-5 of the scale; fp64 the same
  with u = 2^-53: 1e-12 (HF's fp32 norm statistics are fp32 in both).
- Triton kernels (interpreter): their roundings are argued in tests/test_fused_ops.py (a few fp32 ulps, the
  norm's sum order); through three layers that stays within today's model tolerance, 1e-4 of the scale (as
  tests/test_model.py against transformers). In fp16 a kernel's output may round to the neighbouring value of
  the reference's (2^-10 relative) at ~8 points per layer; such flips have random signs and propagate about
  linearly through three layers of small-std weights: ~sqrt(24) * 2^-10 ~ 0.5%, asserted at 2%.
Any structural defect (q/k/v rows swapped, a missed residual, RoPE on v, gate/up swapped) moves outputs by >10%.
"""
from __future__ import annotations

import os

import pytest
import torch

from prompt_tree.config import PRESETS, ModelConfig, replace
from prompt_tree.loading import _meta_model, _places, random_model
from prompt_tree.model import DenseKVCache, DenseOptions, causal_attention, checkpoint_tensors, hf_state_dict
from prompt_tree.parallel import shard_config
from prompt_tree.plain_model import PlainModel

TINY = PRESETS["tiny"]
CONFIGS = {
    "llama": TINY,
    "qwen2": replace(TINY, architecture="Qwen2ForCausalLM", qkv_bias=True, tie_word_embeddings=True),
    # odd everything: GQA 3, head_dim 6 (a RoPE half of 3, below its power-of-two block), MLP width 37
    "odd": replace(TINY, vocab_size=53, hidden_size=40, intermediate_size=37, num_layers=3, num_heads=3,
                   num_kv_heads=1, head_dim=6, bos_token_id=1, eos_token_ids=(2,)),
}
T = 13


def _model(name: str, dtype: torch.dtype, kernels: str = "torch"):
    model = random_model(CONFIGS[name], seed=7, device="cpu", dtype=dtype, std=0.1)
    model.set_dense_options(DenseOptions(kernels=kernels))
    return model


def _run(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states of a causal forward over ids, then one more (decode) token through a KV cache: [T + 1, H]."""
    with torch.no_grad():
        dense = model(ids, torch.arange(len(ids)), causal_attention())
        cache = DenseKVCache(model.config.num_layers)
        model(ids[:-1], torch.arange(len(ids) - 1), cache)
        step = model(ids[-1:], torch.tensor([len(ids) - 1]), cache)
        return torch.cat([dense, step]), model.logits(dense)


def _ids(config: ModelConfig) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, (T,), generator=torch.Generator().manual_seed(3))


def _assert_within(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    assert torch.isfinite(got).all()
    scale = want.abs().max().item()
    assert scale > 0.5  # outputs large enough that a defect cannot hide under the tolerance
    err = (got.double() - want.double()).abs().max().item()
    assert err <= rel * scale, f"max|diff| {err:.3g} vs {rel:g} x scale {scale:.3g}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype,rel", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_fused_equals_plain(name, dtype, rel):
    model = _model(name, dtype)
    plain = PlainModel.of(model)
    ids = _ids(model.config)
    hidden, logits = _run(model, ids)
    hidden_ref, logits_ref = _run(plain, ids)
    _assert_within(hidden, hidden_ref, rel)
    _assert_within(logits, logits_ref, rel)
    # the decode step (T = 1 through the cache) equals the dense forward's last row
    _assert_within(hidden[-1:], hidden[-2:-1], rel * 10)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_triton_kernels_model_equals_plain(name, dtype, rel):
    """The whole model with the Triton kernels (interpreter on CPU) against the plain reference."""
    model = _model(name, dtype, kernels="triton")
    ids = _ids(model.config)[:7]  # the interpreter is slow: a shorter sequence
    with torch.no_grad():
        got = model(ids, torch.arange(7), causal_attention())
        want = PlainModel.of(model)(ids, torch.arange(7), causal_attention())
    _assert_within(got, want, rel)


def test_compiled_dense_regions_equal_eager():
    """torch.compile of the two dense regions (aot_eager: dynamo's trace and functionalization, which is what
    could break on in-place RoPE over views; inductor's codegen runs in the CUDA test) gives the eager result,
    as one graph each (fullgraph: a break raises)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # recompiles are counted per function across the process (recompile_limit)
    model = _model("qwen2", torch.float32)
    ids = _ids(model.config)
    want = _run(model, ids)
    model.set_dense_options(DenseOptions(compile=True, compile_backend="aot_eager"))
    before = counters["stats"]["unique_graphs"]
    got = _run(model, ids)
    graphs = counters["stats"]["unique_graphs"] - before
    # it did compile: 3 regions (layer 0's first norm has no residual), for T > 1 and again for T = 1 (torch
    # specializes size 1)
    assert graphs == 6, graphs
    for g, w in zip(got, want):
        _assert_within(g, w, 1e-5)
    _run(model, ids[:9])  # another batch size: the token dimension is dynamic, nothing recompiles
    assert counters["stats"]["unique_graphs"] - before == graphs
    torch._dynamo.reset()


@pytest.mark.skipif(os.environ.get("PROMPT_TREE_TEST_INDUCTOR") != "1",
                    reason="inductor's first CPU compile takes ~30 s; set PROMPT_TREE_TEST_INDUCTOR=1")
def test_inductor_compiled_model_equals_eager_on_cpu():
    torch._dynamo.reset()
    model = _model("odd", torch.float32)
    ids = _ids(model.config)
    want = _run(model, ids)
    model.set_dense_options(DenseOptions(compile=True))
    for g, w in zip(_run(model, ids), want):
        _assert_within(g, w, 1e-5)  # inductor may reassociate the norm's sum: fp32 roundoff only
    torch._dynamo.reset()


# ----- the fused layout


@pytest.mark.parametrize("name", sorted(PRESETS) + ["qwen2", "odd"])
def test_checkpoint_listing_tiles_every_parameter(name):
    """Every preset, whole and as a tensor-parallel rank where it divides: the checkpoint tensors cover each
    fused parameter exactly (loading checks it too), q ‖ k ‖ v and gate ‖ up in that order."""
    cfg = PRESETS.get(name) or CONFIGS[name]
    for tp in (1, 2):
        if cfg.num_kv_heads % tp or cfg.intermediate_size % tp:
            continue
        local = shard_config(cfg, tp)
        places = _places(cfg, _meta_model(local))
        assert len(places) == len(checkpoint_tensors(cfg))
        _, k = places["model.layers.0.self_attn.k_proj.weight"]
        _, up = places["model.layers.0.mlp.up_proj.weight"]
        assert k.param == "layers.0.self_attn.qkv_proj.weight" and k.offset == local.num_heads * local.head_dim
        assert up.param == "layers.0.mlp.gate_up_proj.weight" and up.offset == local.intermediate_size


def test_hf_state_dict_views_the_fused_weights():
    model = _model("qwen2", torch.float32)
    weights = hf_state_dict(model)
    qkv = model.layers[1].self_attn.qkv_proj
    q, k, v = (weights[f"model.layers.1.self_attn.{x}_proj.weight"] for x in "qkv")
    assert torch.equal(torch.cat([q, k, v]), qkv.weight) and torch.equal(
        torch.cat([weights[f"model.layers.1.self_attn.{x}_proj.bias"] for x in "qkv"]), qkv.bias)
    assert k.data_ptr() == qkv.weight.data_ptr() + q.numel() * q.element_size()  # a view, not a copy
    assert "lm_head.weight" not in weights  # tied, as HF checkpoints of tied models
    gate, up = weights["model.layers.0.mlp.gate_proj.weight"], weights["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(torch.cat([gate, up]), model.layers[0].mlp.gate_up_proj.weight)


def test_hf_state_dict_has_transformers_names():
    transformers = pytest.importorskip("transformers")
    from prompt_tree.benchmark.hf_baseline import hf_config

    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(hf_config(TINY))
    assert set(hf_state_dict(_model("llama", torch.float32))) == set(dict(hf.named_parameters()))


def test_logits_raw_is_the_model_dtype_and_logits_its_upcast():
    model = random_model("tiny", seed=1, device="cpu", dtype=torch.bfloat16, std=0.1)
    with torch.no_grad():
        hidden = model(torch.tensor([256, 5, 9]), torch.arange(3), causal_attention())
        raw = model.logits_raw(hidden)
        assert raw.dtype == torch.bfloat16 and raw.shape == (3, 259)
        assert torch.equal(model.logits(hidden), raw.float())


def test_dense_options_are_validated():
    with pytest.raises(ValueError, match="kernels must be one of"):
        DenseOptions(kernels="cuda")
    with pytest.raises(ValueError, match="compile must be a bool"):
        DenseOptions(compile="yes")
    with pytest.raises(ValueError, match="compile_backend must be a backend name"):
        DenseOptions(compile_backend="")
    with pytest.raises(ValueError, match="gemm must be one of"):
        DenseOptions(gemm="skinny!")
    with pytest.raises(TypeError, match="must be a DenseOptions"):
        _model("llama", torch.float32).set_dense_options({"compile": True})


# ----- on a GPU: the Triton kernels and inductor in bf16, and CUDA-graph capture


@pytest.mark.cuda
def test_cuda_fused_compiled_and_graph_replay_equal_plain():
    """bf16 (u = 2^-8) at a wider shape: fused, compiled and plain differ by rounding flips only; ~16 points a
    layer over 2 layers: within 5% of the logit scale (tests/test_model.py's bf16 argument). A captured graph
    replays the eager fused step exactly."""
    cfg = replace(TINY, hidden_size=512, intermediate_size=1376, num_heads=8, num_kv_heads=2, head_dim=64,
                  vocab_size=1000, bos_token_id=1, eos_token_ids=(2,))
    model = random_model(cfg, seed=0, device="cuda", dtype=torch.bfloat16, std=0.05)
    ids = torch.randint(0, 1000, (64,), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    pos = torch.arange(64, device="cuda")
    with torch.no_grad():
        plain = PlainModel.of(model)
        want = plain.logits(plain(ids, pos, causal_attention()))
        fused = model.forward_dense(ids)
        _assert_within(fused, want, 0.05)
        skip = lambda layer, q, k, v: q  # noqa: E731  (the benchmark's no-attention step)
        model(ids, pos, skip)  # warm-up: Triton compiles outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = model.logits_raw(model(ids, pos, skip))
        graph.replay()
        torch.testing.assert_close(out, model.logits_raw(model(ids, pos, skip)), rtol=0, atol=0)
        torch._dynamo.reset()
        model.set_dense_options(DenseOptions(compile=True))
        _assert_within(model.forward_dense(ids), want, 0.05)
        torch._dynamo.reset()
