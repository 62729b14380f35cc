"""Triton device functions of the LIF neuron, shared by the LIF and attention kernels.

fp32 arithmetic; the same equations as :mod:`spike_kernels.ops.lif_torch` (division is
IEEE round-to-nearest, ``div_rn``, so spikes match the PyTorch path bit for bit).
"""

from __future__ import annotations

import triton
import triton.language as tl

# Surrogate kinds, in the order of spike_kernels.surrogate.SURROGATE_NAMES.
SIGMOID: tl.constexpr = 0
ATAN: tl.constexpr = 1
PIECEWISE_QUADRATIC: tl.constexpr = 2
PIECEWISE_EXP: tl.constexpr = 3
SOFT_SIGN: tl.constexpr = 4
SUPER_SPIKE: tl.constexpr = 5
ERF: tl.constexpr = 6


@triton.jit
def surrogate_grad(x, alpha, KIND: tl.constexpr):
    """g'(x) of the surrogate ``KIND`` (table in spike_kernels.surrogate)."""
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
    """dL/dH[t] from dL/dS[t] and dL/dV[t] (SPEC.md §1 table)."""
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
