"""The engine on a GPU: Triton kernels and CUDA-graph decode against the dense reference (skipped on CPU).

fp32 weights (the kernels use IEEE fp32 dots for fp32 inputs) so that greedy tokens are comparable exactly with
the dense causal forward; see tests/test_engine.py for the tolerance argument. Then bf16 at a real head shape:
tree and flat must agree with each other within bf16 rounding on the first step's logits.
"""
import pytest
import torch

from prompt_tree.config import get_preset, replace
from prompt_tree.engine import Engine
from prompt_tree.loading import random_model
from prompt_tree.sampling import SamplingParams
from prompt_tree.tokenizer import ByteTokenizer

from test_engine import dense_check, random_tree

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def cuda_engine_factory():
    config = get_preset("tiny")
    model = random_model(config, seed=0, std=0.1, device="cuda", dtype=torch.float32)

    def make(**kw):
        eos = kw.pop("eos_ids", config.eos_token_ids)
        return Engine(model, config, ByteTokenizer(), eos, **kw)

    return make


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_cuda_tree_equals_flat_equals_dense(cuda_engine_factory, seed, graphs):
    eng = cuda_engine_factory(cuda_graphs=graphs, compact_fraction=0.0)
    tree = random_tree(seed, max_depth=1 + seed % 4)
    plan = eng.plan(tree)
    params = SamplingParams(max_new_tokens=6, temperature=0, logprobs=True)
    tree_res = eng.generate(plan, params, progress=False)
    flat_res = eng.generate(plan, params, attention="flat", progress=False)
    for key in tree_res:
        assert [c.token_ids for c in tree_res[key]] == [c.token_ids for c in flat_res[key]]
    cpu = Engine(eng.model.to("cpu"), eng.config, ByteTokenizer(), eng.eos_ids)
    try:
        dense_check(cpu, plan, tree_res, atol=1e-3)
    finally:
        eng.model.to("cuda")


def test_cuda_bf16_real_head_shape_tree_vs_flat():
    """Llama-3-like heads (32/8, head dim 128) in bf16, 2 layers: first-token logits of tree and flat agree to
    bf16 rounding of the attention output (relative 1e-2) and the sampled first tokens agree."""
    config = replace(get_preset("tiny"), hidden_size=4096, num_heads=32, num_kv_heads=8, head_dim=128,
                     intermediate_size=1024, num_layers=2)
    model = random_model(config, seed=1, std=0.02, device="cuda", dtype=torch.bfloat16)
    eng = Engine(model, config, ByteTokenizer(), config.eos_token_ids)
    tree = random_tree(3, max_depth=3)
    params = SamplingParams(max_new_tokens=4, temperature=0, logprobs=True)
    a = eng.generate(tree, params, progress=False)
    b = eng.generate(tree, params, attention="flat", progress=False)
    agree = sum(x.token_ids[0] == y.token_ids[0] for k in a for x, y in zip(a[k], b[k]))
    total = sum(len(a[k]) for k in a)
    assert agree == total


def test_cuda_graph_buckets_replay_across_compositions(cuda_engine_factory):
    """Unequal lengths make the batch change composition many times (rows finish, problems join): every bucket
    is captured once (or again only when a composition outgrows its capacity) and the replays give what the
    eager engine gives."""
    from test_engine_batching import lengths, problems_tree, same

    tree = problems_tree(5, problems=8, samples=5)
    params = SamplingParams(max_new_tokens=24, temperature=0.8, seed=2, logprobs=True)
    budget = lengths(3, 24)
    eager = cuda_engine_factory(cuda_graphs=False).generate(tree, params, progress=False, length_budget=budget)
    graphs = cuda_engine_factory(cuda_graphs=True, compact_fraction=0.25)
    got = graphs.generate(tree, params, progress=False, length_budget=budget, step_log=True)
    same(eager, got, logprobs=False)
    for x, y in zip(eager.all(), got.all()):
        torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-3, rtol=0)
    s = got.summary
    buckets = {graphs.options.bucket(n) for n, _ in got.step_log if n}
    assert s.captures >= 1 and s.captures <= 2 * len(buckets)  # once per bucket, again only on a capacity grow
    # every replayed step is logged; each capture's step ran eagerly (its time is in capture_seconds)
    assert len(got.step_log) == s.decode_steps - s.captures


def test_cuda_continuous_preemption_equals_unconstrained(cuda_engine_factory):
    from test_engine_batching import problems_tree, same, tight_budget

    tree = problems_tree(7, problems=6, samples=6)
    params = SamplingParams(max_new_tokens=40, temperature=0.8, seed=9, logprobs=True)

    def budget(key, s):
        return 2 if key.split("/")[0] in ("p0", "p1", "p2") else 40

    # no EOS: a sample of this random model that ends on EOS would never outgrow its pages (no preemption)
    ref = cuda_engine_factory(eos_ids=()).generate(tree, params, progress=False, length_budget=budget)
    small = cuda_engine_factory(eos_ids=(), memory_budget_bytes=tight_budget(30, tree, rows=39),
                                prefill_chunk_tokens=64, max_batch_sequences=64, watermark=0.0)
    got = small.generate(tree, params, progress=False, length_budget=budget)
    same(ref, got, logprobs=False)
    assert got.summary.preemptions > 0


def test_cuda_capture_survives_a_dead_graph_collected_meanwhile(cuda_engine_factory, monkeypatch):
    """A graph kept alive only by a reference cycle and destroyed while the next call captures invalidates that
    capture (the step benchmark's flat B128 row died so: torch.cuda.graph no longer collects first). Here the
    collector is made to run right after every capture begins; the engine collects before it captures and not
    during, so the call still captures and gives the eager call's tokens."""
    import gc

    class Cycle:
        pass

    eng = cuda_engine_factory(cuda_graphs=True)
    tree = random_tree(1, max_depth=2)
    params = SamplingParams(max_new_tokens=5, temperature=0)
    eager = cuda_engine_factory(cuda_graphs=False).generate(tree, params, progress=False)
    begin = torch.cuda.CUDAGraph.capture_begin

    def begin_then_collect(self, *args, **kwargs):
        begin(self, *args, **kwargs)
        gc.collect()  # the collector firing at an allocation inside the capture

    enabled = gc.isenabled()
    gc.disable()  # the cycle below must survive until the capture
    try:
        g = torch.cuda.CUDAGraph()
        x = torch.zeros(8, device="cuda")
        with torch.cuda.graph(g):
            x.add_(1)
        dead = Cycle()
        dead.graph, dead.me = g, dead
        del g, dead
        monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_begin", begin_then_collect)
        got = eng.generate(tree, params, progress=False)
    finally:
        if enabled:
            gc.enable()
    for key in eager:
        assert [c.token_ids for c in got[key]] == [c.token_ids for c in eager[key]]


def test_cuda_host_gap_profile(cuda_engine_factory):
    """Every back-to-back replayed step has its launch's host parts; the late steps are a subset of them."""
    eng = cuda_engine_factory()
    tree = random_tree(2, max_depth=3)
    sm = eng.generate(tree, SamplingParams(max_new_tokens=24, temperature=0.8, seed=0, stop=["\n\n"]),
                      progress=False).summary
    g = sm.host_gaps
    assert 0 < g["steps"] <= sm.decode_steps and 0 <= g["late_steps"] <= g["steps"]
    assert g["late_idle_s"] <= sm.host_seconds + 1e-9
    assert g["host_s"]["launch"] > 0 and all(v >= 0 for v in g["host_s"].values())
    assert all(g["late_host_s"][k] <= g["host_s"][k] + 1e-12 for k in g["host_s"])


def test_cuda_first_tokens_beside_the_batch_are_work_between_steps_not_idle(cuda_engine_factory, monkeypatch):
    """Slices admitted while the batch decodes get their first tokens sampled between two decode steps. Queued
    behind work in flight, that sampling is device work: timed, given as `between_s` and left out of the idle.
    The tiny model's step is shorter than the host's work, so a sleep kernel before each first-token call keeps
    the stream busy (as a real model's step does); it sits in the gap as idle. Checked on the runner's own
    events: every work window lies inside its gap, and each record's idle is the gap less the work."""
    from prompt_tree.engine import model_runner
    from test_engine_batching import lengths, shots_tree, tight_budget

    start, records = model_runner.ModelRunner.start_first_tokens, model_runner.ModelRunner.gap_records
    runners = []

    def busy_start(self, *a, **k):
        torch.cuda._sleep(1_000_000)  # ~0.5 ms at ~2 GHz
        return start(self, *a, **k)

    def kept_records(self):
        runners.append(self)
        return records(self)

    monkeypatch.setattr(model_runner.ModelRunner, "start_first_tokens", busy_start)
    monkeypatch.setattr(model_runner.ModelRunner, "gap_records", kept_records)
    # a budget of 160 pages: slices come in as samples end, 8 of 20 first-token calls between two steps on CPU
    tree = shots_tree(8, 32)
    eng = cuda_engine_factory(memory_budget_bytes=tight_budget(160, tree), prefill_chunk_tokens=64,
                              max_batch_sequences=64, watermark=0.0)
    sm = eng.generate(tree, SamplingParams(max_new_tokens=40, temperature=0.8, seed=4), progress=False,
                      length_budget=lengths(8, 40)).summary
    r = runners[-1]
    pairs = [(a, c) for a, c in zip(r.times, r.times[1:]) if a is not None and c is not None]
    got = r.gap_records()
    assert len(got) == len(pairs) and pairs
    with_work = 0
    for (a, c), (idle, _, work) in zip(pairs, got):
        gap = a.end.elapsed_time(c.start) / 1e3
        for s, e in c.between:
            assert a.end.elapsed_time(s) >= 0 and e.elapsed_time(c.start) >= 0  # stream order: inside the gap
        assert work == pytest.approx(sum(s.elapsed_time(e) for s, e in c.between) / 1e3)
        assert idle == pytest.approx(max(0.0, gap - work), abs=1e-9)
        with_work += bool(c.between)
    assert with_work > 0, "no first tokens were started between two back-to-back steps"
    assert sm.host_gaps["between_s"] == pytest.approx(sum(w for _, _, w in got)) and sm.host_gaps["between_s"] > 0


def test_cuda_graph_run_is_freed_by_reference_counting(cuda_engine_factory):
    """As tests/test_collector.py checks on CPU, with CUDA graphs and the host-gap records on."""
    from test_collector import run_objects_left_in_cycles

    left = run_objects_left_in_cycles(cuda_engine_factory())
    assert left == [], f"{len(left)} run objects were in reference cycles: {sorted(set(left))}"
