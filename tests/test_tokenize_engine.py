"""The engine on canonically tokenized trees: a tree whose sampled inner node has a tail generates what
transformers generates from each sequence's whole-prompt encoding, tree and flat attention alike; `generate` on a
checkpoint without tokenizer.json names the way out."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from bpe_fixtures import plain, save_random_checkpoint, trained
from prompt_tree import Engine, PromptTree, SamplingParams

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_random_checkpoint(path, family="llama", bos_token_id=0, eos_token_id=1)
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return path


def test_engine_generates_from_the_canonical_ids(llama_dir):
    tree = PromptTree()
    p = tree.root.add("def solve(x):\n", samples=1, key="p")  # its own prompt ends in a merged "\n": a tail
    p.add("    return x\n", samples=2, key="a")
    p.add("    print(x)", samples=1, key="b")
    engine = Engine.from_pretrained(llama_dir, device="cpu", dtype="fp32", cuda_graphs=False)
    plan = engine.plan(tree)
    assert "p" in plan.tails and "llama family" in plan.tokenization
    params = SamplingParams(max_new_tokens=5, temperature=0.0)
    results = {mode: engine.generate(tree, params, attention=mode, progress=False) for mode in ("tree", "flat")}
    hf = transformers.LlamaForCausalLM.from_pretrained(llama_dir, torch_dtype=torch.float32).eval()
    tok = trained("byte_level")
    for key, text in (("p", "def solve(x):\n"), ("a", "def solve(x):\n    return x\n"),
                      ("b", "def solve(x):\n    print(x)")):
        ids = [0] + plain(tok, text)  # the BOS (the llama family's default), then the whole text's encoding
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False, eos_token_id=None,
                              pad_token_id=1)
        want = out[0, len(ids):].tolist()
        for mode, result in results.items():
            for completion in result[key]:
                assert completion.token_ids == want[: len(completion.token_ids)], (mode, key)
                assert len(completion.token_ids) == 5 or completion.finish_reason == "eos"


def test_generate_without_tokenizer_json_names_the_cli_way_out(llama_dir, tmp_path, capsys):
    from prompt_tree.cli import main

    bare = tmp_path / "weights"
    shutil.copytree(llama_dir, bare)
    (bare / "tokenizer.json").unlink()
    text = PromptTree()
    text.root.add("def f", samples=1, key="t")
    text.save(str(tmp_path / "text.json"))
    ids = PromptTree()
    ids.root.add([0, 5, 6], samples=1, key="i")
    ids.save(str(tmp_path / "ids.json"))
    common = ["--model", str(bare), "--out", str(tmp_path / "o.jsonl"), "--max-new-tokens", "2", "--device", "cpu",
              "--no-progress"]
    assert main(["generate", "--tree", str(tmp_path / "text.json")] + common) == 2
    err = capsys.readouterr().err
    assert "has no tokenizer.json" in err and "copy the checkpoint's tokenizer.json" in err
    assert "tokenizer=False" not in err
    assert main(["generate", "--tree", str(tmp_path / "ids.json")] + common) == 0  # token ids need no tokenizer
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1
