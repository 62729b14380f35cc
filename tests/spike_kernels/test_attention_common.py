"""Shared inputs, references and comparisons for the spiking-attention tests (no tests here)."""

from __future__ import annotations

import math

import torch

from spike_kernels import spiking_attention, spiking_attention_ref

# Gradient tolerance, as max |actual - expected| / max |expected| against the fp64
# reference. fp32: the op computes in fp32. fp16/bf16: H is saved and the gradients are
# returned in that dtype (and the Triton backward keeps dL/dY and dP tiles in it), so the
# error is a few units of its rounding (2^-11 / 2^-8) relative to the largest gradient.
GRAD_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 4e-3,
            torch.bfloat16: 3e-2}


def spikes(shape, dtype, p=0.4, generator=None):
    return (torch.rand(shape, generator=generator) < p).to(dtype)


def lengths_mask(B: int, L: int, kind: str | None):
    """None, or a Hugging Face [B, L] mask whose rows are full, half and single-token."""
    if kind is None:
        return None
    lengths = [L, math.ceil(L / 2), 1][:B] + [L] * max(0, B - 3)
    mask = torch.zeros(B, L, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    return mask


def op_and_grads(q, k, v, grad_out, **kwargs):
    """Spikes and (dq, dk, dv) of the fused op."""
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    s = spiking_attention(q, k, v, **kwargs)
    grads = torch.autograd.grad(s, (q, k, v), grad_out)
    return s.detach(), grads


def ref_and_grads(q, k, v, grad_out, dtype=torch.float64, **kwargs):
    """Spikes and (dq, dk, dv) of the unfused reference (matmuls + lif_ref) in ``dtype``."""
    q, k, v = (x.detach().to(dtype).requires_grad_() for x in (q, k, v))
    s = spiking_attention_ref(q, k, v, **kwargs)
    grads = torch.autograd.grad(s, (q, k, v), grad_out.to(dtype))
    return s.detach(), grads


def assert_spikes_equal(actual, expected, what="spikes"):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = actual.double() != expected.double()
    n = int(diff.sum())
    if n:
        where = diff.nonzero()[:5].tolist()
        raise AssertionError(f"{what}: {n} of {diff.numel()} elements differ, first at {where}")


def assert_grad_close(actual, expected, tol, what="grad"):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual.double() - expected.double()).abs()
    ref = expected.double().abs().max().item()
    limit = tol * max(ref, 1e-30)
    if err.max().item() > limit:
        bad = err > limit
        raise AssertionError(
            f"{what}: max error {err.max().item():.3g} > {limit:.3g} (tol {tol} x max|ref| "
            f"{ref:.3g}); {int(bad.sum())} of {bad.numel()} elements, first at "
            f"{bad.nonzero()[:5].tolist()}"
        )


# (v_threshold, scale): H[0] = scale / 2 either fires at 0.2995 >= 0.299 and rounds in bf16
# to 0.29883 (below), or stays at 0.2999 < 0.3 and rounds to 0.30078 (over)
ROUNDING_CASES = [(0.299, 0.599), (0.3, 0.5998)]


def threshold_rounding_case(v_threshold, scale, T=2, B=2, H=1, L=1, D=16):
    """Every Y_t = scale, so H[0] = scale / 2 (tau 2, from rest) sits within half a bf16 step
    of the threshold, on the other side of it than its bf16 rounding. Saved naively, that H
    would give backward the wrong reset mask (H < V_th) at t=0 and so the wrong membrane
    gradient from t=1."""
    q = torch.zeros(T, B, H, L, D)
    k = torch.zeros_like(q)
    v = torch.ones_like(q)
    q[..., 0] = 1
    k[..., 0] = 1
    return q, k, v, dict(v_threshold=v_threshold, scale=scale)


def check_threshold_rounding(case, order, device="cpu", **kwargs):
    """The saved bf16 H keeps the reset mask in ``threshold_rounding_case(*case)``: the op's
    spikes and gradients (bf16 on ``device``, ``kwargs`` such as the backend) match the
    reference's."""
    q, k, v, kw = threshold_rounding_case(*case)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(13))
    grad_out = (grad_out * 16).round() / 16
    cast = lambda x: x.to(device, torch.bfloat16)
    s, grads = op_and_grads(cast(q), cast(k), cast(v), cast(grad_out), order=order, **kw,
                            **kwargs)
    s_ref, grads_ref = ref_and_grads(q, k, v, grad_out, **kw)
    assert_spikes_equal(s.cpu(), s_ref)
    for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
        assert_grad_close(g.cpu(), g_ref, GRAD_TOL[torch.bfloat16], f"d{name}")
