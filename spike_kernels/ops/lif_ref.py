"""Plain PyTorch reference of the multi-step LIF neuron (autograd through a time loop).

Written for clarity, not speed: it is the oracle the PyTorch path and the Triton kernels are
tested against, in both conventions. Equations in :mod:`spike_kernels.params` and
docs/DESIGN.md §1.
"""

from __future__ import annotations

import torch

from ..params import NeuronParams
from ..surrogate import spike


def _spike_strict(u_minus_th: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    """Heaviside with snnTorch's strict ``>``: :func:`spike` fires at 0, so the tie is taken
    back by a constant (the surrogate gradient at ``U - V_th`` is kept)."""
    s = spike(u_minus_th, p.surrogate)
    return s - (u_minus_th == 0).to(s.dtype)


def _spikingjelly_step(v, x, p: NeuronParams):
    """One SpikingJelly step: ``(S[t], V[t])`` from ``V[t-1]`` and ``X[t]``."""
    if p.decay_input:
        h = v + (x - (v - p.charge_reset)) / p.tau
    else:
        h = v - (v - p.charge_reset) / p.tau + x
    s = spike(h - p.v_threshold, p.surrogate)
    s_reset = s.detach() if p.detach_reset else s
    if p.hard_reset:
        return s, s_reset * p.v_reset + (1.0 - s_reset) * h
    return s, h - s_reset * p.v_threshold


def _snntorch_step(u, x, p: NeuronParams):
    """One snnTorch ``Leaky`` step (reset_delay=True), in snnTorch's order of operations:
    ``(S[t], U[t])`` from ``U[t-1]`` and ``X[t]``."""
    r = (u > p.v_threshold).to(u.dtype)  # the delayed reset, detached
    if p.hard_reset:  # reset to zero
        u = p.beta * ((1.0 - r) * u) + x
    else:  # reset by subtraction
        u = (p.beta * u + x) - r * p.v_threshold
    return _spike_strict(u - p.v_threshold, p), u


def lif_ref(
    x: torch.Tensor, v_init: torch.Tensor | None, params: NeuronParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(spikes [T, ...], v_last [...], v_seq [T, ...])`` by autograd-able steps.

    For ``convention="snntorch"`` the membrane (``v_init``, ``v_last``, ``v_seq``) is
    snnTorch's ``mem`` U, before the delayed reset.
    """
    p = params
    v = torch.full_like(x[0] if x.shape[0] else x.new_empty(x.shape[1:]), p.v_init)
    if v_init is not None:
        v = v_init
    step = _snntorch_step if p.snntorch else _spikingjelly_step
    spikes, v_seq = [], []
    for t in range(x.shape[0]):
        s, v = step(v, x[t], p)
        spikes.append(s)
        v_seq.append(v)
    if not spikes:
        return x.clone(), v, x.clone()
    return torch.stack(spikes), v, torch.stack(v_seq)
