"""Fast checks of the benchmark harness itself (these run in every plain ``pytest``)."""

from __future__ import annotations

import json

import pytest
import render
import torch

import benchlib as bl


def _result(provider, median, peak, mode="fwd+bwd", T=8):
    return {"group": "lif", "mode": mode, "params": {"T": T, "N": 1 << 20}, "shape": [T, 1 << 20],
            "dtype": "float32", "provider": provider, "baseline": "ours", "detail": "",
            "time_s": {"median": median, "min": median, "mean": median, "stddev": 0.0,
                       "rounds": 3, "first_call": median},
            "peak_bytes": peak, "peak_method": "test", "gbs": 1.0, "x_floor": 2.0}


def test_floor_bytes_match_spec():
    # docs/DESIGN.md §6: bf16 input, int8 spikes: forward 3 B, forward+backward with recompute 9 B
    assert bl.lif_floor_bytes(torch.bfloat16, "fwd") == 3
    assert bl.lif_floor_bytes(torch.bfloat16, "fwd+bwd") == 9
    assert bl.lif_floor_bytes(torch.float32, "fwd+bwd") == 17


def test_ratios_are_against_the_baseline_of_the_same_case():
    results = [_result("ours", 0.1, 100), _result("spikingjelly", 0.3, 250),
               _result("spikingjelly", 0.8, 50, T=4)]
    bl.add_ratios(results)
    assert results[0]["speedup_of_ours"] == pytest.approx(1.0)
    assert results[1]["speedup_of_ours"] == pytest.approx(3.0)
    assert results[1]["memory_ratio"] == pytest.approx(2.5)
    assert results[2]["speedup_of_ours"] is None  # no ours at T=4


def test_shim_times_rounds_and_stats():
    shim = bl.ShimBenchmark()
    calls = []
    stats = bl.time_call(shim, lambda: calls.append(1), device="cpu",
                         policy=bl.Policy(warmup=1, min_rounds=4, max_rounds=5, max_time=1e-9))
    assert stats["rounds"] == 4 and len(calls) == 2 + 1 + 4  # first, probe, warmup, rounds
    assert 0 <= stats["min"] <= stats["median"] and stats["first_call"] >= 0


def test_cpu_peak_memory_sees_a_tensor_allocation():
    peak, method = bl.peak_memory(lambda: torch.empty(1 << 20, dtype=torch.float32).fill_(1),
                                  device="cpu")
    assert peak is not None, method
    assert 4 << 20 <= peak < 8 << 20


def test_recorder_writes_merges_and_renders(tmp_path):
    rec = bl.Recorder("default", directory=tmp_path, run_id="run")
    rec.add(_result("ours", 0.1, 100 << 20))
    again = bl.Recorder("default", directory=tmp_path, run_id="run")  # a later stage
    again.add(_result("spikingjelly", 0.25, 300 << 20))
    again.add(_result("spikingjelly", 0.3, 300 << 20))  # replaces the same case + provider
    doc = json.loads((tmp_path / "run.json").read_text())
    assert [r["provider"] for r in doc["results"]] == ["ours", "spikingjelly"]
    assert (tmp_path / f"latest-{'gpu' if bl.DEVICE == 'cuda' else 'cpu'}.json").exists()
    assert doc["results"][1]["speedup_of_ours"] == pytest.approx(3.0)
    assert doc["env"]["versions"]["torch"] == torch.__version__
    doc["env"]["device"] = "cuda"  # GB/s columns are shown for CUDA runs only
    text = render.render(doc)
    assert "| fwd+bwd | 8 | 2^20 | fp32 | 100 | 300 (3x) | 1 | 2.00 |" in text
    assert "| fwd+bwd | 8 | 2^20 | fp32 | 100 | 300 (3x) |" in text.split("Peak memory")[1]
    out = tmp_path / "table.md"
    assert render.main([str(tmp_path / "run.json"), "-o", str(out)]) == 0
    assert out.read_text() == render.render(json.loads((tmp_path / "run.json").read_text()))
    assert "GB/s" not in out.read_text()  # a CPU run
