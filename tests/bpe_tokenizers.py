"""Real BPE tokenizers trained in the test process (no download): byte-level (GPT-2 / Llama 3 style) and
sentencepiece style (Metaspace pre-tokenizer, byte fallback <0xNN> tokens with "\n" among them, Llama 2's decoder
chain), plus a plain Metaspace decoder. Trained on code-like text with multi-byte characters and the APPS markers, so merges span
"\\n\\n", "QUESTION", ":" and CJK / emoji bytes."""
from __future__ import annotations

import functools
import json
import random

from prompt_tree.tokenizer import HFTokenizer

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["def", "return", "for", "in", "range", "if", "print", "input", "int", "x", "ans", "n", "QUESTION",
             "ANSWER", "café", "日本語", "テスト", "🙂", "👩‍💻", "中文", "naïve", "→", "Ω"]
    out = []
    for _ in range(n):
        line = " ".join(rng.choice(words) for _ in range(rng.randrange(2, 9)))
        out.append(line + rng.choice(["\n", "\n\n", ":\n", "\n\n\n\n", "\nQUESTION:\n", "\nANSWER:\n", "  "]))
    return out


@functools.lru_cache(maxsize=None)
def byte_level_bpe(vocab_size: int = 800) -> HFTokenizer:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok.add_tokens([AddedToken("<fim_middle>", special=False)])  # a non-special added token decodes as text
    return HFTokenizer(tok, tok.token_to_id("<s>"), (tok.token_to_id("</s>"),))


def _sentencepiece_like(vocab_size: int, decoder):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    # trained without newlines, so "\n" is the byte token <0x0A>, as in Llama 2 and CodeLlama
    tok.train_from_iterator([line.replace("\n", " ") for line in corpus()], trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False))
    # byte-fallback tokens are ordinary vocabulary entries, as in Llama 2's tokenizer.json
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    out = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>"))
    out.pre_tokenizer = tok.pre_tokenizer
    out.add_special_tokens(SPECIALS)
    out.decoder = decoder
    return HFTokenizer(out, out.token_to_id("<s>"), (out.token_to_id("</s>"),))


@functools.lru_cache(maxsize=None)
def sentencepiece_bpe(vocab_size: int = 500) -> HFTokenizer:
    """Llama 2 / CodeLlama's decoder chain: Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)."""
    from tokenizers import decoders

    return _sentencepiece_like(vocab_size, decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]))


@functools.lru_cache(maxsize=None)
def metaspace_bpe(vocab_size: int = 500) -> HFTokenizer:
    """A Metaspace decoder (no byte fallback in the decoder: <0xNN> tokens decode literally)."""
    from tokenizers import decoders

    return _sentencepiece_like(vocab_size, decoders.Metaspace(replacement="▁", prepend_scheme="always"))
