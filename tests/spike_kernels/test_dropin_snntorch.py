"""``spike_kernels.Leaky`` and ``LIF.from_beta`` as drop-ins for snnTorch 1.0's ``Leaky``:
tutorial-style networks (a per-step MLP with explicit ``mem``; a CNN of ``init_hidden``
neurons reset by ``snntorch.utils.reset``) compared with snnTorch exactly in fp64 over
several batches, multi-step mode, learnable beta, surrogates, and the clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spike_kernels as sk
from spike_kernels import LIF

snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
from snntorch import surrogate, utils  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True)
def _eager_cpu_path(monkeypatch):
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")


class _ATan64(torch.autograd.Function):
    """snnTorch's atan surrogate with spikes in the input's dtype: snnTorch's own returns
    fp32 spikes (``.float()``), which an fp64 network cannot take. Same formula."""

    @staticmethod
    def forward(ctx, u, alpha):
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return ctx.alpha / 2 / (1 + (torch.pi / 2 * ctx.alpha * u).pow_(2)) * grad, None


def atan64(alpha: float = 2.0):
    return lambda u: _ATan64.apply(u, alpha)


def assert_same(theirs: list[torch.Tensor], ours: list[torch.Tensor], what: str) -> None:
    assert len(theirs) == len(ours)
    for k, (a, b) in enumerate(zip(theirs, ours, strict=True)):
        assert torch.equal(a, b.to(a.dtype)), f"{what}, tensor {k}: {(a - b).abs().max()}"


# --------------------------------------------------------------------------- tutorial MLP


class MLP(nn.Module):
    """snnTorch tutorial 5: Linear -> Leaky -> Linear -> Leaky, a per-step loop passing mem."""

    def __init__(self, leaky, **kwargs):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 4)
        amplify(self)
        with torch.no_grad():
            self.fc2.bias += 0.6  # the output layer spikes too
        self.lif1, self.lif2 = leaky(**kwargs), leaky(**kwargs)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def amplify(net: nn.Module, factor: float = 3.0) -> nn.Module:
    """Scale the default-initialised weights so that every layer spikes often."""
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(factor)
    return net


def run(net, batches, inputs_grad=True):
    """Outputs and all gradients, batch after batch (an optimizer step between batches)."""
    out = []
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for x in batches:
        opt.zero_grad()
        xi = x.clone().requires_grad_(inputs_grad)
        spk, mem = net(xi)
        loss = (spk.sum(0) - 2.0).square().sum() + mem.square().mean()
        loss.backward()
        out.append([spk.detach(), mem.detach(), xi.grad,
                    *(p.grad.clone() for p in net.parameters())])
        opt.step()
    return out


@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero"])
@pytest.mark.parametrize("learn_beta", [False, True])
def test_tutorial_mlp(reset_mechanism, learn_beta):
    """snn.Leaky -> sk.Leaky in the tutorial MLP, weights loaded from snnTorch's state_dict:
    spikes, membranes, input and weight gradients identical in fp64 over three training
    batches (beta's gradient to rounding: its sum runs in another order)."""
    kwargs = dict(beta=0.8, reset_mechanism=reset_mechanism, learn_beta=learn_beta)
    theirs = MLP(snn.Leaky, spike_grad=atan64(), **kwargs).to(F64)
    ours = MLP(sk.Leaky, backend="torch", **kwargs).to(F64)
    ours.load_state_dict(theirs.state_dict())  # the same buffers and parameters
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(8, 5, 12, generator=g, dtype=F64) * 1.5 for _ in range(3)]
    a, b = run(theirs, batches), run(ours, batches)
    assert a[0][0].sum() > 20, "too few spikes to test the reset"
    for i, (ta, tb) in enumerate(zip(a, b, strict=True)):
        if learn_beta:  # lif1.beta and lif2.beta are the last two parameters
            torch.testing.assert_close(tb[-2:], ta[-2:], rtol=1e-12, atol=1e-14)
            ta, tb = ta[:-2], tb[:-2]
        assert_same(ta, tb, f"batch {i}")


def test_tutorial_mlp_fp32_against_stock_snntorch():
    """With snnTorch's own surrogates (fp32 spikes): spikes and membranes equal, gradients to
    fp32 rounding (so after an optimizer step the weights, and then the membranes, differ
    by rounding too); atan and fast_sigmoid (sigmoid: the next test)."""
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(8, 5, 12, generator=g) * 1.5 for _ in range(2)]
    for spike_grad in (surrogate.atan(alpha=3.0), surrogate.fast_sigmoid(slope=25)):
        theirs = MLP(snn.Leaky, beta=0.9, spike_grad=spike_grad)
        ours = MLP(sk.Leaky, beta=0.9, spike_grad=spike_grad, backend="torch")
        ours.load_state_dict(theirs.state_dict())
        a, b = run(theirs, batches), run(ours, batches)
        assert a[0][0].sum() > 20
        assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1])
        for ta, tb in zip(a, b, strict=True):
            for x, y in zip(ta, tb, strict=True):
                torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5 * x.abs().max().item())


def test_sigmoid_spike_grad():
    """snnTorch's sigmoid(slope): the same g'. (snnTorch's formula overflows to nan once
    slope * (U - threshold) < -88 in fp32, as in the MLP above; ours stays finite: the inputs
    here stay clear of that.)"""
    g = torch.Generator().manual_seed(6)
    x = torch.rand(10, 4, 6, generator=g) * 1.4
    up = torch.randn(10, 4, 6, generator=g)
    grads = []
    for cls, kw in ((snn.Leaky, {}), (sk.Leaky, {"step_mode": "m", "backend": "torch"})):
        neuron = cls(beta=0.8, spike_grad=surrogate.sigmoid(slope=5), **kw)
        xi = x.clone().requires_grad_()
        if cls is snn.Leaky:
            spk, mem = (torch.stack(o) for o in zip(*[neuron(xi[t]) for t in range(10)],
                                                    strict=True))
        else:
            spk, mem = neuron(xi)
        ((spk * up).sum() + mem.sum()).backward()
        grads.append((spk.detach(), mem.detach(), xi.grad))
    assert grads[0][0].sum() > 10
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    torch.testing.assert_close(grads[1][2], grads[0][2], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- tutorial CNN


def cnn(leaky, **kwargs) -> nn.Sequential:
    """snnTorch tutorial 7: init_hidden neurons in nn.Sequential, the last with output=True."""
    torch.manual_seed(0)
    return amplify(nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.MaxPool2d(2),
        leaky(beta=0.7, init_hidden=True, **kwargs),
        nn.Conv2d(4, 6, 3), nn.MaxPool2d(2),
        leaky(beta=0.7, init_hidden=True, **kwargs),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 5),
        leaky(beta=0.7, init_hidden=True, output=True, **kwargs),
    ).to(F64))


def forward_pass(net, data):
    """The tutorial's loop: utils.reset(net), then one net(x[t]) per step."""
    utils.reset(net)
    spk_rec, mem_rec = [], []
    for step in range(data.shape[0]):
        spk, mem = net(data[step])
        spk_rec.append(spk)
        mem_rec.append(mem)
    return torch.stack(spk_rec), torch.stack(mem_rec)


def test_tutorial_cnn_init_hidden_and_utils_reset():
    """init_hidden + output=True + snntorch.utils.reset between batches (break: utils.reset
    did not reset our neurons): fp64, identical to snnTorch over three batches."""
    theirs = cnn(snn.Leaky, spike_grad=atan64())
    ours = cnn(sk.Leaky, backend="torch")
    assert all(isinstance(m, snn.Leaky) for m in ours if isinstance(m, sk.Leaky))
    g = torch.Generator().manual_seed(2)
    batches = [torch.rand(6, 3, 1, 14, 14, generator=g, dtype=F64) * 3 for _ in range(3)]

    class Loop(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return forward_pass(self.net, x)

    a, b = run(Loop(theirs), batches), run(Loop(ours), batches)
    assert a[0][0].sum() > 20
    for i, (ta, tb) in enumerate(zip(a, b, strict=True)):
        assert_same(ta, tb, f"batch {i}")


def test_utils_reset_and_reset_net():
    neuron = sk.Leaky(beta=0.5, init_hidden=True)
    net = nn.Sequential(nn.Identity(), neuron)
    neuron(torch.ones(2, 3))
    assert neuron.mem.abs().sum() > 0
    utils.reset(net)
    assert neuron.mem.abs().sum() == 0 and neuron.mem.shape == (2, 3)
    neuron(torch.ones(2, 3))
    sk.reset_net(nn.Sequential(nn.Sequential(neuron)))  # ours, at any depth
    assert neuron.mem.abs().sum() == 0


# --------------------------------------------------------------------------- modes, options


def test_multi_step_equals_single_step():
    """step_mode="m" ([T, B, ...] in one call) equals the per-step loop: spikes, every
    membrane, gradients (also into an explicit initial mem), and learnable beta's."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(7, 4, 5, generator=g, dtype=F64) * 1.6
    mem0 = torch.rand(4, 5, generator=g, dtype=F64)
    results = []
    for mode in ("s", "m"):
        neuron = sk.Leaky(beta=0.6, learn_beta=True, step_mode=mode, backend="torch").to(F64)
        xi, m0 = x.clone().requires_grad_(), mem0.clone().requires_grad_()
        if mode == "m":
            spk, mem = neuron(xi, m0)
        else:
            outs = [neuron(xi[0], m0)]
            outs += [neuron(xi[t]) for t in range(1, 7)]  # the stored mem carries over
            spk, mem = (torch.stack(o) for o in zip(*outs, strict=True))
        (spk.sum() + mem.square().sum()).backward()
        results.append([spk, mem, xi.grad, m0.grad, neuron.beta.grad])
    (a, b) = results
    assert_same(a[:4], b[:4], "s vs m")
    torch.testing.assert_close(b[4], a[4], rtol=1e-12, atol=0)


def test_learnable_beta_gradient_matches_snntorch():
    for mode in ("s", "m"):
        for reset_mechanism in ("subtract", "zero"):
            g = torch.Generator().manual_seed(4)
            x = torch.rand(9, 3, 4, generator=g, dtype=F64) * 1.8
            theirs = snn.Leaky(beta=0.7, learn_beta=True, spike_grad=atan64(),
                               reset_mechanism=reset_mechanism).to(F64)
            ours = sk.Leaky(beta=0.7, learn_beta=True, reset_mechanism=reset_mechanism,
                            step_mode=mode, backend="torch").to(F64)
            mem = theirs.init_leaky()
            spk_t, mem_t = [], []
            for t in range(9):
                s, mem = theirs(x[t], mem)
                spk_t.append(s)
                mem_t.append(mem)
            loss_t = torch.stack(spk_t).sum() + torch.stack(mem_t).square().sum()
            if mode == "m":
                spk_o, mem_o = ours(x)
            else:
                spk_o, mem_o = (torch.stack(o) for o in zip(*[ours(x[t]) for t in range(9)],
                                                            strict=True))
            (spk_o.sum() + mem_o.square().sum()).backward()
            loss_t.backward()
            assert torch.equal(torch.stack(mem_t), mem_o)
            assert theirs.beta.grad.abs() > 0
            torch.testing.assert_close(ours.beta.grad, theirs.beta.grad, rtol=1e-12, atol=0)


def test_output_and_init_hidden_returns():
    x = torch.ones(2, 3)
    assert isinstance(sk.Leaky(beta=0.5, init_hidden=True)(x), torch.Tensor)
    _, mem = sk.Leaky(beta=0.5, init_hidden=True, output=True)(x)
    assert mem.shape == (2, 3)
    _, mem = sk.Leaky(beta=0.5)(x)  # snnTorch returns (spk, mem) without init_hidden
    assert torch.equal(mem, x)
    with pytest.raises(TypeError, match="should not be passed"):
        sk.Leaky(beta=0.5, init_hidden=True)(x, torch.zeros(2, 3))


def test_unsupported_options_raise():
    for kwargs in (dict(reset_delay=False), dict(learn_threshold=True), dict(inhibition=True),
                   dict(state_quant=lambda u: u), dict(surrogate_disable=True),
                   dict(reset_mechanism="none"), dict(beta=torch.rand(5))):
        with pytest.raises(NotImplementedError, match="does not support"):
            sk.Leaky(**{"beta": 0.5, **kwargs})
    with pytest.raises(TypeError, match=r"triangular.* no fused equivalent"):
        sk.Leaky(beta=0.5, spike_grad=surrogate.triangular())
    with pytest.raises(ValueError, match="step_mode"):
        sk.Leaky(beta=0.5, step_mode="x")
    neuron = sk.Leaky(beta=0.5)
    neuron(torch.ones(2, 3))
    with pytest.raises(ValueError, match="init_leaky"):  # snnTorch silently restarts
        neuron(torch.ones(4, 3))
    with pytest.raises(TypeError, match="fast_sigmoid has no exact LIF surrogate"):
        LIF(surrogate_function=surrogate.fast_sigmoid())
    assert LIF(surrogate_function=surrogate.atan(alpha=3.0)).surrogate_function.alpha == 3.0


def test_graded_spikes_factor():
    spk, _ = sk.Leaky(beta=0.5, graded_spikes_factor=0.5)(torch.full((2,), 3.0))
    assert spk.tolist() == [0.5, 0.5]


# --------------------------------------------------------------------------- LIF.from_beta


def test_from_beta_is_snntorch_leaky():
    """LIF.from_beta(beta) in snnTorch's per-step loop (break: it defaulted to multi-step
    and took the batch for time; its reset differed in ~10% of spikes): single-step by
    default, snnTorch's exact spikes and membranes."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(20, 50, 40, generator=g, dtype=F64) * 1.2  # ~1/3 of the steps spike
    for reset_mechanism in ("subtract", "zero"):
        theirs = snn.Leaky(beta=0.75, reset_mechanism=reset_mechanism, spike_grad=atan64())
        ours = LIF.from_beta(0.75, reset_mechanism=reset_mechanism, backend="torch")
        assert ours.step_mode == "s"
        mem = theirs.init_leaky()
        for t in range(20):
            spk_t, mem = theirs(x[t], mem)
            assert torch.equal(ours(x[t]), spk_t), f"{reset_mechanism}, step {t}"
            assert torch.equal(ours.v, mem)
    multi = LIF.from_beta(0.75, step_mode="m", store_v_seq=True, backend="torch")
    assert multi(x).shape == x.shape and multi.v_seq.shape == x.shape


def test_from_beta_overrides_and_errors():
    m = LIF.from_beta(0.5, threshold=0.8, backend="torch", spike_dtype=torch.float16)
    assert (m.beta, m.v_threshold, m.v_reset, m.convention, m.spike_dtype) == (
        0.5, 0.8, None, "snntorch", torch.float16)
    assert m(torch.ones(3)).dtype == torch.float16
    m.beta = 0.25  # live
    assert m.params.beta == 0.25
    with pytest.raises(ValueError, match="no detach_reset to set"):
        LIF.from_beta(0.5, detach_reset=False)  # break: "multiple values for keyword"
    with pytest.raises(ValueError, match="no tau to set"):
        LIF.from_beta(0.5, tau=3.0)
    # invalid beta and reset_mechanism values: test_lif_module.py::test_from_beta


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_same_kernels_both_backends(backend):
    """Leaky(step_mode="m") on the Triton kernels (the interpreter on CPU) and on the PyTorch
    path: fp32 against stock snnTorch (its own atan): spikes, membranes, input gradients."""
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(7)
    x = torch.rand(6, 3, 8, generator=g) * 1.6
    for reset_mechanism in ("subtract", "zero"):
        theirs = snn.Leaky(beta=0.8, reset_mechanism=reset_mechanism)
        ours = sk.Leaky(beta=0.8, reset_mechanism=reset_mechanism, step_mode="m",
                        backend=backend).to(device)
        xa, xb = x.clone().requires_grad_(), x.clone().to(device).requires_grad_()
        spk_a, mem_a = (torch.stack(o) for o in zip(*[theirs(xa[t]) for t in range(6)],
                                                    strict=True))
        spk_b, mem_b = ours(xb)
        (spk_a.sum() + mem_a.square().sum()).backward()
        (spk_b.sum() + mem_b.square().sum()).backward()
        assert spk_a.sum() > 20
        assert torch.equal(spk_a, spk_b.cpu()) and torch.equal(mem_a, mem_b.cpu())
        torch.testing.assert_close(xb.grad.cpu(), xa.grad, rtol=1e-6, atol=1e-6)
