"""Triton device functions of the LIF neuron, shared by the LIF and attention kernels.

fp32 arithmetic; the same equations as :mod:`spike_kernels.ops.lif_torch` and
docs/DESIGN.md §1. Division is IEEE round-to-nearest (``div_rn``) and the LIF kernels are
compiled without FP contraction (``enable_fp_fusion=False``), so the membrane is rounded
after every operation exactly as in the PyTorch path: a fused multiply-add cannot move H
across the threshold and flip a spike at a tie.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def surrogate_grad(x, alpha, KIND: tl.constexpr):
    """g'(x) of the surrogate ``KIND``: its index in ``spike_kernels.surrogate.SURROGATE_NAMES``
    (the table in that module)."""
    if KIND == 0:
        sg = tl.sigmoid(alpha * x)
        out = alpha * sg * (1.0 - sg)
    elif KIND == 1:
        z = 1.5707963267948966 * alpha * x
        out = alpha / (2.0 * (1.0 + z * z))
    elif KIND == 2:
        out = tl.maximum(alpha - alpha * alpha * tl.abs(x), 0.0)
    elif KIND == 3:
        out = alpha * 0.5 * tl.exp(-alpha * tl.abs(x))
    elif KIND == 4:
        d = 1.0 / alpha + tl.abs(x)
        out = 1.0 / (2.0 * alpha * d * d)
    elif KIND == 5:
        d = tl.abs(x) + 1.0
        out = alpha / (d * d)
    else:
        ax = alpha * x
        out = alpha * 0.5641895835477563 * tl.exp(-ax * ax)
    return out


@triton.jit
def charge(v, x, tau, v_reset, DECAY_INPUT: tl.constexpr):
    """H = V + (X - (V - V_reset)) / tau, or V - (V - V_reset) / tau + X."""
    if DECAY_INPUT:
        h = v + tl.math.div_rn(x - (v - v_reset), tau)
    else:
        h = v - tl.math.div_rn(v - v_reset, tau) + x
    return h


@triton.jit
def fire_and_reset(h, v_threshold, v_reset, HARD_RESET: tl.constexpr):
    """Return (fired, V): fired = H >= V_th; V = V_reset or H - V_th where fired, else H."""
    fired = h >= v_threshold
    if HARD_RESET:
        v = tl.where(fired, v_reset, h)
    else:
        v = tl.where(fired, h - v_threshold, h)
    return fired, v


@triton.jit
def grad_membrane(grad_s, grad_v, h, v_threshold, v_reset, alpha,
                  HARD_RESET: tl.constexpr, DETACH_RESET: tl.constexpr, SURROGATE: tl.constexpr):
    """dL/dH[t] from dL/dS[t] and dL/dV[t] (the table of docs/DESIGN.md §1).

    snnTorch's convention uses the soft, detached form: dL/dU[t] = dL/dS[t] g' + dL/dU[t]."""
    sg = surrogate_grad(h - v_threshold, alpha, SURROGATE)
    if HARD_RESET:
        keep = tl.where(h < v_threshold, 1.0, 0.0)
        if DETACH_RESET:
            gh = grad_s * sg + grad_v * keep
        else:
            gh = (grad_s + grad_v * (v_reset - h)) * sg + grad_v * keep
    else:
        if DETACH_RESET:
            gh = grad_s * sg + grad_v
        else:
            gh = (grad_s - v_threshold * grad_v) * sg + grad_v
    return gh


@triton.jit
def snntorch_charge(u, x, beta, v_threshold, HARD_RESET: tl.constexpr):
    """snnTorch ``Leaky`` (reset_delay=True): U[t] from U[t-1], its delayed reset r = U[t-1] >
    V_th applied now, in snnTorch's order of operations::

        U = beta U + X - V_th r            (subtract; r = 0 subtracts nothing)
        U = beta ((1 - r) U) + X           (zero)
    """
    reset = u > v_threshold
    if HARD_RESET:
        u = tl.where(reset, 0.0, beta * u) + x
    else:
        u = beta * u + x
        u = tl.where(reset, u - v_threshold, u)
    return u


@triton.jit
def neuron_step(v, x, tau, beta, v_threshold, v_reset, DECAY_INPUT: tl.constexpr,
                HARD_RESET: tl.constexpr, SNNTORCH: tl.constexpr):
    """One time step of either convention: ``(fired, H, V)``, H being the membrane that
    backward reads (SpikingJelly's H before the reset; snnTorch's U, which is also V)."""
    if SNNTORCH:
        h = snntorch_charge(v, x, beta, v_threshold, HARD_RESET)
        fired = h > v_threshold
        v = h
    else:
        h = charge(v, x, tau, v_reset, DECAY_INPUT)
        fired, v = fire_and_reset(h, v_threshold, v_reset, HARD_RESET)
    return fired, h, v
