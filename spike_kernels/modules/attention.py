"""``nn.Module`` wrapper of :func:`spike_kernels.spiking_attention` (SpikeBERT's SSA core)."""

from __future__ import annotations

import torch
from torch import nn

from ..backend import BACKENDS
from ..ops.attention_op import ORDERS, spiking_attention
from ..params import NeuronParams, check_bool, check_choice, check_real
from ..surrogate import Surrogate, get_surrogate


class SpikingAttention(nn.Module):
    """``LIF_t(scale * (Q_t K_t^T) V_t)``: the attention product and its neuron, fused.

    Holds the attention neuron's parameters (SpikingJelly ``LIFNode`` names, SpikeBERT's
    defaults: threshold 0.5, tau 2, hard reset to 0, detached reset, ATan surrogate) and the
    scale. No state carries over between calls: the membrane starts at ``v_reset`` every
    forward, so :func:`~spike_kernels.reset_net` has nothing to reset here.

    >>> attn = SpikingAttention(v_threshold=0.5, scale=0.125)
    >>> s = attn(q, k, v, attention_mask=mask, out_layout="blhd")   # [T, B, L, H*Dh]
    """

    def __init__(
        self,
        v_threshold: float = 0.5,
        tau: float = 2.0,
        decay_input: bool = True,
        v_reset: float | None = 0.0,
        detach_reset: bool = True,
        surrogate_function: str | Surrogate = "atan",
        scale: float = 0.125,
        backend: str = "auto",
        order: str = "auto",
        recompute: bool = False,
    ) -> None:
        super().__init__()
        self.params = NeuronParams(tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                                   v_reset=v_reset, detach_reset=detach_reset,
                                   surrogate=get_surrogate(surrogate_function))
        self.scale = check_real("scale", scale)
        self.backend = check_choice("backend", backend, BACKENDS)
        self.order = check_choice("order", order, ORDERS)
        self.recompute = check_bool("recompute", recompute)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        causal: bool = False,
        out_layout: str = "bhld",
        return_attention: bool = False,
        attention_time_step: int = -1,
    ):
        """``q, k, v``: ``[T, B, H, L, Dh]``; ``attention_mask``: ``[B, L]`` (1 = token, 0 =
        padding). Returns spikes ``[T, B, H, L, Dh]`` (``out_layout="bhld"``) or
        ``[T, B, L, H*Dh]`` (``"blhd"``), plus the attention map of one step when
        ``return_attention``."""
        p = self.params
        return spiking_attention(
            q, k, v, scale=self.scale, attention_mask=attention_mask, causal=causal,
            v_threshold=p.v_threshold, tau=p.tau, v_reset=p.v_reset, decay_input=p.decay_input,
            detach_reset=p.detach_reset, surrogate=p.surrogate, backend=self.backend,
            out_layout=out_layout, order=self.order,
            recompute=self.recompute, return_attention=return_attention,
            attention_time_step=attention_time_step,
        )

    def extra_repr(self) -> str:
        p = self.params
        return (
            f"scale={self.scale}, tau={p.tau}, decay_input={p.decay_input}, "
            f"v_threshold={p.v_threshold}, v_reset={p.v_reset}, "
            f"surrogate={p.surrogate.name}(alpha={p.surrogate.alpha}), "
            f"detach_reset={p.detach_reset}, backend={self.backend!r}, order={self.order!r}, "
            f"recompute={self.recompute}"
        )
