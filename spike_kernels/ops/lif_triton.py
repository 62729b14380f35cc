"""Triton kernels of the multi-step LIF neuron and their launchers.

One program owns ``BLOCK`` neurons and runs the whole time loop with the membrane in
registers. Offsets are int64; ``T`` and ``N`` are runtime values that are not specialised
on, so a new shape never recompiles.

Bytes per neuron and step (bf16 input, spikes stored in bf16): forward reads x and
writes S (4 B) plus H when it is saved for backward (2 B); backward reads dL/dS and H and
writes dL/dX (6 B). With ``recompute`` nothing is saved: backward re-runs the forward
kernel into an fp32 scratch H (read x, write H) before the reverse loop.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..params import NeuronParams, threshold_bracket
from .neuron_triton import charge, fire_and_reset, grad_membrane

BLOCK = 1024
NUM_WARPS = 4


@triton.jit(do_not_specialize=["T", "N"])
def _lif_forward_kernel(
    x_ptr, v_init_ptr, s_ptr, h_ptr, v_seq_ptr, v_last_ptr,
    T, N, tau, v_threshold, v_reset, v_start, h_below, h_above,
    HAS_V_INIT: tl.constexpr, STORE_S: tl.constexpr, STORE_H: tl.constexpr,
    NARROW_H: tl.constexpr, STORE_V_SEQ: tl.constexpr, DECAY_INPUT: tl.constexpr,
    HARD_RESET: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if HAS_V_INIT:
        v = tl.load(v_init_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        v = tl.zeros([BLOCK], dtype=tl.float32) + v_start
    step = offs
    for _ in range(T):
        x = tl.load(x_ptr + step, mask=mask, other=0.0).to(tl.float32)
        h = charge(v, x, tau, v_reset, DECAY_INPUT)
        fired, v = fire_and_reset(h, v_threshold, v_reset, HARD_RESET)
        if STORE_S:
            # via fp32: the interpreter cannot cast int1 to bfloat16 directly
            spike = tl.where(fired, 1.0, 0.0)
            tl.store(s_ptr + step, spike.to(s_ptr.dtype.element_ty), mask=mask)
        if STORE_H:
            h_out = h
            if NARROW_H:
                # rounding to fp16/bf16 must not carry H across the threshold (backward
                # re-derives the reset mask H < V_th from it): clamp to the nearest
                # representable values on the spike's side, h_below < V_th <= h_above
                h_out = tl.where(fired, tl.maximum(h, h_above, propagate_nan=tl.PropagateNan.ALL),
                                 tl.minimum(h, h_below, propagate_nan=tl.PropagateNan.ALL))
            tl.store(h_ptr + step, h_out.to(h_ptr.dtype.element_ty), mask=mask)
        if STORE_V_SEQ:
            tl.store(v_seq_ptr + step, v.to(v_seq_ptr.dtype.element_ty), mask=mask)
        step += N
    tl.store(v_last_ptr + offs, v.to(v_last_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T", "N"])
def _lif_backward_kernel(
    grad_s_ptr, h_ptr, grad_v_seq_ptr, grad_v_last_ptr, grad_x_ptr, grad_v_init_ptr,
    T, N, tau, decay, v_threshold, v_reset, alpha,
    HAS_GRAD_V_LAST: tl.constexpr, HAS_GRAD_V_SEQ: tl.constexpr, DECAY_INPUT: tl.constexpr,
    HARD_RESET: tl.constexpr, DETACH_RESET: tl.constexpr, SURROGATE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if HAS_GRAD_V_LAST:
        grad_v = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        grad_v = tl.zeros([BLOCK], dtype=tl.float32)
    step = offs + (T - 1).to(tl.int64) * N
    for _ in range(T):
        if HAS_GRAD_V_SEQ:
            grad_v += tl.load(grad_v_seq_ptr + step, mask=mask, other=0.0).to(tl.float32)
        grad_s = tl.load(grad_s_ptr + step, mask=mask, other=0.0).to(tl.float32)
        h = tl.load(h_ptr + step, mask=mask, other=0.0).to(tl.float32)
        grad_h = grad_membrane(grad_s, grad_v, h, v_threshold, v_reset, alpha,
                               HARD_RESET, DETACH_RESET, SURROGATE)
        if DECAY_INPUT:
            grad_x = tl.math.div_rn(grad_h, tau)
        else:
            grad_x = grad_h
        tl.store(grad_x_ptr + step, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)
        grad_v = grad_h * decay
        step -= N
    tl.store(grad_v_init_ptr + offs, grad_v.to(grad_v_init_ptr.dtype.element_ty), mask=mask)


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, BLOCK),)


def lif_forward_triton(
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    p: NeuronParams,
    save_h: bool,
    want_v_seq: bool,
    spike_dtype: torch.dtype | None = None,
    *,
    store_spikes: bool = True,
    h_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(spikes, v_last, h_seq or empty, v_seq or empty)`` computed by one kernel."""
    if p.snntorch:
        raise NotImplementedError("convention='snntorch' is not in the Triton kernels yet")
    x = x.contiguous()
    T, n = x.shape[0], x[0].numel() if x.shape[0] else x.shape[1:].numel()
    s = torch.empty(x.shape, dtype=spike_dtype or x.dtype, device=x.device) if store_spikes \
        else x.new_empty(0)
    h_seq = torch.empty(x.shape, dtype=h_dtype or x.dtype, device=x.device) if save_h \
        else x.new_empty(0)
    v_seq = torch.empty_like(x) if want_v_seq else x.new_empty(0)
    v_last = torch.empty(x.shape[1:], dtype=x.dtype, device=x.device)
    if n == 0:
        return s, v_last, h_seq, v_seq
    v0 = v_init.contiguous() if v_init is not None else v_last
    narrow_h = save_h and h_seq.element_size() < 4
    h_below, h_above = threshold_bracket(p.v_threshold, h_seq.dtype) if narrow_h else (0.0, 0.0)
    _lif_forward_kernel[_grid(n)](
        x, v0, s, h_seq, v_seq, v_last,
        T, n, p.tau, p.v_threshold, p.charge_reset, p.v_init, h_below, h_above,
        HAS_V_INIT=v_init is not None, STORE_S=store_spikes, STORE_H=save_h,
        NARROW_H=narrow_h, STORE_V_SEQ=want_v_seq, DECAY_INPUT=p.decay_input,
        HARD_RESET=p.hard_reset, BLOCK=BLOCK, num_warps=NUM_WARPS,
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
    """Return ``(grad_x, grad_v_init)`` by one reverse-time kernel over the saved ``h_seq``."""
    h_seq = recompute_h_triton(saved, v_init, p) if recompute else saved
    v_dtype = saved.dtype
    T = h_seq.shape[0]
    shape = h_seq.shape[1:]
    n = shape.numel()
    grad_s = grad_s.contiguous()
    grad_x = torch.empty(h_seq.shape, dtype=v_dtype, device=h_seq.device)
    grad_v_init = torch.empty(shape, dtype=v_dtype, device=h_seq.device)
    if n == 0:
        return grad_x, grad_v_init
    _lif_backward_kernel[_grid(n)](
        grad_s, h_seq.contiguous(),
        grad_s if grad_v_seq is None else grad_v_seq.contiguous(),
        grad_v_init if grad_v_last is None else grad_v_last.contiguous(),
        grad_x, grad_v_init,
        T, n, p.tau, 1.0 - 1.0 / p.tau, p.v_threshold, p.charge_reset, p.surrogate.alpha,
        HAS_GRAD_V_LAST=grad_v_last is not None, HAS_GRAD_V_SEQ=grad_v_seq is not None,
        DECAY_INPUT=p.decay_input, HARD_RESET=p.hard_reset, DETACH_RESET=p.detach_reset,
        SURROGATE=p.surrogate.kind, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return grad_x, grad_v_init


def recompute_h_triton(x: torch.Tensor, v_init: torch.Tensor | None, p: NeuronParams):
    """H[t] in fp32 from x by the forward kernel itself, so bit-identical to the forward."""
    _, _, h_seq, _ = lif_forward_triton(
        x, v_init, p, save_h=True, want_v_seq=False, store_spikes=False, h_dtype=torch.float32
    )
    return h_seq
