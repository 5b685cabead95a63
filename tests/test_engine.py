"""The engine against references: tree == flat == dense causal model; seeded, batch-independent samples; stops;
compaction; sub-batches and memory scheduling; prefill chunking; the CLI.

The model is the "tiny" preset with weights of std 0.1 (the default 0.02 makes a 2-layer model repeat one token,
which would let a wrong attention pass unnoticed).
"""
import json
import random

import pytest
import torch

from prompt_tree.commands import generate as generate_cmd
from prompt_tree.config import get_preset
from prompt_tree.engine import Completion, Engine
from prompt_tree.loading import random_model
from prompt_tree.sampling import SamplingParams
from prompt_tree.engine import SchedulingError
from prompt_tree.tokenizer import ByteTokenizer
from prompt_tree.tree import PromptTree

CONFIG = get_preset("tiny")
MODEL = random_model(CONFIG, seed=0, std=0.1, device="cpu", dtype=torch.float32)


def engine(**kwargs) -> Engine:
    kwargs.setdefault("eos_ids", CONFIG.eos_token_ids)
    return Engine(MODEL, CONFIG, ByteTokenizer(), **kwargs)


def random_tree(seed: int, max_depth: int = 4) -> PromptTree:
    """Token-id prompts (taken literally): depth 1..max_depth, unequal branching, 1-token and empty nodes, inner
    nodes with samples."""
    rng = random.Random(seed)
    tree = PromptTree()

    def grow(parent, depth):
        for c in range(rng.choice([1, 1, 2, 3])):
            n = rng.choice([0, 1, 1, 2, 5, 13])  # 0: an empty node (reads nothing, adds no KV)
            prompt = [rng.randrange(256) for _ in range(n)]
            is_leaf = depth + 1 >= max_depth or rng.random() < 0.3
            samples = rng.choice([1, 2, 3]) if is_leaf else rng.choice([0, 0, 1, 2])
            node = parent.add(prompt, samples=samples)
            if not is_leaf:
                grow(node, depth + 1)

    for _ in range(rng.choice([1, 1, 2])):  # one or two root children (separate trees in one batch)
        first = tree.root.add([CONFIG.bos_token_id] + [rng.randrange(256) for _ in range(rng.choice([0, 4]))],
                              samples=rng.choice([1, 2]) if max_depth == 1 else rng.choice([0, 1]))
        if max_depth > 1:
            grow(first, 1)
    return tree


def dense_check(eng: Engine, plan, result, atol=1e-4):
    """Every sequence's greedy tokens are the argmax of a dense causal forward over (prompt + generated), and the
    returned logprobs equal that forward's log_softmax. fp32 throughout; the engine's attention differs from the
    dense one only in summation order (split softmax merged by LSE), ~1e-6 relative, so 1e-4 on log-probabilities
    is loose for rounding yet far below what a wrong mask or position changes (O(0.1) with std-0.1 weights)."""
    for i, (key, s) in enumerate(plan.sequences):
        c = result[key][s]
        prompt = plan.prompt_ids(i)
        ids = torch.tensor(prompt + c.token_ids)
        logits = eng.model.forward_dense(ids)[len(prompt) - 1: len(ids) - 1]
        assert logits.argmax(-1).tolist() == c.token_ids, (key, s)
        want = torch.log_softmax(logits, -1)[torch.arange(len(c.token_ids)), torch.tensor(c.token_ids)]
        torch.testing.assert_close(torch.tensor(c.logprobs), want, atol=atol, rtol=0)


@pytest.mark.parametrize("seed", range(16))
def test_tree_equals_flat_equals_dense(seed):
    eng = engine()
    tree = random_tree(seed, max_depth=1 + seed % 4)
    plan = eng.plan(tree)
    assert 1 <= len(plan.levels) <= 1 + seed % 4
    params = SamplingParams(max_new_tokens=5, temperature=0, logprobs=True)
    tree_res = eng.generate(plan, params, progress=False)
    flat_res = eng.generate(plan, params, attention="flat", progress=False)
    assert len(tree_res.all()) == plan.num_sequences
    for key in tree_res:
        assert [c.token_ids for c in tree_res[key]] == [c.token_ids for c in flat_res[key]]
        assert [c.sample_index for c in tree_res[key]] == list(range(len(tree_res[key])))
    dense_check(eng, plan, tree_res)
    s = tree_res.summary
    assert s.prefill_tokens == sum(len(t) for t in plan.node_tokens.values() if t)
    assert s.generated_tokens == sum(len(c.token_ids) for c in tree_res.all())
    assert s.kv_bytes > 0 and s.sub_batches == 1


def test_text_tree_gets_bos_once_and_matches_dense():
    eng = engine()
    tree = PromptTree()
    shared = tree.root.add("def solve():\n", samples=1)
    shared.add("    return 1\n", samples=2)
    shared.add("    x = [", samples=1).add("1, 2", samples=2)
    plan = eng.plan(tree)
    for i in range(plan.num_sequences):
        ids = plan.prompt_ids(i)
        assert ids[0] == CONFIG.bos_token_id and CONFIG.bos_token_id not in ids[1:]
    res = eng.generate(tree, SamplingParams(max_new_tokens=4, temperature=0, logprobs=True), progress=False)
    dense_check(eng, plan, res)
    assert all(isinstance(c.text, str) and c.text == ByteTokenizer().decode(c.token_ids) for c in res.all())


def test_prefill_chunking_gives_the_same_tokens():
    tree = random_tree(11, max_depth=3)
    params = SamplingParams(max_new_tokens=4, temperature=0, logprobs=True)
    whole = engine().generate(tree, params, progress=False)
    chunked_engine = engine(prefill_chunk_tokens=3)
    chunked = chunked_engine.generate(tree, params, progress=False)
    assert chunked.summary.prefill_calls > whole.summary.prefill_calls
    for key in whole:
        assert [c.token_ids for c in whole[key]] == [c.token_ids for c in chunked[key]]
    dense_check(chunked_engine, chunked_engine.plan(tree), chunked)


def test_seeded_samples_do_not_depend_on_the_batch():
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95, seed=5)
    small = PromptTree()
    small.root.add([256, 10, 11, 12], key="x").add([13, 14], samples=3, key="leaf")
    big = PromptTree()
    root = big.root.add([256, 10, 11, 12], key="x")
    root.add([99], samples=4, key="other")
    root.add([13, 14], samples=3, key="leaf")
    big.root.add([256, 7], samples=5, key="y")
    eng = engine()
    a = eng.generate(small, params, progress=False)
    b = eng.generate(big, params, progress=False)
    c = eng.generate(big, params, progress=False, max_batch_sequences=2)
    again = eng.generate(small, params, progress=False)
    ids = [x.token_ids for x in a["leaf"]]
    assert ids == [x.token_ids for x in b["leaf"]] == [x.token_ids for x in c["leaf"]]
    assert ids == [x.token_ids for x in again["leaf"]]
    assert len({tuple(t) for t in ids}) > 1  # the three samples differ from each other
    other_seed = eng.generate(small, SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95, seed=6),
                              progress=False)
    assert [x.token_ids for x in other_seed["leaf"]] != ids


def _greedy_reference(tree, n=10):
    eng = engine()
    return eng, eng.plan(tree), eng.generate(tree, SamplingParams(max_new_tokens=n, temperature=0), progress=False)


def test_stop_token_and_eos_cut_at_first_occurrence():
    tree = random_tree(3, max_depth=3)
    eng, plan, ref = _greedy_reference(tree)
    first = ref.all()[0]
    stop_tok = first.token_ids[3]
    expected = {}
    for c in ref.all():
        pos = c.token_ids.index(stop_tok) if stop_tok in c.token_ids else None
        expected[(c.key, c.sample_index)] = pos
    res = eng.generate(tree, SamplingParams(max_new_tokens=10, temperature=0, stop_token_ids=[stop_tok]),
                       progress=False)
    kept = eng.generate(tree, SamplingParams(max_new_tokens=10, temperature=0, stop_token_ids=[stop_tok],
                                             include_stop_str_in_output=True), progress=False)
    eos_engine = engine(eos_ids=(stop_tok,))
    eos = eos_engine.generate(tree, SamplingParams(max_new_tokens=10, temperature=0), progress=False)
    for c in ref.all():
        pos = expected[(c.key, c.sample_index)]
        got, got_kept, got_eos = (r[c.key][c.sample_index] for r in (res, kept, eos))
        if pos is None:
            assert got.finish_reason == got_eos.finish_reason == "length" and got.token_ids == c.token_ids
        else:
            assert got.finish_reason == "stop" and got_eos.finish_reason == "eos"
            assert got.token_ids == got_eos.token_ids == c.token_ids[:pos]
            assert got_kept.token_ids == c.token_ids[:pos + 1]
    assert res[first.key][first.sample_index].token_ids == first.token_ids[:first.token_ids.index(stop_tok)]


def test_stop_string_cuts_text():
    tree = PromptTree()
    tree.root.add("Once upon a time", samples=2, key="story")
    tree.root.add("x", samples=1, key="other")
    eng, plan, ref = _greedy_reference(tree, n=12)
    # a stop string the greedy path emits: the first two consecutive printable-ASCII tokens (1 byte = 1 char)
    c = ref["story"][0]
    j = next((j for j in range(len(c.token_ids) - 1) if all(32 <= t < 127 for t in c.token_ids[j:j + 2])), None)
    assert j is not None, "the greedy text has no two printable ASCII bytes in a row: change the prompt"
    stop = bytes(c.token_ids[j:j + 2]).decode()
    res = eng.generate(tree, SamplingParams(max_new_tokens=12, temperature=0, stop=[stop, "never-there"]),
                       progress=False)
    inc = eng.generate(tree, SamplingParams(max_new_tokens=12, temperature=0, stop=[stop],
                                            include_stop_str_in_output=True), progress=False)
    for ref_c, got, got_inc in zip(ref.all(), res.all(), inc.all()):
        full = ref_c.text
        cut = full.find(stop)
        if cut < 0:
            assert got.finish_reason == "length" and got.text == full
            continue
        assert got.finish_reason == "stop" and got.text == full[:cut] and got_inc.text == full[:cut + len(stop)]
        # generation ended on the token that completed the stop string
        assert ByteTokenizer().decode(got.token_ids).endswith(stop)
        assert not ByteTokenizer().decode(got.token_ids[:-1]).count(stop)


def test_finished_sequences_are_not_decoded():
    tree = random_tree(4, max_depth=3)
    eng, plan, ref = _greedy_reference(tree)
    stop_tok = ref.all()[0].token_ids[2]
    params = SamplingParams(max_new_tokens=10, temperature=0, stop_token_ids=[stop_tok])
    eager = engine(compact_fraction=0.0)
    res = eager.generate(tree, params, progress=False)
    # each sequence costs one decode row per fed-back token: all sampled tokens but the last
    sampled = [len(c.token_ids) + (c.finish_reason == "stop") for c in res.all()]
    assert any(c.finish_reason == "stop" for c in res.all())
    assert res.summary.decode_rows == sum(n - 1 for n in sampled)
    assert res.summary.decode_steps == max(sampled) - 1
    lazy = engine(compact_fraction=0.5).generate(tree, params, progress=False)
    assert [c.token_ids for c in lazy.all()] == [c.token_ids for c in res.all()]
    assert res.summary.decode_rows <= lazy.summary.decode_rows <= plan.num_sequences * (max(sampled) - 1)


def test_sub_batches_and_memory_budget_match_one_batch():
    tree = random_tree(6, max_depth=4)
    params = SamplingParams(max_new_tokens=6, temperature=0.8, seed=2, logprobs=True)
    eng = engine()
    one = eng.generate(tree, params, progress=False)
    n = eng.plan(tree).num_sequences
    assert n >= 4
    split = eng.generate(tree, params, progress=False, max_batch_sequences=2)
    assert split.summary.sub_batches >= n // 2
    cost_one = eng.cost(tree, params).total
    budget = engine(memory_budget_bytes=cost_one - 1)
    budgeted = budget.generate(tree, params, progress=False)
    assert budgeted.summary.sub_batches > 1
    for r in (split, budgeted):
        for key in one:
            assert [c.token_ids for c in r[key]] == [c.token_ids for c in one[key]]
            for x, y in zip(r[key], one[key]):
                torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4, rtol=0)
    with pytest.raises(SchedulingError, match="memory budget"):
        engine(memory_budget_bytes=1000).generate(tree, params, progress=False)


def test_on_complete_is_called_once_per_sequence():
    tree = random_tree(6, max_depth=2)
    seen = []
    res = engine().generate(tree, SamplingParams(max_new_tokens=3, temperature=0), progress=False,
                            on_complete=lambda k, s, c: seen.append((k, s, c)))
    assert sorted((k, s) for k, s, _ in seen) == sorted((c.key, c.sample_index) for c in res.all())
    assert all(isinstance(c, Completion) and res[k][s] is c for k, s, c in seen)


def test_errors():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Engine.from_pretrained("/nonexistent/model/dir")
    eng = engine()
    tree = random_tree(0, max_depth=1)
    with pytest.raises(ValueError, match="attention must be"):
        eng.generate(tree, SamplingParams(max_new_tokens=2), attention="paged", progress=False)
    with pytest.raises(TypeError, match="SamplingParams"):
        eng.generate(tree, {"max_new_tokens": 2}, progress=False)
    with pytest.raises(ValueError, match="context"):
        eng.generate(tree, SamplingParams(max_new_tokens=CONFIG.max_position_embeddings + 1), progress=False)
    with pytest.raises(ValueError, match="max_batch_sequences"):
        eng.generate(tree, SamplingParams(max_new_tokens=2), max_batch_sequences=0, progress=False)


def test_random_engine_and_cli(tmp_path):
    eng = Engine.random("tiny", seed=1)
    assert isinstance(eng.tokenizer, ByteTokenizer) and eng.config.vocab_size == 259
    tree = PromptTree()
    tree.root.add("Hello", key="h").add(" world", key="w")
    path = tmp_path / "tree.json"
    tree.save(str(path))
    out = tmp_path / "out.jsonl"
    argv = ["--model", "tiny", "--tree", str(path), "--out", str(out), "--samples", "3", "--max-new-tokens", "4",
            "--temperature", "0.7", "--seed", "3", "--no-progress"]
    import argparse

    p = argparse.ArgumentParser()
    generate_cmd.add_arguments(p)
    assert generate_cmd.run(p.parse_args(argv)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["key"], r["sample_index"]) for r in rows) == [("w", 0), ("w", 1), ("w", 2)]
    assert all(set(r) >= {"key", "sample_index", "text", "token_ids", "finish_reason"} for r in rows)
    assert all(len(r["token_ids"]) <= 4 for r in rows)


def test_one_new_token_needs_no_decode_step():
    tree = random_tree(9, max_depth=3)
    eng = engine()
    res = eng.generate(tree, SamplingParams(max_new_tokens=1, temperature=0, logprobs=True), progress=True)
    assert res.summary.decode_steps == 0
    assert all(len(c.token_ids) == 1 and c.finish_reason == "length" for c in res.all())
    dense_check(eng, eng.plan(tree), res)


def test_context_boundary_is_exact():
    """The last sampled token is never fed back: a prompt of n tokens fits max_position_embeddings + 1 - n new
    tokens, one more does not."""
    limit = CONFIG.max_position_embeddings
    eng = engine(eos_ids=())
    tree = PromptTree()
    n = 5
    tree.root.add(list(range(1, n + 1)), samples=1, key="p")
    eng.plan(tree, SamplingParams(max_new_tokens=limit + 1 - n))
    with pytest.raises(ValueError, match=f"at most {limit + 1 - n} new tokens fit"):
        eng.plan(tree, SamplingParams(max_new_tokens=limit + 2 - n))


def test_token_ids_outside_the_vocabulary_are_refused():
    eng = engine()
    tree = PromptTree()
    tree.root.add([1, 2, CONFIG.vocab_size], samples=1, key="bad")
    with pytest.raises(ValueError, match=f"node 'bad' has token id {CONFIG.vocab_size}, outside the model's vocab"):
        eng.generate(tree, SamplingParams(max_new_tokens=2), progress=False)


def test_fp64_model_is_refused_with_the_fix():
    model64 = random_model(CONFIG, seed=0, device="cpu", dtype=torch.float64)
    with pytest.raises(ValueError, match="bfloat16, float16 or float32"):
        Engine(model64, CONFIG, ByteTokenizer())
