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
import os
import subprocess
import sys
import textwrap

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


@pytest.fixture(autouse=True)
def _eager_cpu_path(monkeypatch):
    """The CPU path runs its step functions eagerly unless a test compiles them on purpose
    (compiling costs seconds per flag combination on a small CPU)."""
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")


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


def lif_kwargs(p: NeuronParams) -> dict:
    return dict(tau=p.tau, decay_input=p.decay_input, v_threshold=p.v_threshold,
                v_reset=p.v_reset, surrogate=p.surrogate, detach_reset=p.detach_reset,
                convention=p.convention, beta=p.beta)


def op(backend, p: NeuronParams, recompute, spike_dtype=None):
    def fn(x, v0):
        return lif(x, v0, backend=backend, recompute=recompute, return_v=True,
                   return_v_seq=True, spike_dtype=spike_dtype, **lif_kwargs(p))
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
    """SpikingJelly flags (decay_input, v_reset, detach_reset) or ("snntorch", v_reset)."""
    if flags[0] == "snntorch":
        beta, v_th = ((0.8, 1.0), (0.95, 0.5), (0.5, 0.625))[seed % 3]
        return NeuronParams.make(convention="snntorch", beta=beta, v_threshold=v_th,
                                 v_reset=flags[1], surrogate=surrogate)
    decay_input, v_reset, detach_reset = flags
    # vary tau and the threshold too (tau not exactly representable in fp32)
    tau, v_th = ((2.0, 1.0), (3.7, 0.5), (1.5, 1.25))[seed % 3]
    if v_reset is not None:
        v_reset = (0.0, -0.2)[seed % 2]
    return NeuronParams.make(tau=tau, decay_input=decay_input, v_threshold=v_th,
                             v_reset=v_reset, detach_reset=detach_reset, surrogate=surrogate)


def check_against_reference(backend, device, T, shape, flags, surrogate, dtype, seed,
                            recompute=(False, True)):
    """Run the op with each ``recompute`` setting and check it against the reference."""
    p = params_for(flags, surrogate, seed)
    x, v0, grads = make_case(T, shape, seed=seed, with_v_init=seed % 5 != 0, device=device)
    ctx = f"[{backend} {dtype} T={T} shape={shape} {p}]"
    results = {rc: run(op(backend, p, recompute=rc), x, v0, grads, dtype) for rc in recompute}
    label = {False: " save-H", True: " recompute"}
    if dtype == torch.float32:
        expect = run(ref(p), x, v0, grads, dtype)
        for rc, res in results.items():
            check_fp32(res, expect, ctx + label[rc])
        if len(results) == 2:
            for key in ("grad_x", "grad_v_init"):
                if key in expect:
                    assert_equal(results[True][key], results[False][key],
                                 f"{ctx} recompute vs save-H {key}")
        return
    # fp32 reference on the very same rounded inputs
    x_lp = x.to(dtype)
    v0_lp = None if v0 is None else v0.to(dtype)
    grads_lp = tuple(g.to(dtype) for g in grads)
    ref32 = run(ref(p), x_lp.float(), None if v0 is None else v0_lp.float(),
                tuple(g.float() for g in grads_lp), torch.float32)
    ref_lp = run(ref(p), x_lp, v0_lp, grads_lp, dtype)
    for rc, res in results.items():
        check_low_precision(res, ref_lp, ref32, ctx + label[rc])


# --------------------------------------------------------------------------- Triton


@pytest.mark.parametrize("dtype", (torch.float32, *LOW_PRECISION), ids=str)
def test_triton_matches_reference(dtype):
    """Triton kernels: every flag combination x surrogate (fp32), odd shapes, T in 1..16."""
    for case in matrix_cases((dtype,)):
        check_against_reference("triton", TRITON_DEVICE, *case)


@pytest.mark.parametrize("dtype", (torch.float32, *LOW_PRECISION), ids=str)
def test_triton_snntorch_matches_reference(dtype):
    """convention="snntorch" (delayed reset, strict '>'): both resets x every surrogate in
    fp32 (a third of them in fp16/bf16), odd shapes, T in 1..16, three (beta, V_th)."""
    for i, (v_reset, sur) in enumerate(itertools.product((None, 0.0), SURROGATES)):
        if dtype == torch.float32 or i % 3 == 0:
            check_against_reference("triton", TRITON_DEVICE, TIMES[i % 4],
                                    SHAPES[i % len(SHAPES)], ("snntorch", v_reset), sur,
                                    dtype, 200 + i)


@pytest.mark.parametrize("spike_dtype", (torch.bfloat16, torch.float16, torch.float64), ids=str)
def test_triton_spike_dtype(spike_dtype):
    """fp32 membrane, spikes emitted in ``spike_dtype`` (both conventions, recompute on and
    off): the same spikes as in fp32, and, with dL/dS arriving in ``spike_dtype``, the
    gradients (in fp32) of the fp32 op given the same rounded dL/dS."""
    for flags in ((True, None, False), ("snntorch", 0.0)):
        p = params_for(flags, "atan", 1)
        x, v0, (g_s, g_v, g_q) = make_case(4, (3, 37), seed=21, device=TRITON_DEVICE)
        g_s = g_s.to(spike_dtype)
        for recompute in (False, True):
            xi, vi = x.clone().requires_grad_(), v0.clone().requires_grad_()
            s, v, q = op("triton", p, recompute, spike_dtype)(xi, vi)
            assert s.dtype == spike_dtype and v.dtype == q.dtype == torch.float32
            got = torch.autograd.grad((s, v, q), (xi, vi), (g_s, g_v, g_q))
            want = run(op("triton", p, recompute), x, v0, (g_s.float(), g_v, g_q),
                       torch.float32)
            ctx = f"[spike_dtype={spike_dtype} {p} recompute={recompute}]"
            assert_equal(s.float(), want["s"], f"{ctx} spikes")
            for g, key in zip(got, ("grad_x", "grad_v_init"), strict=True):
                assert g.dtype == torch.float32
                assert_equal(g, want[key], f"{ctx} {key}")


def test_triton_snntorch_fires_strictly_above_the_threshold():
    """snnTorch fires on U > V_th: U equal to the fp32 threshold does not fire, one ulp above
    does (U[0] = beta * 0 + X[0] = X[0] exactly)."""
    for v_th in (0.7, 0.3, 1.0):
        th = torch.tensor(v_th, dtype=torch.float32)
        above = torch.nextafter(th, torch.tensor(2.0))
        x = torch.stack([th, above, th + 1]).reshape(1, 3).to(TRITON_DEVICE)
        s = lif(x, convention="snntorch", beta=0.5, v_threshold=v_th, backend="triton")
        assert s.cpu().tolist() == [[0.0, 1.0, 1.0]], (v_th, s)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_triton_snntorch_saved_low_precision_u_keeps_the_reset(dtype):
    """U[0] just above V_th = 1 rounds down to 1.0 in fp16/bf16; saved like that, backward
    would see no delayed reset (U[0] > V_th false) and let dL/dU[1] reach U[0] through
    beta. Clamped to the next value above 1, the zero reset blocks it: dL/dx[0] = 0."""
    eps = torch.finfo(dtype).eps
    v0 = torch.tensor([eps], dtype=dtype, device=TRITON_DEVICE)  # beta v0 = eps/2 < ulp/2
    x = torch.tensor([[1.0], [0.25]], dtype=dtype, device=TRITON_DEVICE)
    p = NeuronParams.make(convention="snntorch", beta=0.5, v_reset=0.0)
    ups = (torch.zeros(2, 1), torch.ones(1), torch.zeros(2, 1))
    want = run(ref(p), x.float(), v0.float(), ups, torch.float32)
    assert want["s"].flatten().tolist() == [1.0, 0.0] and want["grad_x"][0].item() == 0.0
    for recompute in (False, True):
        got = run(op("triton", p, recompute), x, v0,
                  tuple(u.to(TRITON_DEVICE) for u in ups), dtype)
        assert_equal(got["s"].float(), want["s"], f"{dtype} spikes")
        for key in ("grad_x", "grad_v_init"):
            assert_equal(got[key].float(), want[key], f"{dtype} recompute={recompute} {key}")


# Compiles the kernels for an sm_90 GPU (to PTX and cubin; no GPU needed), which the
# interpreter never does: a construct it accepts but the compiler rejects fails here.
AOT_SCRIPT = textwrap.dedent("""
    import itertools, sys
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as err:
        print("SKIP", err)
        sys.exit(0)
    from spike_kernels.ops import lif_triton as L

    def build(fn, pointers, dtype, scalars, const):
        sig = {name: "*" + dtype for name in pointers}
        sig.update({name: "i32" if name in ("T", "N") else "fp32" for name in scalars})
        sig.update({name: "constexpr" for name in const})
        src = ASTSource(fn=fn, signature=sig, constexprs=const)
        # the launchers' option: no FP contraction (a fused multiply-add could flip a spike)
        return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                              options=dict(enable_fp_fusion=False)).asm["ptx"]

    fwd_ptrs = ("x_ptr", "v_init_ptr", "s_ptr", "h_ptr", "v_seq_ptr", "v_last_ptr")
    fwd_scalars = ("T", "N", "tau", "decay", "v_threshold", "v_reset", "v_start", "h_below",
                   "h_above")
    for dtype, decay, hard, store, snn in itertools.product(
            ("bf16", "fp16", "fp32"), (True, False), (True, False), (True, False), (False, True)):
        if (decay, hard) not in ((True, True), (False, False)) and dtype != "fp32":
            continue
        if snn and decay:  # snnTorch never decays the input
            continue
        ptx = build(L._lif_forward_kernel, fwd_ptrs, dtype, fwd_scalars, dict(
            HAS_V_INIT=store, STORE_H=store, NARROW_H=store and dtype != "fp32",
            STORE_V_SEQ=store, DECAY_INPUT=decay, HARD_RESET=hard, SNNTORCH=snn,
            BLOCK=L.BLOCK))
        if not snn:
            assert "div.rn.f32" in ptx, "charge must divide with IEEE round-to-nearest"
        assert "fma.rn.f32" not in ptx, "the membrane must be rounded after every operation"
    bwd_ptrs = ("grad_s_ptr", "h_ptr", "x_ptr", "v_init_ptr", "grad_v_seq_ptr",
                "grad_v_last_ptr", "grad_x_ptr", "grad_v_init_ptr")
    bwd_scalars = ("T", "N", "tau", "inv_tau", "decay", "v_threshold", "v_reset", "v_start",
                   "alpha", "h_below", "h_above")
    for kind, recompute in itertools.product(range(7), (False, True)):
        dtype = ("bf16", "fp32")[kind % 2]
        snn = kind in (2, 5)
        ptx = build(L._lif_backward_kernel, bwd_ptrs, dtype, bwd_scalars, dict(
            RECOMPUTE=recompute, HAS_V_INIT=kind % 3 == 2, NARROW_H=dtype != "fp32",
            HAS_GRAD_V_LAST=kind % 2 == 0, HAS_GRAD_V_SEQ=kind % 3 == 0,
            DECAY_INPUT=kind % 2 == 1 and not snn, HARD_RESET=kind < 4,
            DETACH_RESET=kind % 3 == 1 or snn, SNNTORCH=snn, SURROGATE=kind, BLOCK=L.BLOCK))
        if not recompute:
            assert "div.rn" not in ptx, "backward multiplies by 1/tau"
    print("OK")
""")


def test_triton_kernels_compile_for_a_gpu():
    """Forward (every dtype, store flag and convention) and backward (every surrogate,
    recompute on and off) compile for CUDA, with IEEE division in the forward's charge, no
    contracted multiply-add, and no division in backward. In a fresh interpreter: with
    TRITON_INTERPRET=1 the kernels are interpreted functions."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    done = subprocess.run([sys.executable, "-c", AOT_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    if done.stdout.startswith("SKIP"):
        pytest.skip(f"Triton cannot compile for CUDA here: {done.stdout}")
    assert done.stdout.strip().endswith("OK"), done.stdout


# --------------------------------------------------------------------------- PyTorch CPU path


@pytest.mark.parametrize("dtype", (torch.float32, *LOW_PRECISION), ids=str)
def test_torch_eager_matches_reference(dtype):
    """The CPU path's step functions run eagerly: the full matrix, as for Triton."""
    for case in matrix_cases((dtype,)):
        check_against_reference("torch", "cpu", *case)


@pytest.mark.filterwarnings("error:spike_kernels:RuntimeWarning")  # no silent eager fallback
def test_torch_compiled_matches_reference(monkeypatch):
    """The CPU path under torch.compile. Each new flag combination compiles a forward and a
    backward step (several seconds on a small CPU with a cold cache), so four: the four
    charge/reset variants, both detach_reset values, bf16 with its rounded saved H, and
    recompute once (it compiles a forward of its own, which must be bit-identical)."""
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "1")
    cases = [  # no T or neuron count of 1: those would compile specialised graphs too
        (3, (3, 7), (True, 0.0, False), "sigmoid", torch.float32, 0),
        (4, (37,), (False, None, True), "atan", torch.float32, 1),
        (16, (2, 3, 5), (True, None, False), "erf", torch.float32, 2),
        (4, (2, 1, 3, 5), (False, 0.0, True), "super_spike", torch.bfloat16, 4),
    ]
    for i, case in enumerate(cases):
        modes = (False, True) if i == 0 else (False,)
        check_against_reference("torch", "cpu", *case, recompute=modes)


@pytest.mark.filterwarnings("error:spike_kernels:RuntimeWarning")
def test_torch_compiled_follows_changing_constants(monkeypatch):
    """tau, thresholds, v_reset and alpha change between calls without recompiling, and the
    compiled steps use the current values (a float specialised into a cached graph once
    made every later V_reset compute with the first one)."""
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "1")
    x, v0, grads = make_case(3, (3, 7), seed=5)  # the flags and shape of a compiled case above
    for tau, v_th, v_reset, alpha in ((2.0, 1.0, 0.0, 4.0), (3.7, 0.5, -0.2, 2.0),
                                      (1.5, 1.25, 0.3, 7.0), (2.0, 1.0, 0.0, 4.0)):
        p = NeuronParams.make(tau=tau, v_threshold=v_th, v_reset=v_reset, surrogate="sigmoid",
                              alpha=alpha)
        ctx = f"[compiled torch {p}]"
        got = run(op("torch", p, recompute=False), x, v0, grads, torch.float32)
        monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")
        eager = run(op("torch", p, recompute=False), x, v0, grads, torch.float32)
        monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "1")
        check_fp32(got, eager, ctx)
        check_fp32(got, run(ref(p), x, v0, grads, torch.float32), ctx)


# --------------------------------------------------------------------------- both backends

BACKENDS = (("triton", TRITON_DEVICE), ("torch", "cpu"))
backends = pytest.mark.parametrize("backend,device", BACKENDS, ids=("triton", "torch"))


@backends
def test_outputs_subsets_and_missing_gradients(backend, device):
    """Gradients when only some outputs are returned or reach the loss (the kernels have
    separate paths for absent dL/dv_last and dL/dv_seq), with expanded upstream gradients."""
    p = NeuronParams.make(tau=2.5, v_reset=None, surrogate="atan")
    x, v0, _ = make_case(5, (3, 11), seed=7, device=device)
    losses = {
        "spikes": lambda s, v, q: s.sum(),
        "v_last": lambda s, v, q: v.sum(),
        "v_seq": lambda s, v, q: (q * q).sum(),
        "spikes+v_last": lambda s, v, q: (s * x).sum() + v.sum(),
    }
    for name, loss in losses.items():
        for recompute in (False, True):
            grads = []
            ours = lambda a, b, rc=recompute, q=name == "v_seq": lif(
                a, b, tau=2.5, v_reset=None, surrogate="atan", backend=backend, recompute=rc,
                return_v=True, return_v_seq=q)
            for fn in (ours, lambda a, b: lif_ref(a, b, p)):
                xi, vi = x.clone().requires_grad_(), v0.clone().requires_grad_()
                out = fn(xi, vi)
                s, v = out[0], out[1]
                q = out[2] if len(out) > 2 else None
                grads.append(torch.autograd.grad(loss(s, v, q), (xi, vi)))
            for got, want, what in zip(grads[0], grads[1], ("grad_x", "grad_v_init"),
                                       strict=True):
                assert_close(got, want, f"[{backend} loss={name} recompute={recompute}] {what}",
                             atol=1e-5, rtol=1e-5)
    # only spikes returned: v_last and v_seq never reach the graph
    xi = x.clone().requires_grad_()
    (g_op,) = torch.autograd.grad(lif(xi, tau=2.5, v_reset=None, surrogate="atan",
                                      backend=backend).sum(), xi)
    xr = x.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(lif_ref(xr, None, p)[0].sum(), xr)
    assert_close(g_op, g_ref, f"[{backend}] spikes only", atol=1e-5, rtol=1e-5)


@backends
def test_fires_exactly_at_the_threshold(backend, device):
    """S = H >= V_th in fp32: H equal to the fp32 threshold fires, one ulp below does not
    (thresholds that fp32 rounds down, up, and holds exactly)."""
    for v_th in (0.7, 0.3, 1.0):
        th = torch.tensor(v_th, dtype=torch.float32)
        below = torch.nextafter(th, torch.tensor(-1.0))
        # decay_input=False, soft reset, V[-1] = 0: H[0] = X[0] exactly
        x = torch.stack([th, below, th + 1]).reshape(1, 3).to(device)
        s = lif(x, tau=2.0, decay_input=False, v_threshold=v_th, v_reset=None, backend=backend)
        assert s.cpu().tolist() == [[1.0, 0.0, 1.0]], (v_th, s)
        assert_equal(s, lif_ref(x, None, NeuronParams.make(
            decay_input=False, v_threshold=v_th, v_reset=None))[0], f"{backend} th={v_th}")


@backends
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_saved_low_precision_h_keeps_the_reset_mask(backend, device, dtype):
    """H saved in fp16/bf16 is rounded; rounding must not carry it across the threshold, or
    backward's reset mask (H < V_th) disagrees with the forward's spikes. Here H[0] is just
    under the threshold 1 and rounds up to 1.0 in the low precision."""
    eps = torch.finfo(dtype).eps
    v0 = torch.tensor([1.0], dtype=dtype, device=device)
    # H[0] = v0 + (x0 - v0) / 3 = 1 - eps/6 rounds to 1.0 (the values under 1 are eps/2 apart)
    x = torch.tensor([[1.0 - eps / 2], [0.5]], dtype=dtype, device=device)
    h0 = 1.0 + ((1.0 - eps / 2) - 1.0) / 3.0
    assert h0 < 1.0 and torch.tensor(h0).to(dtype).item() == 1.0
    kwargs = dict(tau=3.0, v_reset=0.0, detach_reset=True)
    p = NeuronParams.make(**kwargs)
    # no spikes, so dL/dv_last = 1 flows back through both steps: dL/dx[0] = (2/3) / 3
    want = run(ref(p), x.float(), v0.float(), (torch.zeros(2, 1), torch.ones(1),
                                                torch.zeros(2, 1)), torch.float32)
    assert want["s"].sum() == 0
    for recompute in (False, True):
        got = run(op(backend, p, recompute), x, v0,
                  (torch.zeros(2, 1, device=device), torch.ones(1, device=device),
                   torch.zeros(2, 1, device=device)), dtype)
        assert_equal(got["s"].float(), want["s"], f"{backend} {dtype} spikes")
        for key in ("grad_x", "grad_v_init"):
            assert_close(got[key], want[key], f"{backend} {dtype} recompute={recompute} {key}",
                         atol=2 * eps, rtol=2 * eps)


@backends
@pytest.mark.parametrize("flags", (FLAGS[0], FLAGS[7]), ids=("hard", "soft-detach"))
def test_chunked_calls_equal_one_call(backend, device, flags):
    """Carrying v_last into the next call's v_init: chunks of 5, 4 and 3 steps give the
    forward and the gradients of one 12-step call (fp32)."""
    p = params_for(flags, "piecewise_exp", 1)
    x, v0, (g_s, g_v, g_q) = make_case(12, (4, 9), seed=11, device=device)
    kwargs = dict(tau=p.tau, decay_input=p.decay_input, v_threshold=p.v_threshold,
                  v_reset=p.v_reset, detach_reset=p.detach_reset, surrogate=p.surrogate,
                  backend=backend, return_v=True, return_v_seq=True)

    def whole(x, v0):
        return lif(x, v0, **kwargs)

    def chunked(x, v0):
        outs, v = [], v0
        for chunk in x.split((5, 4, 3)):
            s, v, q = lif(chunk, v, **kwargs)
            outs.append((s, q))
        return torch.cat([s for s, _ in outs]), v, torch.cat([q for _, q in outs])

    one = run(whole, x, v0, (g_s, g_v, g_q), torch.float32)
    many = run(chunked, x, v0, (g_s, g_v, g_q), torch.float32)
    ctx = f"[{backend} chunked {p}]"
    for key in ("s", "v_last", "v_seq"):
        assert_equal(many[key], one[key], f"{ctx} {key}")
    for key in ("grad_x", "grad_v_init"):
        assert_close(many[key], one[key], f"{ctx} {key}", atol=1e-6, rtol=1e-6)


@backends
@pytest.mark.parametrize("shape", ((0, 5), (3, 0), (0, 0), (4, 2, 0), (0, 3, 2)), ids=str)
def test_empty_inputs(backend, device, shape):
    """T = 0 or no neurons: empty results (v_last = v_init) forward and backward, no crash."""
    for with_v_init in (False, True):
        x = torch.randn(shape, device=device, requires_grad=True)
        v0 = (torch.randn(shape[1:], device=device, requires_grad=True) if with_v_init
              else None)
        for recompute in (False, True):
            s, v, q = lif(x, v0, backend=backend, recompute=recompute, return_v=True,
                          return_v_seq=True)
            assert s.shape == q.shape == x.shape and v.shape == x.shape[1:]
            want_v = v0 if with_v_init else torch.zeros(shape[1:], device=device)
            assert torch.equal(v.detach(), want_v.detach())
            inputs = (x, v0) if with_v_init else (x,)
            grads = torch.autograd.grad((s.sum() + v.sum() + q.sum()), inputs,
                                        allow_unused=True)
            assert grads[0] is None or grads[0].shape == x.shape
            if with_v_init:
                assert grads[1].shape == v0.shape
                if shape[0] == 0:  # no step: dL/dv_init = dL/dv_last
                    assert torch.equal(grads[1], torch.ones_like(v0))


@backends
def test_inference_and_strided_inputs(backend, device):
    """no_grad/inference_mode give the same spikes; non-contiguous x and v_init work."""
    p = NeuronParams.make(tau=3.0, surrogate="erf")
    base = torch.randn(6, 9, 4, device=device) + 0.5
    x = base.transpose(1, 2)[:, ::2]  # [6, 2, 9], non-contiguous
    v0 = torch.randn(9, 2, device=device).t()
    s_ref, v_ref, q_ref = lif_ref(x, v0, p)
    kwargs = dict(tau=3.0, surrogate="erf", backend=backend, return_v=True, return_v_seq=True)
    with torch.no_grad():
        no_grad = lif(x, v0, **kwargs)
    with torch.inference_mode():
        inference = lif(x, v0, **kwargs)
    for out in (no_grad, inference, lif(x, v0, **kwargs)):
        assert_equal(out[0], s_ref, f"{backend} strided spikes")
        assert_close(out[1], v_ref, f"{backend} v_last", atol=1e-6, rtol=1e-6)
        assert_close(out[2], q_ref, f"{backend} v_seq", atol=1e-6, rtol=1e-6)
    g = run(op(backend, p, False), x, v0, tuple(torch.randn_like(t) for t in (x, v0, x)),
            torch.float32)
    assert g["grad_x"].shape == x.shape and g["grad_v_init"].shape == v0.shape
