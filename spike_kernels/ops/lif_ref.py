"""Plain PyTorch reference of the multi-step LIF neuron (autograd through a time loop).

Written for clarity, not speed: it is the oracle the CPU path and the Triton kernels are
tested against. Equations in :mod:`spike_kernels.params`.
"""

from __future__ import annotations

import torch

from ..params import NeuronParams
from ..surrogate import spike


def lif_ref(
    x: torch.Tensor, v_init: torch.Tensor | None, params: NeuronParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(spikes [T, ...], v_last [...], v_seq [T, ...])`` by autograd-able steps."""
    p = params
    v = torch.full_like(x[0] if x.shape[0] else x.new_empty(x.shape[1:]), p.v_init)
    if v_init is not None:
        v = v_init
    spikes, v_seq = [], []
    for t in range(x.shape[0]):
        if p.decay_input:
            h = v + (x[t] - (v - p.charge_reset)) / p.tau
        else:
            h = v - (v - p.charge_reset) / p.tau + x[t]
        s = spike(h - p.v_threshold, p.surrogate)
        s_reset = s.detach() if p.detach_reset else s
        if p.hard_reset:
            v = s_reset * p.v_reset + (1.0 - s_reset) * h
        else:
            v = h - s_reset * p.v_threshold
        spikes.append(s)
        v_seq.append(v)
    if not spikes:
        return x.clone(), v, x.clone()
    return torch.stack(spikes), v, torch.stack(v_seq)
