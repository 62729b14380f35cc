"""The PyTorch path of the multi-step LIF: hand-written forward and backward time loops.

Each time step is one fused function (charge, fire, reset; or the surrogate backward of
SPEC.md §1), compiled once per flag combination with ``torch.compile(dynamic=True)`` so
that new neuron counts, T, tau or thresholds never recompile. Where no compiler works
(or ``SPIKE_KERNELS_CPU_COMPILE=0``) the same functions run eagerly.

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

from ..neuron import NeuronParams
from ..surrogate import surrogate_grad


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64 (gradcheck); every other float type computes in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def charge(v: torch.Tensor, x: torch.Tensor, tau: float, v_reset: float, decay_input: bool):
    """H = V + (X - (V - V_reset)) / tau, or V - (V - V_reset) / tau + X."""
    if decay_input:
        return v + (x - (v - v_reset)) / tau
    return v - (v - v_reset) / tau + x


def grad_membrane(
    grad_s: torch.Tensor,
    grad_v: torch.Tensor,
    h: torch.Tensor,
    v_threshold: float,
    v_reset: float,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
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
    tau: float,
    v_threshold: float,
    v_reset: float,
    decay_input: bool,
    hard_reset: bool,
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
        h_seq[t].copy_(h)
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
    tau: float,
    v_threshold: float,
    v_reset: float,
    decay_input: bool,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
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
    """A fresh flat fp32/fp64 state: ``value`` copied, or ``fill`` everywhere."""
    if value is None:
        return torch.full(shape, fill, dtype=dtype, device=device).reshape(-1)
    return value.to(dtype, copy=True).reshape(-1)


def _run_forward(x, v_init, p: NeuronParams, s, h_seq, v_seq) -> torch.Tensor:
    """The forward time loop over flat ``[T, N]`` views; returns the final flat membrane."""
    T = x.shape[0]
    v = _initial(v_init, p.v_init, x.shape[1:], compute_dtype(x.dtype), x.device)
    key = ("fwd", p.decay_input, p.hard_reset, x.dtype,
           None if h_seq is None else h_seq.dtype, v_seq is not None)
    step = _step_function(_forward_step, key)
    flat = lambda a: None if a is None else a.reshape(T, v.numel())
    xf, sf, hf, vf = flat(x), flat(s), flat(h_seq), flat(v_seq)
    for t in range(T):
        v = step(xf, v, sf, hf, vf, t, p.tau, p.v_threshold, p.charge_reset,
                 p.decay_input, p.hard_reset)
    return v


def lif_forward_torch(
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    p: NeuronParams,
    save_h: bool,
    want_v_seq: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(spikes, v_last, h_seq or empty, v_seq or empty)``; see the module docstring."""
    s = torch.empty_like(x)
    h_seq = torch.empty_like(x) if save_h else None
    v_seq = torch.empty_like(x) if want_v_seq else None
    v = _run_forward(x, v_init, p, s, h_seq, v_seq)
    empty = x.new_empty(0)
    return (s, v.reshape(x.shape[1:]).to(x.dtype),
            empty if h_seq is None else h_seq, empty if v_seq is None else v_seq)


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
    flat = lambda a: None if a is None else a.reshape(T, grad_v.numel())
    gs, gvs, hf, gx = flat(grad_s), flat(grad_v_seq), flat(h_seq), flat(grad_x)
    for t in range(T - 1, -1, -1):
        grad_v = step(gs, grad_v, gvs, hf, gx, t, p.tau, p.v_threshold, p.charge_reset,
                      p.decay_input, p.hard_reset, p.detach_reset, p.surrogate.name,
                      p.surrogate.alpha)
    return grad_x, grad_v.reshape(shape).to(v_dtype)


def recompute_h_torch(x: torch.Tensor, v_init: torch.Tensor | None, p: NeuronParams):
    """H[t] recomputed from x by the forward's own step, so bit-identical to it (fp32)."""
    h_seq = torch.empty(x.shape, dtype=compute_dtype(x.dtype), device=x.device)
    _run_forward(x, v_init, p, torch.empty_like(x), h_seq, None)
    return h_seq
