"""``spike_kernels.LIF`` as a drop-in for SpikingJelly 2.0's ``LIFNode``: surrogate objects,
live attributes, ``functional.reset_net / set_step_mode / detach_net``, ``store_v_seq``,
``replace_neurons`` on model-zoo networks (spiking ResNet-18, Spikformer and Spike-driven
Transformer blocks) compared with ``LIFNode`` exactly in fp64 over several batches."""

from __future__ import annotations

import copy
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types

import pytest
import torch
from torch import nn

from spike_kernels import LIF, replace_neurons

sj = pytest.importorskip("spikingjelly.activation_based", reason="spikingjelly is not installed")
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True)
def _eager_cpu_path(monkeypatch):
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")


def zoo(name: str) -> types.ModuleType:
    """A module of SpikingJelly's model zoo, imported without the zoo package's ``__init__``;
    torchvision (only its weight-download helper is imported) and h5py (imported by the
    distributed-inference helpers) are stood in for while importing, if missing: no test
    downloads or writes anything."""
    package = "spikingjelly.activation_based.model"
    if package not in sys.modules:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [os.path.join(os.path.dirname(sj.__file__), "model")]
        sys.modules[package] = importlib.util.module_from_spec(spec)
    stubs = {}
    if importlib.util.find_spec("torchvision") is None:
        def no_download(*args, **kwargs):
            raise RuntimeError("tests do not download weights")

        stubs = {"torchvision": types.ModuleType("torchvision"),
                 "torchvision._internally_replaced_utils": types.ModuleType("x")}
        stubs["torchvision._internally_replaced_utils"].load_state_dict_from_url = no_download
    if importlib.util.find_spec("h5py") is None:
        stubs["h5py"] = types.ModuleType("h5py")
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        return importlib.import_module(f"{package}.{name}")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def lif_nodes(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, neuron.BaseNode)]


def run_both(theirs: nn.Module, ours: nn.Module | list[nn.Module], batches: list[torch.Tensor],
             *, reset_every: int = 1, exact: bool = True) -> None:
    """Forward and backward through SpikingJelly's network and ours (one or several), batch
    after batch, resetting every ``reset_every`` batches with ``functional.reset_net``
    (``functional.detach_net`` between the others): outputs, input gradients and parameter
    gradients must be identical (``exact=False``: gradients to 1e-12 relative, as the order
    of the backward's fp64 roundings differs for some surrogates, e.g. sigmoid without
    detach_reset; outputs stay identical)."""
    nets = [theirs, *(ours if isinstance(ours, list) else [ours])]
    for net in nets[1:]:
        assert not lif_nodes(net), "replace_neurons left LIFNodes behind"
        assert sum(isinstance(m, LIF) for m in net.modules()) == len(lif_nodes(theirs)) > 0
    for i, x in enumerate(batches):
        results = []
        for net in nets:
            net.zero_grad()
            xi = x.clone().requires_grad_()
            y = net(xi)
            y.square().sum().backward()
            results.append([y.detach(), xi.grad,
                            *(p.grad for p in net.parameters() if p.grad is not None)])
            if (i + 1) % reset_every == 0:
                functional.reset_net(net)
            else:
                functional.detach_net(net)
        assert results[0][0].abs().sum() > 0, "the output is all zero: nothing is tested"
        for result in results[1:]:
            assert len(result) == len(results[0])
            assert torch.equal(result[0], results[0][0]), f"batch {i}: outputs differ"
            for k, (a, b) in enumerate(zip(result, results[0], strict=True)):
                if exact:
                    assert torch.equal(a, b), f"batch {i}, tensor {k}: {(a - b).abs().max()}"
                else:
                    torch.testing.assert_close(a, b, rtol=1e-12,
                                               atol=1e-15 * b.abs().max().item(),
                                               msg=f"batch {i}, tensor {k}")


# --------------------------------------------------------------------------- single neuron


def both(**kwargs) -> tuple[nn.Module, LIF]:
    node = neuron.LIFNode(**kwargs)
    return node, LIF.from_spikingjelly(node, backend="torch")


@pytest.mark.parametrize("cls,alpha", [
    (surrogate.Sigmoid, 3.0), (surrogate.ATan, 2.5), (surrogate.PiecewiseQuadratic, 0.8),
    (surrogate.PiecewiseExp, 1.7), (surrogate.SoftSign, 2.5), (surrogate.SuperSpike, 1.3),
    (surrogate.Erf, 1.5)])
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_surrogate_objects(cls, alpha, step_mode):
    """LIF(surrogate_function=surrogate.X(alpha=a)) (break: TypeError) equals LIFNode with the
    same object: spikes, membrane and input gradients, fp64."""
    kwargs = dict(tau=3.0, v_reset=None, surrogate_function=cls(alpha=alpha), step_mode=step_mode)
    node, ours = neuron.LIFNode(**kwargs), LIF(**kwargs, backend="torch")
    assert (ours.surrogate_function.alpha, ours.step_mode) == (alpha, step_mode)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 4, generator=g, dtype=F64) + 0.8
    up = torch.randn(6, 3, 4, generator=g, dtype=F64)
    grads, outs = [], []
    for m in (node, ours):
        xi = x.clone().requires_grad_()
        s = m(xi) if step_mode == "m" else torch.stack([m(xi[t]) for t in range(6)])
        (s * up).sum().add(m.v.sum()).backward()
        outs.append((s.detach(), m.v.detach()))
        grads.append(xi.grad)
    assert outs[0][0].sum() > 5
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-13, atol=1e-13)


def test_surrogate_object_errors():
    with pytest.raises(ValueError, match="spiking=True"):
        LIF(surrogate_function=surrogate.ATan(spiking=False))
    with pytest.raises(TypeError, match=r"no fused equivalent; supported: surrogate\.Sigmoid"):
        LIF(surrogate_function=surrogate.Rect())

    class MyATan(surrogate.ATan):
        pass

    with pytest.raises(TypeError, match="MyATan has no fused equivalent"):
        LIF(surrogate_function=MyATan())
    with pytest.raises(TypeError, match="SpikingJelly surrogate object"):
        LIF(surrogate_function=torch.sigmoid)


def test_live_attributes():
    """Setting v_threshold (break: silently ignored) and every other SpikingJelly attribute
    takes effect at the next step, as on LIFNode; bad values raise."""
    x = torch.full((3, 2), 1.5, dtype=F64)  # H = 0.75: fires at 0.5, not at 1.0
    node, ours = both(step_mode="m")
    node.v_threshold = ours.v_threshold = 0.5
    assert node(x)[:, 0].tolist() == ours(x)[:, 0].tolist() == [1, 1, 1]
    changes = dict(tau=4.0, decay_input=False, v_reset=None, detach_reset=True,
                   surrogate_function=surrogate.Erf(alpha=1.5))
    for name, value in changes.items():
        for m in (node, ours):
            setattr(m, name, value)
            functional.reset_net(m) if isinstance(m, neuron.LIFNode) else m.reset()
        xi = [torch.linspace(0.0, 1.2, 6, dtype=F64).repeat(4, 1).requires_grad_()
              for _ in range(2)]
        s_n, s_o = node(xi[0]), ours(xi[1])
        assert torch.equal(s_n, s_o), name
        s_n.sum().backward()
        s_o.sum().backward()
        torch.testing.assert_close(xi[1].grad, xi[0].grad, rtol=1e-13, atol=0)
    assert (ours.tau, ours.decay_input, ours.v_reset, ours.detach_reset,
            ours.surrogate_function.name) == (4.0, False, None, True, "erf")
    with pytest.raises(ValueError, match="tau must be > 1"):
        ours.tau = 0.5
    with pytest.raises(ValueError, match="v_threshold must be finite"):
        ours.v_threshold = float("nan")
    with pytest.raises(TypeError, match="surrogate"):
        ours.surrogate_function = 3
    assert ours.tau == 4.0  # a rejected value leaves the neuron unchanged


def test_step_mode_is_validated():
    """step_mode='x' (break: ran multi-step) raises, in the constructor, on assignment and
    through functional.set_step_mode; set_step_mode switches modes."""
    with pytest.raises(ValueError, match=r"step_mode must be 'm'.*got 'x'"):
        LIF(step_mode="x")
    m = LIF(backend="torch")
    with pytest.raises(ValueError, match="step_mode"):
        m.step_mode = "multi"
    net = nn.Sequential(nn.Flatten(0, 0), m)
    functional.set_step_mode(net, "m")
    assert m.step_mode == "m" and m(torch.ones(3, 2)).shape == (3, 2)
    with pytest.raises(ValueError, match="step_mode"):
        functional.set_step_mode(net, "x")


def test_store_v_seq_single_step_accumulates():
    """store_v_seq in 's' mode (break: kept the last step only) appends each step until reset,
    like LIFNode: (3, 2, 5) after 3 steps."""
    node, ours = both(store_v_seq=True)
    x = torch.randn(3, 2, 5, dtype=F64) + 1.0
    for t in range(3):
        node(x[t])
        ours(x[t])
    assert ours.v_seq.shape == node.v_seq.shape == (3, 2, 5)
    assert torch.equal(ours.v_seq, node.v_seq)
    functional.reset_net(nn.Sequential(node, ours))
    assert ours.v_seq is None and ours.v is None
    ours(x[0])
    assert ours.v_seq.shape == (1, 2, 5)
    ours.store_v_seq = False
    assert ours.v_seq is None


def test_detach_net_truncated_bptt():
    """functional.detach_net between chunks (break: LIF skipped, the next backward raised
    'backward through the graph a second time'): gradients equal LIFNode's."""
    torch.manual_seed(0)
    theirs = nn.Sequential(layer.Linear(5, 6), neuron.LIFNode(step_mode="m", store_v_seq=True),
                           layer.Linear(6, 2)).to(F64)
    functional.set_step_mode(theirs, "m")
    ours = replace_neurons(copy.deepcopy(theirs), backend="torch")
    batches = [torch.randn(3, 4, 5, dtype=F64) * 2 for _ in range(4)]
    run_both(theirs, ours, batches, reset_every=2, exact=False)
    m = ours[1]
    m(torch.randn(3, 4, 6, dtype=F64, requires_grad=True))
    m.detach()
    assert not m.v.requires_grad and not m.v_seq.requires_grad


# --------------------------------------------------------------------------- replace_neurons


def test_replace_neurons_copies_each_layer():
    nodes = [neuron.LIFNode(tau=3.0, v_threshold=0.7, v_reset=None, detach_reset=True,
                            surrogate_function=surrogate.ATan(alpha=3.0), step_mode="m"),
             neuron.LIFNode(decay_input=False, v_reset=-0.1, store_v_seq=True)]
    shared = nodes[1]
    net = nn.Sequential(nodes[0], nn.ModuleList([shared, nn.Sequential(shared)]))
    out = replace_neurons(net)
    assert out is net
    a, b = net[0], net[1][0]
    assert isinstance(a, LIF) and isinstance(b, LIF) and net[1][1][0] is b  # still shared
    assert (a.tau, a.v_threshold, a.v_reset, a.detach_reset, a.step_mode,
            a.surrogate_function.name, a.surrogate_function.alpha) == (
        3.0, 0.7, None, True, "m", "atan", 3.0)
    assert (b.decay_input, b.v_reset, b.store_v_seq, b.step_mode) == (False, -0.1, True, "s")
    assert isinstance(replace_neurons(neuron.LIFNode()), LIF)  # the root itself


def test_replace_neurons_midway_keeps_state():
    """Converted between two calls, LIF continues from the LIFNode's membrane."""
    node = neuron.LIFNode(step_mode="m")
    x = torch.rand(4, 3, dtype=F64) * 1.5
    node(x)
    ours = LIF.from_spikingjelly(node, backend="torch")
    assert torch.equal(ours(x), node(x)) and torch.equal(ours.v, node.v)


def test_replace_neurons_unsupported_nodes():
    net = nn.Sequential(neuron.LIFNode(), neuron.IFNode(),
                        nn.Sequential(neuron.ParametricLIFNode()))
    with pytest.raises(TypeError, match=r"1 \(IFNode\), 2.0 \(ParametricLIFNode\).*strict=False"):
        replace_neurons(net)
    assert isinstance(net[0], neuron.LIFNode)  # nothing changed
    with pytest.warns(UserWarning, match="left in place"):
        replace_neurons(net, strict=False)
    assert isinstance(net[0], LIF) and isinstance(net[1], neuron.IFNode)
    with pytest.raises(TypeError, match=r"converts spikingjelly.*LIFNode, got .*IFNode"):
        LIF.from_spikingjelly(neuron.IFNode())
    hooked = nn.Sequential(neuron.LIFNode())
    hooked[0].register_forward_hook(lambda *args: None)
    with pytest.raises(ValueError, match="hooks"):
        replace_neurons(hooked)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        replace_neurons([neuron.LIFNode()])


def test_reset_net_cache_after_replace():
    """SpikingJelly's reset_net caches the modules it resets: after replace_neurons it must
    reset the new LIF modules, not the old LIFNodes."""
    old = neuron.LIFNode(step_mode="m")
    net = nn.Sequential(old)
    functional.reset_net(net)  # fills the cache
    replace_neurons(net, backend="torch")
    net(torch.ones(2, 3))
    functional.reset_net(net)
    assert net[0].v is None


@pytest.mark.slow
def test_spiking_resnet18():
    """SpikingJelly's spiking_resnet18 (ATan, detach_reset, multi-step), tiny input, fp64:
    LIFNode vs LIF put in by replace_neurons and by spiking_neuron=LIF; outputs and all
    gradients identical over two batches with a reset between them."""
    model = zoo("spiking_resnet")
    kwargs = dict(surrogate_function=surrogate.ATan(), detach_reset=True, num_classes=5)
    nets = []
    for neuron_cls, extra in ((neuron.LIFNode, {}), (LIF, {"backend": "torch"})):
        torch.manual_seed(0)
        nets.append(model.spiking_resnet18(spiking_neuron=neuron_cls, **kwargs, **extra).to(F64))
        functional.set_step_mode(nets[-1], "m")
    theirs, built = nets
    replaced = replace_neurons(copy.deepcopy(theirs), backend="torch")
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(2, 1, 3, 8, 8, generator=g, dtype=F64) * 2 for _ in range(2)]
    run_both(theirs, [replaced, built], batches)


def test_spikformer_block():
    """Spikformer's block (spiking self-attention + spiking MLP, paper neuron defaults)."""
    model = zoo("spikformer")
    torch.manual_seed(0)
    theirs = model.SpikformerBlock(dim=16, num_heads=2).to(F64)
    ours = replace_neurons(copy.deepcopy(theirs), backend="torch")
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(2, 2, 16, 3, 3, generator=g, dtype=F64) * 2 for _ in range(3)]
    run_both(theirs, ours, batches, exact=False)  # paper neurons: sigmoid, not detached


def test_spike_driven_transformer_block():
    """The Spike-driven Transformer block (SDSA + MLP) with ATan neurons, detached reset."""
    model = zoo("spike_driven_transformer")
    torch.manual_seed(0)
    theirs = model._Block(16, 2, 2.0, neuron.LIFNode,
                          dict(surrogate_function=surrogate.ATan(), detach_reset=True,
                               v_reset=None, tau=2.0)).to(F64)
    ours = replace_neurons(copy.deepcopy(theirs), backend="torch")
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(2, 2, 16, 3, 3, generator=g, dtype=F64) * 2 for _ in range(3)]
    run_both(theirs, ours, batches)


def test_functional_helpers_warn_nothing():
    """functional.reset_net / set_step_mode / detach_net on a network of LIF modules run
    without a Python warning. (SpikingJelly's own logger, disabled by default, notes that LIF
    is not a MemoryModule if it is enabled; the calls work either way.)"""
    import warnings

    net = replace_neurons(nn.Sequential(layer.Linear(3, 4), neuron.LIFNode()), backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        functional.set_step_mode(net, "m")
        net(torch.ones(2, 1, 3))
        functional.detach_net(net)
        functional.reset_net(net)
    assert net[1].step_mode == "m" and net[1].v is None
