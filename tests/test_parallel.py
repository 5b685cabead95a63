"""Tensor and data parallelism on CPU with gloo: 2 processes (torch.multiprocessing spawn, plain subprocesses with
torchrun's variables, and torchrun itself) and 4 (tp=2 x dp=2, spawned), the tiny preset.

Tolerances. Tensor parallelism changes no operation's arithmetic except the sums of o_proj and down_proj, whose
reduction over input features is cut in two and joined by an all-reduce: the same terms added in another order.
So (1) in float64 tp=2 must equal tp=1 to float64's rounding, i.e. the measured fp32 error of tp=1 (against
float64) scaled by eps64 / eps32; (2) in float32, tp=2 must be as accurate as tp=1, both against float64: within
twice tp=1's own error (same number of roundings, a different pattern), and so within 3x that of each other.
Data parallelism changes no arithmetic at all (a sample's noise depends on (seed, key, sample index) only, a
node's tokens on its path only), so its results must be identical.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from prompt_tree.config import PRESETS, replace
from prompt_tree.parallel import (
    ParallelError, ParallelLayout, TensorShard, init_distributed, merge_parts, part_path, part_paths, shard_config,
    split_by_cost, split_tree,
)
from prompt_tree.parallel.env import PEER_FAILED_EXIT, TorchrunEnv

TINY = PRESETS["tiny"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS32, EPS64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps
APPS = dict(limit=4, samples=2, max_new_tokens=12, k=(1, 2), progress=False, workers=1, timeout=2.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, world: int, port: int, **extra) -> dict:
    """The variables torchrun gives worker `rank` (rank 0 hosts the store: no launcher agent here)."""
    return dict(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", **extra)


def _rank_main(rank: int, port: int, tp: int | None, work, args, world: int = 2) -> None:
    """Entry of a spawned rank: torchrun's variables, the process groups, then work(ctx, *args) guarded.
    tp=None: work(None, *args) joins the run itself (a command line, as a torchrun worker runs it)."""
    # a collective whose peer never comes (ranks out of step) fails in 120 s, not the default 600
    os.environ.update(_rank_env(rank, world, port, PT_DIST_DEAD_AFTER="20", PT_DIST_TIMEOUT="120"))
    torch.set_num_threads(1)  # one thread per process: 2 or 4 processes on two cores
    if tp is None:
        work(None, *args)
        return
    from prompt_tree.parallel.env import run_guarded

    ctx = init_distributed(tp, "cpu")
    run_guarded(ctx, lambda: work(ctx, *args))


def _spawn(work, *args, tp: int | None = 1, world: int = 2) -> None:
    torch.multiprocessing.spawn(_rank_main, args=(_free_port(), tp, work, args, world), nprocs=world, join=True)


# ----- pure pieces: layout, shapes, shards, splits, merges


def test_layout_is_tp_major_and_world_must_divide():
    lay = ParallelLayout(world_size=4, rank=3, tp=2)
    assert (lay.dp, lay.dp_rank, lay.tp_rank, lay.is_writer) == (2, 1, 1, False)
    assert lay.tp_ranks(0) == [0, 1] and lay.tp_ranks(1) == [2, 3]
    with pytest.raises(ParallelError, match="world size 2 is not divisible by --tp 3"):
        ParallelLayout(world_size=2, rank=0, tp=3)
    with pytest.raises(ParallelError, match="world size 6 is not divisible by --tp 4"):
        ParallelLayout(world_size=6, rank=5, tp=4)


def test_single_process_is_unchanged_and_tp_needs_torchrun():
    assert init_distributed(1, environ={}) is None
    assert init_distributed(1, environ={"WORLD_SIZE": "1", "RANK": "0"}) is None  # torchrun of one process
    with pytest.raises(ParallelError, match="--tp 2 needs 2 processes: start the command with torchrun"):
        init_distributed(2, environ={})
    with pytest.raises(ParallelError, match="MASTER_ADDR"):
        TorchrunEnv.read({"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "1"})
    env = TorchrunEnv.read(_rank_env(1, 2, 1234) | {"TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert (env.rank, env.world_size, env.master_port, env.agent_store) == (1, 2, 1234, True)


def test_heads_kv_heads_and_mlp_must_divide():
    local = shard_config(TINY, 2)
    assert (local.num_heads, local.num_kv_heads, local.intermediate_size) == (2, 1, 128)
    assert (local.hidden_size, local.vocab_size, local.head_dim) == (TINY.hidden_size, TINY.vocab_size, 32)
    with pytest.raises(ParallelError, match="num_heads divisible by 3, but the model has num_heads=4"):
        shard_config(TINY, 3)
    with pytest.raises(ParallelError, match="num_kv_heads divisible by 2, but the model has num_kv_heads=1"):
        shard_config(replace(TINY, num_kv_heads=1), 2)
    with pytest.raises(ParallelError, match="intermediate_size divisible by 2"):
        shard_config(replace(TINY, intermediate_size=255), 2)
    from prompt_tree.loading import random_model

    with pytest.raises(ParallelError, match="num_kv_heads"):  # the loaders refuse before drawing anything
        random_model(replace(TINY, num_kv_heads=1), device="cpu", shard=TensorShard(2, 0))


def test_random_shards_are_slices_of_the_tp1_model():
    from prompt_tree.loading import random_model
    from prompt_tree.model import hf_state_dict

    # by checkpoint name: a rank's fused qkv_proj / gate_up_proj holds its slice of each of q, k, v / gate, up
    full = hf_state_dict(random_model("tiny", seed=3, device="cpu"))
    parts = [hf_state_dict(random_model("tiny", seed=3, device="cpu", shard=TensorShard(2, r))) for r in range(2)]
    for name, tensor in full.items():
        a, b = parts[0][name], parts[1][name]
        if "q_proj" in name or "k_proj" in name or "v_proj" in name or "gate_proj" in name or "up_proj" in name:
            assert torch.equal(torch.cat([a, b], 0), tensor), name
        elif "o_proj" in name or "down_proj" in name:
            assert torch.equal(torch.cat([a, b], 1), tensor), name
        else:  # embedding, norms, lm_head: replicated
            assert torch.equal(a, tensor) and torch.equal(b, tensor), name


def _save_checkpoint(path, config, seed=0):
    """A random model as an HF checkpoint directory (config.json + model.safetensors), no tokenizer."""
    from safetensors.torch import save_file

    from prompt_tree.loading import random_model
    from prompt_tree.model import hf_state_dict

    model = random_model(config, seed=seed, device="cpu", dtype=torch.float32, std=0.1)
    os.makedirs(path, exist_ok=True)
    tensors = {n: t.contiguous() for n, t in hf_state_dict(model).items()}
    save_file(tensors, os.path.join(path, "model.safetensors"))
    hf = {"architectures": [config.architecture], "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
          "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_layers,
          "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
          "head_dim": config.head_dim, "rope_theta": config.rope_theta, "rms_norm_eps": config.rms_norm_eps,
          "max_position_embeddings": config.max_position_embeddings, "bos_token_id": config.bos_token_id,
          "eos_token_id": list(config.eos_token_ids), "torch_dtype": "float32"}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f)
    return model


# A Qwen2-style tiny model: q/k/v biases are split with their weights.
QWEN_TINY = replace(TINY, architecture="Qwen2ForCausalLM", qkv_bias=True)


def test_checkpoint_shards_are_read_as_slices(tmp_path):
    from prompt_tree.loading import load_model
    from prompt_tree.model import hf_state_dict

    full = hf_state_dict(_save_checkpoint(tmp_path, QWEN_TINY))
    for r in range(2):
        loaded = load_model(tmp_path, device="cpu", dtype="float32", tokenizer=False, shard=TensorShard(2, r))
        assert loaded.config.num_heads == 4 and loaded.model.config.num_heads == 2  # checkpoint vs this rank
        got = hf_state_dict(loaded.model)
        k_bias, down = "model.layers.1.self_attn.k_proj.bias", "model.layers.0.mlp.down_proj.weight"
        assert torch.equal(got[k_bias], full[k_bias][32 * r:32 * (r + 1)])  # one KV head of 32 per rank
        assert torch.equal(got[down], full[down][:, 128 * r:128 * (r + 1)])  # half the 256 MLP columns
        assert torch.equal(got["model.embed_tokens.weight"], full["model.embed_tokens.weight"])
        # the fused bias of this rank: its 2 query heads' bias, then its KV head's k bias, then its v bias
        qkv_bias = loaded.model.layers[1].self_attn.qkv_proj.bias
        want = torch.cat([full[f"model.layers.1.self_attn.{x}_proj.bias"][n * r:n * (r + 1)]
                          for x, n in (("q", 64), ("k", 32), ("v", 32))])
        assert torch.equal(qkv_bias, want)


def test_split_by_cost_is_greedy_largest_first():
    assert split_by_cost([5, 3, 3, 2, 2, 1], 2) == [[0, 3, 5], [1, 2, 4]]  # totals 8 and 8
    assert split_by_cost([1, 1, 1], 5) == [[0], [1], [2], [], []]
    costs = [17, 4, 9, 30, 2, 2, 11, 8]
    bins = split_by_cost(costs, 3)
    assert sorted(i for b in bins for i in b) == list(range(len(costs)))
    totals = [sum(costs[i] for i in b) for b in bins]
    assert max(totals) <= 4 / 3 * max(sum(costs) / 3, max(costs))  # LPT's bound


def test_split_tree_shares_the_chain_and_balances_subtrees():
    from prompt_tree import PromptTree

    tree = PromptTree()
    shots = tree.root.add("shared instruction\n", key="sys").add("few shots\n", key="shots")
    for i, (length, samples) in enumerate([(50, 8), (10, 1), (10, 1), (40, 2)]):
        node = shots.add("x" * length, key=f"p{i}", samples=samples)
        node.add("follow-up", key=f"p{i}.a", samples=1)
    d = tree.to_dict()
    tokens = {n["key"]: len(n["prompt"]) for n in d["nodes"]}
    parts = split_tree(d, tokens, 2, max_new_tokens=10)
    keys = [[n["key"] for n in p["nodes"]] for p in parts]
    assert keys == [["sys", "shots", "p0", "p0.a"], ["sys", "shots", "p1", "p1.a", "p2", "p2.a", "p3", "p3.a"]]
    for p in parts:
        PromptTree.from_dict(p)  # valid trees, parents first
    samples = [sum(n["samples"] for n in p["nodes"]) for p in parts]
    assert sum(samples) == tree.num_samples


def test_parts_are_named_beside_the_file_and_merged_once(tmp_path):
    out = str(tmp_path / "out.jsonl")
    assert part_path(out, 3) == str(tmp_path / "out.rank3.jsonl")
    rows = [{"key": "a", "sample_index": i} for i in range(4)]
    with open(out, "w") as f:
        f.write(json.dumps(rows[0]) + "\n" + '{"key": "a", "sam')  # a torn last line
    for d, chunk in ((1, rows[2:]), (0, rows[:2])):
        with open(part_path(out, d), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in chunk)
    assert part_paths(out) == [part_path(out, 0), part_path(out, 1)]
    key = lambda r: (r["key"], r["sample_index"])  # noqa: E731
    assert merge_parts(out, part_paths(out), key=key) == 3  # rows[0] was there already
    assert [json.loads(line) for line in open(out)] == [rows[0], rows[1], rows[2], rows[3]]
    assert part_paths(out) == []


# ----- tensor parallelism: 2 ranks against one process


def _tp_worker(ctx, out_dir, ckpt):
    from prompt_tree.parallel import ParallelEngine, load_sharded, random_sharded

    shard = TensorShard(2, ctx.layout.tp_rank)
    ids = torch.tensor([256] + list(b"def solve(n):\n    return n * (n + 1)"))
    result = {}
    with torch.inference_mode():
        for dtype in (torch.float32, torch.float64):  # float64: the same (float32-drawn) weights, upcast
            model = random_sharded("tiny", shard, ctx.tp_group, seed=0, device="cpu", dtype=torch.float32, std=0.1)
            result[f"logits_{dtype}"] = model.to(dtype).forward_dense(ids)
        qwen = load_sharded(ckpt, shard, ctx.tp_group, device="cpu", dtype="float32", tokenizer=False)
        result["qwen_logits"] = qwen.model.forward_dense(ids)
    model = random_sharded("tiny", shard, ctx.tp_group, seed=0, device="cpu", dtype=torch.float32, std=0.1)
    engine = ParallelEngine(model, model.config, _byte_tokenizer(), TINY.eos_token_ids, tp_group=ctx.tp_group)
    for name, params in _tp_params().items():
        # max_batch_sequences=2 forces sub-batches: the ranks must also agree on those
        res = engine.generate(_tp_tree(), params, progress=False, max_batch_sequences=2)
        result[name] = {f"{k}/{i}": c.token_ids for k, cs in res.items() for i, c in enumerate(cs)}
    torch.save(result, os.path.join(out_dir, f"rank{ctx.rank}.pt"))


def _byte_tokenizer():
    from prompt_tree.tokenizer import ByteTokenizer

    return ByteTokenizer()


def _tp_tree():
    from prompt_tree import PromptTree

    tree = PromptTree()
    shared = tree.root.add("Shared prefix of every prompt.\n", key="shared")
    shared.add("First question?\n", samples=2, key="a")
    shared.add("Second, longer question about something?\n", samples=3, key="b")
    return tree


def _tp_params():
    from prompt_tree import SamplingParams

    return {"greedy": SamplingParams(max_new_tokens=16, temperature=0.0),
            "sampled": SamplingParams(max_new_tokens=16, temperature=0.8, top_p=0.95, seed=5)}


def test_tp2_logits_and_generations_equal_tp1(tmp_path):
    from prompt_tree.engine import Engine
    from prompt_tree.loading import load_model, random_model

    ckpt = str(tmp_path / "qwen")
    _save_checkpoint(ckpt, QWEN_TINY)
    _spawn(_tp_worker, str(tmp_path), ckpt, tp=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for key, value in ranks[0].items():  # both ranks hold the same (replicated) logits and tokens: lockstep
        other = ranks[1][key]
        assert torch.equal(value, other) if torch.is_tensor(value) else value == other, key
    got = ranks[0]
    ids = torch.tensor([256] + list(b"def solve(n):\n    return n * (n + 1)"))
    with torch.inference_mode():
        ref = {dtype: random_model("tiny", seed=0, device="cpu", std=0.1).to(dtype).forward_dense(ids)
               for dtype in (torch.float32, torch.float64)}
        qwen_ref = {dtype: load_model(ckpt, device="cpu", dtype=dtype, tokenizer=False).model.forward_dense(ids)
                    for dtype in (torch.float32, torch.float64)}
    truth = ref[torch.float64]
    err_tp1 = (ref[torch.float32].double() - truth).abs().max().item()  # fp32's own error on this model
    err_tp2 = (got[f"logits_{torch.float32}"].double() - truth).abs().max().item()
    assert 0 < err_tp1 < 1e-4
    assert err_tp2 <= 2 * err_tp1, (err_tp2, err_tp1)
    assert (got[f"logits_{torch.float32}"] - ref[torch.float32]).abs().max().item() <= 3 * err_tp1
    assert (got[f"logits_{torch.float64}"] - truth).abs().max().item() <= 2 * err_tp1 * EPS64 / EPS32
    # the checkpoint path (slices read from the file, q/k/v biases split): the same argument, its own error scale
    err_qwen = (qwen_ref[torch.float32].double() - qwen_ref[torch.float64]).abs().max().item()
    assert (got["qwen_logits"].double() - qwen_ref[torch.float64]).abs().max().item() <= 2 * err_qwen
    engine = Engine(random_model("tiny", seed=0, device="cpu", dtype=torch.float32, std=0.1), TINY,
                    _byte_tokenizer(), TINY.eos_token_ids)
    for name, params in _tp_params().items():
        res = engine.generate(_tp_tree(), params, progress=False)
        want = {f"{k}/{i}": c.token_ids for k, cs in res.items() for i, c in enumerate(cs)}
        assert got[name] == want, name


def _records(out):
    from prompt_tree.tasks.results import read_jsonl

    return tuple({(r["problem_id"], r["sample_index"]): r for r in read_jsonl(os.path.join(out, name))}
                 for name in ("generations.jsonl", "verdicts.jsonl"))


# ----- a rank that dies or fails: the other stops, naming it, in bounded time

_FAILING_RANK = """
import os, sys, time, torch, torch.distributed as dist
from prompt_tree.parallel.env import init_distributed, run_guarded, RankFailedError, PEER_FAILED_EXIT
ctx = init_distributed(1, "cpu")
def work():
    if ctx.rank == 1:
        time.sleep(0.5)
        if sys.argv[1] == "raise":
            raise ValueError("boom")
        os._exit(9)  # as a kill would: no status, no goodbye
    dist.all_reduce(torch.ones(1))  # rank 0 waits in a collective for a peer that never comes
try:
    run_guarded(ctx, work)
except RankFailedError as e:
    print(f"rank {ctx.rank} stops: {e}", file=sys.stderr)
    sys.exit(PEER_FAILED_EXIT)
"""


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failed_or_dead_rank_stops_the_other_with_its_name(how):
    port = _free_port()
    env = lambda r: dict(os.environ, PYTHONPATH=REPO, PT_DIST_HEARTBEAT="0.25", PT_DIST_DEAD_AFTER="2",  # noqa: E731
                         PT_DIST_TIMEOUT="60", **_rank_env(r, 2, port))
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", _FAILING_RANK, how], env=env(r), stderr=subprocess.PIPE,
                              text=True) for r in range(2)]
    errs = [p.communicate(timeout=60)[1] for p in procs]
    elapsed = time.monotonic() - t0
    assert procs[1].returncode == (1 if how == "raise" else 9)
    assert procs[0].returncode == PEER_FAILED_EXIT, errs[0]
    if how == "raise":
        assert "rank 0 stops: rank 1 failed: ValueError: boom" in errs[0]
    else:
        assert "rank 1 stopped responding: no heartbeat for 2 s" in errs[0]
    assert elapsed < 30  # the collective's own timeout is 60 s: the heartbeat stopped it, not that


# ----- the command line under torchrun


def test_torchrun_generate_dp2_and_apps_tp2_match_one_process(tmp_path, capsys):
    from prompt_tree.cli import main

    _tp_tree().save(str(tmp_path / "tree.json"))
    gen = ["generate", "--model", "tiny", "--tree", str(tmp_path / "tree.json"), "--max-new-tokens", "10",
           "--temperature", "0.8", "--no-progress"]
    apps = ["apps", "--limit", "2", "--samples", "2", "--max-new-tokens", "10", "--k", "1,2", "--no-progress",
            "--workers", "1", "--timeout", "2"]
    assert main(gen + ["--out", str(tmp_path / "one.jsonl")]) == 0
    assert main(apps + ["--out", str(tmp_path / "apps1")]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "prompt_tree.cli"]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    for argv in (gen + ["--out", str(tmp_path / "dp.jsonl")], apps + ["--tp", "2", "--out", str(tmp_path / "apps2")]):
        done = subprocess.run(torchrun + argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    rows = lambda p: {(r["key"], r["sample_index"]): r for r in map(json.loads, open(p))}  # noqa: E731
    assert rows(tmp_path / "dp.jsonl") == rows(tmp_path / "one.jsonl") and len(rows(tmp_path / "one.jsonl")) == 5
    assert not part_paths(str(tmp_path / "dp.jsonl"))
    assert _records(str(tmp_path / "apps2")) == _records(str(tmp_path / "apps1"))


# ----- tensor x data parallelism: 4 ranks, 2 data-parallel groups of 2 tensor-parallel ranks


def _cli_rank_worker(_ctx, argv, obs_dir):
    """`prompt-tree ARGV` as a torchrun worker runs it (it joins the run itself), recording in obs_dir/rank<r>.json
    its exit status, the layout it got, its TP group, its engine's per-rank head counts, and the tokens of every
    sequence it generated (all engine.generate calls)."""
    import torch.distributed as dist

    import prompt_tree.parallel.env as env
    from prompt_tree.cli import main
    from prompt_tree.engine import Engine

    seen = {"generated": {}, "calls": 0}
    init, generate = env.init_distributed, Engine.generate

    def observed_init(*args, **kwargs):
        ctx = init(*args, **kwargs)
        lay = ctx.layout
        seen.update(world=lay.world_size, tp=lay.tp, dp=lay.dp, tp_rank=lay.tp_rank, dp_rank=lay.dp_rank,
                    tp_group=dist.get_process_group_ranks(ctx.tp_group) if ctx.tp_group is not None else None)
        return ctx

    def observed_generate(self, tree, params=None, **kwargs):
        result = generate(self, tree, params, **kwargs)
        seen["calls"] += 1
        seen["engine"] = [type(self).__name__, self.config.num_heads, self.config.num_kv_heads,
                          self.config.intermediate_size]
        seen["generated"].update({f"{k}/{i}": c.token_ids for k, cs in result.items() for i, c in enumerate(cs)})
        return result

    env.init_distributed, Engine.generate = observed_init, observed_generate
    rc = main(argv)
    with open(os.path.join(obs_dir, f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump(dict(seen, rc=rc), f)


def _tp2_dp2_groups(obs_dir) -> list[dict]:
    """Check that the 4 ranks ran as 2 groups of 2 tensor-parallel ranks (each a half model, in lockstep with its
    peer) that split the work between them, both doing some; returns each group's generated tokens."""
    ranks = [json.load(open(os.path.join(obs_dir, f"rank{r}.json"))) for r in range(4)]
    for r, seen in enumerate(ranks):
        assert seen["rc"] == 0, (r, seen["rc"])
        assert (seen["world"], seen["tp"], seen["dp"], seen["tp_rank"], seen["dp_rank"]) == (4, 2, 2, r % 2, r // 2)
        assert seen["tp_group"] == [r - r % 2, r - r % 2 + 1], (r, seen["tp_group"])
        # per rank: half of tiny's 4 heads, 2 KV heads and 256 MLP columns
        assert seen["engine"] == ["ParallelEngine", 2, 1, 128] and seen["calls"] >= 1, (r, seen)
    for d in range(2):  # TP peers make the same calls and draw the same tokens (only their writer records them)
        assert ranks[2 * d]["generated"] == ranks[2 * d + 1]["generated"], d
    groups = [ranks[0]["generated"], ranks[2]["generated"]]
    keys = [sorted(g) for g in groups]
    assert keys[0] and keys[1] and not set(keys[0]) & set(keys[1]), keys  # both groups worked, nothing twice
    return groups


SAMPLING = {"greedy": ["--temperature", "0"], "sampled": ["--temperature", "0.8", "--top-p", "0.95", "--seed", "5"]}


@pytest.mark.parametrize("sampling", SAMPLING.values(), ids=SAMPLING.keys())
def test_tp2_dp2_generate_equals_one_process(tmp_path, sampling):
    from prompt_tree.cli import main

    tree = str(tmp_path / "tree.json")
    _tp_tree().save(tree)
    # --max-batch-sequences 2 forces sub-batches, which each group's TP ranks must agree on
    argv = ["generate", "--model", "tiny", "--tree", tree, "--max-new-tokens", "10", "--max-batch-sequences", "2",
            "--no-progress"] + sampling
    one, out = str(tmp_path / "one.jsonl"), str(tmp_path / "tpdp.jsonl")
    assert main(argv + ["--out", one]) == 0
    _spawn(_cli_rank_worker, argv + ["--tp", "2", "--out", out], str(tmp_path), tp=None, world=4)
    groups = _tp2_dp2_groups(tmp_path)
    want = [json.loads(line) for line in open(one)]
    got = [json.loads(line) for line in open(out)]
    assert len(want) == len(got) == 5  # no row lost or written twice (the TP peers write nothing)
    key = lambda r: (r["key"], r["sample_index"])  # noqa: E731
    assert {key(r): r for r in got} == {key(r): r for r in want}  # same text, tokens and finish reasons
    # the subtrees (a: 2 samples, b: 3) went to different groups, and the merged file holds group 0's rows first
    assert sorted(len(g) for g in groups) == [2, 3]
    order = [f"{r['key']}/{r['sample_index']}" for r in got]  # within a group: the order sequences finished in
    assert set(order[:len(groups[0])]) == set(groups[0]) and set(order[len(groups[0]):]) == set(groups[1])
    assert {k: r["token_ids"] for r in want for k in [f"{r['key']}/{r['sample_index']}"]} == groups[0] | groups[1]
    assert not part_paths(out) and sorted(os.listdir(tmp_path)) == sorted(
        ["tree.json", "one.jsonl", "tpdp.jsonl"] + [f"rank{r}.json" for r in range(4)])


def test_tp2_dp2_apps_equals_one_process(tmp_path):
    from prompt_tree.cli import main
    from prompt_tree.tasks.runner import SAMPLE_KEY_SEP

    # --max-batch-sequences 2: sub-batches, which a group's writer and its TP peer (different code paths) must agree on
    apps = ["apps", "--limit", "4", "--samples", "2", "--max-new-tokens", "12", "--k", "1,2", "--no-progress",
            "--workers", "1", "--timeout", "2", "--max-batch-sequences", "2"]
    single, out = str(tmp_path / "single"), str(tmp_path / "tpdp")
    assert main(apps + ["--out", single]) == 0
    _spawn(_cli_rank_worker, apps + ["--tp", "2", "--out", out], str(tmp_path), tp=None, world=4)
    groups = _tp2_dp2_groups(tmp_path)
    want_gens, want_vers = _records(single)
    assert len(want_gens) == len(want_vers) == 8
    assert _records(out) == (want_gens, want_vers)  # identical per-problem records, merged complete
    for name in ("generations.jsonl", "verdicts.jsonl"):  # ... each exactly once
        assert sum(1 for _ in open(os.path.join(out, name))) == 8, name
    assert sorted(os.listdir(out)) == ["config.json", "generations.jsonl", "summary.json", "verdicts.jsonl"]
    summary, want = (json.load(open(os.path.join(d, "summary.json"))) for d in (out, single))
    assert summary["metrics"] == want["metrics"] and summary["generated"] == summary["executed"] == 8
    par = summary["parallel"]
    assert (par["world_size"], par["tp"], par["dp"]) == (4, 2, 2)
    # whole problems per group, both groups busy, and what each group's writer reported is what its ranks ran
    problems = [{k.split("/")[0].rsplit(SAMPLE_KEY_SEP, 1)[0] for k in g} for g in groups]
    assert problems[0] and problems[1] and not problems[0] & problems[1]
    assert problems[0] | problems[1] == {pid for pid, _ in want_gens}
    assert [(g["dp_rank"], g["problems"], g["generated"], g["executed"]) for g in par["groups"]] == [
        (d, len(problems[d]), len(groups[d]), len(groups[d])) for d in range(2)]
    assert sum(len(g) for g in groups) == 8
