"""LlamaModel against Hugging Face transformers (the reference), plus the engine-facing contract.

Tolerances. In float32 both sides compute the same function with different summation orders (SDPA vs einsum,
different GEMM blockings). A length-K dot product in fp32 has typical relative error ~sqrt(K)*2^-24 (K <= 128
here: ~7e-7), worst case K*2^-24 (~8e-6); two layers of ~10 dependent ops keep the logits within ~1e-5 of each
other relative to their scale. We assert max|diff| <= 1e-4 * max|ref|, an order of margin; any real defect (RoPE
pairing, a missing bias, an untied head, wrong GQA grouping, llama3 frequency band) moves logits by >10%.
In float64 the same argument with u = 2^-53 gives ~1e-14; HF's RMSNorm rounds to fp32 on both sides, and two
inputs that agree to ~1e-15 round to different fp32 values with probability ~1e-8 per element, so 1e-9 holds
(in practice the final norm's fp32 rounding absorbs the upstream differences and the fp64 logits agree exactly).
"""
from __future__ import annotations

import pytest
import torch

from prompt_tree.config import PRESETS, ModelConfig
from prompt_tree.loading import _meta_model, load_model, random_model
from prompt_tree.model import DenseKVCache, LlamaModel, causal_attention, dense_attention, hf_state_dict
from prompt_tree.rope import apply_rope, rope_cos_sin, rope_inv_freq

transformers = pytest.importorskip("transformers")

VOCAB = 300
T = 37  # odd, longer than the llama3 config's original context (positions cross every frequency band)


def _hf_model(arch: str):
    common = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
    )
    if arch == "llama3":
        # theta 10000, head_dim 16, original context 64: wavelengths 6.3 (< 64/4: kept), 20 and 63 (between
        # 64/4 and 64/1: interpolated), 199 and up (> 64: divided by factor); see test_llama3_bands_are_all_exercised.
        cfg = transformers.LlamaConfig(
            **common, rope_theta=10000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64},
        )
        model = transformers.LlamaForCausalLM(cfg)
    elif arch == "linear":
        cfg = transformers.LlamaConfig(**common, rope_theta=10000.0, rope_scaling={"rope_type": "linear", "factor": 4.0})
        model = transformers.LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        cfg = transformers.Qwen2Config(**common, rope_theta=1e6, tie_word_embeddings=True)
        model = transformers.Qwen2ForCausalLM(cfg)
    elif arch == "mistral":
        cfg = transformers.MistralConfig(**{**common, "num_key_value_heads": 1}, rope_theta=1e6, sliding_window=4096)
        model = transformers.MistralForCausalLM(cfg)
    else:
        raise AssertionError(arch)
    # Weights far from HF's tiny init so every part of the model visibly matters (norms != 1, biases != 0).
    gen = torch.Generator().manual_seed({"llama3": 10, "linear": 11, "qwen2": 12, "mistral": 13}[arch])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for arch in ("llama3", "linear", "qwen2", "mistral"):
        model = _hf_model(arch)
        path = tmp_path_factory.mktemp(arch)
        model.save_pretrained(path)
        out[arch] = (model, path)
    return out


@pytest.mark.parametrize("arch", ["llama3", "linear", "qwen2", "mistral"])
@pytest.mark.parametrize("dtype,rel_tol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_logits_match_transformers(checkpoints, arch, dtype, rel_tol):
    hf, path = checkpoints[arch]
    with pytest.warns(UserWarning, match="sliding_window") if arch == "mistral" else _no_warning():
        loaded = load_model(path, device="cpu", dtype=dtype, tokenizer=False)
    model = loaded.model
    ids = torch.randint(0, VOCAB, (T,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf.to(dtype)(ids[None]).logits[0].to(torch.float64)
        hf.float()  # the fixture is shared: leave it as saved
        # logits() rounds to fp32; compare in the model dtype so fp64 is checked at fp64 precision
        hidden = model(ids, torch.arange(T), causal_attention())
        ours = model.logits_raw(hidden).to(torch.float64)
        dense = model.forward_dense(ids)
    assert dense.dtype == torch.float32 and dense.shape == (T, VOCAB)
    assert torch.equal(dense, ours.to(dense.dtype))
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert scale > 1.0  # the weights make logits large enough that a defect cannot hide under the tolerance
    assert err <= rel_tol * scale, f"{arch} {dtype}: max|diff| {err:.3g} vs scale {scale:.3g}"


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("kind", ["llama3", "linear"])
def test_inv_freq_matches_transformers(kind):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_cfg = _hf_model(kind).config
    ours = rope_inv_freq(ModelConfig.from_hf(hf_cfg.to_dict() | {"architectures": ["LlamaForCausalLM"]}))
    ref, _ = ROPE_INIT_FUNCTIONS[kind](hf_cfg, "cpu")
    torch.testing.assert_close(ours, ref.float(), rtol=0, atol=0)


def test_llama3_bands_are_all_exercised():
    """The llama3 test config really uses the kept, interpolated and divided branches."""
    cfg = ModelConfig.from_hf(_hf_model("llama3").config.to_dict() | {"architectures": ["LlamaForCausalLM"]})
    plain = rope_inv_freq(ModelConfig(**{**cfg.__dict__, "rope_scaling": None}))
    ratio = plain / rope_inv_freq(cfg)
    kept = torch.isclose(ratio, torch.tensor(1.0))
    divided = torch.isclose(ratio, torch.tensor(8.0))
    assert kept.any() and divided.any() and (~kept & ~divided).any()


def _tiny(seed=0, dtype=torch.float32, **changes) -> LlamaModel:
    cfg = ModelConfig(**{**PRESETS["tiny"].__dict__, **changes})
    return random_model(cfg, seed=seed, device="cpu", dtype=dtype, std=0.1)


@pytest.mark.parametrize("chunks", [[1] * 6, [5, 1, 1, 17], [1, 30]])
def test_incremental_decode_equals_dense(chunks):
    """Chunks through a KV cache (positions continuing) equal one dense forward of the whole sequence."""
    model = _tiny()
    ids = torch.randint(0, 259, (sum(chunks),), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        dense = model.forward_dense(ids)
        cache, outs, start = DenseKVCache(model.config.num_layers), [], 0
        for n in chunks:
            hidden = model(ids[start:start + n], torch.arange(start, start + n), cache)
            outs.append(model.logits(hidden))
            start += n
    assert cache.length == len(ids)
    # Same maths, different reduction lengths: fp32 roundoff only (see module docstring).
    torch.testing.assert_close(torch.cat(outs), dense, rtol=1e-4, atol=1e-4 * dense.abs().max().item())


def test_packed_sequences_equal_separate_forwards():
    """The flat layout: sequences of lengths 1, 9, 4 packed on one axis with per-sequence positions."""
    model = _tiny(seed=3)
    lengths = [1, 9, 4]
    gen = torch.Generator().manual_seed(4)
    seqs = [torch.randint(0, 259, (n,), generator=gen) for n in lengths]

    def packed_attention(layer_idx, q, k, v):
        outs, start = [], 0
        for n in lengths:
            outs.append(dense_attention(q[start:start + n], k[start:start + n], v[start:start + n]))
            start += n
        return torch.cat(outs)

    with torch.no_grad():
        hidden = model(torch.cat(seqs), torch.cat([torch.arange(n) for n in lengths]), packed_attention)
        packed = model.logits(hidden)
        separate = torch.cat([model.forward_dense(s) for s in seqs])
    torch.testing.assert_close(packed, separate, rtol=1e-5, atol=1e-5 * separate.abs().max().item())


def test_attention_callback_gets_rotated_q_k():
    """q, k, v reach the callback rotated, as views of the one fused qkv output (no copies)."""
    model = _tiny(seed=5)
    seen = []

    def spy(layer_idx, q, k, v):
        seen.append((layer_idx, q.clone(), k.clone(), v.clone(), q.data_ptr(), k.data_ptr(), v.data_ptr()))
        return dense_attention(q, k, v)

    ids = torch.tensor([3, 200, 256, 7, 7])
    positions = torch.tensor([0, 1, 2, 3, 4])
    with torch.no_grad():
        model(ids, positions, spy)
        layer, q, k, v, q_ptr, k_ptr, v_ptr = seen[0]
        attn = model.layers[0].self_attn
        x = model.layers[0].input_layernorm(model.embed_tokens(ids))[0]
        plain_k = hf_state_dict(model)["model.layers.0.self_attn.k_proj.weight"]
        k_unrotated = (x @ plain_k.T).view(5, 2, 32)
        cos, sin = rope_cos_sin(positions, model.inv_freq)
        expected_k = apply_rope(k_unrotated, cos, sin)
    assert [s[0] for s in seen] == [0, 1]
    assert q.shape == (5, 4, 32) and k.shape == (5, 2, 32) and v.shape == (5, 2, 32)
    el = q.element_size()
    assert (k_ptr - q_ptr, v_ptr - k_ptr) == (4 * 32 * el, 2 * 32 * el)  # q heads, then k, then v, in one row
    assert attn.qkv_proj.weight.shape == ((4 + 2 + 2) * 32, 128)
    # same dot products in another GEMM shape: fp32 summation order only (module docstring)
    torch.testing.assert_close(k, expected_k, rtol=1e-5, atol=1e-6)
    # position 0 is the identity rotation; later positions are not
    torch.testing.assert_close(k[0], k_unrotated[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(k[1:], k_unrotated[1:])


def test_rope_is_a_rotation_and_relative():
    """|rope(x)| = |x|, and <rope(q, m), rope(k, n)> depends only on m - n."""
    cfg = PRESETS["llama3-8b"]
    inv = rope_inv_freq(cfg)
    gen = torch.Generator().manual_seed(6)
    q, k = torch.randn(1, 1, 128, generator=gen, dtype=torch.float64), torch.randn(1, 1, 128, generator=gen, dtype=torch.float64)

    def rot(x, pos):
        c, s = rope_cos_sin(torch.tensor([pos]), inv)
        return apply_rope(x, c, s)

    torch.testing.assert_close(rot(q, 1000).norm(), q.norm())
    a = (rot(q, 7) * rot(k, 3)).sum()
    b = (rot(q, 1004) * rot(k, 1000)).sum()
    # angles are fp32: position 1000 * inv_freq carries ~1000 * 2^-24 rad of rounding, ~6e-5 relative at most
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_bf16_model_gives_fp32_logits_close_to_fp32():
    """bf16 (u = 2^-8) through 2 layers: ~10 dependent roundings of ~0.4% each, so <= 5% of the logit scale."""
    ids = torch.randint(0, 259, (20,), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        high = _tiny(seed=8)
        ref = high.forward_dense(ids)
        low = _tiny(seed=8, dtype=torch.bfloat16)
        # random streams differ across dtypes: give the bf16 model the fp32 model's weights, rounded
        low.load_state_dict({k: v.to(torch.bfloat16) for k, v in high.state_dict().items()})
        out = low.forward_dense(ids)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_forward_on_meta(name):
    """Every preset's full-size graph runs on the meta device (shapes only, no memory). A `.item()` or a
    data-dependent Python branch would raise here, so this also guards the hot path's graph-capturability."""
    cfg = PRESETS[name]
    model = _meta_model(cfg)

    def attention(layer_idx, q, k, v):
        assert q.shape == (6, cfg.num_heads, cfg.head_dim) and k.shape == v.shape == (6, cfg.num_kv_heads, cfg.head_dim)
        return torch.empty_like(q)

    ids = torch.zeros(6, dtype=torch.long, device="meta")
    hidden = model(ids, torch.arange(6, device="meta"), attention)
    assert hidden.shape == (6, cfg.hidden_size)
    logits = model.logits(hidden[:2])
    assert logits.shape == (2, cfg.vocab_size) and logits.dtype == torch.float32
    assert model.logits_raw(hidden[:2]).dtype == hidden.dtype  # the GEMM stays in the model dtype


def test_forward_rejects_batched_input():
    model = _tiny()
    with pytest.raises(ValueError, match=r"must both be \[T\]"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), causal_attention())
    with pytest.raises(ValueError, match=r"must both be \[T\]"):
        model(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), causal_attention())
