"""`prompt-tree bench` (issue 6) on the tiny preset on CPU: the CLI end to end (json schema, files, same/largest
batch rows, skipped rows), --resume and the time budget, clear errors; the pieces against hand-computed values: the
limit, the single-level transform; and the maths: tree, single and flat give the same greedy tokens, and so does
transformers' generate on the same weights.

The equivalence tests use tiny weights of std 0.1 (the default 0.02 makes a 2-layer model repeat one token, which
would let a wrong attention or a wrong prompt pass unnoticed).
"""
import dataclasses
import json
import math
import os
import random

import pytest
import torch

from prompt_tree import cli
from prompt_tree.benchmark.limit import Ceilings, DecodeWork, attention_floor_seconds, decode_work
from prompt_tree.benchmark.e2e_rows import largest_fitting
from prompt_tree.benchmark.workloads import (FEW_SHOT_KEY, HierarchicalShape, HierarchicalWorkload,
                                             sequence_prompts, shared_prefix_tree, single_level)
from prompt_tree.config import get_preset, replace
from prompt_tree.engine import Engine
from prompt_tree.engine.memory import kv_bytes_per_token, plan_cost
from prompt_tree.loading import random_model
from prompt_tree.sampling import SamplingParams

CONFIG = get_preset("tiny")
MODEL = random_model(CONFIG, seed=0, std=0.1, device="cpu", dtype=torch.float32)
# Workload-2 shaped, small: 3 problems of unequal length (the last with fewer samples when cut), 3 samples each.
SHAPE = HierarchicalShape("2a", few_shot=40, problem=12, samples=3, new_tokens=6, problems=3)


def engine() -> Engine:
    return Engine(MODEL, CONFIG, None, eos_ids=())


def workload(shape=SHAPE) -> HierarchicalWorkload:
    return HierarchicalWorkload(shape, CONFIG.vocab_size, CONFIG.bos_token_id)


def bench(args: list) -> int:
    return cli.main(["bench", "--models", "tiny", "--device", "cpu", "--dtype", "fp32"] + args)


# ----- the pieces


def test_largest_fitting_finds_the_threshold():
    rng = random.Random(0)
    for _ in range(50):
        cands = sorted(rng.sample(range(1, 500), rng.randint(1, 40)))
        threshold = rng.randint(0, 520)
        want = max([c for c in cands if c <= threshold], default=0)
        assert largest_fitting(cands, lambda n: n <= threshold) == want


def test_limit_against_hand_computed_values():
    # 2 layers, 4 query heads, 2 KV heads, head dim 8, bf16 (2 bytes); 3 sequences share a 10-token prefix; 3 new
    # tokens = 2 decode steps, whose own segments hold 1 and 2 tokens.
    config = replace(CONFIG, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)
    plan = shared_prefix_tree(10, 3, CONFIG.vocab_size, CONFIG.bos_token_id).flatten()
    work = decode_work(plan, 3, config, torch.bfloat16)
    assert (work.unique_prompt_tokens, work.prompt_tokens_attended, work.decode_steps) == (10, 30, 2)
    # Per layer, step s: bytes = K,V of (10 + 3s) tokens x 2 heads x 8 x 2 B + q and o (3 x 4 x 8 x 2 B each)
    #   s=1: 2*2*8*2*13 + 2*3*4*8*2 = 832 + 384 = 1216;  s=2: 2*2*8*2*16 + 384 = 1408
    # flops = 4 x 4 heads x 8 x (30 + 3s) keys:  s=1: 4224;  s=2: 4608
    assert [work.step_bytes(1), work.step_bytes(2)] == [1216, 1408]
    assert [work.step_flops(1), work.step_flops(2)] == [4224, 4608]
    # 1000 B/s and 3400 flop/s: step 1 is compute-bound (1.2424 > 1.216), step 2 bandwidth-bound (1.408 > 1.3553).
    floor = attention_floor_seconds(work, Ceilings(1000.0, 3400.0))
    assert floor == pytest.approx(2 * (4224 / 3400 + 1408 / 1000), rel=1e-12)


def test_decode_work_of_a_hierarchical_tree_counts_shared_nodes_once():
    wl = workload()
    plan = wl.tree(8).flatten()  # problems of 3, 3 and 2 samples
    lengths = [wl.problem_length(i) for i in range(3)]
    work = decode_work(plan, SHAPE.new_tokens, CONFIG, torch.float32)
    assert work.unique_prompt_tokens == SHAPE.few_shot + sum(lengths)
    assert work.prompt_tokens_attended == sum(n * (SHAPE.few_shot + L) for n, L in zip((3, 3, 2), lengths))
    flat = decode_work(plan, SHAPE.new_tokens, CONFIG, torch.float32, shared=False)
    assert flat.unique_prompt_tokens == work.prompt_tokens_attended
    assert isinstance(work, DecodeWork) and work.dtype_bytes == 4


def test_single_level_tree_holds_the_same_prompts_and_copies_the_few_shot_block():
    eng = engine()
    wl = workload()
    tree = wl.tree(8)
    single = single_level(tree)
    assert [n.key for n in single.root.children] == ["p0", "p1", "p2"]
    assert all(not n.children for n in single.root.children)
    plan, splan = tree.flatten(), single.flatten()
    assert len(plan.levels) == 2 and len(splan.levels) == 1
    assert plan.sequences == splan.sequences
    for i in range(plan.num_sequences):
        assert splan.prompt_ids(i) == plan.prompt_ids(i)
    assert plan.node_tokens[FEW_SHOT_KEY][0] == CONFIG.bos_token_id
    params = SamplingParams(max_new_tokens=SHAPE.new_tokens)
    extra = eng.cost(single, params).kv_bytes - eng.cost(tree, params).kv_bytes
    # The few-shot block is stored once per problem (3) instead of once.
    assert extra == (3 - 1) * SHAPE.few_shot * kv_bytes_per_token(CONFIG, torch.float32)


def test_workload_trees_are_deterministic_and_fill_problems_in_order():
    a, b = workload().tree(7).flatten(), workload().tree(7).flatten()
    assert a.node_tokens == b.node_tokens
    assert [a.samples[k] for k in ("p0", "p1", "p2")] == [3, 3, 1]
    lengths = {len(a.node_tokens[k]) for k in ("p0", "p1", "p2")}
    assert all(abs(L - SHAPE.problem) <= math.ceil(0.1 * SHAPE.problem) for L in lengths)
    with pytest.raises(ValueError, match="num_sequences"):
        workload().tree(SHAPE.total_sequences + 1)


# ----- the maths


def test_tree_single_and_flat_give_identical_greedy_tokens():
    eng = engine()
    tree = workload().tree(8)
    params = SamplingParams(max_new_tokens=SHAPE.new_tokens, temperature=0.0)
    runs = {
        "tree": eng.generate(tree, params, attention="tree", progress=False),
        "single": eng.generate(single_level(tree), params, attention="tree", progress=False),
        "flat": eng.generate(tree, params, attention="flat", progress=False),
    }
    tokens = {m: {(c.key, c.sample_index): c.token_ids for c in r.all()} for m, r in runs.items()}
    assert len(tokens["tree"]) == 8
    assert all(len(t) == SHAPE.new_tokens for t in tokens["tree"].values())
    # Different problems must continue differently, or a prompt mix-up could go unseen.
    assert len({tuple(t) for t in tokens["tree"].values()}) > 1
    assert tokens["single"] == tokens["tree"]
    assert tokens["flat"] == tokens["tree"]


def test_transformers_generate_matches_the_engine():
    pytest.importorskip("transformers")
    from prompt_tree.benchmark.hf_baseline import hf_generate, hf_model

    eng = engine()
    hf = hf_model(MODEL, CONFIG)
    assert hf.model.embed_tokens.weight.data_ptr() == MODEL.embed_tokens.weight.data_ptr()  # shared, not copied
    params = SamplingParams(max_new_tokens=SHAPE.new_tokens, temperature=0.0)
    for tree in (workload().tree(8), shared_prefix_tree(23, 2, CONFIG.vocab_size, CONFIG.bos_token_id)):
        plan = eng.plan(tree)
        ours = eng.generate(plan, params, progress=False)
        prompts = sequence_prompts(plan)
        run = hf_generate(hf, prompts, SHAPE.new_tokens)
        assert run.token_ids == [ours[k][s].token_ids for k, s in plan.sequences]
        assert run.decode_tokens == len(prompts) * (SHAPE.new_tokens - 1) and run.decode_seconds > 0
    assert len({len(p) for p in sequence_prompts(workload().tree(8).flatten())}) > 1  # left padding was exercised


def test_transformers_generate_can_pick_the_eos_token_like_the_engine():
    """With EOS disabled the engine may emit an EOS id; transformers must not suppress it (min_new_tokens would,
    if generate filled in the model's EOS)."""
    pytest.importorskip("transformers")
    from prompt_tree.benchmark.hf_baseline import hf_generate, hf_model

    model = random_model(CONFIG, seed=1, std=0.1, device="cpu", dtype=torch.float32)
    eos = CONFIG.eos_token_ids[0]
    with torch.no_grad():
        model.lm_head.weight[eos] *= 30  # EOS wins wherever its logit is positive and large
    eng = Engine(model, CONFIG, None, eos_ids=())
    plan = eng.plan(workload().tree(6))
    ours = eng.generate(plan, SamplingParams(max_new_tokens=8, temperature=0.0), progress=False)
    want = [ours[k][s].token_ids for k, s in plan.sequences]
    assert any(eos in t for t in want) and any(t != eos for ts in want for t in ts)
    assert hf_generate(hf_model(model, CONFIG), sequence_prompts(plan), 8).token_ids == want


# ----- the command end to end

ROW_KEYS = {"model", "workload", "shape", "prefix", "problems", "batch", "mode", "roles", "new_tokens",
            "tokens_per_s", "seconds", "prefill_s", "peak_gib", "limit_s", "measured_over_limit", "attention_floor_s",
            "max_batch", "predicted_gib", "skipped"}
# 2a: a long few-shot block and short problems, so the single-level copy costs much more memory than the tree.
E2E_SHAPES = {"2a": {"few_shot": 48, "problem": 6, "samples": 2, "new_tokens": 4, "problems": 4},
              "2b": {"few_shot": 20, "problem": 10, "samples": 3, "new_tokens": 3, "problems": 2}}


def _cost(tree, new_tokens: int) -> int:
    return plan_cost(tree.flatten(), new_tokens, CONFIG, torch.float32, 8192).total


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """One run of the whole command: 2 prefixes x 2 batches, both workload-2 shapes, every mode, with a memory
    budget that fits the single-level 2a tree for 2 of its 4 problems (the tree needs less memory per problem)."""
    out = tmp_path_factory.mktemp("bench")
    shape_2a = HierarchicalShape("2a", **E2E_SHAPES["2a"])
    wl = HierarchicalWorkload(shape_2a, CONFIG.vocab_size, CONFIG.bos_token_id)
    budget = _cost(single_level(wl.tree(2 * shape_2a.samples)), shape_2a.new_tokens)
    assert _cost(wl.tree(shape_2a.total_sequences), shape_2a.new_tokens) <= budget
    assert _cost(single_level(wl.tree(3 * shape_2a.samples)), shape_2a.new_tokens) > budget
    rc = bench(["--prefixes", "16,24", "--batches", "2,3", "--preset-override",
                json.dumps({"1": {"new_tokens": 5}, **E2E_SHAPES}), "--memory-budget-gib", str((budget + 64) / 2**30),
                "--out", str(out)])
    assert rc == 0
    with open(out / "e2e.json") as f:
        return out, json.load(f), budget


def test_e2e_writes_the_json_schema_and_files(e2e):
    out, results, _ = e2e
    for key in ("device", "torch", "triton", "copy_bw_tbs", "matmul_tflops", "rows", "not_run"):
        assert key in results
    assert results["copy_bw_tbs"] > 0 and results["matmul_tflops"] > 0 and results["not_run"] == []
    rows = results["rows"]
    assert rows and all(ROW_KEYS <= set(r) for r in rows)
    assert {r["workload"] for r in rows} == {"1", "2a", "2b"}
    keys = [(r["model"], r["workload"], r["shape"], r["batch"], r["mode"]) for r in rows]
    assert len(keys) == len(set(keys))
    md = (out / "e2e.md").read_text()
    assert "workload 1" in md and "workload 2a" in md and "workload 2b" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    for name in ("e2e_batch.png", "e2e_prefix.png", "e2e_workload2.png"):
        assert (out / name).stat().st_size > 1000


def test_e2e_rows_measure_what_they_say(e2e):
    _, results, _ = e2e
    rows = results["rows"]
    ran = [r for r in rows if not r["skipped"]]
    assert ran
    by_key = {(r["workload"], r["shape"], r["batch"], r["mode"]): r for r in rows}
    for r in ran:
        assert r["generated_tokens"] == r["batch"] * r["new_tokens"]  # no EOS: every sequence ran to length
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * (r["new_tokens"] - 1) / r["seconds"])
        none = by_key[(r["workload"], r["shape"], r["batch"], "none")]
        assert r["limit_s"] == pytest.approx(none["seconds"] + r["attention_floor_s"])
        assert r["attention_floor_s"] > 0
        assert r["measured_over_limit"] == pytest.approx(r["seconds"] / r["limit_s"])
    # Workload 1: every prefix x batch has none, tree, flat and hf; no single (one level: single = tree).
    w1 = [r for r in rows if r["workload"] == "1"]
    assert {(r["prefix"], r["batch"]) for r in w1} == {(16, 2), (16, 3), (24, 2), (24, 3)}
    assert {r["mode"] for r in w1} == {"none", "tree", "flat", "hf"}
    assert all(r["new_tokens"] == 5 and r["shape"] == f"prefix {r['prefix']}" for r in w1)


def test_e2e_workload_2_runs_the_same_batch_and_each_modes_largest(e2e):
    _, results, budget = e2e
    rows = [r for r in results["rows"] if r["workload"] == "2a"]
    samples = E2E_SHAPES["2a"]["samples"]
    same = [r for r in rows if "same batch" in r["roles"]]
    assert {r["mode"] for r in same} == {"none", "tree", "single", "flat", "hf"}
    assert len({r["batch"] for r in same}) == 1
    batch = same[0]["batch"]
    largest = {r["mode"]: r for r in rows if "largest batch" in r["roles"]}
    assert set(largest) == {"none", "tree", "single", "flat", "hf"}
    # single copies the few-shot block per problem: it fits 2 problems where the tree fits all 4.
    assert largest["single"]["batch"] == 2 * samples == batch
    assert largest["tree"]["batch"] == largest["flat"]["batch"] == 4 * samples
    for r in largest.values():
        assert r["batch"] == r["max_batch"]
        assert r["skipped"] is None
    for r in rows:
        assert r["predicted_gib"] * 2**30 <= budget + 64 or r["skipped"]
    # transformers holds every row's whole prompt and its prefill activations: it fits fewer sequences, so its
    # same-batch row is skipped and its largest batch gets a none row of its own (the basis of its limit).
    hf_same = next(r for r in same if r["mode"] == "hf")
    assert 0 < largest["hf"]["batch"] < batch
    assert hf_same["skipped"].startswith("does not fit")
    none_at_hf = next(r for r in rows if r["batch"] == largest["hf"]["batch"] and r["mode"] == "none")
    assert none_at_hf["roles"] == ["limit"] and largest["hf"]["limit_s"] > none_at_hf["seconds"]


def test_report_only_rewrites_the_report_from_the_json(e2e, tmp_path):
    out, results, _ = e2e
    (tmp_path / "e2e.json").write_text(json.dumps(results))
    assert cli.main(["bench", "--report-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "e2e.md").read_text() == (out / "e2e.md").read_text()


def test_report_names_rows_merged_from_a_later_call(e2e, tmp_path):
    _, results, _ = e2e
    merged = json.loads(json.dumps(results))
    merged["rows"][0]["run"] = "2026-01-02 03:04"
    merged["merged_runs"] = [dict(date="2026-01-02 03:04", copy_bw_tbs=2.5, matmul_tflops=600.0, rows="one row")]
    (tmp_path / "e2e.json").write_text(json.dumps(merged))
    assert cli.main(["bench", "--report-only", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "e2e.md").read_text()
    assert "Merged from a later call (2026-01-02 03:04; its own ceilings: copy 2.5 TB/s, matmul 600 TFLOP/s)" in md
    assert md.count("measured 2026-01-02 03:04") == 1


def test_merge_tool_replaces_rows_and_holds_them_to_the_files_ceilings(e2e):
    """tools/merge_e2e.py: a later call's workload-1 rows replace the same keys, their floors recomputed at the
    target file's ceilings (the later call's own floor must be reproduced first)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("merge_e2e", os.path.join(os.path.dirname(__file__), "..",
                                                                              "tools", "merge_e2e.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    _, results, _ = e2e
    target = json.loads(json.dumps(results))
    later = json.loads(json.dumps(results))
    later["rows"] = [r for r in later["rows"] if r["workload"] == "1" and r["prefix"] == 16 and r["batch"] == 2]
    later["date"], later["matmul_tflops"] = "later", later["matmul_tflops"] / 2
    for r in later["rows"]:  # as that call would have computed it, at its own (halved) matmul rate
        r["attention_floor_s"] = tool.floor_s(r, torch.float32, later["copy_bw_tbs"], later["matmul_tflops"])
        r["seconds"] *= 0.5
    skipped = dict(later["rows"][0], batch=999, mode="hf", seconds=None, attention_floor_s=None, limit_s=None,
                   measured_over_limit=None, skipped="does not fit: predicted 99 GiB > budget 1 GiB")
    later["rows"].append(skipped)  # a row that did not fit is carried over as skipped, with no limit
    pristine = json.dumps(later)  # merge rewrites the floors of the rows it takes
    merged = tool.merge(target, later, "prefix 16, batch 2")
    assert {r["mode"] for r in merged} >= {"none", "tree", "hf"}
    assert skipped in target["rows"] and skipped["limit_s"] is None and skipped["run"] == "later"
    target["rows"].remove(skipped)
    merged.remove(skipped)
    assert len(target["rows"]) == len(results["rows"])  # the others replaced rows of the same keys
    old = {tool.row_key(r): r for r in results["rows"]}
    for r in merged:
        assert r in target["rows"] and r["run"] == "later"
        assert math.isclose(r["attention_floor_s"], old[tool.row_key(r)]["attention_floor_s"], rel_tol=1e-12)
        none = next(x for x in merged if x["mode"] == "none")
        assert math.isclose(r["limit_s"], none["seconds"] + r["attention_floor_s"], rel_tol=1e-12)
    assert target["merged_runs"][-1]["rows"] == "prefix 16, batch 2"
    # a skipped row never replaces a measured one; a measured row without a measured none row is refused
    again = json.loads(pristine)
    tree = next(r for r in again["rows"] if r["mode"] == "tree")
    tree.update(seconds=None, skipped="does not fit")
    kept = json.loads(json.dumps(target))
    tool.merge(kept, again, "x")
    assert next(r for r in kept["rows"] if tool.row_key(r) == tool.row_key(tree))["seconds"] is not None
    again = json.loads(pristine)
    for r in again["rows"]:
        if r["mode"] == "none":
            r.update(seconds=None, skipped="does not fit")
    with pytest.raises(SystemExit, match="no measured no-attention row"):
        tool.merge(json.loads(json.dumps(target)), again, "x")
    bad = json.loads(json.dumps(later))
    bad["rows"][0]["attention_floor_s"] *= 1.5
    with pytest.raises(SystemExit, match="cannot reproduce the floor"):
        tool.merge(json.loads(json.dumps(results)), bad, "x")


def test_dry_run_plans_without_weights_or_files(tmp_path, capsys):
    rc = bench(["--workloads", "1,2b", "--prefixes", "16", "--batches", "2", "--ceilings", "1,1", "--dry-run",
                "--preset-override", json.dumps({"2b": E2E_SHAPES["2b"]}), "--out", str(tmp_path)])
    assert rc == 0
    err = capsys.readouterr().err
    planned = [line for line in err.splitlines() if line.startswith("plan ")]
    assert any(" w1 prefix 16 batch 2 none:" in line for line in planned)
    assert any(" w2b " in line and " single:" in line for line in planned)
    assert not os.listdir(tmp_path)


def test_rows_that_do_not_fit_are_recorded_as_skipped(tmp_path):
    tree = shared_prefix_tree(24, 3, CONFIG.vocab_size, CONFIG.bos_token_id)
    budget = _cost(tree, 4) - 1024
    rc = bench(["--workloads", "1", "--prefixes", "24", "--batches", "3", "--modes", "tree", "--new-tokens", "4",
                "--memory-budget-gib", str(budget / 2**30), "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "e2e.json").read_text())["rows"]
    assert {r["mode"] for r in rows} == {"none", "tree"}
    for r in rows:
        assert r["skipped"].startswith("does not fit") and r["tokens_per_s"] is None
        assert r["max_batch"] < 3


def test_time_budget_and_resume(tmp_path):
    base = ["--workloads", "1", "--prefixes", "16", "--batches", "2", "--new-tokens", "3", "--out", str(tmp_path)]
    assert bench(base + ["--modes", "tree", "--time-budget-s", "0.001"]) == 0
    first = json.loads((tmp_path / "e2e.json").read_text())
    assert first["rows"] == [] and first["not_run"] and "time budget" in first["not_run"][0]["reason"]

    assert bench(base + ["--modes", "tree", "--resume"]) == 0
    second = json.loads((tmp_path / "e2e.json").read_text())
    assert sorted(r["mode"] for r in second["rows"]) == ["none", "tree"] and second["not_run"] == []

    assert bench(base + ["--modes", "tree,flat", "--resume"]) == 0
    third = json.loads((tmp_path / "e2e.json").read_text())
    assert sorted(r["mode"] for r in third["rows"]) == ["flat", "none", "tree"]
    assert third["rows"][:2] == second["rows"]  # kept as they were, not measured again


@pytest.mark.parametrize("args, message", [
    (["--modes", "tree,warp"], "unknown mode 'warp'"),
    (["--workloads", "1,3"], "--workloads: '3' is not one of 1, 2a, 2b, step, job"),
    (["--models", "gpt-5"], "unknown model 'gpt-5'"),
    (["--prefixes", "1k"], "comma-separated numbers"),
    (["--batches", ""], "--batches is empty"),
    (["--new-tokens", "0"], "--new-tokens must be >= 1"),
    (["--preset-override", "{bad"], "not valid JSON"),
    (["--preset-override", '{"2a": {"shots": 3}}'], "no field 'shots'"),
    (["--preset-override", '{"2b": {"samples": 0}}'], "samples must be a positive int"),
    (["--ceilings", "3"], "TB/s,TFLOP/s"),
    (["--gemm-table", "/nonexistent/gemm.json"], "not a GEMM table"),
])
def test_bad_input_is_a_clear_error(args, message, capsys, tmp_path):
    assert cli.main(["bench", "--out", str(tmp_path)] + args) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "e2e.json")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a missing GPU")
def test_cuda_without_a_gpu_is_a_clear_error(capsys, tmp_path):
    assert cli.main(["bench", "--models", "tiny", "--out", str(tmp_path)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_quick_and_overrides_resolve_in_order():
    import argparse

    from prompt_tree.commands.bench import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--quick", "--problems-2a", "3", "--preset-override",
                                         '{"2b": {"samples": 4}}']))
    assert cfg.models == ("llama3-8b",) and cfg.prefixes == (1024, 4096)
    assert cfg.shapes["2a"].problems == 3 and cfg.shapes["2a"].new_tokens == 64
    assert cfg.shapes["2b"].samples == 4 and cfg.shapes["2b"].problems == 16
    cfg = config_from_args(p.parse_args(["--new-tokens", "7"]))
    assert cfg.new_tokens_1 == 7 and {s.new_tokens for s in cfg.shapes.values()} == {7}
    assert dataclasses.replace(cfg.shapes["2a"], new_tokens=512) == dataclasses.replace(
        config_from_args(p.parse_args([])).shapes["2a"])


@pytest.mark.cuda
def test_e2e_on_cuda(tmp_path):
    rc = cli.main(["bench", "--models", "tiny", "--dtype", "bf16", "--workloads", "1,2b", "--prefixes", "64",
                   "--batches", "4", "--new-tokens", "4", "--preset-override", json.dumps({"2b": E2E_SHAPES["2b"]}),
                   "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "e2e.json").read_text())["rows"]
    ran = [r for r in rows if not r["skipped"]]
    assert ran and all(r["peak_gib"] > 0 and r["limit_s"] > 0 for r in ran)
