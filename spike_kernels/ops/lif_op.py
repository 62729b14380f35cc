"""``spike_kernels.lif``: the multi-step LIF neuron as a ``torch.library`` custom op.

Two ops, ``spike_kernels::lif_forward`` and ``spike_kernels::lif_backward``, each with a
fake (meta) implementation, joined by ``register_autograd``; ``torch.compile(fullgraph=True)``
traces a model that calls :func:`lif` without a graph break. Each op dispatches to the
Triton kernels (:mod:`.lif_triton`) or the PyTorch path (:mod:`.lif_torch`).
"""

from __future__ import annotations

import torch

from ..backend import resolve_backend
from ..params import NeuronParams
from ..surrogate import Surrogate, get_surrogate
from . import lif_torch

_EMPTY: tuple[int, ...] = (0,)


def _params(tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha):
    return NeuronParams(tau, decay_input, v_threshold, v_reset, detach_reset,
                        get_surrogate(surrogate, alpha))


@torch.library.custom_op("spike_kernels::lif_forward", mutates_args=())
def lif_forward_op(
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    tau: float,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
    recompute: bool,
    want_v_seq: bool,
    use_triton: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(spikes, v_last, saved H or empty, v_seq or empty)."""
    p = _params(tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha)
    if use_triton:
        from .lif_triton import lif_forward_triton

        return lif_forward_triton(x, v_init, p, not recompute, want_v_seq)
    return lif_torch.lif_forward_torch(x, v_init, p, not recompute, want_v_seq)


@lif_forward_op.register_fake
def _(x, v_init, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha,
      recompute, want_v_seq, use_triton):
    # contiguous, as both implementations allocate them (empty_like would keep x's strides)
    return (
        x.new_empty(x.shape),
        x.new_empty(x.shape[1:]),
        x.new_empty(_EMPTY) if recompute else x.new_empty(x.shape),
        x.new_empty(x.shape) if want_v_seq else x.new_empty(_EMPTY),
    )


@torch.library.custom_op("spike_kernels::lif_backward", mutates_args=())
def lif_backward_op(
    grad_s: torch.Tensor,
    grad_v_last: torch.Tensor | None,
    grad_v_seq: torch.Tensor | None,
    saved: torch.Tensor,
    v_init: torch.Tensor | None,
    tau: float,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
    recompute: bool,
    use_triton: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_v_init). ``saved`` is H, or x itself when ``recompute``."""
    p = _params(tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha)
    v_dtype = saved.dtype
    if use_triton:
        from . import lif_triton as impl

        recompute_h, backward = impl.recompute_h_triton, impl.lif_backward_triton
    else:
        recompute_h, backward = lif_torch.recompute_h_torch, lif_torch.lif_backward_torch
    h_seq = recompute_h(saved, v_init, p) if recompute else saved
    grad_x, grad_v_init = backward(grad_s, grad_v_last, grad_v_seq, h_seq, p, v_dtype)
    return grad_x.to(saved.dtype), grad_v_init


@lif_backward_op.register_fake
def _(grad_s, grad_v_last, grad_v_seq, saved, v_init, tau, decay_input, v_threshold, v_reset,
      detach_reset, surrogate, alpha, recompute, use_triton):
    return saved.new_empty(saved.shape), saved.new_empty(saved.shape[1:])


def _setup_context(ctx, inputs, output):
    x, v_init, *config = inputs
    _, _, h_seq, _ = output
    recompute = config[7]
    ctx.config = config
    ctx.has_v_init = v_init is not None
    ctx.save_for_backward(x if recompute else h_seq, v_init)


def _backward(ctx, grad_s, grad_v_last, _grad_h, grad_v_seq):
    saved, v_init = ctx.saved_tensors
    (tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha,
     recompute, want_v_seq, use_triton) = ctx.config
    if grad_s is None:
        grad_s = torch.zeros_like(saved)
    grad_x, grad_v_init = lif_backward_op(
        grad_s, grad_v_last, grad_v_seq if want_v_seq else None, saved, v_init,
        tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha,
        recompute, use_triton,
    )
    return (grad_x, grad_v_init if ctx.has_v_init else None) + (None,) * 10


lif_forward_op.register_autograd(_backward, setup_context=_setup_context)


def check_tensor(x: object, name: str = "x") -> torch.Tensor:
    """A floating-point tensor with a leading time dimension, or a clear TypeError/ValueError."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got {x.dtype}"
        )
    if x.dim() == 0:
        raise ValueError(f"{name} must have a leading time dimension [T, ...], got a 0-d tensor")
    return x


def _check_v_init(v_init: object, x: torch.Tensor) -> torch.Tensor | None:
    if v_init is None:
        return None
    if not isinstance(v_init, torch.Tensor):
        raise TypeError(f"v_init must be a torch.Tensor or None, got {type(v_init).__name__}")
    if v_init.shape != x.shape[1:]:
        raise ValueError(
            f"v_init must have shape x.shape[1:] = {tuple(x.shape[1:])}, got {tuple(v_init.shape)}"
        )
    if v_init.dtype != x.dtype:
        raise TypeError(f"v_init must have x's dtype {x.dtype}, got {v_init.dtype}")
    if v_init.device != x.device:
        raise ValueError(f"v_init must be on x's device {x.device}, got {v_init.device}")
    return v_init


def lif(
    x: torch.Tensor,
    v_init: torch.Tensor | None = None,
    *,
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate: str | Surrogate = "sigmoid",
    alpha: float | None = None,
    detach_reset: bool = False,
    backend: str = "auto",
    recompute: bool = False,
    return_v: bool = False,
    return_v_seq: bool = False,
):
    """Multi-step LIF neuron over the leading time dimension of ``x`` ``[T, ...]``.

    Equations (SpikingJelly ``LIFNode``, SPEC.md §1)::

        H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau     (decay_input=True)
        H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]       (decay_input=False)
        S[t] = H[t] >= v_threshold
        V[t] = V_reset if S[t] else H[t]      (hard reset, v_reset a float)
        V[t] = H[t] - v_threshold * S[t]      (soft reset, v_reset=None; charge uses 0)

    Args:
        x: input current ``[T, ...]``, float16/bfloat16/float32/float64. The arithmetic is
            fp32 (fp64 for float64 on the PyTorch path; the Triton kernels compute float64
            inputs in fp32).
        v_init: membrane potential before step 0 (``x.shape[1:]``, x's dtype); default
            ``v_reset`` (0 for the soft reset). Gradients flow into it.
        surrogate: backward of the spike, by name or :class:`~spike_kernels.surrogate.Surrogate`;
            ``alpha`` overrides its sharpness.
        detach_reset: detach S in the reset term (gradients flow through the charge only).
        backend: ``"auto"`` (Triton on CUDA, the PyTorch path on CPU), ``"triton"``, ``"torch"``.
        recompute: save nothing for backward but x (which the caller holds anyway) and
            recompute H there, bit-identically; default saves H in x's dtype (nothing at all
            when no gradient is needed).
        return_v / return_v_seq: also return the final membrane ``[...]`` (to carry state into
            the next call) and/or the membrane after every step ``[T, ...]``.

    Returns:
        spikes (x's shape and dtype), or a tuple ``(spikes, v_last?, v_seq?)`` holding the
        requested extras in that order.
    """
    x = check_tensor(x)
    v_init = _check_v_init(v_init, x)
    p = NeuronParams.make(tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                          v_reset=v_reset, detach_reset=detach_reset, surrogate=surrogate,
                          alpha=alpha)
    use_triton = resolve_backend(backend, x.device) == "triton"
    # Where no gradient can flow (inference, no_grad), save nothing: H would never be read.
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or (v_init is not None and v_init.requires_grad))
    s, v_last, _, v_seq = lif_forward_op(
        x, v_init, p.tau, p.decay_input, p.v_threshold, p.v_reset, p.detach_reset,
        p.surrogate.name, p.surrogate.alpha, bool(recompute) or not needs_grad,
        bool(return_v_seq), use_triton,
    )
    if not (return_v or return_v_seq):
        return s
    return (s,) + ((v_last,) if return_v else ()) + ((v_seq,) if return_v_seq else ())
