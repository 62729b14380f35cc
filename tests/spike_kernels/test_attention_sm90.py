"""The attention kernels' machine code for sm_90 (no GPU needed): fp32 on tensor cores.

``spiking_attention`` runs fp32 inputs with ``input_precision="tf32x3"`` (see
``attention_triton._precision``); this compiles SpikeBERT's fp32 training call (forward and
backward, ``(Q K^T) V`` order, strided head views) through ``bench/sm90.py`` in a fresh
interpreter and checks every kernel's PTX issues tensor-core MMAs and ``ptxas -v`` reports
no spills. (That every kernel compiles and the 16-bit ones do not spill is
test_sm90_compile.py.)
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

# run in a fresh interpreter: this one may have defined the kernels under TRITON_INTERPRET
SCRIPT = """
import json, sys
import sm90
case = next(c for c in sm90.cases("test") if c.id == sys.argv[1])
out = []
with sm90.sm90_launches() as rec:
    sm90.run_case(case, rec)
    for x in rec.launches:
        ptx = x.compiled.asm["ptx"]
        st = sm90.ptxas_stats(ptx, getattr(x.compiled.metadata, "enable_fp_fusion", True))
        out.append(dict(kernel=x.kernel, phase=x.phase, tensor_cores="mma" in ptx,
                        tf32="tf32" in ptx, shared=x.compiled.metadata.shared, **st))
print(json.dumps(out))
"""

# the most shared memory one block may use on an H100/H200 (227 KB)
MAX_SHARED = 232448


def _compile(case_id: str) -> list[dict]:
    """Per launch of the case: kernel, phase, tensor-core use, shared memory, ptxas stats."""
    reason = sm90.unavailable_reason()
    if reason:
        pytest.skip(f"cannot compile for sm_90 here: {reason}")
    assert case_id in {c.id for c in sm90.cases("test")}
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), str(REPO / "bench"), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", SCRIPT, case_id], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fp32_attention_uses_tensor_cores_without_spills():
    launches = _compile("attention-spikebert-fp32-train-qk_v-4x32x12x128x64")
    assert {x["phase"] for x in launches} == {"forward", "backward"}
    for x in launches:
        what = f"{x['kernel']} ({x['phase']})"
        assert x["tensor_cores"] and x["tf32"], f"{what}: no tf32 tensor-core MMA in the PTX"
        assert x["spill_stores"] == 0 and x["spill_loads"] == 0, (
            f"{what}: {x['registers']} registers, {x['spill_stores']} B spill stores")


def test_kv_order_at_head_dim_128_fits_shared_memory():
    """The Q (K^T V) kernels hold Dh x Dh fp32 tiles; pipelined over the time loop they
    needed up to 276 KB of shared memory at Dh = 128 (a launch failure on an H200)."""
    launches = _compile("attention-dh128-bf16-train-q_kv-4x32x12x128x128")
    for x in launches:
        assert x["shared"] <= MAX_SHARED, (
            f"{x['kernel']} ({x['phase']}): {x['shared']} B of shared memory > {MAX_SHARED}")
