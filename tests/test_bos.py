"""The BOS rule, case by case (prompt_tree.bos): option > tokenizer_config.json > post-processor > family."""
from __future__ import annotations

import json

import pytest

from bpe_fixtures import plain, trained
from prompt_tree import PromptTree, PromptTreeError
from prompt_tree.bos import BosRule, BosRuleError
from prompt_tree.tokenizer import ByteTokenizer, load_tokenizer

BOS = 0  # "<s>" in the trained vocabulary
TEXT = "def solve(x):\n    return x\n"


def checkpoint(tmp_path, name, *, template=False, tokenizer_config=None, model_type=None, bos_token_id=None):
    """A tokenizer directory: tokenizer.json (with or without a <s> template), optional tokenizer_config.json and
    config.json."""
    path = tmp_path / name
    path.mkdir()
    trained("byte_level", bos=template).save(str(path / "tokenizer.json"))
    if tokenizer_config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if model_type is not None or bos_token_id is not None:
        config = {"model_type": model_type} if model_type else {}
        if bos_token_id is not None:
            config["bos_token_id"] = bos_token_id
        (path / "config.json").write_text(json.dumps(config))
    return load_tokenizer(path)


def first_ids(tok, **kwargs):
    tree = PromptTree()
    tree.root.add(TEXT, samples=1)
    plan = tree.flatten(tok, **kwargs)
    plan.check()
    assert plan.prompt_ids(0)[-len(plain(trained("byte_level"), TEXT)):] == plain(trained("byte_level"), TEXT)
    return plan.prompt_ids(0), plan.tokenization


@pytest.mark.parametrize("case, kwargs, bos, source", [
    # 2. tokenizer_config.json decides first: add_bos_token either way, bos_token naming the token ...
    ("add_bos_token=true", dict(tokenizer_config={"add_bos_token": True, "bos_token": "<s>"}, model_type="qwen2"),
     True, "tokenizer_config.json add_bos_token=true"),
    ("add_bos_token=false beats a template", dict(template=True, tokenizer_config={"add_bos_token": False},
                                                  model_type="llama"), False, "add_bos_token=false"),
    ("add_bos_token=true, id from config.json", dict(tokenizer_config={"add_bos_token": True}, bos_token_id=BOS),
     True, "add_bos_token=true"),
    # ... or bos_token null: the checkpoint has no BOS (Qwen2.5's tokenizer_config.json)
    ("bos_token=null", dict(template=True, tokenizer_config={"bos_token": None}, model_type="llama"), False,
     "bos_token=null"),
    # 3. then a template post-processor
    ("template", dict(template=True, model_type="qwen2"), True, "post-processor (TemplateProcessing) starts"),
    ("template, bos_token named", dict(template=True, tokenizer_config={"bos_token": "<s>"}), True,
     "post-processor"),
    # 4. then the family: Meta's Llama 3 tokenizer.json shipped without its template (issue 14) still gets BOS
    ("llama 3 without a template", dict(tokenizer_config={"bos_token": "<s>"}, model_type="llama"), True,
     "the llama family's default"),
    ("mistral", dict(model_type="mistral", bos_token_id=BOS), True, "the mistral family's default"),
    ("qwen2", dict(model_type="qwen2", bos_token_id=BOS), False, "the qwen2 family's default"),
    # nothing says anything: no BOS, and the rule says why
    ("bare tokenizer.json", dict(), False, "no rule applies"),
])
def test_checkpoint_rule_order(tmp_path, case, kwargs, bos, source):
    tok = checkpoint(tmp_path, "ckpt", **kwargs)
    ids, said = first_ids(tok)
    assert (ids[0] == BOS) == bos and ids.count(BOS) == int(bos), case
    assert source in said and source in str(tok.bos_rule), (case, said)
    assert tok.adds_bos == bos
    # 1. an explicit option beats every rule
    off, said_off = first_ids(tok, add_bos=False)
    assert off == plain(trained("byte_level"), TEXT) and "no BOS (add_bos=False / --no-bos)" in said_off
    if case == "bare tokenizer.json":  # nothing names a BOS to add
        with pytest.raises(BosRuleError, match="names no BOS token"):
            first_ids(tok, add_bos=True)
        return
    on, said_on = first_ids(tok, add_bos=True)
    assert on == [BOS] + off and "add_bos=True / --bos" in said_on


def test_a_wanted_bos_without_an_id_fails_naming_the_way_out(tmp_path):
    tok = checkpoint(tmp_path, "noid", model_type="llama")  # family says yes; nothing names the BOS
    assert tok.bos_rule.problem is not None
    with pytest.raises(PromptTreeError, match="no BOS id is known.*--no-bos"):
        first_ids(tok)
    assert first_ids(tok, add_bos=False)[0] == plain(trained("byte_level"), TEXT)
    with pytest.raises(BosRuleError, match="names no BOS token"):
        first_ids(tok, add_bos=True)


def test_bos_only_where_a_sequence_starts():
    # A text run after a token-id node gets no BOS: the sequence has started (its ids carry any BOS they want).
    tree = PromptTree()
    tree.root.add([7, 8]).add("abc", samples=1)
    tree.root.add("abc", samples=1)
    plan = tree.flatten(ByteTokenizer())
    assert plan.prompt_ids(0) == [7, 8, 97, 98, 99] and plan.prompt_ids(1) == [256, 97, 98, 99]
    assert "the byte tokenizer (tiny preset)" in plan.tokenization


def test_rule_values():
    assert str(BosRule((5,), "x")) == "BOS 5 first (x)" and str(BosRule((), "y")) == "no BOS (y)"
    assert BosRule((5,), "x").ids() == [5] and not BosRule((), "y").adds


def test_engine_and_generate_take_the_option(tmp_path, capsys):
    from prompt_tree import Engine
    from prompt_tree.cli import main

    tree = PromptTree()
    tree.root.add("hi", samples=1, key="a")
    assert Engine.random("tiny").plan(tree).prompt_ids(0) == [256, 104, 105]
    assert Engine.random("tiny", add_bos=False).plan(tree).prompt_ids(0) == [104, 105]
    with pytest.raises(TypeError, match="add_bos must be a bool or None"):
        Engine.random("tiny", add_bos=1)
    path = tmp_path / "tree.json"
    tree.save(str(path))
    out = tmp_path / "out.jsonl"
    args = ["generate", "--model", "tiny", "--tree", str(path), "--out", str(out), "--max-new-tokens", "2",
            "--device", "cpu", "--no-progress"]
    assert main(args + ["--no-bos"]) == 0
    assert "tokenization: no BOS (add_bos=False / --no-bos)" in capsys.readouterr().err
    assert main(args) == 0
    assert "tokenization: BOS 256 first (the byte tokenizer" in capsys.readouterr().err
