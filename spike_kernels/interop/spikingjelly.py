"""SpikingJelly 2.0 interop: surrogate objects, ``LIF.from_spikingjelly`` and
:func:`replace_neurons`, the one-line swap of every ``LIFNode`` in a built network.

    net = spiking_resnet18(spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.ATan())
    net = spike_kernels.replace_neurons(net)   # every LIFNode -> spike_kernels.LIF

Each :class:`~spike_kernels.LIF` gets that node's own ``tau, decay_input, v_threshold,
v_reset, surrogate_function, detach_reset, step_mode, store_v_seq`` and its current state, so
spikes, membranes and gradients are those of ``LIFNode`` (bit for bit in fp32/fp64; fp16/bf16
differ: our membrane is fp32, ``LIFNode``'s is the input dtype).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..surrogate import Surrogate

if TYPE_CHECKING:
    from ..modules.lif import LIF

# SpikingJelly's surrogate class -> our surrogate name (the same g'(x) and default alpha).
SURROGATE_CLASSES: dict[str, str] = {
    "Sigmoid": "sigmoid",
    "ATan": "atan",
    "PiecewiseQuadratic": "piecewise_quadratic",
    "PiecewiseExp": "piecewise_exp",
    "SoftSign": "soft_sign",
    "SuperSpike": "super_spike",
    "Erf": "erf",
}


def surrogate_from_spikingjelly(obj: object) -> Surrogate:
    """``surrogate.ATan(alpha=3.0)`` -> ``Surrogate("atan", 3.0)``.

    Only the exact seven classes are accepted: a subclass may change the backward.
    """
    from spikingjelly.activation_based import surrogate as sj_surrogate

    name = type(obj).__name__
    if name not in SURROGATE_CLASSES or type(obj) is not getattr(sj_surrogate, name):
        raise TypeError(
            f"SpikingJelly surrogate {type(obj).__module__}.{name} has no fused equivalent; "
            f"supported: {', '.join('surrogate.' + k + '()' for k in SURROGATE_CLASSES)}"
        )
    if not obj.spiking:
        raise ValueError(
            f"surrogate.{name}(spiking=False) makes LIFNode emit its smooth primitive instead "
            f"of spikes; spike_kernels.LIF always emits 0/1 spikes (use spiking=True)"
        )
    return Surrogate(SURROGATE_CLASSES[name], obj.alpha)


def _lif_node_class() -> type:
    from spikingjelly.activation_based.neuron import LIFNode

    return LIFNode


def _check_node(node: nn.Module) -> None:
    lif_node = _lif_node_class()
    if type(node) is not lif_node:
        raise TypeError(
            f"LIF.from_spikingjelly converts spikingjelly.activation_based.neuron.LIFNode, "
            f"got {type(node).__module__}.{type(node).__name__}"
            + (" (a subclass may change the dynamics)" if isinstance(node, lif_node) else "")
        )
    if getattr(node, "_neuron_precision", None) is not None:
        raise ValueError(
            f"this LIFNode has a neuron precision policy {node._neuron_precision}; "
            f"spike_kernels.LIF keeps its membrane in fp32 (fp64 for fp64 inputs); clear the "
            f"policy before converting"
        )


def from_spikingjelly(node: nn.Module, *, backend: str = "auto", recompute: bool = False,
                      cls: type[LIF] | None = None) -> LIF:
    """A :class:`~spike_kernels.LIF` with ``node``'s parameters, step mode and state."""
    from ..modules.lif import LIF

    _check_node(node)
    lif = (cls or LIF)(
        tau=node.tau, decay_input=node.decay_input, v_threshold=node.v_threshold,
        v_reset=node.v_reset, surrogate_function=node.surrogate_function,
        detach_reset=node.detach_reset, step_mode=node.step_mode, backend=backend,
        store_v_seq=node.store_v_seq, recompute=recompute,
    )
    # LIFNode holds a float (v_reset) before its first step and after reset(): no state.
    if isinstance(node.v, torch.Tensor):
        lif.v = node.v
    if isinstance(node.v_seq, torch.Tensor):
        lif.v_seq = node.v_seq
    lif.train(node.training)
    return lif


def _unsupported(module: nn.Module) -> bool:
    """A SpikingJelly neuron that :func:`replace_neurons` cannot swap."""
    from spikingjelly.activation_based.neuron.base_node import BaseNode

    return isinstance(module, BaseNode) and type(module) is not _lif_node_class()


def replace_neurons(net: nn.Module, *, strict: bool = True, backend: str = "auto",
                    recompute: bool = False) -> nn.Module:
    """Swap every SpikingJelly ``LIFNode`` in ``net`` for a :class:`~spike_kernels.LIF` with
    that node's own parameters, step mode and state; returns ``net`` (or the new LIF if
    ``net`` itself is a ``LIFNode``).

    Other SpikingJelly neurons (``IFNode``, ``ParametricLIFNode``, LIFNode subclasses, ...)
    have no fused equivalent: ``strict=True`` raises a TypeError naming each one (before
    anything is changed); ``strict=False`` leaves them in place with a warning. A node with
    forward hooks (e.g. a ``monitor``) raises: the hooks would silently stop firing.
    A module shared at several places stays shared.
    """
    from spikingjelly.activation_based import functional

    if not isinstance(net, nn.Module):
        raise TypeError(f"replace_neurons expects an nn.Module, got {type(net).__name__}")
    lif_node = _lif_node_class()
    targets, skipped = [], []
    for name, module in net.named_modules(remove_duplicate=False):
        if type(module) is lif_node:
            _check_node(module)
            if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
                raise ValueError(
                    f"LIFNode at {name or '<root>'} has hooks (a monitor?); remove them, "
                    f"replace the neurons, then attach the hooks to the new LIF modules"
                )
            targets.append(name)
        elif _unsupported(module):
            skipped.append(f"{name or '<root>'} ({type(module).__name__})")
    if skipped:
        message = (f"replace_neurons swaps only LIFNode; these SpikingJelly neurons have no "
                   f"fused equivalent: {', '.join(skipped)}")
        if strict:
            raise TypeError(message + " (pass strict=False to leave them in place)")
        warnings.warn(message + "; they are left in place", stacklevel=2)
    new: dict[int, nn.Module] = {}

    def swap(node: nn.Module) -> nn.Module:
        if id(node) not in new:
            new[id(node)] = from_spikingjelly(node, backend=backend, recompute=recompute)
        return new[id(node)]

    if type(net) is lif_node:
        return swap(net)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name)
        setattr(parent, child, swap(getattr(parent, child)))
    # reset_net caches the modules it resets, per network: forget the LIFNodes.
    for module in net.modules():
        functional.invalidate_reset_cache(module)
    return net
