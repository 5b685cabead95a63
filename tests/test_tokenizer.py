"""Tokenizers: byte tokenizer, HF tokenizer.json wrapper, BOS rules, incremental decoding."""
from __future__ import annotations

import json
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prompt_tree.tokenizer import (
    ByteTokenizer, HFTokenizer, Tokenizer, TokenizerError, decode_suffix, load_tokenizer,
)

tokenizers = pytest.importorskip("tokenizers")

TEXTS = ["", "a", "hello world", "def f(x):\n    return x  # ok\n", "naïve café ∑ 日本語 🙂", "  leading\ttabs\n\n"]


def _train(path, post_bos=True, with_config=True):
    """Byte-level BPE trained on a little code; specials <unk>=0, <s>=1, </s>=2."""
    from tokenizers import Tokenizer as HFTok, decoders, models, pre_tokenizers, processors, trainers

    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["def solve(n):\n    return sum(range(n))\n", "print('hello world')"] * 30, trainer)
    if post_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(os.path.join(path, "tokenizer.json"))
    if with_config:
        with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
            json.dump({"bos_token": {"content": "<s>"}, "eos_token": "</s>"}, f)


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    _train(path)
    return load_tokenizer(path)


# ----- byte tokenizer


def test_byte_tokenizer_round_trip_and_specials():
    tok = ByteTokenizer()
    assert isinstance(tok, Tokenizer)
    assert (tok.vocab_size, tok.bos_id, tok.eos_ids, tok.pad_id) == (259, 256, (257,), 258)
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == list(text.encode("utf-8")) and tok.decode(ids) == text
        assert tok.encode(text, add_bos=True) == [256] + ids
    assert tok.decode([256, 104, 105, 257, 258]) == "hi"  # specials skipped


def test_byte_tokenizer_invalid_utf8_and_range():
    tok = ByteTokenizer()
    assert tok.decode([0xE6, 0x97]) == "\ufffd"  # a truncated 3-byte character
    assert tok.decode([0xFF, 65]) == "\ufffdA"
    with pytest.raises(TokenizerError, match="token id 259 is outside"):
        tok.decode([259])
    with pytest.raises(TokenizerError, match="token id -1 is outside"):
        tok.decode([-1])


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_tokenizer_round_trip_property(text):
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(text, add_bos=True)) == text


# ----- HF tokenizer


def test_hf_tokenizer_round_trip(hf_tok):
    assert isinstance(hf_tok, HFTokenizer) and isinstance(hf_tok, Tokenizer)
    assert hf_tok.bos_id == 1 and hf_tok.eos_ids == (2,) and hf_tok.vocab_size <= 400
    for text in TEXTS:  # byte-level BPE covers any text, trained on it or not
        ids = hf_tok.encode(text)
        assert 1 not in ids and hf_tok.decode(ids) == text
        assert hf_tok.encode(text, add_bos=True) == [1] + ids
    # merges were learned: a training phrase takes fewer tokens than bytes
    assert len(hf_tok.encode("def solve(n):")) < len("def solve(n):")
    assert hf_tok.decode([1] + hf_tok.encode("abc") + [2]) == "abc"  # specials skipped


def test_adds_bos_detection(tmp_path):
    assert load_tokenizer(_dir(tmp_path, "a", True)).adds_bos
    no_post = load_tokenizer(_dir(tmp_path, "b", False))
    assert not no_post.adds_bos and no_post.bos_id == 1  # a BOS exists but the family does not prepend it


def _dir(tmp_path, name, post_bos):
    path = tmp_path / name
    path.mkdir()
    _train(path, post_bos=post_bos)
    return path


def test_bos_eos_from_model_configs_win(tmp_path):
    _train(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 0}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    tok = load_tokenizer(tmp_path)
    assert tok.bos_id == 1 and tok.eos_ids == (2, 0)
    assert load_tokenizer(tmp_path / "tokenizer.json", bos_id=None, eos_ids=[7]).eos_ids == (7,)


def test_no_bos_family(tmp_path):
    _train(tmp_path, post_bos=False, with_config=False)
    tok = load_tokenizer(tmp_path)
    assert tok.bos_id is None and tok.eos_ids == () and not tok.adds_bos
    assert tok.encode("hi", add_bos=True) == tok.encode("hi")  # nothing to prepend


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json at"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read tokenizer"):
        load_tokenizer(tmp_path)


# ----- incremental decoding


@pytest.mark.parametrize("which", ["byte", "hf"])
def test_decode_suffix_matches_full_decode(which, hf_tok):
    tok = ByteTokenizer() if which == "byte" else hf_tok
    rng = random.Random(0)
    for text in TEXTS + ["x" * 50 + "日本語🙂" * 5 + " return n\n" * 3]:
        ids = tok.encode(text)
        for prefix_len in range(len(ids) + 1):
            window = rng.choice([0, 1, 3, 8])
            got = decode_suffix(tok, ids, prefix_len, window=window)
            # the definition: what the new tokens add to the text decoded so far (a character split at the cut
            # shows as U+FFFD in the prefix's text; the same formula then defines the answer)
            assert got == tok.decode(ids)[len(tok.decode(ids[:prefix_len])):]


def test_decode_suffix_reassembles_text_at_character_boundaries():
    tok = ByteTokenizer()
    text = "añ日🙂z"
    ids = tok.encode(text)
    cuts = [0] + [len(text[:i].encode()) for i in range(1, len(text) + 1)]
    pieces = [decode_suffix(tok, ids[:b], a) for a, b in zip(cuts, cuts[1:])]
    assert "".join(pieces) == text
    with pytest.raises(ValueError, match="prefix_len 9 outside"):
        decode_suffix(tok, ids[:3], 9)
