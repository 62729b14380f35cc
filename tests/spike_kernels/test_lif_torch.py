"""The PyTorch path of ``spike_kernels.lif`` (``backend="torch"``): the whole-loop graphs.

* snnTorch convention against snnTorch 1.0's ``Leaky`` itself (fp64, both resets, the
  membrane passed explicitly in and out) and against ``lif_ref``;
* ``spike_dtype``: 16-bit spikes from fp32 inputs, forward and backward;
* the time loop run in chunks (T above ``MAX_UNROLL``), empty inputs, saved-H clamping;
* compiled: equal to the eager path and the reference, and no recompilation for new neuron
  counts or new constants.

Most tests run the loops eagerly (``SPIKE_KERNELS_CPU_COMPILE=0``): compiling costs seconds
per flag combination on a small CPU. Tests that compile say so.
"""

from __future__ import annotations

import pytest
import torch

from spike_kernels import NeuronParams, lif, lif_ref
from spike_kernels.ops import lif_torch

RESETS = {"subtract": None, "zero": 0.0}


@pytest.fixture(autouse=True)
def _eager_cpu_path(monkeypatch):
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")


def kwargs(p: NeuronParams) -> dict:
    return dict(tau=p.tau, decay_input=p.decay_input, v_threshold=p.v_threshold,
                v_reset=p.v_reset, surrogate=p.surrogate, detach_reset=p.detach_reset,
                convention=p.convention, beta=p.beta)


def snn_params(reset: str, beta: float = 0.75, th: float = 0.625, surrogate="atan"):
    return NeuronParams.make(convention="snntorch", beta=beta, v_threshold=th,
                             v_reset=RESETS[reset], surrogate=surrogate)


def case(T, shape, seed, dtype=torch.float32, scale=0.9, shift=0.35):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(T, *shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)
    v0 = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.6).to(dtype)
    ups = [torch.randn(T, *shape, generator=g, dtype=torch.float64).to(dtype),
           torch.randn(shape, generator=g, dtype=torch.float64).to(dtype),
           torch.randn(T, *shape, generator=g, dtype=torch.float64).to(dtype)]
    return x, v0, ups


def run(fn, x, v0, ups, **kw):
    """``fn(x, v0) -> (s, v_last, v_seq)``: outputs and the gradients of x (and v0)."""
    x = x.clone().requires_grad_()
    v0 = None if v0 is None else v0.clone().requires_grad_()
    outs = fn(x, v0, **kw)
    grads = torch.autograd.grad(outs, (x,) if v0 is None else (x, v0),
                                [u.to(o.dtype) for u, o in zip(ups, outs, strict=True)])
    return [o.detach() for o in outs] + list(grads)


def ours(p: NeuronParams, recompute=False, spike_dtype=None):
    return lambda x, v0: lif(x, v0, **kwargs(p), backend="torch", recompute=recompute,
                             spike_dtype=spike_dtype, return_v=True, return_v_seq=True)


def ref(p: NeuronParams):
    return lambda x, v0: lif_ref(x, v0, p)


def assert_same(got, want, *, grad_tol, ctx=""):
    names = ("spikes", "v_last", "v_seq", "grad_x", "grad_v_init")
    assert len(got) == len(want)
    for name, a, b in zip(names, got, want, strict=False):
        assert a.shape == b.shape and a.dtype == b.dtype, (ctx, name, a.shape, b.shape)
        if name in ("spikes", "v_last", "v_seq"):
            assert torch.equal(a, b), f"{ctx} {name}: {(a != b).sum()} differ"
        else:
            err = (a - b).abs().max().item()
            assert err <= grad_tol, f"{ctx} {name}: max error {err}"


# --------------------------------------------------------------------------- snnTorch


@pytest.mark.parametrize("reset", RESETS)
def test_snntorch_convention_matches_leaky(reset):
    """convention="snntorch" vs snnTorch 1.0's Leaky (reset_delay=True) in fp64, over three
    calls carrying the membrane explicitly (ours: v_init/return_v; Leaky: mem in and out),
    the first from a non-zero membrane: spikes and membranes bit-identical, gradients of the
    inputs and of the initial membrane to 1e-6 (snnTorch's spikes are fp32 even for fp64
    inputs, and so is the gradient through its surrogate)."""
    snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
    beta, th = 0.75, 0.625
    leaky = snn.Leaky(beta=torch.tensor(beta, dtype=torch.float64),
                      threshold=torch.tensor(th, dtype=torch.float64), reset_mechanism=reset,
                      spike_grad=snn.surrogate.atan(alpha=2.0))
    p = snn_params(reset, beta, th)
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(T, 4, 9, generator=g, dtype=torch.float64) * 0.9 + 0.35 for T in (5, 1, 6)]
    mem0 = torch.randn(4, 9, generator=g, dtype=torch.float64)  # some start above threshold
    x_snn = [x.clone().requires_grad_() for x in xs]
    x_our = [x.clone().requires_grad_() for x in xs]
    m_snn, m_our = mem0.clone().requires_grad_(), mem0.clone().requires_grad_()
    out_snn, out_our = [], []
    mem, v = m_snn, m_our
    for a, b in zip(x_snn, x_our, strict=True):
        for t in range(a.shape[0]):
            spk, mem = leaky(a[t], mem)
            out_snn += [spk.to(torch.float64), mem]
        s, v, q = lif(b, v, **kwargs(p), backend="torch", return_v=True, return_v_seq=True)
        out_our += [y for t in range(s.shape[0]) for y in (s[t], q[t])]
        out_snn[-1], out_our[-1] = mem, v  # the carried membrane is an output too
    assert sum(int(o.sum()) for o in out_our[0::2]) > 30, "too few spikes to test the reset"
    for i, (a, b) in enumerate(zip(out_our, out_snn, strict=True)):
        assert torch.equal(a, b), f"{reset}: output {i} differs by {(a - b).abs().max()}"
    ups = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in out_our]
    g_snn = torch.autograd.grad(out_snn, [*x_snn, m_snn], ups)
    g_our = torch.autograd.grad(out_our, [*x_our, m_our], ups)
    for i, (a, b) in enumerate(zip(g_our, g_snn, strict=True)):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-6), (reset, i, (a - b).abs().max())


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
def test_snntorch_convention_matches_reference(reset, dtype):
    """vs lif_ref, with and without v_init, saved H and recompute: spikes and membranes
    bit-identical, gradients to rounding."""
    p = snn_params(reset, beta=0.9, th=0.7, surrogate="sigmoid")
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    x, v0, ups = case(7, (3, 11), seed=1, dtype=dtype)
    for init in (v0, None):
        want = run(ref(p), x, init, ups)
        for recompute in (False, True):
            got = run(ours(p, recompute), x, init, ups)
            assert_same(got, want, grad_tol=tol, ctx=f"{reset} {dtype} rc={recompute}")


# --------------------------------------------------------------------------- spike_dtype


@pytest.mark.parametrize("conv", ("spikingjelly", "snntorch"))
def test_spike_dtype(conv):
    """bf16/fp16 spikes from fp32 inputs: the fp32 spikes in another dtype; membranes, grad_x
    and grad_v_init in fp32, equal to an fp32 run given the same (16-bit) upstream
    gradient of the spikes."""
    p = snn_params("zero") if conv == "snntorch" else NeuronParams.make(tau=2.5, v_reset=None)
    x, v0, ups = case(6, (5, 7), seed=2, scale=1.5, shift=0.6)
    for sd in (torch.bfloat16, torch.float16):
        ups16 = [ups[0].to(sd).float(), ups[1], ups[2]]
        want = run(ours(p), x, v0, ups16)
        got = run(ours(p, spike_dtype=sd), x, v0, ups16)
        assert got[0].dtype == sd and torch.equal(got[0].float(), want[0])
        assert_same(got[1:], want[1:], grad_tol=0.0, ctx=f"{conv} {sd}")
        assert all(g.dtype == torch.float32 for g in got[3:])


# --------------------------------------------------------------------------- the loops


@pytest.mark.parametrize("conv", ("spikingjelly", "snntorch"))
def test_chunked_time_loop(monkeypatch, conv):
    """T above MAX_UNROLL runs in chunks carrying the state (and the snnTorch reset) across
    the chunk boundaries, the last one shorter: the same as the reference."""
    monkeypatch.setattr(lif_torch, "MAX_UNROLL", 3)
    assert lif_torch._chunks(7) == [(0, 3), (3, 6), (6, 7)]
    p = snn_params("zero") if conv == "snntorch" else NeuronParams.make(v_reset=0.0)
    x, v0, ups = case(7, (13,), seed=4, scale=1.5, shift=0.6)
    for recompute in (False, True):
        assert_same(run(ours(p, recompute), x, v0, ups), run(ref(p), x, v0, ups),
                    grad_tol=1e-5, ctx=f"chunks rc={recompute}")


def backward_both_ways(p: NeuronParams, T: int, shape, seed: int):
    """(grad_x, grad_v_init) by lif_backward_torch(recompute=True) and by recompute_h_torch +
    lif_backward_torch, from spikes of another dtype and all three upstream gradients."""
    x, v0, ups = case(T, shape, seed=seed, scale=1.5, shift=0.6)
    gs = ups[0].to(torch.bfloat16)
    fused = lif_torch.lif_backward_torch(gs, ups[1], ups[2], x, v0, p, x.dtype, recompute=True)
    h = lif_torch.recompute_h_torch(x, v0, p)
    split = lif_torch.lif_backward_torch(gs, ups[1], ups[2], h, v0, p, x.dtype)
    return fused, split


@pytest.mark.parametrize("conv", ("spikingjelly", "snntorch"))
def test_recompute_backward_in_one_graph(monkeypatch, conv):
    """The backward that recomputes H inside its kernels (from x and the state at each chunk
    start) equals recomputing H first, bit for bit, in one chunk and across chunks."""
    p = snn_params("zero") if conv == "snntorch" else NeuronParams.make(v_reset=0.0)
    for T in (4, 2):
        fused, split = backward_both_ways(p, T, (5, 9), seed=T)
        assert all(torch.equal(a, b) for a, b in zip(fused, split, strict=True))
    monkeypatch.setattr(lif_torch, "MAX_UNROLL", 3)
    fused, split = backward_both_ways(p, 7, (5, 9), seed=6)
    assert all(torch.equal(a, b) for a, b in zip(fused, split, strict=True))


def test_empty_inputs():
    """No time steps or no neurons: empty spikes, v_last = v_init (or its default)."""
    for p in (NeuronParams.make(v_reset=-0.5), snn_params("subtract")):
        s, v, q = lif(torch.zeros(0, 3), **kwargs(p), backend="torch", return_v=True,
                      return_v_seq=True)
        assert s.shape == q.shape == (0, 3) and torch.equal(v, torch.full((3,), p.v_init))
        v0 = torch.randn(3)
        assert torch.equal(lif(torch.zeros(0, 3), v0, **kwargs(p), backend="torch",
                               return_v=True)[1], v0)
        s, v = lif(torch.zeros(4, 0, 2), **kwargs(p), backend="torch", return_v=True)
        assert s.shape == (4, 0, 2) and v.shape == (0, 2)


@pytest.mark.parametrize("conv", ("spikingjelly", "snntorch"))
def test_saved_h_keeps_the_spike_side(conv):
    """H saved in bf16 is clamped so that backward re-derives the forward's spikes from it
    (H >= V_th for SpikingJelly, U > V_th for snnTorch), even where bf16 rounds across."""
    th = 1.0 + 2.0 ** -12  # not a bf16 value: inputs near it round onto 1.0 or 1.0 + 2^-7
    p = (snn_params("subtract", beta=0.5, th=th) if conv == "snntorch" else
         NeuronParams.make(v_threshold=th, decay_input=False))
    x = (th + torch.linspace(-3e-3, 3e-3, 601)).to(torch.bfloat16)[None]
    x = torch.cat([x, x])
    s, _, h, _ = lif_torch.lif_forward_torch(x, None, p, True, False)
    assert h.dtype == torch.bfloat16 and s.any() and not s.all()
    fired = h.float() > th if conv == "snntorch" else h.float() >= th
    assert torch.equal(fired, s.bool())


# --------------------------------------------------------------------------- compiled


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.mark.filterwarnings("error:spike_kernels:RuntimeWarning")  # no silent eager fallback
@pytest.mark.parametrize("conv", ("spikingjelly", "snntorch"))
def test_compiled_matches_eager_and_reference(monkeypatch, conv):
    """The compiled whole-loop graphs: spikes and membranes bit-identical to the eager loop
    and to lif_ref (fp32), gradients to rounding; then new neuron counts and new constants
    run without compiling anything."""
    base = dict(surrogate="sigmoid", v_reset=0.0)
    if conv == "snntorch":
        params = [NeuronParams.make(convention="snntorch", beta=b, v_threshold=th, **base)
                  for b, th in ((0.9, 1.0), (0.55, 0.4))]
    else:
        params = [NeuronParams.make(tau=tau, v_threshold=th, **base)
                  for tau, th in ((2.0, 1.0), (3.7, 0.5))]
    x, v0, ups = case(5, (3, 7), seed=5, scale=1.5, shift=0.6)
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "1")
    compiled = run(ours(params[0]), x, v0, ups)
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")
    eager = run(ours(params[0]), x, v0, ups)
    assert_same(compiled, eager, grad_tol=1e-6, ctx="compiled vs eager")
    assert_same(compiled, run(ref(params[0]), x, v0, ups), grad_tol=1e-5, ctx="vs lif_ref")
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "1")
    fused, split = backward_both_ways(params[0], 5, (3, 7), seed=9)
    assert all(torch.equal(a, b) for a, b in zip(fused, split, strict=True))
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "1")
    graphs = _graphs()
    for p in params:
        for shape in ((3, 7), (129,), (2, 50, 3)):
            x, v0, ups = case(5, shape, seed=len(shape), scale=1.5, shift=0.6)
            got = run(ours(p), x, v0, ups)
            assert_same(got, run(ref(p), x, v0, ups), grad_tol=1e-5, ctx=f"{p} {shape}")
    assert _graphs() == graphs, "new neuron counts or constants recompiled the loops"
