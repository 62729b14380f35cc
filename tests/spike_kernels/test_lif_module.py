"""The ``LIF`` module and ``reset_net``, ``torch.compile`` of a model using ``lif``, and the
errors that bad arguments raise."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from spike_kernels import LIF, NeuronParams, lif, lif_ref, reset_net

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = (("triton", TRITON_DEVICE), ("torch", "cpu"))
backends = pytest.mark.parametrize("backend,device", BACKENDS, ids=("triton", "torch"))


@pytest.fixture(autouse=True)
def _eager_cpu_path(monkeypatch):
    """Eager CPU steps unless a test compiles on purpose (seconds per flag combination)."""
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")


# --------------------------------------------------------------------------- module


@backends
def test_single_step_equals_multi_step(backend, device):
    """step_mode="s" called T times equals step_mode="m" called once: spikes, the membrane
    (and store_v_seq, which accumulates the steps in 's' mode as LIFNode does), and gradients
    through the state carried between the calls."""
    kwargs = dict(tau=3.0, v_reset=None, surrogate_function="atan", detach_reset=True,
                  backend=backend, store_v_seq=True)
    x = (torch.randn(6, 4, 5, device=device) + 0.6).requires_grad_()
    multi, single = LIF(step_mode="m", **kwargs), LIF(step_mode="s", **kwargs)
    s_m = multi(x)
    s_s = torch.stack([single(x[t]) for t in range(x.shape[0])])
    assert torch.equal(s_m, s_s)
    assert torch.equal(multi.v, single.v)
    assert torch.equal(multi.v_seq, single.v_seq) and single.v_seq.shape == (6, 4, 5)
    up = torch.randn_like(s_m)
    (g_m,) = torch.autograd.grad((s_m * up).sum() + multi.v.sum(), x)
    (g_s,) = torch.autograd.grad((s_s * up).sum() + single.v.sum(), x)
    torch.testing.assert_close(g_s, g_m, atol=1e-6, rtol=1e-6)


def test_module_matches_functional_and_reference():
    p = NeuronParams.make(tau=2.0, decay_input=False, v_threshold=0.8, v_reset=-0.1,
                          surrogate="erf", alpha=3.0)
    m = LIF(tau=2.0, decay_input=False, v_threshold=0.8, v_reset=-0.1,
            surrogate_function=NeuronParams.make(surrogate="erf", alpha=3.0).surrogate,
            step_mode="m", backend="torch")
    x = torch.randn(5, 3, 7) + 0.5
    s_ref, v_ref, _ = lif_ref(x, None, p)
    assert torch.equal(m(x), s_ref)
    torch.testing.assert_close(m.v, v_ref)


def test_reset_and_reset_net():
    """The membrane carries over between calls until reset() / reset_net()."""
    net = nn.Sequential(nn.Identity(), LIF(step_mode="m", backend="torch"),
                        nn.Sequential(LIF(step_mode="s", backend="torch")))
    multi, single = net[1], net[2][0]
    x = torch.full((3, 2), 1.5)
    first = multi(x)
    second = multi(x)  # starts from the carried membrane (0.75): fires at once
    assert first[:, 0].tolist() == [0, 1, 0] and second[:, 0].tolist() == [1, 0, 1]
    single(x[0])
    assert multi.v is not None and single.v is not None
    reset_net(net)
    assert multi.v is None and multi.v_seq is None and single.v is None
    assert torch.equal(multi(x), first)
    multi.reset()
    assert torch.equal(multi(x), first)
    # a different shape without reset is a clear error, not a broadcast
    with pytest.raises(ValueError, match="reset"):
        multi(torch.zeros(3, 5))


def test_extra_repr_and_defaults():
    m = LIF()  # SpikingJelly's LIFNode defaults
    assert (m.params.tau, m.params.decay_input, m.params.v_threshold, m.params.v_reset,
            m.params.detach_reset, m.params.surrogate.name, m.params.surrogate.alpha,
            m.step_mode) == (2.0, True, 1.0, 0.0, False, "sigmoid", 4.0, "s")
    text = repr(LIF(tau=3.0, v_reset=None, surrogate_function="atan", step_mode="m",
                    backend="torch", recompute=True))
    for part in ("tau=3.0", "decay_input=True", "v_threshold=1.0", "v_reset=None",
                 "surrogate=atan(alpha=2.0)", "detach_reset=False", "step_mode='m'",
                 "backend='torch'", "recompute=True"):
        assert part in text, (part, text)


def test_from_beta():
    """snnTorch's Leaky: convention="snntorch", single-step by default (snnTorch's loop)."""
    m = LIF.from_beta(0.75, threshold=0.5, backend="torch")
    p = m.params
    assert (p.convention, p.beta, p.decay_input, p.v_threshold, p.v_reset, p.detach_reset) == (
        "snntorch", 0.75, False, 0.5, None, True)
    assert p.surrogate.name == "atan" and m.step_mode == "s"
    assert LIF.from_beta(0.5, reset_mechanism="zero").params.v_reset == 0.0
    assert LIF.from_beta(0.5, step_mode="m").step_mode == "m"
    assert "convention='snntorch', beta=0.75" in repr(m)
    # U = 0.6 (> 0.5: spike; its reset lands at the next step), 0.45 + 0.6 - 0.5 = 0.55,
    # 0.4125 + 0.6 - 0.5 = 0.5125
    x = torch.full((3, 1), 0.6, dtype=torch.float64)
    assert [m(x[t]).item() for t in range(3)] == [1.0, 1.0, 1.0]
    assert m.v.item() == pytest.approx(0.5125, abs=1e-15)
    for beta in (-0.5, 1.5, math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="beta"):
            LIF.from_beta(beta)
    for beta in ("0.5", True, None, torch.tensor(0.5)):
        with pytest.raises(TypeError, match="beta"):
            LIF.from_beta(beta)
    with pytest.raises(ValueError, match="reset_mechanism"):
        LIF.from_beta(0.5, reset_mechanism="none")


def test_module_constructor_errors():
    with pytest.raises(ValueError, match="step_mode"):
        LIF(step_mode="multi")
    with pytest.raises(ValueError, match="backend"):
        LIF(backend="cupy")
    with pytest.raises(ValueError, match="surrogate"):
        LIF(surrogate_function="relu")
    with pytest.raises(ValueError, match="tau"):
        LIF(tau=1.0)


# --------------------------------------------------------------------------- torch.compile


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Linear(6, 10), nn.Linear(10, 3)

    def forward(self, x, v0):
        s, v = lif(self.inp(x), v0, tau=2.5, v_reset=None, surrogate="atan", backend="torch",
                   return_v=True)
        return self.out(s), v


# Dynamo must not trace through the parameter cache (it warns of possible silent errors)
@pytest.mark.filterwarnings("error:Dynamo detected a call to a `functools.lru_cache`")
def test_torch_compile_fullgraph_matches_eager():
    """Linear -> lif -> Linear under torch.compile(fullgraph=True): no graph break (it would
    raise), and forward and gradients equal to eager."""
    torch.manual_seed(0)
    model = Model()
    x = torch.randn(4, 3, 6) * 2
    v0 = torch.randn(3, 10) * 0.3

    def step(fn):
        model.zero_grad()
        xi, vi = x.clone().requires_grad_(), v0.clone().requires_grad_()
        y, v = fn(xi, vi)
        (y.square().sum() + v.sum()).backward()
        return [y.detach(), v.detach(), xi.grad, vi.grad,
                *(p.grad.clone() for p in model.parameters())]

    eager = step(model)
    compiled = step(torch.compile(model, fullgraph=True))
    assert eager[0].abs().sum() > 0
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- bad arguments


def test_bad_neuron_parameters():
    x = torch.randn(3, 4)
    cases = [
        (dict(tau=1.0), ValueError, "tau must be > 1"),
        (dict(tau=0.5), ValueError, "tau must be > 1"),
        (dict(tau=-2.0), ValueError, "tau must be > 1"),
        (dict(tau=math.nan), ValueError, "tau must be finite"),
        (dict(tau=math.inf), ValueError, "tau must be finite"),
        (dict(tau="2"), TypeError, "tau must be a real number"),
        (dict(tau=True), TypeError, "tau must be a real number"),
        (dict(v_threshold=math.nan), ValueError, "v_threshold must be finite"),
        (dict(v_threshold=math.inf), ValueError, "v_threshold must be finite"),
        (dict(v_threshold=-0.5), ValueError, "v_threshold must be >= 0"),
        (dict(v_reset=math.nan), ValueError, "v_reset must be finite"),
        (dict(decay_input=1), TypeError, "decay_input must be a bool"),
        (dict(detach_reset="yes"), TypeError, "detach_reset must be a bool"),
        (dict(surrogate="relu"), ValueError, "unknown surrogate 'relu'; expected one of sigmoid"),
        (dict(surrogate=3), TypeError, "surrogate must be a name"),
        (dict(alpha=0.0), ValueError, "alpha must be finite and > 0"),
        (dict(alpha=math.nan), ValueError, "alpha must be finite and > 0"),
        (dict(backend="cupy"), ValueError, "unknown backend 'cupy'; expected one of auto"),
        (dict(backend=None), ValueError, "unknown backend"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            lif(x, **kwargs)


def test_bad_inputs():
    x = torch.randn(3, 4)
    for bad in (torch.ones(3, 4, dtype=torch.int64), torch.ones(3, 4, dtype=torch.bool)):
        with pytest.raises(TypeError, match="floating-point tensor"):
            lif(bad)
    with pytest.raises(TypeError, match=re.escape("must be a torch.Tensor")):
        lif([[0.5, 1.5]])
    with pytest.raises(ValueError, match="leading time dimension"):
        lif(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"v_init must have shape x.shape\[1:\] = \(4,\)"):
        lif(x, torch.zeros(3))
    with pytest.raises(ValueError, match="v_init must have shape"):
        lif(x, torch.zeros(1, 4))  # no broadcasting
    with pytest.raises(TypeError, match=re.escape("v_init must have x's dtype torch.float32")):
        lif(x, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="v_init must be on x's device cpu"):
        lif(x, torch.zeros(4, device="meta"))
    with pytest.raises(TypeError, match=re.escape("v_init must be a torch.Tensor or None")):
        lif(x, 0.0)


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    """backend="triton" with CPU tensors and TRITON_INTERPRET off: a clear error, no silent
    fallback (the variable is read at call time)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        lif(torch.randn(3, 4), backend="triton")
    assert lif(torch.randn(3, 4), backend="auto").shape == (3, 4)  # the CPU path
