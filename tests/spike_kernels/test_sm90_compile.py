"""Every Triton kernel the public ops launch compiles for an H100/H200 (sm_90), no GPU needed.

``bench/sm90.py`` calls ``spike_kernels.lif`` and ``spike_kernels.spiking_attention``
(forward and backward; fp32/bf16/fp16; both attention orders; recompute on and off; head
dims 32/64/128; q/k/v as the strided ``[T, B, L, H, Dh]`` views SpikeBERT passes) with
Triton's driver swapped for an sm_90 stand-in, so each launch compiles with the alignment
and constexprs of a real one; ``ptxas -v`` and the PTX give registers, spills and access
widths. One run of the whole matrix per session (a fresh interpreter: this one runs Triton's
interpreter), shared by all the checks below:

* every case compiles;
* the bf16/fp16 kernels at SpikeBERT shapes do not spill registers;
* the LIF kernels use 128-bit global loads and stores on aligned inputs.

Skipped only where Triton has no CUDA backend or no bundled ptxas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import sm90  # noqa: E402

CASES = sm90.cases("test")

def params(select) -> list:
    return [pytest.param(case, id=case.id) for case in CASES if select(case)]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, dict]:
    """Results of ``bench/sm90.py`` for every case, compiled once (in parallel processes)."""
    reason = sm90.unavailable_reason()
    if reason:
        pytest.skip(f"cannot compile for sm_90 here: {reason}")
    out = tmp_path_factory.mktemp("sm90") / "sm90.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    jobs = str(min(4, os.cpu_count() or 1))  # ~0.8 GB of CPU tensors per process
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "sm90.py"), "--matrix", "test", "--jobs", jobs,
         "--no-sass", "-q", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads(out.read_text())
    if "skip" in doc:
        pytest.skip(f"cannot compile for sm_90 here: {doc['skip']}")
    return doc["cases"]


def _result(compiled: dict, case: sm90.Case) -> dict:
    r = compiled[case.id]
    assert r["error"] is None, f"{case.id} does not compile for sm_90:\n{r['error']}"
    return r


@pytest.mark.parametrize("case", params(lambda c: True))
def test_compiles_for_sm90(compiled, case):
    r = _result(compiled, case)
    phases = {x["phase"] for x in r["launches"]}
    assert "forward" in phases, f"{case.id}: no Triton kernel launched in the forward"
    if case.mode != "infer":
        assert "backward" in phases, f"{case.id}: no Triton kernel launched in the backward"


@pytest.mark.parametrize(
    "case", params(lambda c: c.dtype != "fp32" and c.spikebert_shape))
def test_no_register_spills_16bit(compiled, case):
    spilled = [f"{x['kernel']} ({x['phase']}): {x['registers']} registers, "
               f"{x['spill_stores']} B spill stores, {x['spill_loads']} B spill loads"
               for x in _result(compiled, case)["launches"]
               if x["spill_stores"] or x["spill_loads"]]
    assert not spilled, f"{case.id} spills registers:\n" + "\n".join(spilled)


@pytest.mark.parametrize(
    "case", params(lambda c: c.op == "lif" and c.spikebert_shape))
def test_lif_128_bit_global_accesses(compiled, case):
    """Aligned inputs (N divisible by 16, 16-byte aligned pointers): every global load and
    store of the LIF kernels moves 128 bits."""
    narrow = [f"{x['kernel']} ({x['phase']}): widths {x['global_bits']}"
              for x in _result(compiled, case)["launches"]
              if {int(b) for op in ("ld", "st") for b in x["global_bits"][op]} != {128}]
    assert not narrow, f"{case.id}: global accesses narrower than 128 bits:\n" + \
        "\n".join(narrow)


def test_harness_sees_what_a_launch_specialises(compiled):
    """The harness itself: each launch keeps its own constexprs (inference and training
    forwards of the LIF differ) and the statistics come from a real sm_90 build."""
    def forward(mode: str) -> dict:
        case = sm90.Case("lif", "bf16", mode, (4, 32, 128, 768), label="spikebert")
        return next(x for x in _result(compiled, case)["launches"] if x["phase"] == "forward")

    infer, train = forward("infer"), forward("train")
    assert infer["constexprs"] != train["constexprs"], infer["constexprs"]
    for x in (infer, train):
        assert x["registers"] > 0 and x["num_warps"] > 0 and x["global_bits"]["ld"], x
