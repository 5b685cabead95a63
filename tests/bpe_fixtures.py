"""BPE tokenizers trained here on code-like text (no downloads), and the helpers the tokenization tests share.

Two families: byte-level BPE with the GPT-2 pre-tokenizer regex (Llama 3, Qwen2 style) and sentencepiece-style BPE
with a Metaspace pre-tokenizer and byte fallback (Llama 2, CodeLlama, Mistral style). Each optionally has a
TemplateProcessing post-processor that puts <s> first, as a Llama tokenizer.json does.
"""
from __future__ import annotations

import random
from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from prompt_tree.prefix import common_prefix_len

# Pieces of Python-ish text; boundaries between them land inside and between merges of every kind.
CODE_PIECES = (
    "def", " solve", "(", "x", ")", ":", "\n", "    ", "  ", " ", "\n\n", "return", " x", " +", " 1", "print",
    "('", "hello", "')", "é", "日本", "🙂", "\t", "==", "=", "[", "]", "0", "12", "345", ",", ".", "#", " #",
    '"""', "n", "_", "ab", "QUESTION:", "ANSWER:", "\nANSWER:\n", "for", " in", " range", "):\n",
)
SPECIALS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]


def code_text(rng: random.Random, pieces: int) -> str:
    return "".join(rng.choice(CODE_PIECES) for _ in range(pieces))


def _corpus() -> list[str]:
    return [code_text(random.Random(i), 40) for i in range(300)]


@lru_cache(maxsize=None)
def _trained(kind: str) -> str:
    """The tokenizer.json text of a trained tokenizer (cached: training takes a fraction of a second)."""
    if kind == "byte_level":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "metaspace":
        tok = Tokenizer(models.BPE(byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
        # the 256 byte tokens, so that any character encodes (byte fallback); the trainer registers them as special
        # tokens, so decode them with skip_special_tokens=False
        trainer = trainers.BpeTrainer(vocab_size=900, show_progress=False,
                                      special_tokens=SPECIALS + [f"<0x{b:02X}>" for b in range(256)])
    else:
        raise ValueError(kind)
    tok.train_from_iterator(_corpus(), trainer)
    return tok.to_str()


def trained(kind: str, bos: bool = False) -> Tokenizer:
    """A fresh copy of a trained tokenizer; bos: a post-processor template that starts sequences with <s>."""
    tok = Tokenizer.from_str(_trained(kind))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tok


def plain(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def loss_bound(tok: Tokenizer, a: str, b: str) -> int:
    """An upper bound, from the pre-tokenizer alone, on how many ids at the end of encode(a) encode(a + b) does
    not share: BPE works inside pre-tokens, so the ids of every pre-token that a and a + b split alike (from the
    start) agree; only the ids of a after the last such pre-token can change. 0 means the boundary is stable."""
    split_a = [span for _, span in tok.pre_tokenizer.pre_tokenize_str(a)]
    split_ab = [span for _, span in tok.pre_tokenizer.pre_tokenize_str(a + b)]
    agreed = 0
    for x, y in zip(split_a, split_ab):
        if x != y:
            break
        agreed = x[1]
    return sum(1 for _, end in tok.encode(a, add_special_tokens=False).offsets if end > agreed)


def loss(parent_ids: list[int], child_ids: list[int]) -> int:
    """How many ids at the end of the parent's encoding the child's does not share."""
    return len(parent_ids) - common_prefix_len(parent_ids, child_ids)


def save_random_checkpoint(path, kind: str = "byte_level", family: str = "qwen2", **config) -> None:
    """A small random-weight checkpoint (transformers' save_pretrained) whose vocabulary is the trained
    tokenizer's, with that tokenizer.json beside it; `config` goes to the model config (eos_token_id, ...)."""
    import torch
    import transformers

    torch.manual_seed(0)
    shape = dict(vocab_size=trained(kind).get_vocab_size(), hidden_size=32, intermediate_size=64,
                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096)
    if family == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**shape, tie_word_embeddings=True, **config))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape, **config))
    model.save_pretrained(path)
    trained(kind).save(str(path / "tokenizer.json"))
