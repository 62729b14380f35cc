"""The multi-step LIF neuron, forward and forward+backward, against its peers.

Providers: ``ours`` (``spike_kernels.lif``: Triton on CUDA, the PyTorch CPU path on CPU),
``ours-recompute`` (the same with ``recompute=True``, as SpikeBERT runs it),
``torch-ref`` (our plain PyTorch reference ``lif_ref``), ``torch-compile`` (``torch.compile``
of that reference), SpikingJelly's multi-step ``LIFNode`` (on CUDA each of its
implementations that exists: ``spikingjelly-triton``, ``-cuda``, ``-torch``) and snnTorch's
``Leaky`` in a Python time loop. Every provider runs SpikingJelly's default neuron (tau 2,
threshold 1, hard reset to 0, sigmoid surrogate alpha 4, no detach); snnTorch its closest
``Leaky``.

``fwd`` is inference (``torch.no_grad()``); ``fwd+bwd`` is the forward plus
``torch.autograd.grad`` of the spikes with a random upstream gradient. ``gbs`` is the
effective bandwidth at docs/DESIGN.md §6's floor bytes per neuron-step (``lif_floor_bytes``) and
``x_floor`` the time over that floor at this run's device-to-device copy bandwidth.

Matrix: by default on CPU fwd+bwd at T in {4, 8, 16}, N = 2^20, fp32 (every provider,
``torch-compile`` included: the issue-14 comparison), fwd at T=8 fp32 and both modes at T=8
bf16; on CUDA T in {4, 8, 16, 32} at N = 2^22 in fp32 and bf16. ``--benchmark-full``: T in
{4, 8, 16, 32} x N in {2^16, 2^20} (CPU) or {2^20, 2^22} (CUDA) x {fp32, bf16}. The
``torch-compile`` peer compiles every shape anew (1-2 minutes each on 2 CPU cores), so by
default it runs only at fwd+bwd fp32 on CPU and at fwd+bwd T=8 bf16 on CUDA. On CPU every
provider runs on one thread (``torch.set_num_threads(1)`` for the case, restored after):
the per-core comparison, not a measure of how the 2 cores of a shared machine are split.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import torch

import spike_kernels as sk

import benchlib as bl

NEURON = dict(tau=2.0, v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate="sigmoid",
              alpha=4.0)
REF_PARAMS = sk.NeuronParams.make(**NEURON)
PROVIDERS = ["ours", "ours-recompute", "torch-ref", "torch-compile", *bl.spikingjelly_providers(),
             "snntorch"]


@dataclass(frozen=True)
class LifCase:
    mode: str
    T: int
    N: int
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.mode}-T{self.T}-N{bl.pow2(self.N)}-{bl.SHORT_DTYPE[self.dtype]}"


def lif_cases(device: str, full: bool) -> list[LifCase]:
    modes, dtypes, times = ("fwd+bwd", "fwd"), ("float32", "bfloat16"), (4, 8, 16, 32)
    if full:
        sizes = (1 << 20, 1 << 22) if device == "cuda" else (1 << 16, 1 << 20)
        return [LifCase(m, T, N, d) for m in modes for d in dtypes for N in sizes for T in times]
    if device == "cuda":
        return [LifCase(m, T, 1 << 22, d) for m in modes for d in dtypes for T in times]
    return [LifCase("fwd+bwd", T, 1 << 20, "float32") for T in (4, 8, 16)] + [
        LifCase("fwd", 8, 1 << 20, "float32"),
        *(LifCase(m, 8, 1 << 20, "bfloat16") for m in modes)]


def wanted(provider: str, case: LifCase, device: str, full: bool) -> bool:
    if provider != "torch-compile" or full:
        return True
    if device == "cuda":
        return (case.mode, case.T, case.dtype) == ("fwd+bwd", 8, "bfloat16")
    return (case.mode, case.dtype) == ("fwd+bwd", "float32")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lif_case" in metafunc.fixturenames:
        full = metafunc.config.getoption("benchmark_full")
        metafunc.parametrize(("lif_case", "provider"), [
            pytest.param(c, p, id=f"{c.id}-{p}") for c in lif_cases(bl.DEVICE, full)
            for p in PROVIDERS if wanted(p, c, bl.DEVICE, full)])


def ref_spikes(x: torch.Tensor) -> torch.Tensor:
    return sk.lif_ref(x, None, REF_PARAMS)[0]


def provider_fn(provider: str, case: LifCase, stack: contextlib.ExitStack):
    """``(x -> spikes, description)`` of ``provider``, or a pytest skip with the reason."""
    if provider == "ours":
        backend = "Triton" if bl.DEVICE == "cuda" else "PyTorch CPU path"
        return (lambda x: sk.lif(x, **NEURON)), f"spike_kernels.lif ({backend})"
    if provider == "ours-recompute":
        return ((lambda x: sk.lif(x, **NEURON, recompute=True)),
                "spike_kernels.lif(recompute=True): saves x only, H recomputed in backward")
    if provider == "torch-ref":
        return ref_spikes, "spike_kernels.lif_ref (PyTorch autograd time loop)"
    if provider == "torch-compile":
        return (bl.fresh_compile(ref_spikes, f"{case.id}"),
                "torch.compile(spike_kernels.lif_ref), default mode")
    if provider.startswith("spikingjelly"):
        node, detail = stack.enter_context(
            bl.spikingjelly_neuron(provider, dtype=bl.DTYPES[case.dtype], **NEURON))

        def sj(x):
            node.reset()
            return node(x)

        return sj, detail
    if provider == "snntorch":
        leaky = bl.snntorch_leaky(tau=NEURON["tau"], v_threshold=NEURON["v_threshold"],
                                  alpha=NEURON["alpha"]).to(bl.DEVICE)
        return ((lambda x: bl.snntorch_time_loop(leaky, x)),
                f"snntorch {bl.dist_version('snntorch')} Leaky(reset='zero') in a time loop")
    raise ValueError(provider)


def test_lif(bench, lif_case: LifCase, provider: str) -> None:
    case, device = lif_case, bl.DEVICE
    dtype = bl.DTYPES[case.dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    # N(1.5, 1) input: with tau 2 and threshold 1 about a third of the neuron-steps fire
    x = (torch.randn(case.T, case.N, device=device, generator=gen) + 1.5).to(dtype)
    with contextlib.ExitStack() as stack:
        if device == "cpu":
            stack.enter_context(bl.torch_threads(1))
        neuron, detail = provider_fn(provider, case, stack)
        if case.mode == "fwd":
            def fn():
                with torch.no_grad():
                    neuron(x)
        else:
            x.requires_grad_()
            grad = torch.randn(x.shape, device=device, generator=gen).to(dtype)

            def fn():
                torch.autograd.grad(neuron(x), x, grad)

        floor = bl.lif_floor_bytes(dtype, case.mode) * case.T * case.N

        def metrics(stats):
            copy = bench.copy_gbs()
            gbs = floor / stats["median"] / 1e9
            return {"floor_bytes_per_neuron_step": bl.lif_floor_bytes(dtype, case.mode),
                    "gbs": gbs, "copy_gbs": copy, "x_floor": copy / gbs,
                    "torch_threads": torch.get_num_threads(), "load_avg": bl.load_average(),
                    "cpu_time_s": bl.thread_cpu_time(fn) if device == "cpu" else None}

        bench.run(fn, group="lif", mode=case.mode, params={"T": case.T, "N": case.N},
                  shape=[case.T, case.N], dtype=case.dtype, provider=provider,
                  baseline="ours", detail=detail, metrics=metrics)
