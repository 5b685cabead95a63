"""The Triton sampler kernel (under the interpreter on CPU, fp32/fp16; bf16 and CUDA-graph capture on a GPU)
against the torch path and the sort-based reference, its in-kernel uniform against seeds.uniforms.

Shapes are small because the interpreter runs every program in Python; candidates=16 with V up to 300 makes both
the register path (<= 16 elements above the chosen pivot) and the bracket-refining fallback run.
"""
import pytest
import torch

from sampler_oracle import ambiguous_rows, assert_same_tokens
from triton_interpreter import quick_device_calls
from prompt_tree.sampler import Sampler
from prompt_tree.sampling import SamplingParams, sample_reference
from prompt_tree.seeds import seed_key, uniforms

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True, scope="module")
def _interpreter_speed():
    with quick_device_calls():
        yield


def _compare(params, logits, ids, step, candidates=16, block=64, max_ambiguous=0.25):
    tri = Sampler(params, DEVICE, backend="triton", candidates=candidates, block=block)
    got, got_lp = tri(logits, ids, step)
    want, want_lp = sample_reference(logits.cpu(), params, ids.cpu(), step.cpu() if torch.is_tensor(step) else step)
    mid, _ = Sampler(params, "cpu", backend="torch", candidates=candidates)(
        logits.cpu(), ids.cpu(), step.cpu() if torch.is_tensor(step) else step)
    amb = ambiguous_rows(logits.cpu(), params, ids.cpu(), step.cpu() if torch.is_tensor(step) else step) \
        if not params.greedy else torch.zeros(len(ids), dtype=torch.bool)
    assert_same_tokens(got, want, amb, max_ambiguous)
    assert_same_tokens(got, mid, amb, max_ambiguous)
    # the kernel's logsumexp sums per lane then across lanes: a few fp32 ulps of a value of magnitude <= ~10
    torch.testing.assert_close(got_lp.cpu(), want_lp, rtol=0, atol=1e-5)
    if not params.greedy:
        assert torch.equal(tri._triton.u_out.cpu(), uniforms(seed_key(params.seed), ids.cpu(),
                                                             step.cpu() if torch.is_tensor(step) else step))
    return got


CASES = [
    dict(temperature=0),
    dict(temperature=0.7),
    dict(top_k=3),
    dict(top_k=40),  # k > C: the count bracket is refined
    dict(top_p=0.95, temperature=0.8),
    dict(top_p=0.6, min_p=0.05),
    dict(min_p=0.2, temperature=0.9),
    dict(top_k=5, top_p=0.8, min_p=0.05),
    dict(top_k=60, top_p=0.99),
    dict(top_k=30, min_p=0.01),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_kernel_equals_reference_and_torch_path(kw):
    params = SamplingParams(seed=len(str(kw)), **kw)
    g = torch.Generator().manual_seed(len(kw))
    for V, scale in ((11, 2.0), (300, 3.0), (257, 0.5)):
        logits = (torch.randn(6, V, generator=g) * scale).to(DEVICE)
        ids = torch.randint(0, 2**62, (6,), generator=g).to(DEVICE)
        _compare(params, logits, ids, 4, max_ambiguous=0.5)


def test_fp16_logits_and_tensor_steps():
    params = SamplingParams(temperature=0.9, top_p=0.9, top_k=20)
    g = torch.Generator().manual_seed(7)
    logits = (torch.randn(6, 200, generator=g) * 3).half().to(DEVICE)
    ids = torch.arange(6, device=DEVICE) * 31
    _compare(params, logits, ids, torch.arange(6, device=DEVICE) + 3)
    _compare(params, logits, ids, torch.tensor(9, device=DEVICE))


def test_awkward_rows():
    """A masked vocabulary, a fully tied row, a single finite logit, huge and strided logits."""
    V = 100
    rows = torch.stack([
        torch.where(torch.arange(V) % 3 == 0, torch.randn(V), torch.tensor(float("-inf"))),
        torch.zeros(V),
        torch.where(torch.arange(V) == 17, 0.5, float("-inf")),
        torch.randn(V) * 1e4,
        torch.linspace(-50, 50, V),
    ])
    wide = torch.zeros(5, 2 * V)
    wide[:, ::2] = rows
    logits = wide[:, ::2].to(DEVICE)  # a non-contiguous view: the launcher copies it
    ids = torch.arange(5, device=DEVICE)
    for kw in (dict(top_k=20), dict(top_p=0.9), dict(min_p=0.3), dict(temperature=1.0), dict(temperature=0)):
        got = _compare(SamplingParams(seed=2, **kw), logits, ids, 1, max_ambiguous=0.6)
        assert torch.isfinite(logits.cpu().gather(1, got.cpu()[:, None])).all()


@pytest.mark.cuda
def test_bf16_on_gpu():
    params = SamplingParams(temperature=0.8, top_p=0.95)
    logits = (torch.randn(64, 32000, device="cuda") * 4).bfloat16()
    ids = torch.arange(64, device="cuda")
    _compare(params, logits, ids, 1, candidates=1024, block=1024)  # step 1 arrives as a constexpr


@pytest.mark.cuda
def test_cuda_graph_capture_replays_the_eager_result():
    params = SamplingParams(temperature=0.8, top_p=0.95, top_k=50)
    B, V = 128, 32000
    sampler = Sampler(params, "cuda")
    logits = torch.randn(B, V, device="cuda") * 3
    ids = torch.arange(B, device="cuda")
    step = torch.zeros((), dtype=torch.int64, device="cuda")
    sampler(logits, ids, step)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        toks, lps = sampler(logits, ids, step)
    for s in range(3):
        logits.copy_(torch.randn(B, V, device="cuda") * 3)
        step.fill_(s + 1)
        graph.replay()
        want, want_lp = sampler(logits, ids, s + 1)
        assert torch.equal(toks, want)
        torch.testing.assert_close(lps, want_lp)
