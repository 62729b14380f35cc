"""Plain PyTorch reference of spiking self-attention (SSA): matmuls, masks, then a LIF.

Written for clarity, not speed: it materialises the ``[T, B, H, L, L]`` map and runs the
neuron through :func:`~spike_kernels.ops.lif_ref.lif_ref` (autograd), so it is the oracle the
fused op is tested against. With ``lif_backend`` set it becomes the *unfused* path built from
our :func:`~spike_kernels.lif` op (the baseline of the benchmarks).
"""

from __future__ import annotations

import torch

from ..params import NeuronParams
from ..surrogate import Surrogate
from .lif_ref import lif_ref


def spike_shape(shape, out_blhd: bool) -> tuple[int, ...]:
    """Shape of the spikes of ``[T, B, H, L, Dh]`` inputs: ``[T, B, L, H*Dh]`` for "blhd"."""
    T, B, H, L, D = shape
    return (T, B, L, H * D) if out_blhd else (T, B, H, L, D)


def to_layout(s: torch.Tensor, out_blhd: bool) -> torch.Tensor:
    """``[T, B, H, L, Dh]`` -> ``[T, B, L, H*Dh]`` (heads concatenated per token; a copy)
    when ``out_blhd``."""
    if not out_blhd:
        return s
    return s.permute(0, 1, 3, 2, 4).reshape(spike_shape(s.shape, True))


def from_layout(s: torch.Tensor, shape, out_blhd: bool) -> torch.Tensor:
    """A ``[T, B, H, L, Dh]`` view (no copy) of spikes, or their gradient, stored in either
    layout; the inverse of :func:`to_layout`. ``shape``: the ``[T, B, H, L, Dh]`` shape."""
    if not out_blhd:
        return s
    T, B, H, L, D = shape
    return s.reshape(T, B, L, H, D).permute(0, 1, 3, 2, 4)


def attention_map_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """``Q K^T`` ``[..., B, H, L, L]`` with padded keys (mask 0) and, if causal, keys after
    the query set to 0 (no softmax: a zero contributes nothing)."""
    a = q @ k.transpose(-1, -2)
    if attention_mask is not None:
        keep = (attention_mask != 0).to(a.dtype)  # [B, L]
        a = a * keep[:, None, None, :]
    if causal:
        L = a.shape[-1]
        a = a * torch.ones(L, L, dtype=a.dtype, device=a.device).tril()
    return a


def spiking_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float = 0.125,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    v_threshold: float = 0.5,
    tau: float = 2.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    detach_reset: bool = True,
    surrogate: str | Surrogate = "atan",
    alpha: float | None = None,
    out_layout: str = "bhld",
    lif_backend: str | None = None,
) -> torch.Tensor:
    """``LIF((Q_t K_t^T ⊙ M) V_t * scale)`` over t, computed in the inputs' dtype.

    ``q, k, v``: ``[T, B, H, L, Dh]``; returns spikes ``[T, B, H, L, Dh]`` (or
    ``[T, B, L, H*Dh]`` for ``out_layout="blhd"``). ``lif_backend=None`` runs the neuron as
    :func:`lif_ref` (the autograd oracle); a backend name runs :func:`spike_kernels.lif`.
    """
    y = attention_map_ref(q, k, attention_mask, causal) @ v * scale
    if lif_backend is None:
        p = NeuronParams.make(tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                              v_reset=v_reset, detach_reset=detach_reset, surrogate=surrogate,
                              alpha=alpha)
        s = lif_ref(y, None, p)[0]
    else:
        from .lif_op import lif

        s = lif(y, tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                surrogate=surrogate, alpha=alpha, detach_reset=detach_reset, backend=lif_backend)
    return to_layout(s, out_layout == "blhd")
