"""The PyTorch path of the multi-step LIF: hand-written forward and backward time loops.

Each time step is one fused function (charge, fire, reset; or the surrogate backward of
SPEC.md §1), compiled once per flag combination with ``torch.compile(dynamic=True)`` so
that new neuron counts, T, tau or thresholds never recompile. Where no compiler works
(or ``SPIKE_KERNELS_CPU_COMPILE=0``) the same functions run eagerly. The neuron's constants
(tau, V_th, V_reset, alpha) reach the compiled steps as 0-d tensors, not Python floats:
a float that TorchDynamo specialises into the graph is left out of AOTAutograd's cache key,
so the graph compiled for one V_reset was reused for the next (wrong spikes, silently;
torch 2.13, pytorch/pytorch#194976 and #197889).

Arithmetic is fp32 (fp64 for fp64 inputs); spikes and the saved H use the input's dtype.
Backward, with ``gv`` the gradient reaching V[t] and ``sg = g'(H[t] - V_th)``::

    soft, detach : gH = gS sg + gv
    soft         : gH = (gS - V_th gv) sg + gv
    hard, detach : gH = gS sg + gv (1 - S)
    hard         : gH = (gS + gv (V_reset - H)) sg + gv (1 - S)
    gX = gH / tau (decay_input) or gH;   gv[t-1] = gH (1 - 1/tau)
"""

from __future__ import annotations

import functools
import os
import types
import warnings
from collections.abc import Callable

import torch

from ..params import NeuronParams, threshold_bracket
from ..surrogate import surrogate_grad

Scalar = float | torch.Tensor  # a Python float or a 0-d tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64 (gradcheck); every other float type computes in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def charge(v: torch.Tensor, x: torch.Tensor, tau: Scalar, v_reset: Scalar, decay_input: bool):
    """H = V + (X - (V - V_reset)) / tau, or V - (V - V_reset) / tau + X."""
    if decay_input:
        return v + (x - (v - v_reset)) / tau
    return v - (v - v_reset) / tau + x


def grad_membrane(
    grad_s: torch.Tensor,
    grad_v: torch.Tensor,
    h: torch.Tensor,
    v_threshold: Scalar,
    v_reset: Scalar,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: Scalar,
) -> torch.Tensor:
    """dL/dH[t] from dL/dS[t] and dL/dV[t] (the table in the module docstring)."""
    sg = surrogate_grad(h - v_threshold, surrogate, alpha)
    if hard_reset:
        keep = (h < v_threshold).to(h.dtype)
        if detach_reset:
            return grad_s * sg + grad_v * keep
        return (grad_s + grad_v * (v_reset - h)) * sg + grad_v * keep
    if detach_reset:
        return grad_s * sg + grad_v
    return (grad_s - v_threshold * grad_v) * sg + grad_v


def _forward_step(
    x: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    h_seq: torch.Tensor | None,
    v_seq: torch.Tensor | None,
    t: int,
    tau: torch.Tensor,
    v_threshold: torch.Tensor,
    v_reset: torch.Tensor,
    decay_input: bool,
    hard_reset: bool,
    h_below: torch.Tensor,
    h_above: torch.Tensor,
) -> torch.Tensor:
    # Whole [T, N] tensors and the step index come in (not x[t]): slices at varying storage
    # offsets would make TorchDynamo recompile for every step.
    h = charge(v, x[t].to(v.dtype), tau, v_reset, decay_input)
    fired = h >= v_threshold
    v_next = torch.where(fired, v_reset, h) if hard_reset else torch.where(
        fired, h - v_threshold, h
    )
    s[t].copy_(fired)
    if h_seq is not None:
        if h_seq.dtype != h.dtype:
            # rounding to fp16/bf16 must not carry H across the threshold (backward re-derives
            # the reset mask H < V_th from it): clamp to the nearest representable values on
            # the spike's side, h_below < V_th <= h_above. (Clamping, not comparing a rounded
            # copy: inductor may elide an fp32 -> bf16 -> fp32 round trip.)
            h = torch.where(fired, h.clamp(min=h_above), h.clamp(max=h_below))
        h_seq[t].copy_(h)  # after v_next: the clamped H only goes to backward
    if v_seq is not None:
        v_seq[t].copy_(v_next)
    return v_next


def _backward_step(
    grad_s: torch.Tensor,
    grad_v: torch.Tensor,
    grad_v_seq: torch.Tensor | None,
    h_seq: torch.Tensor,
    grad_x: torch.Tensor,
    t: int,
    tau: torch.Tensor,
    v_threshold: torch.Tensor,
    v_reset: torch.Tensor,
    decay_input: bool,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: torch.Tensor,
) -> torch.Tensor:
    dtype = grad_v.dtype
    if grad_v_seq is not None:
        grad_v = grad_v + grad_v_seq[t].to(dtype)
    grad_h = grad_membrane(
        grad_s[t].to(dtype), grad_v, h_seq[t].to(dtype), v_threshold, v_reset,
        hard_reset, detach_reset, surrogate, alpha,
    )
    grad_x[t].copy_(grad_h / tau if decay_input else grad_h)
    return grad_h * (1.0 - 1.0 / tau)


def _compile_enabled() -> bool:
    return os.environ.get("SPIKE_KERNELS_CPU_COMPILE", "1") not in ("0", "")


def _step_function(fn: Callable, key: tuple) -> Callable:
    """``fn`` compiled for one flag combination ``key`` (eager when compiling is off)."""
    return _compiled_step(fn, key) if _compile_enabled() else fn


@functools.cache
def _compiled_step(fn: Callable, key: tuple) -> Callable:
    """``fn`` under ``torch.compile``, falling back to ``fn`` itself where compiling fails.

    TorchDynamo keeps its compile cache (8 entries) on the code object, so each flag
    combination gets a fresh copy of the code object and thus a cache of its own; within
    it only the step index's 0/1 specialisation adds entries.
    """
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{abs(hash(key)):x}")
    fresh = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__)
    compiled = torch.compile(fresh, dynamic=True, fullgraph=True)

    def run(*args, **kwargs):
        nonlocal compiled
        try:
            return compiled(*args, **kwargs)
        except Exception as err:  # no C++ compiler, unsupported platform, ...
            if compiled is fn:
                raise
            warnings.warn(
                f"spike_kernels: torch.compile of the CPU LIF path failed ({type(err).__name__}: "
                f"{err}); running it eagerly", RuntimeWarning, stacklevel=2,
            )
            compiled = fn
            return fn(*args, **kwargs)

    return run


def _initial(value: torch.Tensor | None, fill: float, shape, dtype, device) -> torch.Tensor:
    """A fresh flat fp32/fp64 state (not a view): ``value`` copied, or ``fill`` everywhere."""
    if value is None:
        return torch.full((shape.numel(),), fill, dtype=dtype, device=device)
    return value.reshape(-1).to(dtype, copy=True)


def _flat(a: torch.Tensor | None, T: int, n: int) -> torch.Tensor | None:
    """``a`` as ``[T, n]`` sharing its storage, but not a view.

    TorchDynamo guards on the base of a view input (its rank and sizes), so reshaped views
    of differently shaped tensors would each recompile the step and soon exhaust its
    recompile limit; a tensor ``set_`` on the same storage carries no base.
    """
    if a is None:
        return None
    a = a.reshape(T, n)
    if a._base is None:
        return a
    return a.new_empty(0).set_(a.untyped_storage(), a.storage_offset(), a.shape, a.stride())


def _constants(dtype: torch.dtype, device: torch.device, *values: float) -> list[torch.Tensor]:
    """0-d tensors for the compiled steps (see the module docstring)."""
    return [torch.tensor(value, dtype=dtype, device=device) for value in values]


def _run_forward(x, v_init, p: NeuronParams, s, h_seq, v_seq) -> torch.Tensor:
    """The forward time loop over flat ``[T, N]`` tensors; returns the final flat membrane."""
    T = x.shape[0]
    v = _initial(v_init, p.v_init, x.shape[1:], compute_dtype(x.dtype), x.device)
    key = ("fwd", p.decay_input, p.hard_reset, x.dtype,
           None if h_seq is None else h_seq.dtype, v_seq is not None)
    step = _step_function(_forward_step, key)
    xf, sf, hf, vf = (_flat(a, T, v.numel()) for a in (x, s, h_seq, v_seq))
    narrow_h = h_seq is not None and h_seq.dtype != v.dtype
    h_below, h_above = threshold_bracket(p.v_threshold, h_seq.dtype) if narrow_h else (0.0, 0.0)
    tau, v_th, v_reset, h_below, h_above = _constants(
        v.dtype, v.device, p.tau, p.v_threshold, p.charge_reset, h_below, h_above)
    for t in range(T):
        v = step(xf, v, sf, hf, vf, t, tau, v_th, v_reset, p.decay_input, p.hard_reset,
                 h_below, h_above)
    return v


def lif_forward_torch(
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    p: NeuronParams,
    save_h: bool,
    want_v_seq: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(spikes, v_last, h_seq or empty, v_seq or empty)``; see the module docstring."""
    # contiguous (empty_like keeps a permuted x's strides, and [T, N] views of those
    # would be copies that the steps write into and nobody reads)
    s = x.new_empty(x.shape)
    h_seq = x.new_empty(x.shape) if save_h else None
    v_seq = x.new_empty(x.shape) if want_v_seq else None
    v = _run_forward(x, v_init, p, s, h_seq, v_seq)
    # Two separate empty tensors: a custom op's outputs may not alias one another.
    return (s, v.reshape(x.shape[1:]).to(x.dtype),
            x.new_empty(0) if h_seq is None else h_seq,
            x.new_empty(0) if v_seq is None else v_seq)


def lif_backward_torch(
    grad_s: torch.Tensor,
    grad_v_last: torch.Tensor | None,
    grad_v_seq: torch.Tensor | None,
    h_seq: torch.Tensor,
    p: NeuronParams,
    v_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(grad_x, grad_v_init)`` from the saved (or recomputed) ``h_seq``."""
    T, shape = h_seq.shape[0], h_seq.shape[1:]
    grad_v = _initial(grad_v_last, 0.0, shape, compute_dtype(h_seq.dtype), h_seq.device)
    grad_x = torch.empty(h_seq.shape, dtype=grad_s.dtype, device=h_seq.device)
    key = ("bwd", p.decay_input, p.hard_reset, p.detach_reset, p.surrogate.name,
           h_seq.dtype, grad_s.dtype, grad_v_seq is not None)
    step = _step_function(_backward_step, key)
    gs, gvs, hf, gx = (_flat(a, T, grad_v.numel()) for a in (grad_s, grad_v_seq, h_seq, grad_x))
    tau, v_th, v_reset, alpha = _constants(
        grad_v.dtype, grad_v.device, p.tau, p.v_threshold, p.charge_reset, p.surrogate.alpha)
    for t in range(T - 1, -1, -1):
        grad_v = step(gs, grad_v, gvs, hf, gx, t, tau, v_th, v_reset, p.decay_input,
                      p.hard_reset, p.detach_reset, p.surrogate.name, alpha)
    return grad_x, grad_v.reshape(shape).to(v_dtype)


def recompute_h_torch(x: torch.Tensor, v_init: torch.Tensor | None, p: NeuronParams):
    """H[t] recomputed from x by the forward's own step, so bit-identical to it (fp32)."""
    h_seq = torch.empty(x.shape, dtype=compute_dtype(x.dtype), device=x.device)
    _run_forward(x, v_init, p, x.new_empty(x.shape), h_seq, None)
    return h_seq
