"""The tokenization boundary rule with a real byte-level BPE tokenizer trained here (tokenizers library)."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from prompt_tree import PromptTree, PromptTreeError

CORPUS = [
    "Hello world. Hello.world! The world is wide; hello there, world.",
    "def solve(x):\n    return x + 1\n",
    "world worldwide Hello.world",
] * 50


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    """Byte-level BPE with a prefix space and a Llama-like BOS added on every encode."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return tok


def ids(tok, text):
    return tok.encode(text).ids


def test_plan_follows_whole_path_encoding(bpe):
    # "world" alone encodes as " world" (prefix space) plus a BOS; after "Hello." it is the bare "world" token.
    tree = PromptTree()
    tree.root.add("Hello.", key="p").add("world", samples=2, key="c")
    plan = tree.flatten(bpe)
    plan.check()
    whole = ids(bpe, "Hello.world")
    naive = ids(bpe, "Hello.") + ids(bpe, "world")
    assert whole != naive  # the case the rule exists for
    assert plan.prompt_ids(0) == plan.prompt_ids(1) == whole
    assert plan.node_tokens["p"] == ids(bpe, "Hello.")  # the first node keeps its BOS ...
    assert bpe.token_to_id("<s>") not in plan.node_tokens["c"]  # ... later nodes get none
    assert plan.boundary_fallbacks == ()


def test_chain_equals_whole_text_where_no_fallback(bpe):
    # Boundaries placed where the pre-tokenizer splits anyway (before a space-led word): no fallback at all.
    texts = ["def solve(x):\n   ", " return x", " + 1\n"]
    tree = PromptTree()
    node = tree.root
    for t in texts:
        node = node.add(t)
    node.add("", samples=1, key="leaf")  # an empty string node: 0 tokens
    plan = tree.flatten(bpe)
    plan.check()
    assert plan.boundary_fallbacks == ()
    assert plan.prompt_ids(0) == ids(bpe, "".join(texts))
    assert plan.node_tokens["leaf"] == []
    # A boundary inside "\n    " (a merged whitespace token): the rule falls back there, and only there; the
    # fallback node starts a new text run, so the node below it continues "    return", not the whole text.
    texts = ["def solve(x):\n", "    return", " x + 1\n"]
    tree = PromptTree()
    node = tree.root
    for k, t in enumerate(texts):
        node = node.add(t, samples=1, key=f"n{k}")
    plan = tree.flatten(bpe)
    plan.check()
    assert plan.boundary_fallbacks == ("n1",)
    first = ids(bpe, texts[0])
    assert plan.prompt_ids(0) == first
    assert plan.prompt_ids(1) == first + ids(bpe, texts[1])[1:]
    assert plan.prompt_ids(2) == first + ids(bpe, texts[1] + texts[2])[1:]


def test_fallback_when_a_token_crosses_the_boundary(bpe):
    # "Hello wor" ends in "wor", but "Hello world" merges " world": the parent's ids are not a prefix.
    tree = PromptTree()
    tree.root.add("Hello wor", key="p").add("ld", samples=1, key="c")
    plan = tree.flatten(bpe)
    plan.check()
    assert ids(bpe, "Hello world")[: len(ids(bpe, "Hello wor"))] != ids(bpe, "Hello wor")
    # documented fallback: the node's own text, encoded alone, without the BOS, after the parent's ids
    assert plan.node_tokens["c"] == ids(bpe, "ld")[1:]
    assert plan.prompt_ids(0) == ids(bpe, "Hello wor") + ids(bpe, "ld")[1:]
    assert plan.boundary_fallbacks == ("c",)
    assert "fell back" in plan.describe()


def test_mixed_trees(bpe):
    bos = bpe.token_to_id("<s>")
    tree = PromptTree()
    system = tree.root.add([bos, 5, 6], key="ids")  # token ids first: taken literally
    q = system.add("Hello.", key="text")  # a text run after tokens: no second BOS
    q.add([7], samples=1, key="ids2")  # ids under text: parent's final ids, then these
    q.add("world", samples=1, key="text2")  # continues the run "Hello.world"
    text_first = tree.root.add("Hello.", key="t0")
    text_first.add([9], key="mid").add("world", samples=1, key="after_ids")  # a new run after ids
    plan = tree.flatten(bpe)
    plan.check()
    run = ids(bpe, "Hello.")[1:]
    assert plan.node_tokens["text"] == run
    assert plan.prompt_ids(0) == [bos, 5, 6] + run + [7]
    assert plan.prompt_ids(1) == [bos, 5, 6] + ids(bpe, "Hello.world")[1:]
    assert plan.prompt_ids(2) == ids(bpe, "Hello.") + [9] + ids(bpe, "world")[1:]


def test_transformers_tokenizer_is_accepted(bpe):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe)
    assert isinstance(hf.encode("Hello."), list)
    tree = PromptTree()
    tree.root.add("Hello.").add("world", samples=1)
    assert tree.flatten(hf).prompt_ids(0) == ids(bpe, "Hello.world")


def test_string_prompt_without_tokenizer_names_the_node():
    tree = PromptTree()
    tree.root.add([1]).add("text", samples=1, key="q7")
    with pytest.raises(PromptTreeError, match="node 'q7' has a str prompt but flatten got no tokenizer"):
        tree.flatten()


def test_describe_command(bpe, tmp_path, capsys):
    from prompt_tree.cli import main

    tok_path = tmp_path / "tokenizer.json"
    bpe.save(str(tok_path))
    tree = PromptTree()
    tree.root.add("Hello.", key="p").add("world", samples=3, key="c")
    tree_path = tmp_path / "tree.json"
    tree.save(str(tree_path))
    assert main(["describe", str(tree_path), "--tokenizer", str(tok_path), "--kv-shape", "2", "2", "4"]) == 0
    out = capsys.readouterr().out
    # Counted as generate counts: the checkpoint's BOS rule, not the tokenizer.json post-processor. With no config
    # beside it there is no BOS id, so no BOS.
    raw = lambda text: bpe.encode(text, add_special_tokens=False).ids  # noqa: E731
    n = len(raw("Hello.world"))
    assert f"c: 'world' | {n - len(raw('Hello.'))} tok x3" in out
    assert f"flat {3 * n} tokens = " in out and "GiB" in out
    # A Llama-like checkpoint names its BOS: the first node gets it, once per sequence, as Engine.plan does.
    (tmp_path / "config.json").write_text('{"bos_token_id": %d}' % bpe.token_to_id("<s>"))
    assert main(["describe", str(tree_path), "--tokenizer", str(tmp_path)]) == 0  # the directory works too
    out = capsys.readouterr().out
    assert f"p: 'Hello.' | {len(raw('Hello.')) + 1} tok" in out and f"flat {3 * (n + 1)} tokens" in out
    from prompt_tree.tokenizer import PromptEncoder, load_tokenizer

    plan = tree.flatten(PromptEncoder(load_tokenizer(tmp_path)))  # what Engine.plan flattens with
    assert plan.node_tokens["p"] == [bpe.token_to_id("<s>")] + raw("Hello.")
    assert f"flat {sum(len(plan.prompt_ids(i)) for i in range(3))} tokens" in out
    assert main(["describe", str(tree_path)]) == 2  # string prompts, no tokenizer
    assert "node 'p' has a text prompt; pass --tokenizer" in capsys.readouterr().err
    assert main(["describe", str(tree_path), "--tokenizer", str(tok_path), "--max-len", "2"]) == 2
    assert "longer than max_len=2" in capsys.readouterr().err
