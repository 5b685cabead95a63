"""tools/microbatch_probe.py's arithmetic on CPU: the two halves' tree metadata and layers compute what the whole
batch does (the probe's timings compare equal work only if they do; the timings themselves need a GPU)."""
from __future__ import annotations

import pytest
import torch

from tests.tool_modules import load_tool


def _probe():
    return load_tool("microbatch_probe")


@pytest.mark.parametrize("hkv", [1, 4])
@pytest.mark.parametrize("batch,prefix,own", [(6, 33, 5), (10, 1, 1)])
def test_the_halves_compute_the_whole_batch(hkv, batch, prefix, own):
    probe = _probe()
    torch.manual_seed(0)
    shape = (4 * probe.D, 4, hkv, 3 * probe.D)  # head dim 128 as on the GPU; GQA 4 / MHA by hkv
    layer = probe.Layer("tiny", batch, prefix, own, device="cpu", dtype=torch.float32, shape=shape)
    whole = probe.metas(layer, batch, prefix, own, 1)[0]
    halves = probe.metas(layer, batch, prefix, own, 2)
    x = torch.randn(batch, shape[0]) * 0.1
    ref = probe.run_layer(layer, x, whole, True, None)
    h = batch // 2
    got = torch.cat([probe.run_layer(layer, x[:h], halves[0], True, probe.ONE_STREAM),
                     probe.run_layer(layer, x[h:], halves[1], True, probe.ONE_STREAM)])
    # fp32, the same products in another grouping of rows: only summation order differs
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(got).all()
    # and attention is really in it: without it the layer differs
    assert not torch.allclose(probe.run_layer(layer, x, whole, False, None), ref, atol=1e-4)
