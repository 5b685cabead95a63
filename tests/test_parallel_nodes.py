"""`prompt-tree apps` under torchrun over "nodes" that share no filesystem (--node-dir), on CPU with gloo.

Two ranks on this machine stand for two nodes (each told by torchrun's variables that it is alone on its node,
each with its own node directory), or for two writers of one node sharing its directory. A rank other than 0 is
forbidden (by an audit hook that fails every open, listing, creation or removal under it) to touch --out, which
only rank 0's node would have. The records must equal one process's; an interrupted run's node files must be
collected and resumed from, also under --force; a directory of another run is refused; and a group that ends
long before the others must wait for rank 0 without a store timeout.
"""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from tests.test_parallel import APPS, _free_port, _rank_env, _records

_EVENTS = ("open", "os.listdir", "os.scandir", "os.mkdir", "os.remove", "os.rename", "os.rmdir", "os.truncate")


def _forbid(path: str) -> None:
    root = os.path.realpath(path)

    def hook(event, args):
        if event in _EVENTS and args and isinstance(args[0], (str, bytes, os.PathLike)):
            target = os.path.realpath(os.fsdecode(args[0]))
            if target == root or target.startswith(root + os.sep):
                raise PermissionError(f"rank 1 touched --out ({event} {target}): its node cannot see it")

    sys.addaudithook(hook)


def _node_rank(rank, port, layout, work, args, extra_env):
    """A spawned rank. layout "nodes": every rank alone on its node (LOCAL_RANK 0 of 1), with the node directory
    <root>/node<rank>; "one-node": both ranks on one node, sharing <root>/node0."""
    env = _rank_env(rank, 2, port, PT_DIST_DEAD_AFTER="20", PT_DIST_TIMEOUT="120")
    if layout == "nodes":
        env.update(LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    env.update(extra_env)
    os.environ.update(env)
    torch.set_num_threads(1)
    from prompt_tree.parallel import init_distributed
    from prompt_tree.parallel.env import run_guarded

    ctx = init_distributed(1, "cpu")
    run_guarded(ctx, lambda: work(ctx, layout, *args))


def _spawn_nodes(work, *args, layout="nodes", extra_env=None):
    torch.multiprocessing.spawn(_node_rank, args=(_free_port(), layout, work, args, extra_env or {}), nprocs=2,
                                join=True)


def _node_worker(ctx, layout, config_kwargs, node_root, marker=None, slow_rank0_s=0.0):
    from prompt_tree.tasks import dp_runner
    from prompt_tree.tasks.runner import RunConfig

    node_dir = os.path.join(node_root, f"node{ctx.rank if layout == 'nodes' else 0}")
    if ctx.rank != 0:
        _forbid(config_kwargs["out"])
    elif slow_rank0_s:  # group 0 generates long after group 1 has finished
        generate = dp_runner.generate_missing

        def slow(*a, **k):
            import time

            time.sleep(slow_rank0_s)
            return generate(*a, **k)

        dp_runner.generate_missing = slow
    try:
        dp_runner.run_apps_distributed(RunConfig(node_dir=node_dir, **config_kwargs), ctx, log=None)
    except Exception as e:
        if marker is not None:
            with open(f"{marker}.{ctx.rank}", "w") as f:
                f.write(f"{type(e).__name__}: {e}")
        raise


def _node_files(node_root):
    return {d: sorted(os.listdir(os.path.join(node_root, d))) for d in sorted(os.listdir(node_root))}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    from prompt_tree.tasks.runner import RunConfig, run_apps

    out = str(tmp_path_factory.mktemp("single") / "run")
    run_apps(RunConfig(out=out, **APPS), log=None)
    return out


def test_node_dirs_merge_into_out_and_equal_one_process(tmp_path, single):
    out, nodes = str(tmp_path / "out"), str(tmp_path / "nodes")
    _spawn_nodes(_node_worker, dict(APPS, out=out), nodes)
    assert _records(out) == _records(single)
    assert sorted(os.listdir(out)) == ["config.json", "generations.jsonl", "summary.json", "verdicts.jsonl"]
    # each node keeps only the run's config once its records are merged
    assert _node_files(nodes) == {"node0": ["config.json"], "node1": ["config.json"]}
    summary, want = (json.load(open(os.path.join(d, "summary.json"))) for d in (out, single))
    assert summary["metrics"] == want["metrics"] and summary["parallel"]["group_files"] == "--node-dir"
    assert [g["problems"] for g in summary["parallel"]["groups"]] == [2, 2]


def test_an_interrupted_node_run_is_collected_and_resumed(tmp_path, single):
    """Killed before the end: --out holds nothing of this run yet, each node holds what its group finished (node 1
    torn mid-line). The next invocation collects both, generates and executes only the rest."""
    out, nodes = str(tmp_path / "out"), str(tmp_path / "nodes")
    _spawn_nodes(_node_worker, dict(APPS, out=out), nodes)
    want_gens, want_vers = _records(single)
    order = sorted(want_gens)
    for name in ("generations.jsonl", "verdicts.jsonl", "summary.json"):
        os.remove(os.path.join(out, name))
    for d, keys, torn in ((0, order[:3], False), (1, order[4:6], True)):
        for name, records, n in (("generations", want_gens, len(keys)), ("verdicts", want_vers, len(keys) - 1)):
            with open(os.path.join(nodes, f"node{d}", f"{name}.rank{d}.jsonl"), "w") as f:
                f.writelines(json.dumps(records[k]) + "\n" for k in keys[:n])
                if torn:
                    f.write('{"problem_id": "emb-')
    _spawn_nodes(_node_worker, dict(APPS, out=out), nodes)
    assert _records(out) == (want_gens, want_vers)
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["this_invocation"] == {"generated": 8 - 5, "executed": 8 - 3, "resumed_generations": 5,
                                          "resumed_verdicts": 3}
    assert _node_files(nodes) == {"node0": ["config.json"], "node1": ["config.json"]}


def test_a_node_dir_of_another_run_is_refused_on_every_rank(tmp_path):
    out, nodes, marker = str(tmp_path / "out"), str(tmp_path / "nodes"), str(tmp_path / "error")
    node1 = os.path.join(nodes, "node1")
    os.makedirs(node1)
    with open(os.path.join(node1, "config.json"), "w") as f:
        json.dump({"samples": 99}, f)
    with open(os.path.join(node1, "generations.rank1.jsonl"), "w") as f:
        f.write('{"problem_id": "x", "sample_index": 0}\n')
    with pytest.raises(torch.multiprocessing.ProcessRaisedException):
        _spawn_nodes(_node_worker, dict(APPS, out=out), nodes, marker)
    msg = open(f"{marker}.1").read()
    assert "--node-dir" in msg and "samples: 99 -> 2" in msg and "--force" in msg
    # rank 0 learns of it through the store and stops, naming rank 1; nothing of the run is written to --out
    assert "rank 1" in open(f"{marker}.0").read()
    assert not os.path.exists(os.path.join(out, "generations.jsonl"))
    assert os.path.exists(os.path.join(node1, "generations.rank1.jsonl"))  # nothing deleted


def test_two_writers_of_one_node_share_its_directory(tmp_path, single):
    """Both groups on one node, one --node-dir: the first writer locks and clears it, each writes its own files;
    after a kill, every group's leftovers there (one of a group number the new layout lacks) are collected."""
    out, nodes = str(tmp_path / "out"), str(tmp_path / "nodes")
    _spawn_nodes(_node_worker, dict(APPS, out=out), nodes, layout="one-node")
    assert _records(out) == _records(single)
    assert _node_files(nodes) == {"node0": ["config.json"]}

    want_gens, want_vers = _records(single)
    order = sorted(want_gens)
    for name in ("generations.jsonl", "verdicts.jsonl", "summary.json"):
        os.remove(os.path.join(out, name))
    for d, keys in ((0, order[:2]), (1, order[2:4]), (5, order[4:6])):  # group 5: a run with more groups
        for name, records in (("generations", want_gens), ("verdicts", want_vers)):
            with open(os.path.join(nodes, "node0", f"{name}.rank{d}.jsonl"), "w") as f:
                f.writelines(json.dumps(records[k]) + "\n" for k in keys)
    _spawn_nodes(_node_worker, dict(APPS, out=out), nodes, layout="one-node")
    assert _records(out) == (want_gens, want_vers)
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["this_invocation"]["resumed_generations"] == 6 and summary["this_invocation"]["generated"] == 2
    assert _node_files(nodes) == {"node0": ["config.json"]}


def test_force_keeps_node_records_of_the_same_run(tmp_path, single):
    """--force resets a run of other settings; records of these settings are kept, in --out as in a node's
    directory."""
    out, nodes = str(tmp_path / "out"), str(tmp_path / "nodes")
    _spawn_nodes(_node_worker, dict(APPS, out=out), nodes)
    want_gens, want_vers = _records(single)
    for name in ("generations.jsonl", "verdicts.jsonl", "summary.json"):
        os.remove(os.path.join(out, name))
    with open(os.path.join(nodes, "node1", "generations.rank1.jsonl"), "w") as f:
        f.writelines(json.dumps(want_gens[k]) + "\n" for k in sorted(want_gens)[:4])
    _spawn_nodes(_node_worker, dict(APPS, out=out, force=True), nodes)
    assert _records(out) == (want_gens, want_vers)
    assert json.load(open(os.path.join(out, "summary.json")))["this_invocation"]["resumed_generations"] == 4


def test_a_group_that_ends_early_waits_for_rank_0_past_the_store_timeout(tmp_path, single):
    """Group 1 finishes ~12 s before group 0, with every store get limited to 6 s: it must wait for rank 0's
    merge without timing out (the wait is polled, watching rank 0's heartbeat)."""
    out, nodes = str(tmp_path / "out"), str(tmp_path / "nodes")
    _spawn_nodes(_node_worker, dict(APPS, out=out), nodes, None, 12.0, extra_env={"PT_DIST_TIMEOUT": "6"})
    assert _records(out) == _records(single)
