"""spiking_attention's Triton kernels against the unfused reference.

On a machine without CUDA the kernels run under the Triton interpreter (TRITON_INTERPRET=1,
set here before the kernels are defined), which is slow: shapes stay small, but they still
cover one and several query/key blocks, padded head dims, both product orders, causal and
padding masks, fp32/fp16/bf16, both output layouts, strided inputs and recompute.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import test_attention_common as common

from spike_kernels import spiking_attention
from spike_kernels.backend import interpreter_enabled, triton_available

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _kernels_runnable() -> str | None:
    """None, or why the Triton kernels cannot run in this process."""
    if not triton_available():
        return "triton is not installed"
    if DEVICE == "cuda":
        return None
    if not interpreter_enabled():
        return "no CUDA and TRITON_INTERPRET is not set"
    from triton.runtime.interpreter import InterpretedFunction

    from spike_kernels.ops import attention_triton, neuron_triton

    if not all(isinstance(f, InterpretedFunction)
               for f in (attention_triton._attn_fwd_kernel, neuron_triton.charge)):
        return "the Triton kernels were defined before TRITON_INTERPRET=1 was set"
    return None


pytestmark = pytest.mark.skipif(_kernels_runnable() is not None,
                                reason=str(_kernels_runnable()))

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (T, L, Dh): one block; several query/key blocks (BLOCK_M = BLOCK_N = 64 for Dh <= 64);
# head dims that are not powers of two (padded and masked to 32 and 128)
SHAPES = [(1, 1, 16), (3, 7, 96), (2, 33, 32), (2, 20, 24), (2, 130, 16)]
# (order, causal, mask)
VARIANTS = [("qk_v", False, None), ("qk_v", True, "lengths"), ("q_kv", False, "lengths")]


def _inputs(shape, p, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (common.spikes(shape, torch.float64, p, gen) for _ in range(3))
    grad_out = (torch.randn(shape, generator=gen, dtype=torch.float64) * 16).round() / 16
    return q, k, v, grad_out


@pytest.mark.parametrize("variant", VARIANTS, ids=["qk_v", "qk_v-causal", "q_kv"])
@pytest.mark.parametrize("T,L,D", SHAPES, ids=[f"T{t}-L{n}-D{d}" for t, n, d in SHAPES])
def test_triton_matches_reference(T, L, D, variant):
    """Spikes exactly and dq/dk/dv to each dtype's tolerance, for fp32, fp16 and bf16 (the
    inputs are exact in all three, so one fp64 reference serves them). Under the
    interpreter bf16 errors are about twice those on a GPU: its fp32 -> bf16 casts truncate
    where the GPU rounds to nearest (still within GRAD_TOL)."""
    order, causal, kind = variant
    B, H = 3, 1  # several heads: test_triton_layout_strides_recompute
    shape = (T, B, H, L, D)
    q, k, v, grad_out = _inputs(shape, min(0.5, (16.0 / (L * D)) ** (1 / 3)), L * D + T)
    mask = common.lengths_mask(B, L, kind)
    s_ref, grads_ref = common.ref_and_grads(q, k, v, grad_out, attention_mask=mask, causal=causal)
    for dtype in DTYPES:
        cast = lambda x, dtype=dtype: x.to(DEVICE, dtype)
        s, grads = common.op_and_grads(cast(q), cast(k), cast(v), cast(grad_out), backend="triton",
                                attention_mask=None if mask is None else mask.to(DEVICE),
                                causal=causal, order=order)
        common.assert_spikes_equal(s.cpu(), s_ref, f"spikes ({dtype})")
        for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
            assert g.dtype == dtype
            common.assert_grad_close(g.cpu(), g_ref, common.GRAD_TOL[dtype], f"d{name} ({dtype})")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_layout_strides_recompute(dtype):
    """out_layout="blhd" written by the kernel, q/k/v as strided head views of one
    projection, and recompute: all equal to the plain call (and to the torch path)."""
    T, B, L, H, D = 2, 2, 20, 3, 16
    gen = torch.Generator().manual_seed(21)
    qkv = common.spikes((T, B, L, 3, H, D), dtype, 0.3, gen).to(DEVICE)
    q, k, v = (qkv[:, :, :, i].permute(0, 1, 3, 2, 4) for i in range(3))
    mask = common.lengths_mask(B, L, "lengths").to(DEVICE)
    grad_out = torch.randn((T, B, H, L, D), generator=gen).to(DEVICE, dtype)
    grad_blhd = grad_out.permute(0, 1, 3, 2, 4).reshape(T, B, L, H * D)
    contiguous = [x.contiguous() for x in (q, k, v)]
    s0, g0 = common.op_and_grads(*contiguous, grad_out, attention_mask=mask, backend="triton")
    s_cpu, g_cpu = common.op_and_grads(*contiguous, grad_out, attention_mask=mask, backend="torch")
    common.assert_spikes_equal(s0, s_cpu)
    for order in ("qk_v", "q_kv"):
        s1, g1 = common.op_and_grads(q, k, v, grad_blhd, attention_mask=mask, backend="triton",
                              out_layout="blhd", order=order, recompute=True)
        assert s1.shape == (T, B, L, H * D)
        common.assert_spikes_equal(s1, s0.permute(0, 1, 3, 2, 4).reshape(T, B, L, H * D))
        for a, b, c in zip(g1, g0, g_cpu, strict=True):
            common.assert_grad_close(a, b, common.GRAD_TOL[dtype])
            common.assert_grad_close(a, c, common.GRAD_TOL[dtype])


@pytest.mark.parametrize("order", ["qk_v", "q_kv"])
def test_triton_exact_on_spikes_beyond_bf16_integers(order):
    """L=640 (ten key blocks), sums up to 625: exact in the kernels' fp32 accumulators (and
    the Q(K^T V) order's hi/lo bf16 split), where bf16 itself holds integers only to 256."""
    from test_attention_op import EXACT_CASES, exactness_case

    for n0, n_fire in EXACT_CASES:
        q, k, v, mask, expected, kw = exactness_case(torch.bfloat16, n0, n_fire)
        s = spiking_attention(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE),
                              attention_mask=mask.to(DEVICE), order=order, backend="triton",
                              **kw)
        common.assert_spikes_equal(s.cpu(), expected, f"spikes (n0={n0})")


@pytest.mark.parametrize("case", common.ROUNDING_CASES, ids=["fires", "rests"])
@pytest.mark.parametrize("order", ["qk_v", "q_kv"])
def test_triton_saved_bf16_h_keeps_the_reset_mask(order, case):
    """The kernel clamps the saved bf16 H to the spike's side of the threshold. ("rests"
    only bites on a GPU: the interpreter's fp32 -> bf16 cast truncates instead of rounding
    up.)"""
    common.check_threshold_rounding(case, order, DEVICE, backend="triton")


def test_triton_empty_inputs():
    for shape in [(0, 2, 2, 5, 16), (2, 2, 2, 0, 16)]:
        q, k, v = (torch.zeros(shape, device=DEVICE, requires_grad=True) for _ in range(3))
        s = spiking_attention(q, k, v, backend="triton")
        assert s.shape == shape
        s.sum().backward()
        assert q.grad.shape == shape
