"""Spiking attention at SpikeBERT's shapes: the fused op against matmuls plus a neuron.

``S = LIF_t(scale * (Q_t K_t^T) V_t)`` over ``q, k, v`` ``[T, B, H, L, Dh]`` spikes (20%
firing), SpikeBERT's attention neuron (threshold 0.5, tau 2, hard reset to 0, detached reset,
ATan surrogate alpha 2, scale 0.125).

Providers: ``ours-fused`` (``spike_kernels.spiking_attention``, its default order),
``ours-unfused`` (``(Q K^T) V`` by two matmuls, then ``spike_kernels.lif``: how SpikeBERT's
code computes it), ``ours-unfused-kv-first`` (``Q (K^T V)`` by two matmuls, then
``spike_kernels.lif``: shows how much of the fused op's gain is the cheaper order alone) and
``spikingjelly-unfused`` (``(Q K^T) V`` then SpikingJelly's ``LIFNode``: its Triton
implementation on CUDA, its CPU path on CPU).

Shapes (``spikebert.PRESETS``): ``mini`` T=4, H=4, L=64, Dh=64; ``paper`` T=4, H=12, L=128,
Dh=64. Default matrix: CPU mini B=32 and paper B=4 in fp32; CUDA paper B=32 in fp32 and
bf16. ``--benchmark-full`` adds bf16 on CPU and mini B=32 on CUDA.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import torch

import spike_kernels as sk

import benchlib as bl

NEURON = dict(tau=2.0, v_threshold=0.5, v_reset=0.0, detach_reset=True, surrogate="atan",
              alpha=2.0)
SCALE = 0.125
SHAPES = {"mini": dict(T=4, H=4, L=64, Dh=64), "paper": dict(T=4, H=12, L=128, Dh=64)}
PROVIDERS = ["ours-fused", "ours-unfused", "ours-unfused-kv-first", "spikingjelly-unfused"]


@dataclass(frozen=True)
class AttnCase:
    mode: str
    preset: str
    B: int
    dtype: str

    @property
    def params(self) -> dict[str, object]:
        s = SHAPES[self.preset]
        return {"preset": self.preset, "T": s["T"], "B": self.B, "H": s["H"], "L": s["L"],
                "Dh": s["Dh"]}

    @property
    def shape(self) -> list[int]:
        p = self.params
        return [p["T"], p["B"], p["H"], p["L"], p["Dh"]]

    @property
    def id(self) -> str:
        return f"{self.mode}-{self.preset}-B{self.B}-{bl.SHORT_DTYPE[self.dtype]}"


def attention_cases(device: str, full: bool) -> list[AttnCase]:
    modes = ("fwd+bwd", "fwd")
    if device == "cuda":
        shapes = [("paper", 32), *([("mini", 32)] if full else [])]
        dtypes = ("float32", "bfloat16")
    else:
        shapes = [("mini", 32), ("paper", 4)]
        dtypes = ("float32", "bfloat16") if full else ("float32",)
    return [AttnCase(m, p, b, d) for m in modes for p, b in shapes for d in dtypes]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "attn_case" in metafunc.fixturenames:
        full = metafunc.config.getoption("benchmark_full")
        metafunc.parametrize(("attn_case", "provider"), [
            pytest.param(c, p, id=f"{c.id}-{p}") for c in attention_cases(bl.DEVICE, full)
            for p in PROVIDERS])


def provider_fn(provider: str, case: AttnCase, stack: contextlib.ExitStack):
    """``((q, k, v) -> spikes, description)``, or a pytest skip with the reason."""
    if provider == "ours-fused":
        fused = getattr(sk, "spiking_attention", None)
        if fused is None:
            bl.skip("spike_kernels.spiking_attention does not exist yet")
        backend = "Triton" if bl.DEVICE == "cuda" else "PyTorch CPU path"
        return ((lambda q, k, v: fused(q, k, v, scale=SCALE, **NEURON)),
                f"spike_kernels.spiking_attention ({backend}, order='auto')")
    if provider == "ours-unfused":
        return ((lambda q, k, v: sk.lif((q @ k.transpose(-1, -2) @ v) * SCALE, **NEURON)),
                "(Q K^T) V matmuls + spike_kernels.lif")
    if provider == "ours-unfused-kv-first":
        return ((lambda q, k, v: sk.lif((q @ (k.transpose(-1, -2) @ v)) * SCALE, **NEURON)),
                "Q (K^T V) matmuls + spike_kernels.lif")
    if provider == "spikingjelly-unfused":
        sj_provider = "spikingjelly-triton" if bl.DEVICE == "cuda" else "spikingjelly"
        node, detail = stack.enter_context(
            bl.spikingjelly_neuron(sj_provider, dtype=bl.DTYPES[case.dtype], **NEURON))

        def sj(q, k, v):
            node.reset()
            return node((q @ k.transpose(-1, -2) @ v) * SCALE)

        return sj, f"(Q K^T) V matmuls + {detail}"
    raise ValueError(provider)


def test_attention(bench, attn_case: AttnCase, provider: str) -> None:
    case, device = attn_case, bl.DEVICE
    dtype = bl.DTYPES[case.dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = ((torch.rand(case.shape, device=device, generator=gen) < 0.2).to(dtype)
               for _ in range(3))
    with contextlib.ExitStack() as stack:
        attend, detail = provider_fn(provider, case, stack)
        if case.mode == "fwd":
            def fn():
                with torch.no_grad():
                    attend(q, k, v)
        else:
            for t in (q, k, v):
                t.requires_grad_()
            grad = torch.randn(case.shape, device=device, generator=gen).to(dtype)

            def fn():
                torch.autograd.grad(attend(q, k, v), (q, k, v), grad)

        bench.run(fn, group="attention", mode=case.mode, params=case.params, shape=case.shape,
                  dtype=case.dtype, provider=provider, baseline="ours-fused", detail=detail)
