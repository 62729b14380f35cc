"""``spike_kernels.spiking_attention``: spiking self-attention (SSA) with its LIF fused in.

Two ``torch.library`` custom ops, ``spike_kernels::attention_forward`` and
``spike_kernels::attention_backward``, each with a fake (meta) implementation, joined by
``register_autograd`` (so ``torch.compile(fullgraph=True)`` traces through them). Each op
dispatches to the Triton kernels (:mod:`.attention_triton`) or the PyTorch path
(:mod:`.attention_torch`); :mod:`.attention_ref` is the unfused reference. Both ops run with
autocast off: :func:`spiking_attention` applies autocast's policy once, before the op.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..backend import resolve_backend
from ..params import NeuronParams, check_bool, check_choice, check_real, check_tensor
from ..surrogate import Surrogate
from . import attention_torch
from .attention_ref import attention_map_ref, spike_shape
from .lif_torch import compute_dtype
from .op_args import NeuronArgs, custom_op, fields, flatten, register_fake, unflatten

ORDERS = ("auto", "qk_v", "q_kv")
OUT_LAYOUTS = ("bhld", "blhd")
# Triton limits: Dh is padded to a power of two held in registers; the Q (K^T V) order also
# keeps a Dh x Dh fp32 tile per program.
MAX_HEAD_DIM_TRITON = 256
MAX_KV_HEAD_DIM_TRITON = 128
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class _Config(NamedTuple):
    """The non-tensor arguments of both ops, in schema order (the backward op takes the
    forward's)."""

    scale: float
    causal: bool
    kv_order: bool
    neuron: NeuronArgs
    recompute: bool
    out_blhd: bool
    use_triton: bool


class _ForwardArgs(NamedTuple):
    """``attention_forward``'s arguments (its schema, in order)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    key_mask: torch.Tensor | None
    config: _Config


class _BackwardArgs(NamedTuple):
    """``attention_backward``'s arguments (its schema, in order)."""

    grad_s: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    key_mask: torch.Tensor | None
    saved_h: torch.Tensor
    config: _Config


def _no_autocast(device: torch.device):
    """Autocast off inside the ops: the PyTorch path picks its own matmul dtypes (an
    autocast bf16 matmul into an fp32 ``out=`` buffer is an error)."""
    return torch.autocast(device.type, enabled=False)


def _implementation(use_triton: bool) -> tuple:
    """(forward, backward) of the Triton kernels (imported on first use) or the PyTorch
    path."""
    if use_triton:
        from .attention_triton import attention_backward_triton, attention_forward_triton

        return attention_forward_triton, attention_backward_triton
    return attention_torch.attention_forward_torch, attention_torch.attention_backward_torch


@custom_op("spike_kernels::attention_forward", _ForwardArgs,
           tuple[torch.Tensor, torch.Tensor])
def attention_forward_op(a: _ForwardArgs):
    """(spikes, saved H ``[T, B, H, L, Dh]`` in q's dtype, or empty when ``recompute``)."""
    c = a.config
    forward, _ = _implementation(c.use_triton)
    with _no_autocast(a.q.device):
        return forward(a.q, a.k, a.v, a.key_mask, c.neuron.params(), c.scale, c.causal,
                       c.kv_order, not c.recompute, c.out_blhd)


@register_fake(attention_forward_op, _ForwardArgs)
def _(a: _ForwardArgs):
    q = a.q
    return (q.new_empty(spike_shape(q.shape, a.config.out_blhd)),
            q.new_empty((0,)) if a.config.recompute else q.new_empty(q.shape))


@custom_op("spike_kernels::attention_backward", _BackwardArgs,
           tuple[torch.Tensor, torch.Tensor, torch.Tensor])
def attention_backward_op(a: _BackwardArgs):
    """(dq, dk, dv), contiguous, in q's dtype. ``saved_h`` is ignored when ``recompute``."""
    c = a.config
    _, backward = _implementation(c.use_triton)
    with _no_autocast(a.q.device):
        return backward(a.grad_s, a.q, a.k, a.v, a.key_mask, a.saved_h, c.neuron.params(),
                        c.scale, c.causal, c.kv_order, c.recompute, c.out_blhd)


@register_fake(attention_backward_op, _BackwardArgs)
def _(a: _BackwardArgs):
    q = a.q
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _setup_context(ctx, inputs, output):
    a: _ForwardArgs = unflatten(_ForwardArgs, inputs)
    ctx.config = a.config  # everything but the tensors, by name
    ctx.save_for_backward(a.q, a.k, a.v, a.key_mask,
                          None if a.config.recompute else output[1])


def _backward(ctx, grad_s, _grad_h):
    q, k, v, key_mask, saved_h = ctx.saved_tensors
    config: _Config = ctx.config
    if grad_s is None:
        grad_s = q.new_zeros(spike_shape(q.shape, config.out_blhd))
    if saved_h is None:
        saved_h = q.new_empty(0)
    dq, dk, dv = attention_backward_op(*flatten(_BackwardArgs(
        grad_s=grad_s, q=q, k=k, v=v, key_mask=key_mask, saved_h=saved_h, config=config)))
    return (dq, dk, dv) + (None,) * (len(fields(_ForwardArgs)) - 3)


attention_forward_op.register_autograd(_backward, setup_context=_setup_context)


def _check_qkv(q: object, k: object, v: object) -> tuple[torch.Tensor, ...]:
    q, k, v = check_tensor(q, "q"), check_tensor(k, "k"), check_tensor(v, "v")
    if q.dim() != 5:
        raise ValueError(f"q must be [T, B, H, L, Dh] (5-d), got shape {tuple(q.shape)}")
    for name, x in (("k", k), ("v", v)):
        if x.shape != q.shape:
            raise ValueError(
                f"q, k and v must have the same shape [T, B, H, L, Dh]; q is {tuple(q.shape)} "
                f"but {name} is {tuple(x.shape)}"
            )
        if x.dtype != q.dtype:
            raise TypeError(f"q, k and v must have the same dtype; q is {q.dtype} but {name} "
                            f"is {x.dtype}")
        if x.device != q.device:
            raise ValueError(f"q, k and v must be on the same device; q is on {q.device} but "
                             f"{name} is on {x.device}")
    return q, k, v


def _key_mask(attention_mask: object, q: torch.Tensor) -> torch.Tensor | None:
    """The ``[B, L]`` Hugging Face mask (nonzero = real token) as 0/1 in q's dtype."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor or None, "
                        f"got {type(attention_mask).__name__}")
    B, L = q.shape[1], q.shape[3]
    if attention_mask.shape != (B, L):
        raise ValueError(
            f"attention_mask must be [B, L] = {(B, L)} (1 = real token, 0 = padding), got shape "
            f"{tuple(attention_mask.shape)}"
        )
    if attention_mask.is_complex():
        raise TypeError(f"attention_mask must be bool, integer or float, "
                        f"got {attention_mask.dtype}")
    if attention_mask.device != q.device:
        raise ValueError(f"attention_mask must be on q's device {q.device}, "
                         f"got {attention_mask.device}")
    return (attention_mask != 0).to(q.dtype)


def choose_order(order: str, seq_len: int, head_dim: int, causal: bool, use_triton: bool) -> bool:
    """True for ``Q (K^T V)``, False for ``(Q K^T) V``; a causal mask is exact only in the
    latter.

    ``"auto"``, PyTorch path: fewer multiply-adds (``L Dh^2`` vs ``L^2 Dh`` per head and
    step), so ``Q (K^T V)`` when ``Dh < L``. Triton: ``(Q K^T) V`` is one fused kernel that
    stays memory-bound until its ``4 L^2 Dh`` flops per head and step outgrow the bytes it
    moves; ``Q (K^T V)`` adds ``Dh x Dh`` fp32 round trips through global memory and two
    more launches per pass. A roofline estimate for an H200 (4.8 TB/s, ~300 TFLOP/s on
    small tiles) puts the crossover near ``L = 8 Dh``; not yet measured.
    """
    if order == "qk_v":
        return False
    if order == "q_kv":
        if causal:
            raise ValueError("order='q_kv' cannot apply a causal mask exactly; use 'qk_v' or "
                             "'auto' with causal=True")
        if use_triton and head_dim > MAX_KV_HEAD_DIM_TRITON:
            raise ValueError(f"order='q_kv' with the Triton backend supports head dims up to "
                             f"{MAX_KV_HEAD_DIM_TRITON}, got {head_dim}")
        return True
    if causal or (use_triton and head_dim > MAX_KV_HEAD_DIM_TRITON):
        return False
    if use_triton:
        return seq_len >= 8 * head_dim
    return head_dim < seq_len


def _autocast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Autocast's policy for matmuls (as for ``scaled_dot_product_attention``): under
    ``torch.autocast``, fp32 q/k/v run in the autocast dtype (exact for spikes), so the
    spikes come out in it; the membrane and the sums stay fp32 inside the op either way.
    Inputs already in a 16-bit dtype (spikes a LIF emitted with ``spike_dtype``) and fp64
    are left alone."""
    device = q.device.type
    if q.dtype != torch.float32 or not torch.is_autocast_enabled(device):
        return q, k, v
    low = torch.get_autocast_dtype(device)
    return q.to(low), k.to(low), v.to(low)


def _check_time_step(time_step: object, T: int) -> int:
    if isinstance(time_step, bool) or not isinstance(time_step, int) or not -T <= time_step < T:
        raise ValueError(f"attention_time_step must be an int in [{-T}, {T}), got {time_step!r}")
    return time_step


def attention_map(
    q: torch.Tensor,
    k: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    time_step: int = -1,
) -> torch.Tensor:
    """The map ``Q_t K_t^T`` ``[B, H, L, L]`` of one time step (padded keys and, if causal,
    future keys zeroed), in fp32 (fp64 for fp64 inputs), without gradient: for inspection
    and plots (SpikeBERT Appendix G)."""
    _check_time_step(time_step, q.shape[0])
    with torch.no_grad():
        cdt = compute_dtype(q.dtype)
        return attention_map_ref(q[time_step].to(cdt), k[time_step].to(cdt), attention_mask,
                                 causal)


def spiking_attention(
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
    backend: str = "auto",
    out_layout: str = "bhld",
    order: str = "auto",
    recompute: bool = False,
    return_attention: bool = False,
    attention_time_step: int = -1,
):
    """Spiking self-attention: ``S = LIF_t(scale * (Q_t K_t^T) V_t)``, no softmax.

    For every time step ``Y_t = scale * (Q_t K_t^T ⊙ M) V_t`` with ``M`` the key mask (and
    the lower triangle when ``causal``); then the attention LIF runs over t (docs/DESIGN.md §1,
    defaults of SpikeBERT's code: threshold 0.5, tau 2, hard reset to 0, detached reset,
    ATan surrogate) and its spikes are returned. Exact for spike inputs (sums accumulate in
    fp32), correct for any real inputs.

    Args:
        q, k, v: ``[T, B, H, L, Dh]``, one float dtype (float16/bfloat16/float32, float64 on
            the PyTorch path), any strides; normally 0/1 spikes. Gradients flow into all three.
        scale: multiplies ``(Q K^T) V`` before the neuron.
        attention_mask: ``[B, L]``, Hugging Face convention (nonzero = real token, 0 =
            padding): padded keys and values contribute nothing (padded queries still get
            outputs, as in the reference).
        causal: each query attends only to keys at or before it.
        v_threshold, tau, v_reset, decay_input, detach_reset, surrogate, alpha: the
            attention neuron (see :func:`spike_kernels.lif`; ``v_reset=None`` soft reset).
        backend: ``"auto"`` (Triton on CUDA, except float64; the PyTorch path on CPU),
            ``"triton"`` or ``"torch"``.
        out_layout: ``"bhld"`` -> ``[T, B, H, L, Dh]``; ``"blhd"`` -> ``[T, B, L, H*Dh]``
            written directly (heads concatenated per token, ready for the output Linear).
        order: ``"auto"`` (cheaper of the two exact orders), ``"qk_v"`` ``(Q K^T) V``,
            ``"q_kv"`` ``Q (K^T V)`` (not with ``causal``).
        recompute: save nothing for backward but q, k, v (which the caller holds anyway) and
            recompute the neuron's H there; default saves H in q's dtype.
        return_attention: also return :func:`attention_map` of ``attention_time_step``
            (no gradient).

    Returns:
        spikes in q's dtype, or ``(spikes, attention_map)``.
    """
    q, k, v = _autocast(*_check_qkv(q, k, v))
    key_mask = _key_mask(attention_mask, q)
    scale = check_real("scale", scale)
    causal = check_bool("causal", causal)
    recompute = check_bool("recompute", recompute)
    if check_bool("return_attention", return_attention):
        _check_time_step(attention_time_step, q.shape[0])
    out_blhd = check_choice("out_layout", out_layout, OUT_LAYOUTS) == "blhd"
    order = check_choice("order", order, ORDERS)
    p = NeuronParams.make(tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                          v_reset=v_reset, detach_reset=detach_reset, surrogate=surrogate,
                          alpha=alpha)
    if backend == "auto" and q.dtype == torch.float64:
        backend = "torch"  # the Triton kernels compute in fp32; float64 means a precision check
    use_triton = resolve_backend(backend, q.device) == "triton"
    L, D = q.shape[3], q.shape[4]
    if use_triton:
        if q.dtype not in _TRITON_DTYPES:
            raise TypeError(f"the Triton backend supports float16, bfloat16 and float32, got "
                            f"{q.dtype}; use backend='torch'")
        if D > MAX_HEAD_DIM_TRITON:
            raise ValueError(f"the Triton backend supports head dims up to "
                             f"{MAX_HEAD_DIM_TRITON}, got {D}; use backend='torch'")
    kv_order = choose_order(order, L, D, causal, use_triton)
    if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        recompute = True  # no backward: do not write H at all
    config = _Config(scale=scale, causal=causal, kv_order=kv_order, neuron=NeuronArgs.of(p),
                     recompute=recompute, out_blhd=out_blhd, use_triton=use_triton)
    s, _ = attention_forward_op(*flatten(_ForwardArgs(q, k, v, key_mask, config)))
    if not return_attention:
        return s
    return s, attention_map(q, k, attention_mask, causal, attention_time_step)
