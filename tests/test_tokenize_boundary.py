"""The canonical rule on named cases: whole-path encoding, what BPE merges keep from being shared, tails, mixed
trees, the tokenizer kinds flatten accepts, and `prompt-tree describe`."""
from __future__ import annotations

import json

import pytest

from bpe_fixtures import loss_bound, plain, trained
from prompt_tree import PromptTree, PromptTreeError
from prompt_tree.tokenize import PromptEncoder


@pytest.fixture(scope="module")
def bpe():
    return trained("byte_level", bos=True)


def test_every_sequence_is_its_whole_prompt_encoding(bpe):
    # "):\n" + "    return" merges across the boundary in byte-level BPE ("\n" + "    " -> one whitespace run).
    tree = PromptTree()
    top = tree.root.add("def solve(x):\n", key="p")
    top.add("    return x\n", samples=2, key="a")
    top.add("    print(x)\n", samples=1, key="b")
    plan = tree.flatten(bpe)
    plan.check()
    for i, (key, _) in enumerate(plan.sequences):
        whole = "def solve(x):\n" + tree.node(key).prompt
        assert plan.prompt_ids(i) == [0] + plain(bpe, whole)  # BOS (the post-processor's) + encode(whole text)
    parent = [0] + plain(bpe, "def solve(x):\n")
    assert [0] + plain(bpe, "def solve(x):\n    return x\n") != parent + plain(bpe, "    return x\n")  # merges
    # What the parent's subtree shares: all of its encoding but the merged tail, which each child holds itself.
    n = len(plan.node_tokens["p"])
    assert plan.node_tokens["p"] == parent[:n] and 1 <= len(parent) - n <= 2
    assert plan.unshared == {"p": len(parent) - n}
    assert "tokenization: BOS 0 first (the tokenizer.json post-processor (TemplateProcessing) starts with it)" \
        in plan.describe()


def test_stable_boundaries_lose_nothing(bpe):
    # Boundaries where the pre-tokenizer splits anyway (before a space-led word): everything is shared.
    texts = ["def solve", "(x", "):", " return", " x"]
    assert all(loss_bound(bpe, "".join(texts[:k]), texts[k]) == 0 for k in range(1, len(texts)))
    tree = PromptTree()
    node = tree.root
    for k, t in enumerate(texts):
        node = node.add(t, key=f"n{k}")
    node.add("", samples=1, key="leaf")  # an empty text node: 0 tokens
    node.add(" + 1", samples=1, key="plus")
    plan = tree.flatten(bpe)
    plan.check()
    assert plan.unshared == {} and plan.tails == {}
    assert plan.prompt_ids(0) == [0] + plain(bpe, "".join(texts))
    assert plan.prompt_ids(1) == [0] + plain(bpe, "".join(texts) + " + 1")
    assert plan.node_tokens["leaf"] == [] and plan.node_tokens["n0"][0] == 0  # BOS once, in the first node


def test_a_node_with_samples_and_an_unstable_end_gets_a_tail(bpe):
    # "def solve(x):\n" is sampled itself and continued by "    return x": its own prompt ends in tokens its child
    # encodes differently, so its samples read them from a tail node below it.
    tree = PromptTree()
    p = tree.root.add("def solve(x):\n", samples=2, key="p")
    p.add("    return x", samples=1, key="c")
    plan = tree.flatten(bpe)
    plan.check()
    assert plan.sequences == [("p", 0), ("p", 1), ("c", 0)]  # keys and sample order as always
    own, child = [0] + plain(bpe, "def solve(x):\n"), [0] + plain(bpe, "def solve(x):\n    return x")
    assert plan.prompt_ids(0) == plan.prompt_ids(1) == own and plan.prompt_ids(2) == child
    tail = plan.tails["p"]
    assert tail not in tree and plan.owner(tail) == "p" and plan.sequence_node(0) == tail
    assert plan.children["p"] == [tail, "c"] and plan.samples["p"] == 0 and plan.samples[tail] == 2
    assert [g.node for g in plan.path(0)] == ["p", tail] and [g.node for g in plan.path(2)] == ["p", "c"]
    assert plan.group("p").size == 3 and plan.group(tail).size == 2
    assert plan.kv_tokens_flat == 2 * len(own) + len(child)
    assert "own (not shared with its children)" in tree.describe(plan)
    sub = plan.subplan(1, 3)  # a cut through the tail's samples keeps a valid plan
    sub.check()
    assert sub.prompt_ids(0) == own and sub.prompt_ids(1) == child


def test_tail_keys_never_collide(bpe):
    tree = PromptTree()
    a = tree.root.add("x):\n", samples=1, key="a")
    a.add("    b", samples=1, key="a~own")  # a user key that looks like a's tail
    a.add("    c", samples=1)
    plan = tree.flatten(bpe)
    plan.check()
    assert plan.tails["a"] not in tree and len(set(plan.node_tokens)) == len(plan.node_tokens)


def test_mixed_trees(bpe):
    # Token-id nodes are literal and end a text run; a run after ids is encoded whole, without a second BOS.
    tree = PromptTree()
    system = tree.root.add([0, 5, 6], key="ids")
    q = system.add("def f", key="text")
    q.add([7], samples=1, key="ids2")  # ids under text: the text run's ids, then these
    q.add("(x):", samples=1, key="text2")  # continues the run "def f(x):"
    text_first = tree.root.add("def g", key="t0")
    text_first.add([9], key="mid").add("(y):", samples=1, key="after_ids")  # a new run after ids
    plan = tree.flatten(bpe)
    plan.check()
    assert plan.prompt_ids(0) == [0, 5, 6] + plain(bpe, "def f") + [7]
    assert plan.prompt_ids(1) == [0, 5, 6] + plain(bpe, "def f(x):")
    assert plan.prompt_ids(2) == [0] + plain(bpe, "def g") + [9] + plain(bpe, "(y):")


def test_tokenizer_kinds_agree(bpe, tmp_path):
    """A tokenizers.Tokenizer, a transformers tokenizer, prompt_tree's HFTokenizer and a bare encode(str)
    object all give the same sequences under the same BOS decision."""
    from prompt_tree.tokenizer import load_tokenizer

    tree = PromptTree()
    tree.root.add("def solve(x):\n").add("    return x\n", samples=1)
    want = [0] + plain(bpe, "def solve(x):\n    return x\n")

    class Bare:
        def encode(self, text):
            return [0] + plain(bpe, text)

    bpe.save(str(tmp_path / "tokenizer.json"))
    kinds = [bpe, Bare(), load_tokenizer(tmp_path)]
    transformers = pytest.importorskip("transformers")
    kinds.append(transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>"))
    for tok in kinds:
        assert tree.flatten(tok).prompt_ids(0) == want, type(tok).__name__
        assert tree.flatten(tok, add_bos=False).prompt_ids(0) == want[1:], type(tok).__name__


def test_errors_name_the_node_and_the_fix(bpe):
    tree = PromptTree()
    tree.root.add([1]).add("text", samples=1, key="q7")
    with pytest.raises(PromptTreeError, match="node 'q7' has a str prompt but flatten got no tokenizer"):
        tree.flatten()
    with pytest.raises(PromptTreeError, match="add_bos= needs a tokenizer"):
        tree.flatten(add_bos=True)
    with pytest.raises(PromptTreeError, match="add_bos must be True, False or None"):
        tree.flatten(bpe, add_bos="yes")
    with pytest.raises(PromptTreeError, match="names no BOS token"):
        tree.flatten(trained("byte_level"), add_bos=True)  # no template, nothing names a BOS
    with pytest.raises(PromptTreeError, match="has no encode"):
        PromptEncoder(object())


def test_describe_command(bpe, tmp_path, capsys):
    from prompt_tree.cli import main

    tok_path = tmp_path / "tokenizer.json"
    bpe.save(str(tok_path))
    tree = PromptTree()
    tree.root.add("def solve(x):\n", key="p").add("    return x\n", samples=3, key="c")
    tree_path = tmp_path / "tree.json"
    tree.save(str(tree_path))
    assert main(["describe", str(tree_path), "--tokenizer", str(tok_path), "--kv-shape", "2", "2", "4"]) == 0
    out = capsys.readouterr().out
    plan = tree.flatten(bpe)
    n = len(plan.prompt_ids(0))
    assert f"flat {3 * n} tokens = " in out and "GiB" in out
    assert f"p: 'def solve(x):\\n' | {len(plan.node_tokens['p'])} tok, {plan.unshared['p']} more not shared" in out
    assert f"c: '    return x\\n' | {len(plan.node_tokens['c'])} tok x3" in out
    assert "tokenization: BOS 0 first (the tokenizer.json post-processor" in out
    # The checkpoint's files decide before the post-processor; --no-bos before both.
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    assert main(["describe", str(tree_path), "--tokenizer", str(tmp_path)]) == 0  # the directory works too
    out = capsys.readouterr().out
    assert "no BOS (tokenizer_config.json add_bos_token=false)" in out and f"flat {3 * (n - 1)} tokens" in out
    assert main(["describe", str(tree_path), "--tokenizer", str(tmp_path), "--bos"]) == 0  # the template names it
    assert "BOS 0 first (add_bos=True / --bos)" in capsys.readouterr().out
    assert main(["describe", str(tree_path), "--tokenizer", str(tok_path), "--no-bos"]) == 0
    assert "no BOS (add_bos=False / --no-bos)" in capsys.readouterr().out
    assert main(["describe", str(tree_path)]) == 2  # string prompts, no tokenizer
    assert "node 'p' has a text prompt; pass --tokenizer" in capsys.readouterr().err
    assert main(["describe", str(tree_path), "--no-bos"]) == 2
    assert "--no-bos applies to tokenizing text; pass --tokenizer" in capsys.readouterr().err
    assert main(["describe", str(tree_path), "--tokenizer", str(tok_path), "--max-len", "2"]) == 2
    assert "longer than max_len=2" in capsys.readouterr().err
    assert main(["describe", str(tree_path), "--tokenizer", str(tok_path), "--chat"]) == 2
    assert "has none (no chat_template in tokenizer_config.json" in capsys.readouterr().err


def test_describe_preview_quotes_match_and_a_closed_pipe_is_quiet(bpe, tmp_path):
    import ast
    import subprocess
    import sys

    from prompt_tree.outline import preview

    tree = PromptTree()
    tree.root.add("it's " * 20, samples=1, key="q")  # repr picks double quotes for a text with a '
    tree.root.add("line\n" * 20, samples=1, key="n")
    for key in ("q", "n"):
        shown = preview(tree.node(key))
        assert shown.endswith("...")
        start = ast.literal_eval(shown[:-3])  # a complete literal: its quotes match
        assert tree.node(key).prompt.startswith(start) and len(start) > 10
    # `prompt-tree describe ... | head -1`: the reader closes the pipe while output is still coming (more than a
    # pipe buffer of it); the command ends quietly, with no BrokenPipeError traceback.
    for i in range(4000):
        tree.root.add([1, 2], samples=1, key=f"k{i}")
    path = tmp_path / "tree.json"
    tree.save(str(path))
    bpe.save(str(tmp_path / "tokenizer.json"))
    cmd = [sys.executable, "-m", "prompt_tree.cli", "describe", str(path), "--max-children", "5000", "--tokenizer",
           str(tmp_path)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().startswith(b"PromptTree:")
    p.stdout.close()  # as `head -1` does
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err and p.returncode == 0
