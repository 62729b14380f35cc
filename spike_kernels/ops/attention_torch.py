"""The PyTorch path of spiking self-attention: batched matmuls, then the LIF time loop.

Per time step ``Y_t = scale * (Q_t K'^T_t) V'_t`` where ``K' = m ⊙ K`` and ``V' = m ⊙ V``
zero the padded keys (``m`` the ``[B, L]`` key mask); with no softmax both products are
exact, so the cheaper order is used: ``Q (K'^T V')`` (``kv_order``, ~2 L Dh^2 per head) or
``(Q K'^T) V'`` (~2 L^2 Dh, and the only exact order under a causal mask, applied to the
``L x L`` map). The neuron is :mod:`.lif_torch`'s forward/backward time loop.

Backward, with ``G = dL/dY`` from the LIF backward and ``P = Q K'^T`` (causal: lower
triangle)::

    (Q K'^T) V' order: dP = G' V'^T (causal: lower triangle);
                       dQ = dP K';  dK = dP^T Q;  dV = P^T G'
    Q (K'^T V') order: dQ = G' (K'^T V')^T;  W = Q^T G';  dK = V' W^T;  dV = K' W

    with ``G' = scale * G`` formed once.

Masking both K and V makes every padded row of dK and dV zero with no further masking.
Matmuls run in fp32 (fp64 for fp64 inputs): sums of 0/1 products are exact up to 2^24.
"""

from __future__ import annotations

import torch

from ..params import NeuronParams, threshold_bracket
from . import lif_torch
from .attention_ref import from_layout, to_layout
from .lif_torch import compute_dtype


def _operands(q, k, v, key_mask):
    """q, k', v' in the compute dtype, padded keys zeroed."""
    cdt = compute_dtype(q.dtype)
    q, k, v = q.to(cdt), k.to(cdt), v.to(cdt)
    if key_mask is not None:
        m = key_mask.to(cdt)[None, :, None, :, None]
        k, v = k * m, v * m
    return q, k, v


def _causal(a: torch.Tensor) -> torch.Tensor:
    return a.tril_()


def _flat(shape, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh ``[T, N]`` buffer and its ``[T, B, H, L, Dh]`` view.

    The LIF time loop gets the 2-D buffer itself, not a view of a 5-D tensor: TorchDynamo
    guards on the sizes of a view's base, so 5-D bases would recompile the compiled LIF
    step for every batch/head/length shape (size-1 dimensions are specialised)."""
    T = shape[0]
    n = 1
    for size in shape[1:]:
        n *= size
    flat = torch.empty((T, n), dtype=dtype, device=device)
    return flat, flat.view(shape)


def attention_scores_torch(q, k, v, key_mask, scale: float, causal: bool, kv_order: bool):
    """``Y = scale * (Q K'^T) V'`` in the compute dtype, as ``[T, N]`` (see :func:`_flat`)."""
    q, k, v = _operands(q, k, v, key_mask)
    y_flat, y = _flat(q.shape, q.dtype, q.device)
    if kv_order:
        torch.matmul(q, k.transpose(-1, -2) @ v, out=y)
    else:
        a = q @ k.transpose(-1, -2)
        if causal:
            _causal(a)
        torch.matmul(a, v, out=y)
    return y_flat.mul_(scale)


@torch.no_grad()  # the same grad mode on every call of the compiled LIF step
def attention_forward_torch(
    q, k, v, key_mask, p: NeuronParams, scale: float, causal: bool, kv_order: bool,
    save_h: bool, out_blhd: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(spikes, H or empty)``; spikes in q's dtype and layout, H ``[T,B,H,L,Dh]``."""
    y = attention_scores_torch(q, k, v, key_mask, scale, causal, kv_order)
    s, _, h, _ = lif_torch.lif_forward_torch(y, None, p, save_h, False)
    del y  # before the conversions below allocate
    if save_h:
        if q.dtype.itemsize < h.dtype.itemsize:
            # rounding to fp16/bf16 must not carry H across the threshold (backward derives
            # the reset mask H < V_th from it): clamp to the nearest representable values
            # on the spike's side, below < V_th <= above (as the Triton kernels do)
            below, above = threshold_bracket(p.v_threshold, q.dtype)
            h = torch.where(s.bool(), h.clamp(min=above), h.clamp(max=below))
        h = h.to(q.dtype).view(q.shape)
    else:
        h = q.new_empty(0)
    return to_layout(s.to(q.dtype).view(q.shape), out_blhd), h


@torch.no_grad()
def attention_backward_torch(
    grad_s, q, k, v, key_mask, saved_h, p: NeuronParams, scale: float, causal: bool,
    kv_order: bool, recompute: bool, out_blhd: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(dq, dk, dv)`` in q's dtype from dL/dspikes and the saved (or recomputed) H."""
    cdt = compute_dtype(q.dtype)
    # fresh [T, N] compute-dtype buffers that never require grad: the compiled LIF backward
    # step sees the same tensor properties on every call (see _flat)
    if recompute:
        y = attention_scores_torch(q, k, v, key_mask, scale, causal, kv_order)
        h_seq = lif_torch.recompute_h_torch(y, None, p)
        del y
    elif saved_h.dtype == cdt and saved_h.is_contiguous():
        h_seq = saved_h.view(q.shape[0], q[0].numel() if q.shape[0] else 0)  # no copy
    else:
        h_seq, h_view = _flat(q.shape, cdt, q.device)
        h_view.copy_(saved_h.view(q.shape))
        del h_view
    gs_flat, gs_view = _flat(q.shape, cdt, q.device)
    gs_view.copy_(from_layout(grad_s, q.shape, out_blhd))
    g, _ = lif_torch.lif_backward_torch(gs_flat, None, None, h_seq, None, p, cdt)  # dL/dY
    # the buffers die here, not at return: the products below allocate four more of their size
    del h_seq, gs_flat, gs_view
    g = g.view(q.shape).mul_(scale)  # scale folded into G once: every product below is linear in G
    qc, kc, vc = _operands(q, k, v, key_mask)
    if kv_order:
        kv = kc.transpose(-1, -2) @ vc
        dq = g @ kv.transpose(-1, -2)
        del kv
        w = qc.transpose(-1, -2) @ g
        del g
        dk = vc @ w.transpose(-1, -2)
        dv = kc @ w
    else:
        dp = g @ vc.transpose(-1, -2)
        if causal:
            _causal(dp)
        dq = dp @ kc
        dk = dp.transpose(-1, -2) @ qc
        del dp
        a = qc @ kc.transpose(-1, -2)
        if causal:
            _causal(a)
        dv = a.transpose(-1, -2) @ g
    return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype)
