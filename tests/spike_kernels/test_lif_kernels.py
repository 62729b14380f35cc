"""``spike_kernels.lif`` (Triton kernels and the PyTorch CPU path) against ``lif_ref``.

Every case checks the forward (spikes, v_last, v_seq) and the backward (dL/dx, dL/dv_init
with upstream gradients on all three outputs), with ``recompute`` off and on. Tolerances:

* fp32: spikes exactly equal to the reference, membranes to 1e-6, gradients to 1e-5, and
  the recompute backward bit-identical to the save-H backward.
* fp16/bf16: against an fp32 reference run on the same (rounded) inputs, the op's error may
  be at most twice that of the same reference run in the low precision itself (plus one
  unit in the last place); a tiny fraction of neurons may fire differently at the threshold.

Without CUDA the Triton kernels run under ``TRITON_INTERPRET=1`` (tests/conftest.py).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from spike_kernels import NeuronParams, lif, lif_ref

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FLAGS = list(itertools.product((True, False), (0.0, None), (False, True)))  # decay, v_reset, detach
SURROGATES = ("sigmoid", "atan", "piecewise_quadratic", "piecewise_exp", "soft_sign",
              "super_spike", "erf")
# Trailing shapes: 1-D to 4-D, neuron counts not powers of two; 1100 spans two Triton blocks.
SHAPES = ((37,), (3, 7), (2, 3, 5), (2, 1, 3, 5), (1100,), (1,))
TIMES = (1, 3, 4, 16)
LOW_PRECISION = (torch.float16, torch.bfloat16)
# Neurons that may fire differently from the fp32 reference in low precision (a fraction).
MAX_FLIPPED = 0.02


# --------------------------------------------------------------------------- helpers


def make_case(T, shape, *, seed, with_v_init=True, device="cpu"):
    """fp32 inputs and upstream gradients: x around the threshold so neurons fire and reset."""
    g = torch.Generator().manual_seed(seed)
    full = (T, *shape)
    x = torch.randn(full, generator=g) * 1.5 + 0.6
    v0 = torch.randn(shape, generator=g) * 0.5 if with_v_init else None
    grads = (torch.randn(full, generator=g), torch.randn(shape, generator=g),
             torch.randn(full, generator=g))
    move = lambda t: None if t is None else t.to(device)
    return move(x), move(v0), tuple(move(t) for t in grads)


def run(fn, x, v0, grads, dtype):
    """Run ``fn(x, v0) -> (s, v_last, v_seq)`` in ``dtype``; return outputs and gradients."""
    x = x.to(dtype).requires_grad_()
    v0 = None if v0 is None else v0.to(dtype).requires_grad_()
    outs = fn(x, v0)
    inputs = (x,) if v0 is None else (x, v0)
    grad_in = torch.autograd.grad(outs, inputs, tuple(g.to(dtype) for g in grads))
    result = dict(zip(("s", "v_last", "v_seq"), outs, strict=True))
    result["grad_x"] = grad_in[0]
    if v0 is not None:
        result["grad_v_init"] = grad_in[1]
    return {k: v.detach() for k, v in result.items()}


def op(backend, p: NeuronParams, recompute):
    def fn(x, v0):
        return lif(x, v0, tau=p.tau, decay_input=p.decay_input, v_threshold=p.v_threshold,
                   v_reset=p.v_reset, surrogate=p.surrogate, detach_reset=p.detach_reset,
                   backend=backend, recompute=recompute, return_v=True, return_v_seq=True)
    return fn


def ref(p: NeuronParams):
    return lambda x, v0: lif_ref(x, v0, p)


def describe(bad: torch.Tensor, got: torch.Tensor, want: torch.Tensor, limit: int = 5) -> str:
    """How many elements mismatch, and where (first few indices with both values)."""
    idx = bad.nonzero()[:limit].tolist()
    where = ", ".join(f"{tuple(i)}: got {got[tuple(i)].item():.6g} want {want[tuple(i)].item():.6g}"
                      for i in idx)
    return f"{int(bad.sum())}/{bad.numel()} mismatch (first: {where})"


def assert_equal(got, want, name):
    got, want = got.cpu(), want.cpu()
    assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, want.shape)
    bad = got != want
    assert not bad.any(), f"{name}: {describe(bad, got, want)}"


def assert_close(got, want, name, *, atol, rtol):
    got, want = got.cpu().double(), want.cpu().double()
    assert got.shape == want.shape, (name, got.shape, want.shape)
    bad = (got - want).abs() > atol + rtol * want.abs()
    assert not bad.any(), f"{name}: {describe(bad, got, want)}"


def check_fp32(res, expect, ctx):
    assert_equal(res["s"], expect["s"], f"{ctx} spikes")
    for key in ("v_last", "v_seq"):
        assert_close(res[key], expect[key], f"{ctx} {key}", atol=1e-6, rtol=1e-6)
    for key in ("grad_x", "grad_v_init"):
        if key in expect:
            assert_close(res[key], expect[key], f"{ctx} {key}", atol=1e-5, rtol=1e-5)


def agreeing_neurons(s, s_ref):
    """Mask over neurons ``[...]`` whose whole spike train equals the reference's."""
    return (s.cpu() == s_ref.cpu()).all(dim=0)


def check_low_precision(res, ref_lp, ref32, ctx):
    """``res`` (the op in fp16/bf16) vs ``ref32``, judged by the error of ``ref_lp``."""
    dtype = res["s"].dtype
    ok_op = agreeing_neurons(res["s"], ref32["s"])
    ok_lp = agreeing_neurons(ref_lp["s"], ref32["s"])
    flipped = int((~ok_op).sum())
    assert flipped <= max(1, MAX_FLIPPED * ok_op.numel()), (
        f"{ctx} spikes: {flipped}/{ok_op.numel()} neurons fire differently from the fp32 "
        f"reference ({describe(res['s'].cpu() != ref32['s'].cpu(), res['s'].cpu(), ref32['s'])})"
    )
    both = ok_op & ok_lp  # compare values where neither run diverged at the threshold
    ulp = torch.finfo(dtype).eps
    for key in ("v_last", "v_seq", "grad_x", "grad_v_init"):
        if key not in ref32:
            continue
        got, low, want = (r[key].cpu().double() for r in (res, ref_lp, ref32))
        mask = both if key in ("v_last", "grad_v_init") else both.expand_as(want)
        err_op = ((got - want).abs() * mask).amax()
        err_lp = ((low - want).abs() * mask).amax()
        floor = ulp * float((want.abs() * mask).amax())
        assert err_op <= 2 * err_lp + floor, (
            f"{ctx} {key}: max error {err_op:.3g} > 2 x {dtype} reference error {err_lp:.3g} "
            f"+ {floor:.3g}; "
            f"{describe((got - want).abs() * mask > 2 * err_lp + floor, got, want)}"
        )


def matrix_cases(dtypes):
    """(T, shape, flags, surrogate, dtype, seed): every flag combination with every surrogate
    in fp32; in low precision every flag combination per dtype, surrogates cycled."""
    cases = []
    for i, (flags, sur) in enumerate(itertools.product(FLAGS, SURROGATES)):
        if torch.float32 in dtypes:
            cases.append((TIMES[i % 4], SHAPES[i % len(SHAPES)], flags, sur, torch.float32, i))
    for j, (dtype, flags) in enumerate(itertools.product(
            [d for d in dtypes if d != torch.float32], FLAGS)):
        cases.append((TIMES[j % 4], SHAPES[(j + 1) % len(SHAPES)], flags,
                      SURROGATES[j % len(SURROGATES)], dtype, 100 + j))
    return cases


def params_for(flags, surrogate, seed):
    decay_input, v_reset, detach_reset = flags
    # vary tau and the threshold too (tau not exactly representable in fp32)
    tau, v_th = ((2.0, 1.0), (3.7, 0.5), (1.5, 1.25))[seed % 3]
    if v_reset is not None:
        v_reset = (0.0, -0.2)[seed % 2]
    return NeuronParams.make(tau=tau, decay_input=decay_input, v_threshold=v_th,
                             v_reset=v_reset, detach_reset=detach_reset, surrogate=surrogate)


def check_against_reference(backend, device, T, shape, flags, surrogate, dtype, seed):
    p = params_for(flags, surrogate, seed)
    x, v0, grads = make_case(T, shape, seed=seed, with_v_init=seed % 5 != 0, device=device)
    ctx = f"[{backend} {dtype} T={T} shape={shape} {p}]"
    saved = run(op(backend, p, recompute=False), x, v0, grads, dtype)
    recomputed = run(op(backend, p, recompute=True), x, v0, grads, dtype)
    if dtype == torch.float32:
        expect = run(ref(p), x, v0, grads, dtype)
        check_fp32(saved, expect, ctx + " save-H")
        check_fp32(recomputed, expect, ctx + " recompute")
        for key in ("grad_x", "grad_v_init"):
            if key in saved:
                assert_equal(recomputed[key], saved[key], f"{ctx} recompute vs save-H {key}")
        return
    # fp32 reference on the very same rounded inputs
    x_lp = x.to(dtype)
    v0_lp = None if v0 is None else v0.to(dtype)
    grads_lp = tuple(g.to(dtype) for g in grads)
    ref32 = run(ref(p), x_lp.float(), None if v0 is None else v0_lp.float(),
                tuple(g.float() for g in grads_lp), torch.float32)
    ref_lp = run(ref(p), x_lp, v0_lp, grads_lp, dtype)
    check_low_precision(saved, ref_lp, ref32, ctx + " save-H")
    check_low_precision(recomputed, ref_lp, ref32, ctx + " recompute")


# --------------------------------------------------------------------------- Triton


@pytest.mark.parametrize("dtype", (torch.float32, *LOW_PRECISION), ids=str)
def test_triton_matches_reference(dtype):
    """Triton kernels: every flag combination x surrogate (fp32), odd shapes, T in 1..16."""
    for case in matrix_cases((dtype,)):
        check_against_reference("triton", TRITON_DEVICE, *case)


# --------------------------------------------------------------------------- PyTorch CPU path


@pytest.mark.parametrize("dtype", (torch.float32, *LOW_PRECISION), ids=str)
def test_torch_eager_matches_reference(dtype, monkeypatch):
    """The CPU path's step functions run eagerly: the full matrix, as for Triton."""
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")
    for case in matrix_cases((dtype,)):
        check_against_reference("torch", "cpu", *case)


def test_torch_compiled_matches_reference(monkeypatch):
    """The CPU path under torch.compile (each flag combination compiles once): a dozen
    combinations covering every flag and dtype; surrogates cycled."""
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "1")
    cases = [(TIMES[i % 4], SHAPES[i % 4], flags, SURROGATES[i % 7], torch.float32, i)
             for i, flags in enumerate(FLAGS)]
    cases += [(4, (3, 7), FLAGS[1], "atan", torch.bfloat16, 20),
              (3, (37,), FLAGS[6], "sigmoid", torch.bfloat16, 21),
              (16, (2, 3, 5), FLAGS[3], "erf", torch.float16, 22)]
    for case in cases:
        check_against_reference("torch", "cpu", *case)
