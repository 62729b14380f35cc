"""Triton kernels of the multi-step LIF neuron and their launchers (docs/DESIGN.md §1, §6).

One program owns ``BLOCK`` neurons and runs the whole time loop with the membrane in
registers. Offsets are int64. ``T`` is not specialised on (a new sequence length never
recompiles); ``N`` is, as Triton does for every integer (divisible by 16, or 1): that
divisibility is what lets every load and store be a 128-bit access, at the price of at most
a few variants per kernel.

Both kernels are compiled with ``enable_fp_fusion=False``: no multiply-add is contracted,
so H is rounded after every operation as in the PyTorch path and a spike cannot flip at a
tie (snnTorch's ``beta U + X`` would otherwise become one FMA). Backward multiplies by a
precomputed ``1/tau`` (a rounding of the gradient, never of a spike).

Bytes per neuron and step, with ``b`` the size of x's dtype and ``s`` that of the spikes:

=========================  ======================================  ==============
pass                       traffic                                 fp32 / bf16
=========================  ======================================  ==============
forward, no grad           read x, write S                         8 / 4
forward, saving H          read x, write S, write H                12 / 6
backward over saved H      read dL/dS, read H, write dL/dX         12 / 6
backward, ``recompute``    + read x, write H (into dL/dX's buffer)  20 / 10
=========================  ======================================  ==============

(plus ``b`` per step for ``v_seq`` or its gradient where asked). ``recompute`` thus saves
H's ``b`` bytes per step of activation memory for ``b`` more bytes of traffic per step.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..params import NeuronParams, threshold_bracket
from .neuron_triton import grad_membrane, neuron_step, surrogate_grad

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _narrow_h(h, fired, h_below, h_above, NARROW_H: tl.constexpr):
    """H as saved for backward: rounding to fp16/bf16 must not carry it across the threshold
    (backward re-derives the spikes and reset mask from it), so it is clamped to the nearest
    representable values on the spike's side (``threshold_bracket``)."""
    if NARROW_H:
        h = tl.where(fired, tl.maximum(h, h_above), tl.minimum(h, h_below))
    return h


@triton.jit
def _initial(v_init_ptr, offs, mask, v_start, HAS_V_INIT: tl.constexpr, BLOCK: tl.constexpr):
    if HAS_V_INIT:
        v = tl.load(v_init_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        v = tl.zeros([BLOCK], dtype=tl.float32) + v_start
    return v


@triton.jit
def _forward_sweep(
    x_ptr, v_init_ptr, s_ptr, h_ptr, v_seq_ptr, offs, mask,
    T, N, tau, decay, v_threshold, v_reset, v_start, h_below, h_above,
    HAS_V_INIT: tl.constexpr, STORE_S: tl.constexpr, STORE_H: tl.constexpr,
    NARROW_H: tl.constexpr, STORE_V_SEQ: tl.constexpr, DECAY_INPUT: tl.constexpr,
    HARD_RESET: tl.constexpr, SNNTORCH: tl.constexpr, BLOCK: tl.constexpr,
):
    """The neurons ``offs`` from V[-1] through t = 0..T-1, storing S, H (as saved for
    backward) and V where asked; returns V[T-1]. The forward kernel's loop, and the
    backward kernel's with ``RECOMPUTE`` (H only, bit-identical to the forward's)."""
    v = _initial(v_init_ptr, offs, mask, v_start, HAS_V_INIT, BLOCK)
    step = offs
    for _ in range(T):
        x = tl.load(x_ptr + step, mask=mask, other=0.0).to(tl.float32)
        fired, h, v = neuron_step(v, x, tau, decay, v_threshold, v_reset,
                                  DECAY_INPUT, HARD_RESET, SNNTORCH)
        if STORE_S:
            # via fp32: the interpreter cannot cast int1 to bfloat16 directly
            spike = tl.where(fired, 1.0, 0.0)
            tl.store(s_ptr + step, spike.to(s_ptr.dtype.element_ty), mask=mask)
        if STORE_H:
            h = _narrow_h(h, fired, h_below, h_above, NARROW_H)
            tl.store(h_ptr + step, h.to(h_ptr.dtype.element_ty), mask=mask)
        if STORE_V_SEQ:
            tl.store(v_seq_ptr + step, v.to(v_seq_ptr.dtype.element_ty), mask=mask)
        step += N
    return v


@triton.jit(do_not_specialize=["T"])
def _lif_forward_kernel(
    x_ptr, v_init_ptr, s_ptr, h_ptr, v_seq_ptr, v_last_ptr,
    T, N, tau, decay, v_threshold, v_reset, v_start, h_below, h_above,
    HAS_V_INIT: tl.constexpr, STORE_H: tl.constexpr, NARROW_H: tl.constexpr,
    STORE_V_SEQ: tl.constexpr, DECAY_INPUT: tl.constexpr, HARD_RESET: tl.constexpr,
    SNNTORCH: tl.constexpr, BLOCK: tl.constexpr,
):
    """S[t] (and H[t], V[t] where asked) for t = 0..T-1, then V[T-1]. ``decay`` is snnTorch's
    beta (unused by SpikingJelly's charge, which divides by tau)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v = _forward_sweep(x_ptr, v_init_ptr, s_ptr, h_ptr, v_seq_ptr, offs, mask,
                       T, N, tau, decay, v_threshold, v_reset, v_start, h_below, h_above,
                       HAS_V_INIT=HAS_V_INIT, STORE_S=True, STORE_H=STORE_H,
                       NARROW_H=NARROW_H, STORE_V_SEQ=STORE_V_SEQ, DECAY_INPUT=DECAY_INPUT,
                       HARD_RESET=HARD_RESET, SNNTORCH=SNNTORCH, BLOCK=BLOCK)
    tl.store(v_last_ptr + offs, v.to(v_last_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T"])
def _lif_backward_kernel(
    grad_s_ptr, h_ptr, x_ptr, v_init_ptr, grad_v_seq_ptr, grad_v_last_ptr, grad_x_ptr,
    grad_v_init_ptr,
    T, N, tau, inv_tau, decay, v_threshold, v_reset, v_start, alpha, h_below, h_above,
    RECOMPUTE: tl.constexpr, HAS_V_INIT: tl.constexpr, NARROW_H: tl.constexpr,
    HAS_GRAD_V_LAST: tl.constexpr, HAS_GRAD_V_SEQ: tl.constexpr, DECAY_INPUT: tl.constexpr,
    HARD_RESET: tl.constexpr, DETACH_RESET: tl.constexpr, SNNTORCH: tl.constexpr,
    SURROGATE: tl.constexpr, BLOCK: tl.constexpr,
):
    """dL/dX[t] for t = T-1..0, then dL/dV[-1]. With ``RECOMPUTE`` a forward sweep first
    writes H into ``h_ptr`` (the launcher passes dL/dX's buffer: each H[t] is read once,
    just before dL/dX[t] overwrites it), exactly as the forward kernel saves it."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if RECOMPUTE:  # H only (the S and V pointers are unused)
        _forward_sweep(x_ptr, v_init_ptr, h_ptr, h_ptr, h_ptr, offs, mask,
                       T, N, tau, decay, v_threshold, v_reset, v_start, h_below, h_above,
                       HAS_V_INIT=HAS_V_INIT, STORE_S=False, STORE_H=True,
                       NARROW_H=NARROW_H, STORE_V_SEQ=False, DECAY_INPUT=DECAY_INPUT,
                       HARD_RESET=HARD_RESET, SNNTORCH=SNNTORCH, BLOCK=BLOCK)
    if HAS_GRAD_V_LAST:
        grad_v = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        grad_v = tl.zeros([BLOCK], dtype=tl.float32)
    step = offs + (T - 1).to(tl.int64) * N
    for i in range(T):
        h = tl.load(h_ptr + step, mask=mask, other=0.0).to(tl.float32)
        if SNNTORCH and HARD_RESET:
            # grad_v is beta dL/dU[t+1]; U[t] > V_th zeroed U[t] in U[t+1] (the delayed
            # reset), so none of it reaches U[t]. Not at t = T-1: dL/dU[T-1] comes directly.
            grad_v = tl.where((h > v_threshold) & (i > 0), 0.0, grad_v)
        if HAS_GRAD_V_SEQ:
            grad_v += tl.load(grad_v_seq_ptr + step, mask=mask, other=0.0).to(tl.float32)
        grad_s = tl.load(grad_s_ptr + step, mask=mask, other=0.0).to(tl.float32)
        if SNNTORCH:
            grad_h = grad_s * surrogate_grad(h - v_threshold, alpha, SURROGATE) + grad_v
        else:
            grad_h = grad_membrane(grad_s, grad_v, h, v_threshold, v_reset, alpha,
                                   HARD_RESET, DETACH_RESET, SURROGATE)
        if DECAY_INPUT:
            grad_x = grad_h * inv_tau
        else:
            grad_x = grad_h
        tl.store(grad_x_ptr + step, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)
        grad_v = grad_h * decay
        step -= N
    if SNNTORCH and HARD_RESET:  # the same for U[-1] = v_init, unless T = 0 (no step)
        u = _initial(v_init_ptr, offs, mask, v_start, HAS_V_INIT, BLOCK)
        grad_v = tl.where((u > v_threshold) & (T > 0), 0.0, grad_v)
    tl.store(grad_v_init_ptr + offs, grad_v.to(grad_v_init_ptr.dtype.element_ty), mask=mask)


def _blocks(n: int) -> int:
    """Programs for ``n`` neurons (plain integer math: ``triton.cdiv`` costs microseconds of
    host time per call)."""
    return -(-n // BLOCK)


def _launch_constants(p: NeuronParams, h_dtype: torch.dtype, narrow: bool) -> tuple:
    """``(h_below, h_above)`` of the saved H, or zeros where H is not narrowed."""
    if not narrow:
        return 0.0, 0.0
    return threshold_bracket(p.v_threshold, h_dtype, p.snntorch)


def lif_forward_triton(
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    p: NeuronParams,
    save_h: bool,
    want_v_seq: bool,
    spike_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(spikes, v_last, h_seq or empty, v_seq or empty)`` computed by one kernel;
    spikes in ``spike_dtype`` (default x's), everything else in x's dtype."""
    x = x.contiguous()
    T, n = x.shape[0], math.prod(x.shape[1:])
    s = torch.empty(x.shape, dtype=spike_dtype or x.dtype, device=x.device)
    h_seq = torch.empty_like(x) if save_h else x.new_empty(0)
    v_seq = torch.empty_like(x) if want_v_seq else x.new_empty(0)
    v_last = x.new_empty(x.shape[1:])
    if n == 0:
        return s, v_last, h_seq, v_seq
    narrow_h = save_h and x.element_size() < 4
    h_below, h_above = _launch_constants(p, x.dtype, narrow_h)
    _lif_forward_kernel[(_blocks(n),)](
        x, v_last if v_init is None else v_init.contiguous(), s, h_seq, v_seq, v_last,
        T, n, p.tau, p.decay, p.v_threshold, p.charge_reset, p.v_init, h_below, h_above,
        HAS_V_INIT=v_init is not None, STORE_H=save_h, NARROW_H=narrow_h,
        STORE_V_SEQ=want_v_seq, DECAY_INPUT=p.decay_input, HARD_RESET=p.hard_reset,
        SNNTORCH=p.snntorch, BLOCK=BLOCK, num_warps=NUM_WARPS, enable_fp_fusion=False,
    )
    return s, v_last, h_seq, v_seq


def lif_backward_triton(
    grad_s: torch.Tensor,
    grad_v_last: torch.Tensor | None,
    grad_v_seq: torch.Tensor | None,
    saved: torch.Tensor,
    v_init: torch.Tensor | None,
    p: NeuronParams,
    recompute: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(grad_x, grad_v_init)`` in ``saved``'s dtype (x's) by one kernel: ``saved`` is
    the forward's H, or x itself with ``recompute`` (H is then recomputed in the kernel,
    bit-identical to the one the forward would have saved)."""
    saved = saved.contiguous()
    T, n = saved.shape[0], math.prod(saved.shape[1:])
    grad_x = torch.empty_like(saved)
    grad_v_init = saved.new_empty(saved.shape[1:])
    if n == 0:
        return grad_x, grad_v_init
    narrow_h = recompute and saved.element_size() < 4
    h_below, h_above = _launch_constants(p, saved.dtype, narrow_h)
    v0 = grad_v_init if v_init is None else v_init.contiguous()
    _lif_backward_kernel[(_blocks(n),)](
        grad_s.contiguous(), grad_x if recompute else saved, saved, v0,
        grad_x if grad_v_seq is None else grad_v_seq.contiguous(),
        grad_v_init if grad_v_last is None else grad_v_last.contiguous(),
        grad_x, grad_v_init,
        T, n, p.tau, 1.0 / p.tau, p.decay,
        p.v_threshold, p.charge_reset, p.v_init, p.surrogate.alpha, h_below, h_above,
        RECOMPUTE=recompute, HAS_V_INIT=v_init is not None, NARROW_H=narrow_h,
        HAS_GRAD_V_LAST=grad_v_last is not None, HAS_GRAD_V_SEQ=grad_v_seq is not None,
        DECAY_INPUT=p.decay_input, HARD_RESET=p.hard_reset, DETACH_RESET=p.detach_reset,
        SNNTORCH=p.snntorch, SURROGATE=p.surrogate.kind, BLOCK=BLOCK, num_warps=NUM_WARPS,
        enable_fp_fusion=False,
    )
    return grad_x, grad_v_init
