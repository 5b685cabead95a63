"""PromptTree API: building, keys, errors, serialization, graphs, from_prompts (radix)."""
from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from prompt_tree import Node, PromptTree, PromptTreeError


def small_tree() -> PromptTree:
    tree = PromptTree()
    system = tree.root.add("You are an expert competitive programmer.\n")
    shots = system.add("Example 1 ...\n", key="shots")
    for pid in (3, "17"):
        shots.add(f"QUESTION {pid}\n", samples=4, key=pid)
    system.add([5, 6], samples=1)
    return tree


def test_build_and_inspect():
    tree = small_tree()
    assert len(tree) == 5 and tree.num_samples == 9
    assert [n.key for n in tree.nodes()] == ["_0", "shots", "3", "17", "_0.1"]
    assert [n.key for n in tree.leaves()] == ["3", "17", "_0.1"]
    assert tree.node(3) is tree.node("3") and isinstance(tree.node("shots"), Node)
    assert 3 in tree and "nope" not in tree and True not in tree
    assert tree.root.is_root and tree.root.samples == 0 and tree.root.depth == -1
    assert tree.node("17").depth == 2 and [n.key for n in tree.node("17").path()] == ["_0", "shots", "17"]
    assert tree.node("_0.1").prompt == (5, 6)  # token ids are stored as a tuple
    assert tree.node("shots").subtree_samples() == 8
    with pytest.raises(KeyError, match="no node with key 'missing'"):
        tree.node("missing")
    assert PromptTree().leaves() == [] and "0 samples" in PromptTree().describe()


def test_numpy_ids_and_samples_are_accepted():
    tree = PromptTree()
    node = tree.root.add(np.array([1, 2], dtype=np.int64), samples=np.int32(3))
    assert node.prompt == (1, 2) and node.samples == 3 and type(node.samples) is int


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompt=[1], samples=-1), "samples must be >= 0"),
        (dict(prompt=[1], samples=1.5), "samples must be a non-negative int"),
        (dict(prompt=[1], samples=True), "samples must be a non-negative int"),
        (dict(prompt=[1, -3]), "token id at position 1 is negative"),
        (dict(prompt=[1, 2.0]), "token id at position 1 is 2.0"),
        (dict(prompt=[True]), "bools are refused"),
        (dict(prompt=b"bytes"), "token ids must be a list of ints"),
        (dict(prompt=[1], key=""), "reserved for the root"),
        (dict(prompt=[1], key=1.0), "key must be a str or an int"),
    ],
)
def test_add_errors(kwargs, message):
    prompt = kwargs.pop("prompt")
    with pytest.raises(PromptTreeError, match=message):
        PromptTree().root.add(prompt, **kwargs)


def test_duplicate_keys():
    tree = PromptTree()
    tree.root.add([1], key=7)
    with pytest.raises(PromptTreeError, match="duplicate key '7'.*pick another key"):
        tree.root.add([2], key="7")
    tree.root.add([3], key="_2")  # a user key that looks generated...
    with pytest.raises(PromptTreeError, match="generated key '_2' is already used.*pass key= explicitly"):
        tree.root.add([4])  # ...collides with the next generated one


def test_flatten_errors_name_the_node():
    with pytest.raises(PromptTreeError, match="asks for no samples"):
        PromptTree().flatten()
    tree = PromptTree()
    tree.root.add([1]).add([2])
    with pytest.raises(PromptTreeError, match="asks for no samples.*samples=n"):
        tree.flatten()
    with pytest.raises(PromptTreeError, match="node '_0' has a str prompt but flatten got no tokenizer"):
        small_tree().flatten()
    tree = PromptTree()
    tree.root.add([1, 2]).add([3, 4, 5], samples=1, key="long")
    with pytest.raises(PromptTreeError, match="node 'long'.*5 tokens, longer than max_len=4.*raise max_len"):
        tree.flatten(max_len=4)
    assert tree.flatten(max_len=5).num_sequences == 1
    tree = PromptTree()
    tree.root.add([], samples=2, key="empty")
    with pytest.raises(PromptTreeError, match="node 'empty' asks for 2 samples of an empty prompt"):
        tree.flatten()

    class NoEncode:
        pass

    with pytest.raises(PromptTreeError, match="has no encode"):
        small_tree().flatten(NoEncode())

    class BadEncode:
        def encode(self, text):
            return [0.5] * len(text)

    with pytest.raises(PromptTreeError, match="tokenizer output .* token id at position 0 is 0.5"):
        small_tree().flatten(BadEncode())


def test_dict_save_load_round_trip(tmp_path):
    tree = small_tree()
    d = tree.to_dict()
    assert json.loads(json.dumps(d)) == d
    again = PromptTree.from_dict(d)
    assert again.to_dict() == d
    path = tmp_path / "tree.json"
    tree.save(str(path))
    assert PromptTree.load(str(path)).to_dict() == d
    # new children get the same generated keys as in the original
    assert again.node("_0").add([1]).key == tree.node("_0").add([1]).key == "_0.2"
    with pytest.raises(PromptTreeError, match="parent 'zz' of node 'a' is not defined before it"):
        PromptTree.from_dict({"nodes": [{"key": "a", "parent": "zz", "prompt": [1]}]})
    with pytest.raises(PromptTreeError, match="unsupported format"):
        PromptTree.from_dict({"format": "other", "nodes": []})
    with pytest.raises(PromptTreeError, match="needs 'key' and 'prompt'"):
        PromptTree.from_dict({"nodes": [{"key": "a"}]})


def test_graph_round_trip_and_errors():
    tree = small_tree()
    g = tree.graph
    assert set(g.nodes) == {"", "_0", "shots", "3", "17", "_0.1"}
    assert list(g.successors("shots")) == ["3", "17"] and g.nodes["3"]["samples"] == 4
    assert PromptTree.from_graph(g).to_dict() == tree.to_dict()
    # A root with a prompt becomes the implicit root's only child; int node ids become str keys.
    h = nx.DiGraph()
    h.add_node(0, prompt=[1, 2])
    h.add_node(1, prompt=[3], samples=2)
    h.add_edge(0, 1)
    t = PromptTree.from_graph(h)
    assert [(n.key, n.depth) for n in t.nodes()] == [("0", 0), ("1", 1)]

    def graph(edges, prompts=True):
        g = nx.DiGraph(edges)
        for v in g.nodes:
            g.nodes[v]["prompt"] = [1]
        return g

    with pytest.raises(PromptTreeError, match=r"cycle \(.*\).*remove an edge"):
        PromptTree.from_graph(graph([("r", "a"), ("a", "b"), ("b", "a")]))
    with pytest.raises(PromptTreeError, match="2 roots.*add a common root"):
        PromptTree.from_graph(graph([("r", "a"), ("s", "b")]))
    with pytest.raises(PromptTreeError, match="node 'c' has 2 parents"):
        PromptTree.from_graph(graph([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c")]))
    with pytest.raises(PromptTreeError, match="node 'a' has no 'prompt'"):
        PromptTree.from_graph(nx.DiGraph([("r", "a")]))
    with pytest.raises(PromptTreeError, match="empty"):
        PromptTree.from_graph(nx.DiGraph())
    with pytest.raises(PromptTreeError, match="expected a networkx.DiGraph"):
        PromptTree.from_graph(nx.Graph())


def test_describe_after_flatten():
    tree = PromptTree()
    top = tree.root.add([1, 2, 3], key="top")
    top.add([4], samples=2, key="leaf")
    assert "3 tok" in tree.describe() and "prompt KV" not in tree.describe()
    tree.flatten()
    text = tree.describe()
    assert "leaf: ids [4] | 1 tok x2" in text and "prompt KV: shared 4 tokens vs flat 8 tokens" in text
    top.add([5], samples=1)  # the tree changed: the cached plan is no longer shown
    assert "prompt KV" not in tree.describe()


# ---- from_prompts ---------------------------------------------------------------------------------------------
def distinct_prefixes(prompts) -> int:
    return len({tuple(p[:k]) for p in prompts for k in range(1, len(p) + 1)})


@settings(max_examples=100, deadline=None)
@given(
    prompts=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=8), min_size=1, max_size=12),
    samples=st.integers(1, 3),
    min_shared=st.integers(1, 4),
)
def test_from_prompts_ids(prompts, samples, min_shared):
    tree = PromptTree.from_prompts(prompts, samples=samples, min_shared_tokens=min_shared)
    plan = tree.flatten()
    plan.check()
    assert plan.num_sequences == len(prompts) * samples
    for i, (key, s) in enumerate(plan.sequences):
        assert plan.prompt_ids(i) == prompts[int(key)]  # key = input index
    assert sorted(plan.sequences) == sorted((str(j), s) for j in range(len(prompts)) for s in range(samples))
    # Each input prompt's node is its own; a node shared by >= 2 prompts holds >= min_shared tokens.
    for node in tree.nodes():
        inputs_below = [n for n in [node, *_descendants(node)] if not n.key.startswith("_")]
        if len(inputs_below) >= 2:
            assert len(node.prompt) >= min_shared
    if min_shared == 1:  # full sharing: every distinct prefix token stored once
        assert plan.kv_tokens_shared == distinct_prefixes(prompts)
    else:
        assert plan.kv_tokens_shared >= distinct_prefixes(prompts)


def _descendants(node):
    for c in node.children:
        yield c
        yield from _descendants(c)


def test_from_prompts_shapes():
    prompts = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4], [1, 2], [9]]
    tree = PromptTree.from_prompts(prompts, samples=[1, 2, 1, 1, 1])
    outline = [(n.key, n.prompt, n.samples, n.parent.key) for n in tree.nodes()]
    assert outline == [
        ("3", (1, 2), 1, ""),  # prompt 3 ends where the shared part ends: the shared node is its node
        ("_0.0", (3,), 0, "3"),
        ("_0.0.0", (4,), 0, "_0.0"),  # prompts 0 and 2 are duplicates: 0-token children of a shared node
        ("0", (), 1, "_0.0.0"),
        ("2", (), 1, "_0.0.0"),
        ("1", (5,), 2, "_0.0"),
        ("4", (9,), 1, ""),
    ]
    # Short shared segments are copied into the nodes below instead.
    tree = PromptTree.from_prompts([[1, 2, 7, 7, 7], [1, 2, 8, 8, 8], [1, 3]], min_shared_tokens=3)
    assert [(n.key, n.prompt) for n in tree.nodes()] == [("0", (1, 2, 7, 7, 7)), ("1", (1, 2, 8, 8, 8)),
                                                         ("2", (1, 3))]
    tree = PromptTree.from_prompts([[1, 2, 7, 7, 7], [1, 2, 8, 8, 8]], min_shared_tokens=2, keys=["a", "b"])
    assert [(n.key, n.prompt) for n in tree.nodes()] == [("_0", (1, 2)), ("a", (7, 7, 7)), ("b", (8, 8, 8))]


def test_from_prompts_strings_and_errors():
    class Chars:
        def encode(self, text):
            return [0] + [ord(c) for c in text]  # a BOS, like Llama

    prompts = ["QUESTION: add\nANSWER:\n", "QUESTION: sub\nANSWER:\n", "QUESTION: add\nANSWER:\n"]
    tree = PromptTree.from_prompts(prompts, samples=2, tokenizer=Chars())
    plan = tree.flatten()
    plan.check()
    for i, (key, _) in enumerate(plan.sequences):
        assert plan.prompt_ids(i) == Chars().encode(prompts[int(key)])
    assert plan.levels[0][0].num_tokens == len("QUESTION: ") + 1
    # A trained BPE: each string is encoded whole after the BOS rule's prefix, as flatten encodes paths.
    from bpe_fixtures import plain, trained

    bpe = trained("byte_level", bos=True)
    texts = ["def solve(x):\n    return x\n", "def solve(x):\n    print(x)\n"]
    plan = PromptTree.from_prompts(texts, tokenizer=bpe).flatten()
    assert [plan.prompt_ids(i) for i in range(2)] == [[0] + plain(bpe, t) for t in texts]
    plan = PromptTree.from_prompts(texts, tokenizer=bpe, add_bos=False).flatten()
    assert [plan.prompt_ids(i) for i in range(2)] == [plain(bpe, t) for t in texts]
    with pytest.raises(PromptTreeError, match="prompt 0 .* is a str but no tokenizer"):
        PromptTree.from_prompts(["abc"])
    with pytest.raises(PromptTreeError, match="prompt 1 .* is empty"):
        PromptTree.from_prompts([[1], []])
    with pytest.raises(PromptTreeError, match="no prompt asks for samples"):
        PromptTree.from_prompts([[1]], samples=0)
    with pytest.raises(PromptTreeError, match="min_shared_tokens must be an int >= 1"):
        PromptTree.from_prompts([[1]], min_shared_tokens=0)
    with pytest.raises(PromptTreeError, match="2 keys for 1 prompts"):
        PromptTree.from_prompts([[1]], keys=["a", "b"])
    with pytest.raises(PromptTreeError, match="duplicate key 'a'"):
        PromptTree.from_prompts([[1], [2]], keys=["a", "a"])
