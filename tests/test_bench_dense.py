"""tools/bench_dense.py runs end to end on CPU (the tiny preset): rows, fields, the floor's arithmetic, the table."""
from __future__ import annotations

import json
import math

import pytest

from prompt_tree.config import PRESETS

from tests.tool_modules import load_tool


def _bench():
    return load_tool("bench_dense")


def test_bench_dense_smoke_on_tiny(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "dense.json"
    assert bench.main([str(out), "--models", "tiny", "--batches", "1,3", "--variants", "unfused,fused", "--steps",
                       "2", "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    assert result["device"] and result["dtype"] == "float32" and not result["cuda_graphs"]
    assert result["copy_bw_tbs"] > 0 and result["matmul_tflops"] > 0
    rows = result["rows"]
    assert [(r["batch"], r["variant"]) for r in rows] == [(1, "unfused"), (3, "unfused"), (1, "fused"), (3, "fused")]
    for r in rows:
        assert math.isfinite(r["step_ms"]) and r["step_ms"] > 0 and r["floor_ms"] > 0
        assert math.isclose(r["over_floor"], r["step_ms"] / r["floor_ms"])
        # fp32 on CPU: the fused step computes the unfused one (tests/test_model_fused.py's 1e-5 argument)
        assert r["rel_diff_vs_first"] <= 1e-5
    table = capsys.readouterr().out.strip().splitlines()
    assert table[-4].startswith("| model | B | floor ms | unfused ms | fused ms |")
    assert table[-1].startswith("| tiny | 3 |")


def test_floor_counts_weights_once_and_gemm_flops():
    """At batch 1 the bytes are the weights (embedding: one row) plus small activations; flops are 2 per weight
    of every GEMM. llama3-8b: 8.03e9 parameters, 0.53e9 of them in the embedding."""
    bench = _bench()
    cfg = PRESETS["llama3-8b"]
    nbytes, flops = bench.step_bytes_flops(cfg, 1, 2)
    embed = cfg.vocab_size * cfg.hidden_size
    assert nbytes > 2 * (cfg.num_parameters() - embed) and nbytes < 2 * (cfg.num_parameters() - embed) * 1.001
    norms = cfg.num_layers * 2 * cfg.hidden_size + cfg.hidden_size
    assert flops == 2 * (cfg.num_parameters() - embed - norms)
    _, flops_1024 = bench.step_bytes_flops(cfg, 1024, 2)
    assert flops_1024 == 1024 * flops


def test_bench_dense_rejects_bad_flags(tmp_path):
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "x.json"), "--variants", "fused,turbo", "--device", "cpu"])
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "x.json"), "--batches", "0", "--device", "cpu"])
