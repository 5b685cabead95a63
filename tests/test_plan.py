"""Plan invariants: flatten against a slow reference on random trees, subplan/split, memory, errors."""
from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import given, settings, strategies as st

from prompt_tree import Group, Plan, PromptTree, PromptTreeError
from prompt_tree.plan import bytes_per_token

BOS = 1000


class ByteTokenizer:
    """Byte-level encoding (the boundary prefix always holds), optionally adding a BOS like Llama's."""

    def __init__(self, bos: bool):
        self.bos = bos

    def encode(self, text: str) -> list[int]:
        return ([BOS] if self.bos else []) + list(text.encode("utf-8"))


# ---- random trees -------------------------------------------------------------------------------------------------
@st.composite
def tree_specs(draw):
    """A nested spec [(prompt, samples, children)] of depth 1-5: token-id and str prompts of 0, 1 or a few units,
    inner nodes with samples, unequal branching. Top-level prompts are non-empty so no sequence is empty."""
    max_depth = draw(st.integers(1, 5))
    budget = [draw(st.integers(1, 25))]  # total nodes

    def prompt(top: bool):
        n = draw(st.sampled_from([1, 1, 2, 5]) if top else st.sampled_from([0, 1, 1, 2, 5]))
        if draw(st.booleans()):
            return draw(st.text(alphabet="ab é\n", min_size=n, max_size=n))
        return draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))

    def level(depth: int):
        out = []
        for _ in range(draw(st.integers(1, 3))):
            if budget[0] <= 0:
                break
            budget[0] -= 1
            kids = level(depth + 1) if depth + 1 < max_depth and draw(st.booleans()) else []
            out.append((prompt(depth == 0), draw(st.sampled_from([0, 0, 1, 2, 3])), kids))
        return out

    spec = level(0)
    if not any_samples(spec):
        first = spec[0]
        spec[0] = (first[0], 1, first[2])
    return spec


def any_samples(spec) -> bool:
    return any(s > 0 or any_samples(kids) for _, s, kids in spec)


def build(spec) -> PromptTree:
    tree = PromptTree()

    def add(parent, items):
        for prompt, samples, kids in items:
            add(parent.add(prompt, samples=samples), kids)

    add(tree.root, spec)
    return tree


# ---- the slow reference -------------------------------------------------------------------------------------------
def reference(tree: PromptTree, bos: bool):
    """Sequence order and each sequence's prompt, straight from the definitions (recursion, no shared state)."""

    def node_ids(node) -> list[int]:
        return list(node.prompt.encode("utf-8")) if node.is_text else list(node.prompt)

    def prompt_of(node) -> list[int]:
        path = node.path()
        ids = [BOS] if bos and path[0].is_text else []
        for n in path:
            ids += node_ids(n)
        return ids

    def order(node) -> list:
        out = [(node, s) for s in range(node.samples)]
        for c in node.children:
            out += order(c)
        return out

    seqs = order(tree.root)
    return [(n.key, s) for n, s in seqs], [prompt_of(n) for n, _ in seqs]


def ancestors_or_self(tree, key):
    return {n.key for n in tree.node(key).path()}


@settings(max_examples=100, deadline=None)
@given(spec=tree_specs(), bos=st.booleans())
def test_flatten_matches_reference(spec, bos):
    tree = build(spec)
    plan = tree.flatten(ByteTokenizer(bos))
    plan.check()
    want_seqs, want_prompts = reference(tree, bos)
    assert plan.num_sequences == tree.num_samples == len(want_seqs)
    assert plan.sequences == want_seqs
    for i, ids in enumerate(want_prompts):
        assert plan.prompt_ids(i) == ids
        assert plan.prompt_len(i) == len(ids)
        path = plan.path(i)
        assert [g.node for g in path] == [n.key for n in tree.node(plan.sequence_node(i)).path()]
        assert [g.depth for g in path] == list(range(len(path)))
    # Every group covers exactly the sequences whose node is in its subtree; dropped nodes have no sample below.
    for node in tree.nodes():
        covered = [i for i, (k, _) in enumerate(want_seqs) if node.key in ancestors_or_self(tree, k)]
        if covered:
            g = plan.group(node.key)
            assert (g.start, g.stop) == (covered[0], covered[-1] + 1) and g.size == len(covered)
            assert plan.depth_of(node.key) == node.depth
        else:
            assert node.key not in plan.node_tokens
    assert [g for g in plan.groups()] == [g for level in plan.levels for g in level]
    assert plan.kv_tokens_shared == sum(len(t) for t in plan.node_tokens.values())
    assert plan.kv_tokens_flat == sum(len(p) for p in want_prompts)
    # Round trips keep the plan.
    for other in (PromptTree.from_dict(tree.to_dict()), PromptTree.from_graph(tree.graph)):
        p2 = other.flatten(ByteTokenizer(bos))
        assert p2.sequences == plan.sequences and p2.levels == plan.levels and p2.node_tokens == plan.node_tokens


@settings(max_examples=100, deadline=None)
@given(spec=tree_specs(), data=st.data())
def test_subplan_and_split(spec, data):
    tree = build(spec)
    plan = tree.flatten(ByteTokenizer(False))
    n = plan.num_sequences
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    sub = plan.subplan(start, stop)
    sub.check()
    assert sub.num_sequences == stop - start and sub.source_range == (start, stop)
    for j in range(stop - start):
        assert sub.sequences[j] == plan.sequences[start + j]
        assert sub.prompt_ids(j) == plan.prompt_ids(start + j)
    # A subplan of a subplan keeps the original coordinates.
    if stop - start > 1:
        subsub = sub.subplan(1, stop - start)
        subsub.check()
        assert subsub.source_range == (start + 1, stop)
    budget = data.draw(st.integers(1, n + 1))
    ranges = plan.split(budget)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a < b and b - a <= budget for a, b in ranges)
    assert all(ranges[k][1] == ranges[k + 1][0] for k in range(len(ranges) - 1))
    cuts = {a for a, _ in ranges[1:]}
    for g in plan.groups():  # a subtree that fits the budget is never cut
        if g.size <= budget:
            assert not any(g.start < c < g.stop for c in cuts), (g, ranges)
    for a, b in ranges:
        plan.subplan(a, b).check()


def test_apps_shape_and_memory():
    tree = PromptTree()
    shots = tree.root.add(list(range(20)), key="system").add(list(range(100)), key="shots")
    for pid in range(5):
        shots.add([7] * (pid + 1), samples=4, key=pid)
    plan = tree.flatten()
    plan.check()
    assert [len(level) for level in plan.levels] == [1, 1, 5]
    assert plan.levels[2][3] == Group("3", 2, 12, 16, 4)
    assert plan.parent == {"system": None, "shots": "system", **{str(p): "shots" for p in range(5)}}
    assert plan.kv_tokens_shared == 120 + 15
    assert plan.kv_tokens_flat == sum(4 * (120 + p + 1) for p in range(5))
    report = plan.memory_report(bytes_per_token(32, 8, 128))
    assert report.bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert report.saved_tokens == plan.kv_tokens_flat - plan.kv_tokens_shared
    assert "GiB" in str(report) and "flat" in plan.describe()
    assert plan.split(8) == [(0, 8), (8, 16), (16, 20)]
    # nodes of 4 own samples exceed the budget: their samples are split, filling each range
    assert plan.split(3) == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15), (15, 18), (18, 20)]


def test_awkward_shapes():
    tree = PromptTree()
    chain = tree.root.add([1])
    for _ in range(300):  # a leaf behind a long single chain (deeper than the recursion limit would like)
        chain = chain.add([2])
    chain.add([], samples=1, key="deep")
    tree.root.add([3]).add([4], samples=2, key="shallow")  # unequal depths
    plan = tree.flatten()
    plan.check()
    assert len(plan.levels) == 302 and plan.prompt_len(0) == 301 and plan.depth_of("shallow") == 1
    one = PromptTree()
    one.root.add([5], samples=1)
    p1 = one.flatten()
    p1.check()
    assert p1.num_sequences == 1 and p1.prompt_ids(0) == [5] and p1.split(1) == [(0, 1)]


def test_dropped_subtrees_are_not_tokenized():
    tree = PromptTree()
    top = tree.root.add([1, 2], samples=1)
    top.add("a string, but nothing below asks for samples")  # would need a tokenizer
    plan = tree.flatten()
    plan.check()
    assert list(plan.node_tokens) == [top.key]
    assert "not in plan" in tree.describe()


def test_check_catches_broken_plans():
    tree = PromptTree()
    a = tree.root.add([1], samples=2, key="a")
    a.add([2], samples=1, key="b")
    plan = tree.flatten()
    bad_group = Plan(plan.sequences, [[Group("a", 0, 0, 3, 1)], [Group("b", 1, 1, 3, 1)]], plan.node_tokens,
                     plan.parent, plan.children, plan.samples)
    with pytest.raises(AssertionError, match="child 'b' of 'a' starts at 1, expected 2"):
        bad_group.check()
    bad_order = Plan([("a", 1), ("a", 0), ("b", 0)], plan.levels, plan.node_tokens, plan.parent, plan.children,
                     plan.samples)
    with pytest.raises(AssertionError, match="sequence 1 is"):
        bad_order.check()
    bad_tokens = Plan(plan.sequences, plan.levels, {"a": [1, 9], "b": [2]}, plan.parent, plan.children, plan.samples)
    with pytest.raises(AssertionError, match="says 1 tokens, the node has 2"):
        bad_tokens.check()
    bad_tail = Plan(plan.sequences, plan.levels, plan.node_tokens, plan.parent, plan.children, plan.samples,
                    tails={"a": "b"})  # b is a child with samples of its own, not a's tail
    with pytest.raises(AssertionError, match="tail 'b' of 'a' must be its first child"):
        bad_tail.check()


def test_lookups_and_errors():
    tree = PromptTree()
    tree.root.add([1, 2, 3], samples=2, key="x")
    plan = tree.flatten(max_len=3)
    with pytest.raises(IndexError, match="out of range"):
        plan.prompt_ids(2)
    with pytest.raises(PromptTreeError, match="empty or outside"):
        plan.subplan(1, 1)
    with pytest.raises(PromptTreeError, match="max_sequences must be an int >= 1"):
        plan.split(0)
    with pytest.raises(PromptTreeError, match="max_len must be a positive int"):
        tree.flatten(max_len=0)
    assert tree.graph.number_of_nodes() == 2 and isinstance(tree.graph, nx.DiGraph)


def test_example_runs(capsys):
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "declare_tree.py"
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert "4002: '\\nQUESTION:" in out and "x128" in out and "sub-batches of at most 256 sequences: [(0, 256), (256, 384)]" in out
