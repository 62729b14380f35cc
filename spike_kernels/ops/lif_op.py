"""``spike_kernels.lif``: the multi-step LIF neuron as a ``torch.library`` custom op.

Two ops, ``spike_kernels::lif_forward`` and ``spike_kernels::lif_backward``, each with a
fake (meta) implementation, joined by ``register_autograd``; ``torch.compile(fullgraph=True)``
traces a model that calls :func:`lif` without a graph break. Each op dispatches to the
Triton kernels (:mod:`.lif_triton`) or the PyTorch path (:mod:`.lif_torch`); both take the
same :class:`~spike_kernels.params.NeuronParams`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from ..backend import resolve_backend
from ..params import NeuronParams, check_bool, check_float_dtype, check_tensor
from ..surrogate import Surrogate
from . import lif_torch
from .op_args import NeuronArgs, custom_op, fields, flatten, register_fake, unflatten

__all__ = ["check_tensor", "lif"]

_EMPTY: tuple[int, ...] = (0,)


class _Neuron(NamedTuple):
    """The neuron arguments of both custom ops, in schema order."""

    base: NeuronArgs
    convention: str
    beta: float | None

    @classmethod
    def of(cls, p: NeuronParams) -> _Neuron:
        return cls(NeuronArgs.of(p), p.convention, p.beta)


class _ForwardArgs(NamedTuple):
    """``lif_forward``'s arguments (its schema, in order)."""

    x: torch.Tensor
    v_init: torch.Tensor | None
    neuron: _Neuron
    spike_dtype: torch.dtype
    recompute: bool
    want_v_seq: bool
    use_triton: bool


class _BackwardArgs(NamedTuple):
    """``lif_backward``'s arguments (its schema, in order)."""

    grad_s: torch.Tensor
    grad_v_last: torch.Tensor | None
    grad_v_seq: torch.Tensor | None
    saved: torch.Tensor
    v_init: torch.Tensor | None
    neuron: _Neuron
    recompute: bool
    use_triton: bool


@functools.lru_cache(maxsize=256)
def _params(n: _Neuron) -> NeuronParams:
    """NeuronParams from the ops' scalar arguments (validated once per distinct neuron)."""
    return n.base.params(convention=n.convention, beta=n.beta)


@functools.lru_cache(maxsize=256, typed=True)
def _make_params(**kwargs) -> NeuronParams:
    return NeuronParams.make(**kwargs)


def make_params(**kwargs) -> NeuronParams:
    """:meth:`NeuronParams.make`, cached per distinct (typed) arguments: validation runs once
    per neuron configuration, not on every call of the op. Only immutable surrogates (a name
    or a :class:`Surrogate`) are cached: another object could change its alpha later."""
    # Under torch.compile the validation runs once at trace time anyway; calling the cache
    # there only makes Dynamo warn that it traces through lru_cache.
    if torch.compiler.is_compiling() or not isinstance(kwargs.get("surrogate"), str | Surrogate):
        return NeuronParams.make(**kwargs)
    try:
        return _make_params(**kwargs)
    except TypeError:  # an unhashable argument: let the validation name it
        return NeuronParams.make(**kwargs)


@functools.cache
def _triton():
    """:mod:`.lif_triton`, imported on first use (the PyTorch path needs no Triton)."""
    from . import lif_triton

    return lif_triton


@custom_op("spike_kernels::lif_forward", _ForwardArgs,
           tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor])
def lif_forward_op(a: _ForwardArgs):
    """(spikes in spike_dtype, v_last, saved H or empty, v_seq or empty)."""
    forward = _triton().lif_forward_triton if a.use_triton else lif_torch.lif_forward_torch
    return forward(a.x, a.v_init, _params(a.neuron), not a.recompute, a.want_v_seq,
                   a.spike_dtype)


@register_fake(lif_forward_op, _ForwardArgs)
def _(a: _ForwardArgs):
    x = a.x
    # contiguous, as both implementations allocate them (empty_like would keep x's strides)
    return (
        x.new_empty(x.shape, dtype=a.spike_dtype),
        x.new_empty(x.shape[1:]),
        x.new_empty(_EMPTY) if a.recompute else x.new_empty(x.shape),
        x.new_empty(x.shape) if a.want_v_seq else x.new_empty(_EMPTY),
    )


@custom_op("spike_kernels::lif_backward", _BackwardArgs, tuple[torch.Tensor, torch.Tensor])
def lif_backward_op(a: _BackwardArgs):
    """(grad_x, grad_v_init) in x's dtype. ``saved`` is H, or x itself when ``recompute``."""
    p = _params(a.neuron)
    if a.use_triton:
        return _triton().lif_backward_triton(a.grad_s, a.grad_v_last, a.grad_v_seq, a.saved,
                                             a.v_init, p, a.recompute)
    return lif_torch.lif_backward_torch(a.grad_s, a.grad_v_last, a.grad_v_seq, a.saved,
                                        a.v_init, p, a.saved.dtype, a.recompute)


@register_fake(lif_backward_op, _BackwardArgs)
def _(a: _BackwardArgs):
    return a.saved.new_empty(a.saved.shape), a.saved.new_empty(a.saved.shape[1:])


def _setup_context(ctx, inputs, output):
    a: _ForwardArgs = unflatten(_ForwardArgs, inputs)
    ctx.cfg = a._replace(x=None, v_init=None)  # the non-tensor arguments, by name
    ctx.has_v_init = a.v_init is not None
    ctx.save_for_backward(a.x if a.recompute else output[2], a.v_init)
    # Unused outputs get None, not zeros: autograd would otherwise fill a [T, ...] zero
    # gradient for the saved-H output (and v_last) in every backward.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_s, grad_v_last, _grad_h, grad_v_seq):
    saved, v_init = ctx.saved_tensors
    cfg: _ForwardArgs = ctx.cfg
    if grad_s is None:
        grad_s = torch.zeros_like(saved)
    grad_x, grad_v_init = lif_backward_op(*flatten(_BackwardArgs(
        grad_s=grad_s, grad_v_last=grad_v_last,
        grad_v_seq=grad_v_seq if cfg.want_v_seq else None, saved=saved, v_init=v_init,
        neuron=cfg.neuron, recompute=cfg.recompute, use_triton=cfg.use_triton)))
    n_args = len(fields(_ForwardArgs)) - 2
    return (grad_x, grad_v_init if ctx.has_v_init else None) + (None,) * n_args


lif_forward_op.register_autograd(_backward, setup_context=_setup_context)


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
    decay_input: bool | None = None,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    surrogate: str | Surrogate = "sigmoid",
    alpha: float | None = None,
    detach_reset: bool | None = None,
    convention: str = "spikingjelly",
    beta: float | None = None,
    spike_dtype: torch.dtype | None = None,
    backend: str = "auto",
    recompute: bool = False,
    return_v: bool = False,
    return_v_seq: bool = False,
):
    """Multi-step LIF neuron over the leading time dimension of ``x`` ``[T, ...]``.

    ``convention="spikingjelly"`` (``LIFNode``, docs/DESIGN.md §1)::

        H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau     (decay_input=True, default)
        H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]       (decay_input=False)
        S[t] = H[t] >= v_threshold
        V[t] = V_reset if S[t] else H[t]      (hard reset, v_reset a float)
        V[t] = H[t] - v_threshold * S[t]      (soft reset, v_reset=None; charge uses 0)

    ``convention="snntorch"`` (snnTorch ``Leaky``, reset_delay=True; needs ``beta``; the
    membrane U is snnTorch's ``mem``, before the reset, which lands one step late)::

        r[t] = U[t-1] > v_threshold                       (detached)
        U[t] = beta U[t-1] + X[t] - v_threshold r[t]      (v_reset=None, "subtract")
        U[t] = beta (1 - r[t]) U[t-1] + X[t]              (v_reset=0.0, "zero")
        S[t] = U[t] > v_threshold

    Args:
        x: input current ``[T, ...]``, float16/bfloat16/float32/float64. The arithmetic is
            fp32 (fp64 for float64 on the PyTorch path; the Triton kernels compute float64
            inputs in fp32).
        v_init: membrane before step 0 (``x.shape[1:]``, x's dtype); default ``v_reset``
            (0 for the soft reset and for snnTorch). Gradients flow into it.
        decay_input / detach_reset: default to the convention's (True/False for SpikingJelly;
            snnTorch has only False/True). ``detach_reset`` detaches S in the reset term
            (gradients flow through the charge only).
        surrogate: backward of the spike, by name or :class:`~spike_kernels.surrogate.Surrogate`;
            ``alpha`` overrides its sharpness.
        beta: snnTorch's decay in [0, 1] (``convention="snntorch"`` only; tau stays unset).
        spike_dtype: dtype of the returned spikes (default x's; 0/1 are exact in any float
            type), e.g. bfloat16 spikes from an fp32 membrane for the next matmul.
        backend: ``"auto"`` (Triton on CUDA, the PyTorch path on CPU), ``"triton"``, ``"torch"``.
        recompute: save nothing for backward but x (which the caller holds anyway) and
            recompute H there, bit-identically; default saves H in x's dtype (nothing at all
            when no gradient is needed).
        return_v / return_v_seq: also return the final membrane ``[...]`` (to carry state into
            the next call) and/or the membrane after every step ``[T, ...]``.

    Returns:
        spikes (x's shape, ``spike_dtype``), or a tuple ``(spikes, v_last?, v_seq?)`` holding
        the requested extras in that order.
    """
    x = check_tensor(x)
    v_init = _check_v_init(v_init, x)
    p = make_params(tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                    v_reset=v_reset, detach_reset=detach_reset, surrogate=surrogate,
                    alpha=alpha, convention=convention, beta=beta)
    spike_dtype = check_float_dtype("spike_dtype", spike_dtype) or x.dtype
    use_triton = resolve_backend(backend, x.device) == "triton"
    # Where no gradient can flow (inference, no_grad), save nothing: H would never be read.
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or (v_init is not None and v_init.requires_grad))
    s, v_last, _, v_seq = lif_forward_op(*flatten(_ForwardArgs(
        x=x, v_init=v_init, neuron=_Neuron.of(p), spike_dtype=spike_dtype,
        recompute=check_bool("recompute", recompute) or not needs_grad,
        want_v_seq=check_bool("return_v_seq", return_v_seq), use_triton=use_triton)))
    if not (check_bool("return_v", return_v) or return_v_seq):
        return s
    return (s,) + ((v_last,) if return_v else ()) + ((v_seq,) if return_v_seq else ())
