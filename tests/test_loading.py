"""Checkpoint loading, random models, device/dtype resolution and ModelConfig parsing, with every error message."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from prompt_tree.config import PRESETS, ConfigError, ModelConfig, RopeScaling, get_preset
from prompt_tree.loading import CheckpointError, load_model, random_model, resolve_device_dtype

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

VOCAB = 300


def _train_tokenizer(path, vocab_size=VOCAB):
    """A byte-level BPE trained on a few lines, with <s>, </s> specials and a BOS-adding post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = ["def solve(n):\n    return n * (n + 1) // 2\n", "for i in range(10): print(i)", "hello world"] * 20
    tok.train_from_iterator(text, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>"}, f)


def _save_llama(path, tied=False, **kw):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=tied, **kw,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small Llama checkpoint with a trained tokenizer and a generation_config naming two EOS ids."""
    path = tmp_path_factory.mktemp("llama")
    model = _save_llama(path, bos_token_id=1, eos_token_id=2)
    _train_tokenizer(path)
    with open(path / "generation_config.json", "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": [2, 5]}, f)
    return model, path


@pytest.fixture
def broken(ckpt, tmp_path):
    """A fresh copy of the checkpoint to damage."""
    dst = tmp_path / "copy"
    shutil.copytree(ckpt[1], dst)
    return dst


def _ids(n=23):
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(0))


def test_load_with_tokenizer_and_generation_config(ckpt):
    hf, path = ckpt
    loaded = load_model(path, device="cpu", dtype="float32")
    assert loaded.eos_ids == (2, 5) and loaded.config.eos_token_ids == (2, 5)
    assert loaded.tokenizer is not None and loaded.tokenizer.eos_ids == (2, 5) and loaded.tokenizer.bos_id == 1
    assert loaded.tokenizer.adds_bos
    text = "def solve(n): return 42"
    ids = loaded.tokenizer.encode(text, add_bos=True)
    assert ids[0] == 1 and loaded.tokenizer.decode(ids) == text
    p = next(loaded.model.parameters())
    assert p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad
    with torch.no_grad():
        ref = hf(_ids()[None]).logits[0]
    # fp32 tolerance argued in test_model.py's docstring
    torch.testing.assert_close(loaded.model.forward_dense(_ids()), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_sharded_checkpoint_equals_single_file(ckpt, tmp_path):
    hf, path = ckpt
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    shards = [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]
    assert "model.safetensors.index.json" in os.listdir(tmp_path) and len(shards) > 2
    sharded = load_model(tmp_path, device="cpu", dtype=torch.float32, tokenizer=False)
    single = load_model(path, device="cpu", dtype=torch.float32, tokenizer=False)
    for (name, a), (_, b) in zip(sharded.model.named_parameters(), single.model.named_parameters()):
        assert torch.equal(a, b), name


def test_dtype_cast_on_load(ckpt):
    loaded = load_model(ckpt[1], device="cpu", dtype="bf16", tokenizer=False)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.model.inv_freq.dtype == torch.float32  # RoPE angles stay fp32


def test_tied_checkpoint_that_still_stores_lm_head(tmp_path):
    hf = _save_llama(tmp_path, tied=True)
    tensors = load_file(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in tensors
    tensors["lm_head.weight"] = torch.zeros(VOCAB, 64)  # some exporters write it anyway; HF ignores it
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = load_model(tmp_path, device="cpu", tokenizer=False)
    assert loaded.model.lm_head is None
    with torch.no_grad():
        ref = hf(_ids()[None]).logits[0]
    torch.testing.assert_close(loaded.model.forward_dense(_ids()), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


# ----- errors


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope", device="cpu")


def test_file_instead_of_directory(ckpt):
    with pytest.raises(CheckpointError, match="is not a directory"):
        load_model(ckpt[1] / "config.json", device="cpu")


def test_missing_config(broken):
    os.remove(broken / "config.json")
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_model(broken, device="cpu")


def test_unsupported_architecture(broken):
    cfg = json.loads((broken / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unsupported architecture 'GPT2LMHeadModel'.*LlamaForCausalLM, "
                                              "MistralForCausalLM, Qwen2ForCausalLM"):
        load_model(broken, device="cpu")


def test_missing_weight(broken):
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing weight model\.layers\.1\.mlp\.up_proj\.weight"):
        load_model(broken, device="cpu")


def test_shape_mismatch(broken):
    tensors = load_file(broken / "model.safetensors")
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(64, 64)
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.self_attn\.k_proj\.weight .* shape \[64, 64\], "
                                              r"but config\.json implies \[32, 64\]"):
        load_model(broken, device="cpu")


def test_unexpected_weight(broken):
    tensors = load_file(broken / "model.safetensors")
    tensors["model.layers.0.self_attn.o_proj.bias"] = torch.zeros(64)
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.zeros(8)  # old exporters: harmless, skipped
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"unexpected weight model\.layers\.0\.self_attn\.o_proj\.bias"):
        load_model(broken, device="cpu")


def test_no_weights_and_bin_hint(broken):
    os.rename(broken / "model.safetensors", broken / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="neither model.safetensors nor .*\\.bin checkpoints are not supported"):
        load_model(broken, device="cpu")


def test_missing_shard(ckpt, tmp_path):
    ckpt[0].save_pretrained(tmp_path, max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    os.remove(tmp_path / victim)
    with pytest.raises(CheckpointError, match=f"lists shard {victim}, which is missing"):
        load_model(tmp_path, device="cpu", tokenizer=False)


def test_side_files_that_are_not_json_objects(ckpt, tmp_path):
    """A checkpoint index must be a JSON object (named when it is not); a broken one is named too."""
    ckpt[0].save_pretrained(tmp_path, max_shard_size="40KB")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json is not a JSON object"):
        load_model(tmp_path, device="cpu", tokenizer=False)
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"cannot read .*model.safetensors.index.json"):
        load_model(tmp_path, device="cpu", tokenizer=False)


def test_corrupt_weights(broken):
    (broken / "model.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(broken, device="cpu")


def test_missing_tokenizer(broken):
    os.remove(broken / "tokenizer.json")
    with pytest.raises(CheckpointError, match="no tokenizer.json; pass tokenizer=False"):
        load_model(broken, device="cpu")
    assert load_model(broken, device="cpu", tokenizer=False).tokenizer is None


# ----- device and dtype


def test_resolve_device_dtype():
    if not torch.cuda.is_available():
        assert resolve_device_dtype() == (torch.device("cpu"), torch.float32)
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device_dtype("cuda")
    assert resolve_device_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype("cpu", torch.float64)[1] == torch.float64
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        resolve_device_dtype("cpu", "fp8")
    with pytest.raises(ValueError, match="floating-point"):
        resolve_device_dtype("cpu", torch.int32)
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device_dtype("toaster")


# ----- random models


def test_random_model_is_seeded_and_shaped():
    a = random_model("tiny", seed=1, device="cpu")
    b = random_model(PRESETS["tiny"], seed=1, device="cpu")
    c = random_model("tiny", seed=2, device="cpu")
    for (name, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb), name
        if name.endswith("norm.weight"):
            assert torch.equal(pa, torch.ones_like(pa))
        else:
            assert not torch.equal(pa, pc), name
    w = a.layers[0].mlp.down_proj.weight
    assert w.shape == (128, 256) and abs(w.std().item() - 0.02) < 0.002  # 32k draws: std of std ~ 0.4%
    logits = a.forward_dense(torch.tensor([256, 104, 105]))
    assert logits.shape == (3, 259) and torch.isfinite(logits).all()


def test_random_model_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'llama9'.*llama3-8b"):
        random_model("llama9", device="cpu")


# ----- ModelConfig


def test_from_hf_transformers4_layout_and_defaults(tmp_path):
    raw = {
        "architectures": ["LlamaForCausalLM"], "vocab_size": 32016, "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "rope_theta": 1000000, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 16384, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
        "rope_scaling": None,
    }
    (tmp_path / "config.json").write_text(json.dumps(raw))
    cfg = ModelConfig.from_hf(tmp_path)  # a directory, a file path and a dict are all accepted
    assert cfg == ModelConfig.from_hf(tmp_path / "config.json") == ModelConfig.from_hf(raw)
    assert cfg == PRESETS["codellama-7b"]  # num_key_value_heads and head_dim defaulted as HF does
    linear = ModelConfig.from_hf(raw | {"rope_scaling": {"type": "linear", "factor": 2.0}})
    assert linear.rope_scaling == RopeScaling("linear", 2.0)


def test_from_hf_transformers5_layout_llama31():
    raw = {
        "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072, "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009], "dtype": "bfloat16",
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    }
    assert ModelConfig.from_hf(raw) == PRESETS["llama3-8b"]


def test_from_hf_qwen2_and_mistral():
    qwen = ModelConfig.from_hf(transformers.Qwen2Config(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        vocab_size=151936, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
    ).to_dict() | {"architectures": ["Qwen2ForCausalLM"]})
    assert qwen.qkv_bias and qwen.tie_word_embeddings and qwen.head_dim == 64 and qwen.eos_token_ids == (151645,)
    with pytest.warns(UserWarning, match="sliding_window=4096 is ignored"):
        mistral = ModelConfig.from_hf(transformers.MistralConfig().to_dict() | {"architectures": ["MistralForCausalLM"]})
    assert mistral.num_kv_heads == 8 and not mistral.qkv_bias


@pytest.mark.parametrize("change,message", [
    ({"architectures": ["FalconForCausalLM"]}, "unsupported architecture 'FalconForCausalLM'; supported"),
    ({"architectures": None, "model_type": "gpt2"}, "unsupported architecture \"model_type='gpt2'\""),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope scaling type 'yarn' is not supported"),
    ({"attention_bias": True}, "attention_bias=True"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"num_key_value_heads": 3}, "num_heads \\(4\\) must be a multiple of num_kv_heads \\(3\\)"),
    ({"eos_token_id": 999}, "special token id 999 is outside the vocabulary"),
    ({"hidden_size": None}, "lacks required key|hidden_size"),
])
def test_from_hf_errors(change, message):
    raw = {"architectures": ["LlamaForCausalLM"], "vocab_size": 300, "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    raw = raw | change
    if raw.get("hidden_size") is None:
        del raw["hidden_size"]
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf(raw)


def test_from_hf_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        ModelConfig.from_hf(tmp_path)


def test_presets_have_real_sizes():
    billions = {name: cfg.num_parameters() / 1e9 for name, cfg in PRESETS.items()}
    # published parameter counts
    assert round(billions["llama3-8b"], 2) == 8.03
    assert round(billions["llama2-7b"], 2) == 6.74 and round(billions["codellama-7b"], 2) == 6.74
    assert round(billions["codellama-13b"], 1) == 13.0 and round(billions["codellama-34b"], 1) == 33.7
    assert round(billions["qwen2.5-coder-7b"], 2) == 7.62
    tiny = get_preset("tiny")
    assert tiny.vocab_size == 259 and tiny.q_per_kv == 2 and tiny.bos_token_id == 256 and tiny.eos_token_ids == (257,)
    assert PRESETS["llama3-8b"].kv_bytes_per_token(2) == 2 * 32 * 8 * 128 * 2


def test_config_is_frozen_and_coerces_eos():
    cfg = ModelConfig(**{**PRESETS["tiny"].__dict__, "eos_token_ids": [257, 258]})
    assert cfg.eos_token_ids == (257, 258)
    with pytest.raises(Exception):
        cfg.vocab_size = 5
    with pytest.raises(ConfigError, match="head_dim must be even"):
        ModelConfig(**{**PRESETS["tiny"].__dict__, "head_dim": 31})
    with pytest.raises(ConfigError, match="llama3 rope scaling needs low_freq_factor"):
        RopeScaling("llama3", 8.0)
