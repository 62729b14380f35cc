"""Gradients of ``spike_kernels.lif`` in fp64, and external oracles (SpikingJelly, snnTorch).

The spike is a Heaviside step, so finite differences see zero where the surrogate says
``g'(H - V_th)``. Two checks are therefore made, each where it is honest:

* the analytic fp64 gradients of the op (every flag combination and surrogate) equal those of
  ``lif_ref``, whose backward is autograd through the defining equations with the surrogate's
  backward at the spike, to 1e-10;
* ``torch.autograd.gradcheck`` (finite differences) where the surrogate gradient *is* the
  derivative: inputs whose H stays clear of the threshold so no spike flips under the
  perturbation, and either a surrogate that vanishes there (piecewise_quadratic) or outputs
  that depend on the spikes only through a detached reset (v_last, v_seq).
"""

from __future__ import annotations

import inspect
import itertools

import pytest
import torch

from spike_kernels import LIF, NeuronParams, lif, lif_ref

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FLAGS = list(itertools.product((True, False), (0.0, None), (False, True)))  # decay, v_reset, detach
SURROGATES = ("sigmoid", "atan", "piecewise_quadratic", "piecewise_exp", "soft_sign",
              "super_spike", "erf")


@pytest.fixture(autouse=True)
def _eager_cpu_path(monkeypatch):
    """Eager CPU steps unless a test compiles on purpose (seconds per flag combination)."""
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "0")


def lif_kwargs(p: NeuronParams) -> dict:
    return dict(tau=p.tau, decay_input=p.decay_input, v_threshold=p.v_threshold,
                v_reset=p.v_reset, surrogate=p.surrogate, detach_reset=p.detach_reset)


def membrane_before_fire(x, v0, p: NeuronParams) -> torch.Tensor:
    """H[t] for every step (fp64), from the equations."""
    v, hs = v0, []
    for t in range(x.shape[0]):
        if p.decay_input:
            h = v + (x[t] - (v - p.charge_reset)) / p.tau
        else:
            h = v - (v - p.charge_reset) / p.tau + x[t]
        fired = h >= p.v_threshold
        v = torch.where(fired, p.v_reset if p.hard_reset else h - p.v_threshold, h)
        hs.append(h)
    return torch.stack(hs)


def clear_of_threshold(p: NeuronParams, margin: float, n: int, T: int = 5, seed: int = 0):
    """(x [T, n], v_init [n]) in fp64 whose H stays more than ``margin`` from the threshold,
    each neuron firing at least once."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, 4000, generator=g, dtype=torch.float64) * 2.0 + 0.8
    v0 = torch.randn(4000, generator=g, dtype=torch.float64) * 0.5
    h = membrane_before_fire(x, v0, p)
    ok = ((h - p.v_threshold).abs() > margin).all(0) & (h >= p.v_threshold).any(0)
    idx = ok.nonzero().flatten()[:n]
    assert len(idx) == n, f"only {len(idx)} neurons clear of the threshold"
    return x[:, idx].contiguous(), v0[idx].contiguous()


def grads_fp64(fn, x, v0, seed=0):
    """(outputs, dL/dx, dL/dv_init) for random upstream gradients on all three outputs."""
    g = torch.Generator().manual_seed(seed)
    x = x.detach().clone().requires_grad_()
    v0 = v0.detach().clone().requires_grad_()
    outs = fn(x, v0)
    ups = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]
    return [o.detach() for o in outs], torch.autograd.grad(outs, (x, v0), ups)


# --------------------------------------------------------------------------- fp64 gradients


def test_cpu_fp64_gradients_match_reference():
    """Every flag combination x surrogate (with a non-default alpha too), random inputs that
    do cross the threshold: analytic gradients of the CPU path equal the reference's."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 5, generator=g, dtype=torch.float64) * 1.5 + 0.6
    v0 = torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.5
    for i, (flags, sur) in enumerate(itertools.product(FLAGS, SURROGATES)):
        decay_input, v_reset, detach_reset = flags
        p = NeuronParams.make(tau=(2.0, 3.3)[i % 2], decay_input=decay_input,
                              v_threshold=(1.0, 0.6)[i % 2], v_reset=v_reset,
                              detach_reset=detach_reset, surrogate=sur,
                              alpha=None if i % 3 else 1.7)
        kw = lif_kwargs(p)
        got, got_g = grads_fp64(lambda a, b, kw=kw: lif(a, b, backend="torch", return_v=True,
                                                         return_v_seq=True, **kw), x, v0)
        want, want_g = grads_fp64(lambda a, b, p=p: lif_ref(a, b, p), x, v0)
        assert sum(int(s.sum()) for s in want[0]) > 0, "no spikes: the reset path is untested"
        for name, a, b in zip(("spikes", "v_last", "v_seq", "grad_x", "grad_v_init"),
                              (*got, *got_g), (*want, *want_g), strict=True):
            err = (a - b).abs().max().item()
            assert err <= 1e-10, f"[{p}] {name}: max |difference| {err:.3g}"


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: f"decay={f[0]}-reset={f[1]}-detach={f[2]}")
def test_gradcheck_where_the_surrogate_is_the_derivative(flags):
    """Finite differences of spikes, v_last and v_seq: with H at least 0.3 from the threshold
    and piecewise_quadratic(alpha=4) (zero beyond |H - V_th| = 0.25), the surrogate gradient
    equals the true one, reset terms included."""
    decay_input, v_reset, detach_reset = flags
    p = NeuronParams.make(tau=2.5, decay_input=decay_input, v_reset=v_reset,
                          detach_reset=detach_reset, surrogate="piecewise_quadratic", alpha=4.0)
    x, v0 = clear_of_threshold(p, margin=0.3, n=4)
    fn = lambda a, b: lif(a, b, backend="torch", return_v=True, return_v_seq=True,
                          **lif_kwargs(p))
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(), v0.requires_grad_()),
                                    eps=1e-6, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("surrogate", ("sigmoid", "atan", "erf"))
def test_gradcheck_membrane_with_detached_reset(surrogate):
    """v_last and v_seq with detach_reset=True depend on the spikes only through the detached
    reset, so their true derivative holds no surrogate term: finite differences apply for any
    surrogate once no spike flips under the perturbation (H at least 1e-3 from V_th)."""
    for v_reset in (0.0, None):
        p = NeuronParams.make(tau=2.0, v_reset=v_reset, detach_reset=True, surrogate=surrogate)
        x, v0 = clear_of_threshold(p, margin=1e-3, n=4, seed=3)
        fn = lambda a, b, p=p: lif(a, b, backend="torch", return_v=True, return_v_seq=True,
                                   **lif_kwargs(p))[1:]
        assert torch.autograd.gradcheck(fn, (x.requires_grad_(), v0.requires_grad_()),
                                        eps=1e-6, atol=1e-9, rtol=1e-7)


@pytest.mark.filterwarnings("error:spike_kernels:RuntimeWarning")
def test_compiled_cpu_fp64_gradients_match_reference(monkeypatch):
    """The compiled CPU path in fp64 (the one gradcheck users meet): one flag combination,
    analytic gradients equal to the reference's."""
    monkeypatch.setenv("SPIKE_KERNELS_CPU_COMPILE", "1")
    p = NeuronParams.make(tau=2.5, v_reset=None, detach_reset=False, surrogate="soft_sign")
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 3, 5, generator=g, dtype=torch.float64) * 1.5 + 0.6
    v0 = torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.5
    got = grads_fp64(lambda a, b: lif(a, b, backend="torch", return_v=True, return_v_seq=True,
                                      **lif_kwargs(p)), x, v0)
    want = grads_fp64(lambda a, b: lif_ref(a, b, p), x, v0)
    for name, a, b in zip(("spikes", "v_last", "v_seq", "grad_x", "grad_v_init"),
                          (*got[0], *got[1]), (*want[0], *want[1]), strict=True):
        err = (a - b).abs().max().item()
        assert err <= 1e-10, f"[compiled {p}] {name}: max |difference| {err:.3g}"


# --------------------------------------------------------------------------- SpikingJelly


def spikingjelly_node(p: NeuronParams):
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron",
                                 reason="spikingjelly is not installed")
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    classes = {"sigmoid": surrogate.Sigmoid, "atan": surrogate.ATan,
               "piecewise_quadratic": surrogate.PiecewiseQuadratic,
               "piecewise_exp": surrogate.PiecewiseExp, "soft_sign": surrogate.SoftSign,
               "super_spike": surrogate.SuperSpike, "erf": surrogate.Erf}
    kwargs = dict(tau=p.tau, decay_input=p.decay_input, v_threshold=p.v_threshold,
                  v_reset=p.v_reset, detach_reset=p.detach_reset, step_mode="m",
                  store_v_seq=True,
                  surrogate_function=classes[p.surrogate.name](alpha=p.surrogate.alpha))
    if "backend" in inspect.signature(neuron.LIFNode.__init__).parameters:
        kwargs["backend"] = "torch"
    return neuron.LIFNode(**kwargs)


def run_spikingjelly(p, x, ups):
    node = spikingjelly_node(p)
    x = x.detach().clone().requires_grad_()
    s = node(x)
    outs = (s, node.v, node.v_seq)
    (grad,) = torch.autograd.grad(outs, (x,), ups)
    return [o.detach() for o in outs], grad


def run_ours(p, x, ups, backend):
    x = x.detach().clone().requires_grad_()
    outs = lif(x, backend=backend, return_v=True, return_v_seq=True, **lif_kwargs(p))
    (grad,) = torch.autograd.grad(outs, (x,), ups)
    return [o.detach() for o in outs], grad


def test_spikingjelly_lifnode_oracle():
    """SpikingJelly's LIFNode(step_mode="m") and its surrogate objects: equal spikes, and
    membranes and gradients to 1e-10 (CPU path, fp64) or 1e-5 (Triton, fp32), for every flag
    combination and surrogate with non-default alphas."""
    g = torch.Generator().manual_seed(2)
    x64 = torch.randn(5, 2, 7, generator=g, dtype=torch.float64) * 1.5 + 0.6
    ups64 = [torch.randn(shape, generator=g, dtype=torch.float64)
             for shape in (x64.shape, x64.shape[1:], x64.shape)]
    for i, (flags, sur) in enumerate(itertools.product(FLAGS, SURROGATES)):
        decay_input, v_reset, detach_reset = flags
        alpha = {"sigmoid": 3.0, "atan": 2.5, "erf": 1.5}.get(sur, 1.3)
        p = NeuronParams.make(tau=(2.0, 3.0)[i % 2], decay_input=decay_input, v_reset=v_reset,
                              detach_reset=detach_reset, surrogate=sur, alpha=alpha)
        cases = [("torch", x64, ups64, 1e-10)]
        if i % 4 == 0:  # the interpreter is slower: a quarter of the combinations
            cases.append(("triton", x64.float().to(TRITON_DEVICE),
                          [u.float().to(TRITON_DEVICE) for u in ups64], 1e-5))
        for backend, x, ups, tol in cases:
            (s, v, q), gx = run_ours(p, x, ups, backend)
            (s_sj, v_sj, q_sj), gx_sj = run_spikingjelly(p, x.cpu(), [u.cpu() for u in ups])
            ctx = f"[{backend} vs SpikingJelly {p}]"
            assert torch.equal(s.cpu(), s_sj), f"{ctx} spikes differ"
            for name, a, b in (("v_last", v, v_sj), ("v_seq", q, q_sj), ("grad_x", gx, gx_sj)):
                err = (a.cpu() - b).abs().max().item()
                assert err <= tol * max(1.0, b.abs().max().item()), f"{ctx} {name}: {err:.3g}"


def test_module_matches_spikingjelly_across_calls():
    """LIF(step_mode="m") vs LIFNode over two calls (the state carries over), then reset."""
    from spike_kernels import reset_net

    p = NeuronParams.make(tau=2.0, v_reset=0.0, surrogate="sigmoid")
    ours = LIF(tau=2.0, step_mode="m", backend="torch")
    theirs = spikingjelly_node(p)
    g = torch.Generator().manual_seed(4)
    for chunk in range(3):
        x = torch.randn(4, 6, generator=g, dtype=torch.float64) + 0.7
        assert torch.equal(ours(x), theirs(x)), f"call {chunk}"
        assert torch.allclose(ours.v, theirs.v, atol=1e-12)
        if chunk == 1:
            reset_net(torch.nn.Sequential(ours, theirs))  # ours and SpikingJelly's alike
            assert ours.v is None


# --------------------------------------------------------------------------- snnTorch


def leaky_sequence(leaky, x):
    spikes, mems, mem = [], [], None
    for t in range(x.shape[0]):
        spk, mem = leaky(x[t]) if mem is None else leaky(x[t], mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def test_snntorch_leaky_below_threshold():
    """LIF.from_beta(beta) and snnTorch's default Leaky(beta) (delayed, detached reset): with
    inputs that never reach the threshold the documented differences (> vs >=, reset one step
    late) do not arise, so membranes and surrogate gradients (atan) must agree."""
    snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
    g = torch.Generator().manual_seed(5)
    x = torch.rand(8, 6, generator=g, dtype=torch.float64) * 0.5 - 0.2  # H stays < 0.8
    ups = torch.randn(2, 8, 6, generator=g, dtype=torch.float64)
    xs, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    spk, mem = leaky_sequence(snn.Leaky(beta=0.75), xs)  # beta = 0.75 exactly in fp32
    ours = LIF.from_beta(0.75, backend="torch", store_v_seq=True, step_mode="m")
    s = ours(xo)
    assert spk.sum() == 0 and s.sum() == 0
    assert torch.allclose(ours.v_seq, mem, atol=1e-12)
    (g_snn,) = torch.autograd.grad((spk * ups[0]).sum() + (mem * ups[1]).sum(), xs)
    (g_our,) = torch.autograd.grad((s * ups[0]).sum() + (ours.v_seq * ups[1]).sum(), xo)
    # snnTorch's spikes are fp32, so its surrogate gradient passes through fp32
    assert torch.allclose(g_our, g_snn, atol=1e-6, rtol=1e-6)


def test_snntorch_leaky_same_step_reset():
    """snnTorch's Leaky(reset_delay=False) resets in the step that fired, by subtraction, with
    the reset not detached: our soft reset, decay_input=False, tau = 1/(1-beta),
    detach_reset=False. With H < 2 V_th one subtraction always brings V under the threshold
    (snnTorch would subtract again otherwise); spikes, membranes and gradients agree."""
    snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
    g = torch.Generator().manual_seed(6)
    x = torch.rand(10, 8, generator=g, dtype=torch.float64) * 1.2 - 0.3  # H < 0.75 + 0.9
    ups = torch.randn(2, 10, 8, generator=g, dtype=torch.float64)
    xs, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    spk, mem = leaky_sequence(snn.Leaky(beta=0.75, reset_delay=False), xs)
    s, q = lif(xo, tau=4.0, decay_input=False, v_reset=None, detach_reset=False,
               surrogate="atan", backend="torch", return_v_seq=True)
    assert s.sum() > 5, "too few spikes to test the reset"
    assert torch.equal(s, spk.to(s.dtype))
    assert torch.allclose(q, mem, atol=1e-12)
    (g_snn,) = torch.autograd.grad((spk * ups[0]).sum() + (mem * ups[1]).sum(), xs)
    (g_our,) = torch.autograd.grad((s * ups[0]).sum() + (q * ups[1]).sum(), xo)
    assert torch.allclose(g_our, g_snn, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("reset", ("subtract", "zero"))
def test_lif_ref_snntorch_convention_matches_leaky(reset):
    """lif_ref(convention="snntorch") vs snnTorch 1.0's Leaky (reset_delay=True, its default)
    in fp64, over two calls with the membrane passed explicitly in and out (Leaky(x, mem)):
    spikes and membranes equal, gradients to 1e-6 (snnTorch's spikes, and so its surrogate
    gradient, are fp32). The threshold is exact in fp32: snnTorch multiplies its fp32 reset
    by the threshold in fp32 even for fp64 inputs."""
    snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
    beta, th = 0.8, 0.625
    leaky = snn.Leaky(beta=torch.tensor(beta, dtype=torch.float64),
                      threshold=torch.tensor(th, dtype=torch.float64), reset_mechanism=reset,
                      spike_grad=snn.surrogate.atan(alpha=2.0))
    p = NeuronParams.make(convention="snntorch", beta=beta, v_threshold=th,
                          v_reset=None if reset == "subtract" else 0.0, surrogate="atan")
    g = torch.Generator().manual_seed(11)
    xs = [torch.randn(T, 3, 7, generator=g, dtype=torch.float64) * 0.9 + 0.35 for T in (5, 4)]
    leaves = [x.clone().requires_grad_() for x in xs]
    ours = [x.clone().requires_grad_() for x in xs]
    mem_snn = torch.zeros(3, 7, dtype=torch.float64)  # snnTorch's initial mem
    mem_our = None  # lif_ref's default: U[-1] = 0
    out_snn, out_our = [], []
    for x_snn, x_our in zip(leaves, ours, strict=True):
        for t in range(x_snn.shape[0]):
            spk, mem_snn = leaky(x_snn[t], mem_snn)
            out_snn += [spk, mem_snn]
        s, mem_our, q = lif_ref(x_our, mem_our, p)
        out_our += [y for t in range(s.shape[0]) for y in (s[t], q[t])]
    spikes = sum(int(o.sum()) for o in out_our[0::2])
    assert spikes > 20, "too few spikes to test the delayed reset"
    for i, (a, b) in enumerate(zip(out_our, out_snn, strict=True)):
        assert torch.equal(a, b.to(a.dtype)), f"{reset}: output {i} differs"
    ups = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in out_our]
    g_snn = torch.autograd.grad(out_snn, leaves, ups)
    g_our = torch.autograd.grad(out_our, ours, ups)
    for a, b in zip(g_our, g_snn, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-6), (a - b).abs().max()


def test_snntorch_convention_validation():
    """Clear errors for parameters snnTorch's Leaky cannot have."""
    ok = dict(convention="snntorch", beta=0.9)
    NeuronParams.make(**ok)
    for bad, match in ((dict(convention="snntorch"), "needs beta"),
                       (dict(ok, beta=1.5), r"beta must be in \[0, 1\]"),
                       (dict(ok, beta=float("nan")), "beta must be finite"),
                       (dict(ok, tau=3.0), "leave tau"),
                       (dict(ok, decay_input=True), "decay_input must be False"),
                       (dict(ok, detach_reset=False), "detach_reset must be True"),
                       (dict(ok, v_reset=0.5), "v_reset=None"),
                       (dict(beta=0.9), "beta is snnTorch's decay"),
                       (dict(convention="snntorch_immediate", beta=0.9), "convention must be")):
        with pytest.raises((ValueError, TypeError), match=match):
            NeuronParams.make(**bad)
    with pytest.raises(TypeError, match="decay_input must be a bool"):
        NeuronParams.make(decay_input=1)
    with pytest.raises(TypeError, match="spike_dtype"):
        lif(torch.zeros(2, 3), spike_dtype=torch.int8)


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16, torch.float32), ids=str)
def test_threshold_bracket_matches_torch_rounding(dtype):
    """threshold_bracket (pure Python bit arithmetic, cached) against torch's own rounding and
    nextafter: below < V_th <= above (SpikingJelly's >=) or below <= V_th < above (strict,
    snnTorch's >), for thresholds exact, rounded up, rounded down, tiny, huge and zero."""
    from spike_kernels.params import threshold_bracket

    g = torch.Generator().manual_seed(0)
    values = [0.0, 1.0, 0.5, 0.3, 0.7, 1e-9, 1e-30, 1e5, 7e4, 65504.0, 65520.0, 3.0e38]
    values += torch.rand(300, generator=g, dtype=torch.float64).mul(3).tolist()
    for v_th in values:
        th = torch.tensor(v_th, dtype=torch.float32)
        r = th.to(dtype)
        down = torch.nextafter(r, torch.tensor(-float("inf"), dtype=dtype)).item()
        up = torch.nextafter(r, torch.tensor(float("inf"), dtype=dtype)).item()
        for strict in (False, True):
            fires_at_r = r.float() > th or (r.float() == th and not strict)
            want = (down, r.item()) if fires_at_r else (r.item(), up)
            assert threshold_bracket(v_th, dtype, strict) == want, (v_th, dtype, strict)


@pytest.mark.parametrize("recompute", (False, True))
def test_lif_custom_ops_pass_opcheck(recompute):
    """torch.library.opcheck of spike_kernels::lif_forward (schema, fake implementation with
    spike_dtype, autograd registration) for both conventions on the PyTorch path."""
    from spike_kernels.ops.lif_op import _Neuron, lif_forward_op
    from spike_kernels.ops.op_args import flatten

    g = torch.Generator().manual_seed(3)
    x = (torch.randn(3, 2, 5, generator=g) + 0.6).requires_grad_()
    v0 = torch.randn(2, 5, generator=g).requires_grad_()
    for p in (NeuronParams.make(tau=2.5, v_reset=None),
              NeuronParams.make(convention="snntorch", beta=0.8, v_reset=0.0)):
        for spike_dtype in (torch.float32, torch.bfloat16):
            args = (x, v0, *flatten(_Neuron.of(p)), spike_dtype, recompute, True, False)
            torch.library.opcheck(lif_forward_op, args)
