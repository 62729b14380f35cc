"""spiking_attention: the PyTorch path against the unfused reference, and the public API.

The Triton kernels are tested under the interpreter in test_attention_triton.py.
"""

from __future__ import annotations

import pytest
import torch
from test_attention_common import (
    GRAD_TOL,
    ROUNDING_CASES,
    assert_grad_close,
    assert_spikes_equal,
    check_threshold_rounding,
    lengths_mask,
    op_and_grads,
    ref_and_grads,
    spikes,
)

import spike_kernels
from spike_kernels import SpikingAttention, attention_map, spiking_attention, spiking_attention_ref
from spike_kernels.ops.attention_op import (
    attention_backward_op,
    attention_forward_op,
    choose_order,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _density(L: int, D: int) -> float:
    # keeps Y = scale * sum of ~L*D*p^3 products near the threshold, so spikes and
    # surrogate gradients vary (dense 0.5 spikes at L=130, Dh=96 would all fire)
    return min(0.5, (16.0 / (L * D)) ** (1.0 / 3.0))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("D", [16, 32, 64, 96])
@pytest.mark.parametrize("L", [1, 7, 33, 130])
def test_cpu_matches_reference(L, D, T, causal):
    """Forward spikes exactly and dq/dk/dv to each dtype's tolerance, in fp32/fp16/bf16,
    without a mask and with one whose rows hold L, L/2 and 1 real tokens; order "auto"
    picks Q(K^T V) where Dh < L (and (Q K^T) V otherwise or when causal). Inputs and the
    upstream gradient are exact in every dtype, so one fp64 reference serves all three."""
    gen = torch.Generator().manual_seed(1000 * L + 10 * D + T)
    B, H = 3, 1
    shape = (T, B, H, L, D)
    q, k, v = (spikes(shape, torch.float64, _density(L, D), gen) for _ in range(3))
    grad_out = (torch.randn(shape, generator=gen, dtype=torch.float64) * 16).round() / 16
    for kind in (None, "lengths"):
        mask = lengths_mask(B, L, kind)
        s_ref, grads_ref = ref_and_grads(q, k, v, grad_out, attention_mask=mask, causal=causal)
        for dtype in DTYPES:
            s, grads = op_and_grads(q.to(dtype), k.to(dtype), v.to(dtype), grad_out.to(dtype),
                                    attention_mask=mask, causal=causal, backend="torch")
            assert s.dtype == dtype and s.shape == shape
            assert_spikes_equal(s, s_ref, f"spikes ({dtype}, mask {kind})")
            for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
                assert g.dtype == dtype
                assert_grad_close(g, g_ref, GRAD_TOL[dtype], f"d{name} ({dtype}, mask {kind})")


NEURONS = [
    dict(),  # SpikeBERT: hard reset, detached, ATan, decay_input
    dict(v_reset=None, detach_reset=False, surrogate="sigmoid", tau=3.0),
    dict(v_reset=-0.25, detach_reset=False, decay_input=False, surrogate="piecewise_quadratic",
         alpha=0.7, tau=1.5, v_threshold=0.3),
    dict(v_reset=None, detach_reset=True, surrogate="erf", tau=10.0, v_threshold=0.0),
]


@pytest.mark.parametrize("neuron", NEURONS, ids=["spikebert", "soft", "hard-nodetach", "erf"])
@pytest.mark.parametrize("order,causal", [("qk_v", False), ("q_kv", False), ("qk_v", True)])
def test_fp64_gradients_match_autograd_reference(neuron, order, causal, monkeypatch):
    """The honest replacement for gradcheck: the forward is a Heaviside, so finite differences
    are 0 or unbounded and cannot check a surrogate gradient. Instead the op's hand-written
    backward (float64, real-valued inputs, several neurons) must equal autograd through the
    unfused reference to 1e-10."""
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")  # eager: no compile per neuron
    gen = torch.Generator().manual_seed(7)
    shape = (3, 2, 2, 9, 5)
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
    grad_out = torch.randn(shape, generator=gen, dtype=torch.float64)
    mask = lengths_mask(2, 9, "lengths")
    kwargs = dict(attention_mask=mask, causal=causal, scale=0.3, **neuron)
    s, grads = op_and_grads(q, k, v, grad_out, order=order, **kwargs)
    s_ref, grads_ref = ref_and_grads(q, k, v, grad_out, **kwargs)
    assert 0 < s.mean() < 1
    assert_spikes_equal(s, s_ref)
    for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
        assert g_ref.abs().max() > 0
        assert_grad_close(g, g_ref, GRAD_TOL[torch.float64], f"d{name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_orders_and_layouts_agree(dtype):
    gen = torch.Generator().manual_seed(3)
    T, B, H, L, D = 2, 2, 3, 33, 16
    q, k, v = (spikes((T, B, H, L, D), dtype, 0.3, gen) for _ in range(3))
    mask = lengths_mask(B, L, "lengths")
    grad_out = torch.randn(q.shape, generator=gen).to(dtype)
    s1, g1 = op_and_grads(q, k, v, grad_out, attention_mask=mask, order="qk_v")
    s2, g2 = op_and_grads(q, k, v, grad_out, attention_mask=mask, order="q_kv")
    blhd = grad_out.permute(0, 1, 3, 2, 4).reshape(T, B, L, H * D)
    s3, g3 = op_and_grads(q, k, v, blhd, attention_mask=mask, out_layout="blhd")
    assert_spikes_equal(s1, s2)
    assert s3.shape == (T, B, L, H * D) and s3.is_contiguous()
    assert_spikes_equal(s3, s1.permute(0, 1, 3, 2, 4).reshape(T, B, L, H * D))
    for a, b, c in zip(g1, g2, g3, strict=True):
        assert_grad_close(a, b, GRAD_TOL[dtype])
        assert_grad_close(c, a, GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_recompute_matches_saved_h(dtype):
    gen = torch.Generator().manual_seed(4)
    q, k, v = (spikes((4, 2, 2, 7, 16), dtype, 0.4, gen) for _ in range(3))
    grad_out = torch.randn(q.shape, generator=gen).to(dtype)
    s1, g1 = op_and_grads(q, k, v, grad_out)
    s2, g2 = op_and_grads(q, k, v, grad_out, recompute=True)
    assert_spikes_equal(s1, s2)
    for a, b in zip(g1, g2, strict=True):
        if dtype == torch.float32:  # the same fp32 H either way
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        else:  # saved H is rounded to bf16, recomputed H is fp32
            assert_grad_close(a, b, GRAD_TOL[dtype])


EXACT_CASES = [(250, 257), (590, 599)]  # (n0, n_fire): sums n0 + a, fires iff >= n_fire


def exactness_case(dtype, n0, n_fire, L=640, D=16):
    """Column a of V holds ones in n0 + a real rows, Q and K one shared column, so
    Y[:, a] = scale * (n0 + a) exactly; with T=1, tau=2 the neuron fires iff
    scale * n / 2 >= v_threshold = scale * n_fire / 2. bf16 holds integers exactly only up
    to 256: it rounds 257 to 256 and 598 to 600, so an unfused bf16 path misfires.
    Row 1 has 20 padded keys in front (holding ones that must not count)."""
    T, B, H = 1, 2, 1
    q = torch.zeros(T, B, H, L, D, dtype=dtype)
    k = torch.zeros_like(q)
    v = torch.zeros_like(q)
    q[..., 0] = 1
    k[..., 0] = 1
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, :20] = False
    for a in range(D):
        v[:, 0, :, : n0 + a, a] = 1
        v[:, 1, :, : n0 + a + 20, a] = 1
    expected = torch.zeros_like(q)
    expected[..., n_fire - n0:] = 1
    return q, k, v, mask, expected, dict(v_threshold=0.125 * n_fire / 2, scale=0.125)


@pytest.mark.parametrize("n0,n_fire", EXACT_CASES)
@pytest.mark.parametrize("order", ["qk_v", "q_kv"])
def test_exact_on_spikes_beyond_bf16_integers(order, n0, n_fire):
    q, k, v, mask, expected, kw = exactness_case(torch.bfloat16, n0, n_fire)
    s = spiking_attention(q, k, v, attention_mask=mask, order=order, backend="torch", **kw)
    assert_spikes_equal(s, expected)
    # the unfused bf16 path rounds the sums (sensitivity check of this test)
    unfused = spiking_attention_ref(q, k, v, attention_mask=mask, **kw)
    assert (unfused != expected).any()


@pytest.mark.parametrize("case", ROUNDING_CASES, ids=["fires", "rests"])
@pytest.mark.parametrize("order", ["qk_v", "q_kv"])
def test_saved_bf16_h_keeps_the_reset_mask(order, case):
    check_threshold_rounding(case, order)


def test_return_attention_map():
    gen = torch.Generator().manual_seed(5)
    T, B, H, L, D = 3, 2, 2, 7, 16
    q, k, v = (spikes((T, B, H, L, D), torch.bfloat16, 0.5, gen).requires_grad_()
               for _ in range(3))
    mask = lengths_mask(B, L, "lengths")
    s, amap = spiking_attention(q, k, v, attention_mask=mask, causal=True,
                                return_attention=True)
    assert s.requires_grad and not amap.requires_grad
    assert amap.shape == (B, H, L, L) and amap.dtype == torch.float32
    expected = (q[-1].float() @ k[-1].float().transpose(-1, -2)).tril()
    expected = expected * mask[:, None, None, :]
    torch.testing.assert_close(amap, expected, rtol=0, atol=0)
    _, amap0 = spiking_attention(q, k, v, return_attention=True, attention_time_step=0)
    torch.testing.assert_close(amap0, attention_map(q, k, time_step=0))
    torch.testing.assert_close(amap0, q[0].float() @ k[0].float().transpose(-1, -2))


def test_module_matches_function():
    gen = torch.Generator().manual_seed(6)
    q, k, v = (spikes((2, 2, 2, 7, 16), torch.float32, 0.5, gen) for _ in range(3))
    mask = lengths_mask(2, 7, "lengths")
    attn = SpikingAttention(v_threshold=0.3, tau=3.0, scale=0.2, surrogate_function="sigmoid")
    assert "v_threshold=0.3" in repr(attn) and "scale=0.2" in repr(attn)
    out = attn(q, k, v, attention_mask=mask, out_layout="blhd")
    expected = spiking_attention(q, k, v, attention_mask=mask, v_threshold=0.3, tau=3.0,
                                 scale=0.2, surrogate="sigmoid", out_layout="blhd")
    assert_spikes_equal(out, expected)
    s, amap = attn(q, k, v, causal=True, return_attention=True)
    assert s.shape == q.shape and amap.shape == (2, 2, 7, 7)
    with pytest.raises(ValueError, match="backend"):
        SpikingAttention(backend="cuda")
    with pytest.raises(ValueError, match="order"):
        SpikingAttention(order="fastest")
    with pytest.raises(ValueError, match="tau"):
        SpikingAttention(tau=0.5)


def test_gradients_reach_only_inputs_that_need_them():
    gen = torch.Generator().manual_seed(8)
    q, k, v = (spikes((2, 1, 2, 7, 16), torch.float32, 0.5, gen) for _ in range(3))
    q.requires_grad_()
    spiking_attention(q, k, v).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and v.grad is None


def test_strided_inputs():
    """q, k, v as head views of a [T, B, L, 3*H*Dh] projection (no copy by the caller)."""
    gen = torch.Generator().manual_seed(9)
    T, B, L, H, D = 2, 2, 7, 3, 16
    qkv = spikes((T, B, L, 3, H, D), torch.float32, 0.4, gen)
    q, k, v = (qkv[:, :, :, i].permute(0, 1, 3, 2, 4) for i in range(3))
    assert not q.is_contiguous()
    grad_out = torch.randn(q.shape, generator=gen)
    s, g = op_and_grads(q, k, v, grad_out)
    s2, g2 = op_and_grads(*(x.contiguous() for x in (q, k, v)), grad_out)
    assert_spikes_equal(s, s2)
    for a, b in zip(g, g2, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("shape", [(0, 2, 2, 5, 16), (2, 2, 2, 0, 16), (2, 0, 2, 5, 16)])
def test_empty_inputs(shape):
    q, k, v = (torch.zeros(shape, requires_grad=True) for _ in range(3))
    s = spiking_attention(q, k, v)
    assert s.shape == shape
    s.sum().backward()
    assert q.grad.shape == shape


def test_unfused_baseline_uses_lif_op():
    gen = torch.Generator().manual_seed(10)
    q, k, v = (spikes((2, 1, 2, 7, 16), torch.float32, 0.5, gen) for _ in range(3))
    a = spiking_attention_ref(q, k, v, lif_backend="torch")
    assert_spikes_equal(a, spiking_attention_ref(q, k, v))


def test_order_choice():
    assert choose_order("auto", 128, 64, False, False)  # torch: L Dh^2 < L^2 Dh
    assert not choose_order("auto", 32, 64, False, False)
    assert not choose_order("auto", 128, 64, False, True)  # triton: memory-bound below 8 Dh
    assert choose_order("auto", 512, 64, False, True)
    assert not choose_order("auto", 4096, 64, True, True)  # causal: (Q K^T) V only
    assert not choose_order("auto", 4096, 256, False, True)  # Dh x Dh tile too big
    assert choose_order("auto", 4096, 256, False, False)
    with pytest.raises(ValueError, match="causal"):
        choose_order("q_kv", 128, 64, True, False)
    with pytest.raises(ValueError, match="head dims"):
        choose_order("q_kv", 128, 256, False, True)


def test_bad_inputs_raise_clear_errors():
    q = torch.zeros(2, 2, 3, 7, 16)
    with pytest.raises(ValueError, match="same shape"):
        spiking_attention(q, torch.zeros(2, 2, 3, 8, 16), q)
    with pytest.raises(ValueError, match="same shape"):
        spiking_attention(q, q, torch.zeros(2, 2, 3, 7, 32))
    with pytest.raises(ValueError, match=r"\[T, B, H, L, Dh\]"):
        spiking_attention(q[0], q[0], q[0])
    with pytest.raises(TypeError, match="same dtype"):
        spiking_attention(q, q.half(), q)
    with pytest.raises(TypeError, match="floating-point"):
        spiking_attention(q.long(), q.long(), q.long())
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        spiking_attention(q.tolist(), q, q)
    with pytest.raises(ValueError, match=r"attention_mask must be \[B, L\]"):
        spiking_attention(q, q, q, attention_mask=torch.ones(2, 8))
    with pytest.raises(ValueError, match=r"attention_mask must be \[B, L\]"):
        spiking_attention(q, q, q, attention_mask=torch.ones(2, 1, 1, 7))  # HF extended mask
    with pytest.raises(TypeError, match="attention_mask"):
        spiking_attention(q, q, q, attention_mask=[[1] * 7] * 2)
    with pytest.raises(ValueError, match="unknown backend"):
        spiking_attention(q, q, q, backend="cuda")
    with pytest.raises(ValueError, match="out_layout"):
        spiking_attention(q, q, q, out_layout="lbhd")
    with pytest.raises(ValueError, match="order"):
        spiking_attention(q, q, q, order="fast")
    with pytest.raises(ValueError, match="causal"):
        spiking_attention(q, q, q, order="q_kv", causal=True)
    with pytest.raises(TypeError, match="causal"):
        spiking_attention(q, q, q, causal=1)
    with pytest.raises(ValueError, match="scale"):
        spiking_attention(q, q, q, scale=float("nan"))
    with pytest.raises(ValueError, match="tau"):
        spiking_attention(q, q, q, tau=1.0)
    with pytest.raises(ValueError, match="surrogate"):
        spiking_attention(q, q, q, surrogate="relu")
    with pytest.raises(ValueError, match="attention_time_step"):
        spiking_attention(q, q, q, return_attention=True, attention_time_step=2)


def test_triton_backend_rejects_unsupported_inputs(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # lets resolve_backend accept CPU tensors
    q = torch.zeros(1, 1, 1, 7, 16, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        spiking_attention(q, q, q, backend="triton")
    q = torch.zeros(1, 1, 1, 7, 320)
    with pytest.raises(ValueError, match="head dims up to 256"):
        spiking_attention(q, q, q, backend="triton")


def _op_args(q, k, v, mask, *, causal=False, kv_order=False, recompute=False, out_blhd=False):
    return (q, k, v, mask, 0.125, causal, kv_order, 2.0, True, 0.5, 0.0, True, "atan", 2.0,
            recompute, out_blhd, False)


def test_custom_ops_pass_opcheck():
    gen = torch.Generator().manual_seed(11)
    q, k, v = (spikes((2, 2, 2, 7, 16), torch.float32, 0.5, gen).requires_grad_()
               for _ in range(3))
    mask = lengths_mask(2, 7, "lengths").float()
    for kw in (dict(causal=True), dict(kv_order=True, recompute=True, out_blhd=True)):
        torch.library.opcheck(attention_forward_op, _op_args(q, k, v, mask, **kw))
    s, h = attention_forward_op(*_op_args(q, k, v, mask))
    grad = torch.randn(s.shape, generator=gen)
    torch.library.opcheck(attention_backward_op,
                          (grad, q.detach(), k.detach(), v.detach(), mask, h.detach(),
                           *_op_args(q, k, v, mask)[4:]))


def test_torch_compile_fullgraph():
    gen = torch.Generator().manual_seed(12)
    q, k, v = (spikes((2, 1, 2, 7, 16), torch.float32, 0.5, gen).requires_grad_()
               for _ in range(3))
    mask = lengths_mask(1, 7, "lengths")

    def f(q, k, v, mask):
        return spike_kernels.spiking_attention(q, k, v, attention_mask=mask, out_layout="blhd")

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(q, k, v, mask)
    assert_spikes_equal(out, f(q, k, v, mask))
    out.sum().backward()
    assert q.grad is not None


def _fused_qkv_views(T, B, L, H, D, gen):
    """q, k, v as SpikeBERT passes them: strided [T, B, H, L, Dh] views of one [T, B, L, 3*H*Dh]
    projection (no copies)."""
    qkv = spikes((T, B, L, 3 * H * D), torch.float32, 0.3, gen).requires_grad_()
    x = qkv.view(T, B, L, 3, H, D)
    return qkv, [x[:, :, :, i].permute(0, 1, 3, 2, 4) for i in range(3)]


@pytest.mark.parametrize("order", ["qk_v", "q_kv"])
def test_cpu_autocast_bf16_training_step(order):
    """Under torch.autocast("cpu", bfloat16) (Accelerate's --mixed_precision bf16) the op
    accepts fp32 head views of a fused projection, runs them in bf16 (autocast's policy for
    matmuls; exact for spikes), returns bf16 spikes equal to the fp32 ones, and the backward
    gives fp32 gradients matching the fp32 call to bf16's tolerance. (It used to fail with
    "expected scalar type Float but found BFloat16".)"""
    T, B, L, H, D = 2, 3, 9, 2, 16
    gen = torch.Generator().manual_seed(7)
    mask = lengths_mask(B, L, "lengths")
    w = torch.randn(H * D, 8, generator=gen)

    def step(autocast: bool):
        qkv, (q, k, v) = _fused_qkv_views(T, B, L, H, D, torch.Generator().manual_seed(3))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            s = spiking_attention(q, k, v, attention_mask=mask, out_layout="blhd",
                                  order=order, scale=0.25, backend="torch")
            loss = (s @ w).float().square().sum()
        loss.backward()
        return s.detach(), qkv.grad

    s32, g32 = step(False)
    s16, g16 = step(True)
    assert s32.dtype == torch.float32 and s16.dtype == torch.bfloat16
    assert_spikes_equal(s16, s32)
    assert g16.dtype == torch.float32
    assert_grad_close(g16, g32, 5e-2, "d(qkv) under autocast")


def test_autocast_leaves_16bit_and_fp64_inputs_alone():
    """Spikes a LIF emitted in bf16 (spike_dtype) pass through autocast unchanged; fp64 keeps
    its precision check; and the ops themselves run with autocast off."""
    gen = torch.Generator().manual_seed(5)
    shape = (2, 2, 1, 7, 16)
    for dtype in (torch.bfloat16, torch.float64):
        q, k, v = (spikes(shape, dtype, 0.4, gen) for _ in range(3))
        plain = spiking_attention(q, k, v, backend="torch")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            s = spiking_attention(q, k, v, backend="torch")
            forward = attention_forward_op(
                q, k, v, None, 0.125, False, False, 2.0, True, 0.5, 0.0, True, "atan", 2.0,
                True, False, False)[0]
        assert s.dtype == dtype and forward.dtype == dtype
        assert_spikes_equal(s, plain)
        assert_spikes_equal(forward, plain)


def test_strided_head_views_are_read_in_place():
    """The strided q/k/v views of a fused projection give the same spikes and gradients as
    contiguous copies (and the op itself makes no contiguous copy of its inputs: gradients
    reach the fused projection through the views)."""
    T, B, L, H, D = 2, 2, 7, 3, 16
    qkv, (q, k, v) = _fused_qkv_views(T, B, L, H, D, torch.Generator().manual_seed(11))
    assert not q.is_contiguous()
    grad = torch.randn((T, B, L, H * D), generator=torch.Generator().manual_seed(2))
    s = spiking_attention(q, k, v, out_layout="blhd", backend="torch")
    s.backward(grad)
    c = [x.detach().contiguous().requires_grad_() for x in (q, k, v)]
    s_ref = spiking_attention(*c, out_layout="blhd", backend="torch")
    s_ref.backward(grad)
    assert_spikes_equal(s, s_ref)
    g = qkv.grad.view(T, B, L, 3, H, D)
    for i, x in enumerate(c):
        assert_grad_close(g[:, :, :, i].permute(0, 1, 3, 2, 4), x.grad, 1e-6)
