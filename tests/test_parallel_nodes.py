"""`prompt-tree apps` under torchrun over "nodes" that share no filesystem (--node-dir), on CPU with gloo: two
ranks on this machine stand for two nodes, each with its own node directory, and rank 1 is forbidden (by an
audit hook that fails every open, listing, creation or removal under it) to touch --out, which only rank 0's node
would have. The records must equal one process's, and an interrupted run's node files must be collected and
resumed from."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from tests.test_parallel import APPS, _records, _spawn

_EVENTS = ("open", "os.listdir", "os.scandir", "os.mkdir", "os.remove", "os.rename", "os.rmdir", "os.truncate")


def _forbid(path: str) -> None:
    root = os.path.realpath(path)

    def hook(event, args):
        if event in _EVENTS and args and isinstance(args[0], (str, bytes, os.PathLike)):
            target = os.path.realpath(os.fsdecode(args[0]))
            if target == root or target.startswith(root + os.sep):
                raise PermissionError(f"rank 1 touched --out ({event} {target}): its node cannot see it")

    sys.addaudithook(hook)


def _node_worker(ctx, config_kwargs, node_root, marker=None):
    from tasks.dp_runner import run_apps_distributed
    from tasks.runner import RunConfig

    node_dir = os.path.join(node_root, f"node{ctx.rank}")
    if ctx.rank != 0:
        _forbid(config_kwargs["out"])
    try:
        run_apps_distributed(RunConfig(node_dir=node_dir, **config_kwargs), ctx, log=None)
    except Exception as e:
        if marker is not None:
            with open(f"{marker}.{ctx.rank}", "w") as f:
                f.write(f"{type(e).__name__}: {e}")
        raise


def _node_files(node_root):
    return {d: sorted(os.listdir(os.path.join(node_root, d))) for d in sorted(os.listdir(node_root))}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    from tasks.runner import RunConfig, run_apps

    out = str(tmp_path_factory.mktemp("single") / "run")
    run_apps(RunConfig(out=out, **APPS), log=None)
    return out


def test_node_dirs_merge_into_out_and_equal_one_process(tmp_path, single):
    out, nodes = str(tmp_path / "out"), str(tmp_path / "nodes")
    _spawn(_node_worker, dict(APPS, out=out), nodes)
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
    _spawn(_node_worker, dict(APPS, out=out), nodes)
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
    _spawn(_node_worker, dict(APPS, out=out), nodes)
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
        _spawn(_node_worker, dict(APPS, out=out), nodes, marker)
    msg = open(f"{marker}.1").read()
    assert "--node-dir" in msg and "samples: 99 -> 2" in msg and "--force" in msg
    # rank 0 learns of it through the store and stops, naming rank 1; nothing of the run is written to --out
    assert "rank 1" in open(f"{marker}.0").read()
    assert not os.path.exists(os.path.join(out, "generations.jsonl"))
    assert os.path.exists(os.path.join(node1, "generations.rank1.jsonl"))  # nothing deleted
