"""The PyTorch path of the multi-step LIF: the whole time loop as one compiled graph.

The forward (charge, fire, reset for every step) and the backward (the surrogate gradient
through every step, in reverse) are each one Python function over the flat ``[T, N]``
input; ``torch.compile`` unrolls its time loop and fuses it into one kernel that reads X
once and writes the spikes (and the saved H) once, keeping the membrane in registers
(docs/DESIGN.md §6). One graph is compiled per flag combination and time length T (T is
unrolled, so it is specialised; T above ``MAX_UNROLL`` runs in chunks), with the neuron
count dynamic: new neuron counts never recompile. The neuron's constants (tau, V_th,
V_reset, beta, alpha) reach the graphs as 0-d tensors, not Python floats, so new values do
not recompile either (and a float specialised into a cached graph could be reused for the
next value: pytorch/pytorch#194976). Where no compiler works, or with
``SPIKE_KERNELS_CPU_COMPILE=0``, the same functions run eagerly.

Arithmetic is fp32 (fp64 for fp64 inputs); H is saved in the input's dtype (in fp16/bf16
clamped to the spike's side of the threshold), spikes come in ``spike_dtype``. Equations in
:mod:`spike_kernels.params`. Backward, with ``gv`` the gradient reaching the state of step t
and ``sg = g'(H[t] - V_th)``:

SpikingJelly convention (state V, H the membrane before the reset)::

    soft, detach : gH = gS sg + gv
    soft         : gH = (gS - V_th gv) sg + gv
    hard, detach : gH = gS sg + gv (1 - S)
    hard         : gH = (gS + gv (V_reset - H)) sg + gv (1 - S)
    gX = gH / tau (decay_input) or gH;   gv[t-1] = gH (1 - 1/tau)

snnTorch convention (state U = H, the reset r[t] = U[t-1] > V_th detached)::

    gU = gS sg + gv;   gX = gU;   gv[t-1] = beta gU (subtract) or beta (1 - r[t]) gU (zero)
"""

from __future__ import annotations

import functools
import itertools
import os
import types
import warnings
from collections.abc import Callable

import torch

from ..params import NeuronParams, threshold_bracket
from ..surrogate import surrogate_grad

Scalar = float | torch.Tensor  # a Python float or a 0-d tensor
# Longest time loop unrolled into one graph; longer ones run in chunks of at most this many
# steps (compile time grows with the unrolled length; 32 steps compile in seconds).
MAX_UNROLL = 32


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64 (gradcheck); every other float type computes in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def charge(v: torch.Tensor, x: torch.Tensor, tau: Scalar, v_reset: Scalar, decay_input: bool):
    """H = V + (X - (V - V_reset)) / tau, or V - (V - V_reset) / tau + X."""
    if decay_input:
        return v + (x - (v - v_reset)) / tau
    return v - (v - v_reset) / tau + x


def grad_membrane(
    grad_s: torch.Tensor,
    grad_v: torch.Tensor,
    h: torch.Tensor,
    v_threshold: Scalar,
    v_reset: Scalar,
    hard_reset: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: Scalar,
) -> torch.Tensor:
    """dL/dH[t] from dL/dS[t] and dL/dV[t] (SpikingJelly; the table in the module docstring)."""
    sg = surrogate_grad(h - v_threshold, surrogate, alpha)
    if hard_reset:
        keep = (h < v_threshold).to(h.dtype)
        if detach_reset:
            return grad_s * sg + grad_v * keep
        return (grad_s + grad_v * (v_reset - h)) * sg + grad_v * keep
    if detach_reset:
        return grad_s * sg + grad_v
    return (grad_s - v_threshold * grad_v) * sg + grad_v


def _step(v, xt, c: tuple, snntorch: bool, decay_input: bool, hard_reset: bool):
    """One step: ``(fired, H[t], state[t])`` from the state of step t-1 and X[t]."""
    tau, v_th, v_reset, beta = c[:4]
    if snntorch:  # snnTorch's order of operations, so that fp64 results are bit-identical
        r = (v > v_th).to(v.dtype)  # the delayed reset of the last step's spike
        if hard_reset:
            u = beta * ((1.0 - r) * v) + xt
        else:
            u = (beta * v + xt) - r * v_th
        return u > v_th, u, u
    h = charge(v, xt, tau, v_reset, decay_input)
    fired = h >= v_th
    v_next = torch.where(fired, v_reset, h) if hard_reset else torch.where(fired, h - v_th, h)
    return fired, h, v_next


def _forward_loop(x, v, c: tuple, t0: int, t1: int, snntorch: bool, decay_input: bool,
                  hard_reset: bool, spike_dtype: torch.dtype, h_dtype: torch.dtype | None,
                  want_v_seq: bool):
    """Steps ``t0 .. t1-1`` over flat ``x [T, N]`` from the state ``v [N]``.

    Returns ``(spikes, state, H or None, state sequence or None)``, the sequences
    ``[t1 - t0, N]``, H in ``h_dtype`` (clamped to the threshold bracket ``c[4:6]`` when that
    is narrower than the compute dtype), the state sequence in x's dtype.
    """
    spikes, hs, vs = [], [], []
    for t in range(t0, t1):
        fired, h, v = _step(v, x[t].to(v.dtype), c, snntorch, decay_input, hard_reset)
        if spike_dtype is not None:
            spikes.append(fired.to(spike_dtype))
        if h_dtype is not None:
            if h_dtype != h.dtype:
                # Rounding to fp16/bf16 must not carry H across the threshold (backward
                # re-derives the spike mask from it): clamp to the nearest representable
                # values on the spike's side. (Clamping, not comparing a rounded copy:
                # inductor may elide an fp32 -> bf16 -> fp32 round trip.)
                h = torch.where(fired, h.clamp(min=c[5]), h.clamp(max=c[4]))
            hs.append(h.to(h_dtype))
        if want_v_seq:
            vs.append(v.to(x.dtype))
    stack = lambda seq: torch.stack(seq) if seq else None
    return stack(spikes), v, stack(hs), stack(vs)


def _backward_loop(gs, gv, gvs, h, r0, c: tuple, t0: int, t1: int, snntorch: bool,
                   decay_input: bool, hard_reset: bool, detach_reset: bool, surrogate: str,
                   gx_dtype: torch.dtype):
    """Steps ``t1-1`` down to ``t0``, from ``gv [N]``, the gradient reaching the state of
    step ``t1-1``. Returns ``(grad_x [t1 - t0, N] in gx_dtype, gradient reaching the state of
    step t0-1)``. ``r0``: the reset of step 0 (snnTorch zero reset only; None: never)."""
    tau, v_th, v_reset, beta, alpha = c[0], c[1], c[2], c[3], c[6]
    cdt = gv.dtype
    gxs = []
    for t in range(t1 - 1, t0 - 1, -1):
        if gvs is not None:
            gv = gv + gvs[t].to(cdt)
        ht = h[t].to(cdt)
        if snntorch:
            gu = gs[t].to(cdt) * surrogate_grad(ht - v_th, surrogate, alpha) + gv
            gxs.append(gu.to(gx_dtype))
            gv = beta * gu
            if hard_reset:
                r = (h[t - 1].to(cdt) > v_th) if t > 0 else r0
                gv = gv if r is None else torch.where(r, 0.0, gv)
        else:
            gh = grad_membrane(gs[t].to(cdt), gv, ht, v_th, v_reset, hard_reset,
                               detach_reset, surrogate, alpha)
            gxs.append((gh / tau if decay_input else gh).to(gx_dtype))
            gv = gh * (1.0 - 1.0 / tau)
    gxs.reverse()
    return torch.stack(gxs), gv


def _recompute_backward_loop(gs, gv, gvs, x, v, r0, c: tuple, T: int, snntorch: bool,
                             decay_input: bool, hard_reset: bool, detach_reset: bool,
                             surrogate: str, gx_dtype: torch.dtype):
    """The backward of all T steps with H recomputed from ``x`` and the initial state ``v``
    in the same graph: H never leaves the kernel (reads x and dL/dS, writes dL/dX)."""
    hs = []
    for t in range(T):
        _, h, v = _step(v, x[t].to(v.dtype), c, snntorch, decay_input, hard_reset)
        hs.append(h)
    return _backward_loop(gs, gv, gvs, hs, r0, c, 0, T, snntorch, decay_input, hard_reset,
                          detach_reset, surrogate, gx_dtype)


def _compile_enabled() -> bool:
    return os.environ.get("SPIKE_KERNELS_CPU_COMPILE", "1") not in ("0", "")


def _loop_function(fn: Callable, key: tuple) -> Callable:
    """``fn`` compiled for one flag combination and time range ``key`` (eager when
    compiling is off)."""
    return _compiled(fn, key) if _compile_enabled() else fn


@functools.cache
def _compiled(fn: Callable, key: tuple) -> Callable:
    """``fn`` under ``torch.compile``, falling back to ``fn`` itself where compiling fails.

    TorchDynamo keeps its compile cache (8 entries) on the code object, so each flag
    combination and time range gets a fresh copy of the code object and thus a cache of its
    own. Tensors come in with their neuron dimension marked dynamic (``_mark``), so within
    a cache only a neuron count of 1 (which PyTorch always specialises) adds an entry.
    """
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{abs(hash(key)):x}")
    fresh = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__)
    compiled = torch.compile(fresh, dynamic=False, fullgraph=True)

    def run(*args, **kwargs):
        nonlocal compiled
        try:
            return compiled(*args, **kwargs)
        except Exception as err:  # no C++ compiler, unsupported platform, ...
            if compiled is fn:
                raise
            warnings.warn(
                f"spike_kernels: torch.compile of the PyTorch LIF path failed "
                f"({type(err).__name__}: {err}); running it eagerly", RuntimeWarning,
                stacklevel=2,
            )
            compiled = fn
            return fn(*args, **kwargs)

    return run


def _flat(a: torch.Tensor | None, T: int, n: int) -> torch.Tensor | None:
    """``a`` as ``[T, n]`` sharing its storage, but not a view, its neuron dim dynamic.

    TorchDynamo guards on the base of a view input (its rank and sizes), so reshaped views
    of differently shaped tensors would each recompile; a tensor ``set_`` on the same
    storage carries no base.
    """
    if a is None:
        return None
    a = a.reshape(T, n)
    if a._base is not None:
        a = a.new_empty(0).set_(a.untyped_storage(), a.storage_offset(), a.shape, a.stride())
    return _mark(a, 1)


def _mark(a: torch.Tensor | None, dim: int) -> torch.Tensor | None:
    if a is not None:
        torch._dynamo.maybe_mark_dynamic(a, dim)
    return a


def _initial(value: torch.Tensor | None, fill: float, n: int, dtype, device) -> torch.Tensor:
    """A fresh flat fp32/fp64 state (not a view): ``value`` copied, or ``fill`` everywhere."""
    if value is None:
        return torch.full((n,), fill, dtype=dtype, device=device)
    return value.reshape(-1).to(dtype, copy=True)


def _constants(p: NeuronParams, dtype: torch.dtype, h_dtype: torch.dtype | None,
               device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(tau, V_th, V_reset, beta, H below, H above, alpha)`` as 0-d tensors for the graphs
    (see the module docstring); the H bracket is that of ``h_dtype`` when it is narrower."""
    below = above = 0.0
    if h_dtype is not None and h_dtype.itemsize < dtype.itemsize:
        below, above = threshold_bracket(p.v_threshold, h_dtype, strict=p.snntorch)
    values = (p.tau, p.v_threshold, p.charge_reset, p.decay, below, above, p.surrogate.alpha)
    return tuple(torch.tensor(value, dtype=dtype, device=device) for value in values)


def _chunks(T: int) -> list[tuple[int, int]]:
    """``[(t0, t1), ...]`` covering ``0 .. T-1`` in near-equal runs of at most MAX_UNROLL."""
    n = max(1, -(-T // MAX_UNROLL))
    bounds = [round(i * T / n) for i in range(n + 1)]
    return list(itertools.pairwise(bounds))


def _separate(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The tensors, each with storage of its own (a compiled graph may return one buffer
    for two equal outputs, and a custom op's outputs may not alias one another)."""
    seen, out = set(), []
    for a in tensors:
        if a is not None and a.numel():
            ptr = a.untyped_storage().data_ptr()
            if ptr in seen:
                a = a.clone()
            seen.add(a.untyped_storage().data_ptr())
        out.append(a)
    return out


@torch.no_grad()  # the loops are never differentiated (backward is hand-written)
def _run_forward(x, v_init, p: NeuronParams, h_dtype, want_v_seq, spike_dtype):
    """The forward over flat ``[T, N]``: ``(spikes, final state, H or None, v_seq or None)``
    with the sequences ``[T, N]``."""
    T, n = x.shape[0], x.shape[1:].numel()
    cdt = compute_dtype(x.dtype)
    v = _mark(_initial(v_init, p.v_init, n, cdt, x.device), 0)
    c = _constants(p, cdt, h_dtype, x.device)
    xf = _flat(x, T, n)
    flags = (p.snntorch, p.decay_input, p.hard_reset, spike_dtype, h_dtype, want_v_seq)
    parts = []
    for t0, t1 in _chunks(T) if T and n else []:
        fn = _loop_function(_forward_loop, ("fwd", x.dtype, t0, t1, *flags))
        s, v, h, vs = fn(xf, v, c, t0, t1, *flags)
        parts.append((s, h, vs))
    if len(parts) == 1:
        return (*parts[0][:1], v, *parts[0][1:])
    s, h, vs = (None if not parts or parts[0][i] is None else torch.cat([q[i] for q in parts])
                for i in range(3))
    if not parts:  # no steps or no neurons
        s = x.new_empty((T, n), dtype=spike_dtype) if spike_dtype is not None else None
        h = x.new_empty((T, n), dtype=h_dtype) if h_dtype is not None else None
        vs = x.new_empty((T, n)) if want_v_seq else None
    return s, v, h, vs


def lif_forward_torch(
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    p: NeuronParams,
    save_h: bool,
    want_v_seq: bool,
    spike_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(spikes, v_last, h_seq or empty, v_seq or empty)``.

    Spikes in ``spike_dtype`` (None: x's dtype), the rest in x's dtype, all contiguous. For
    snnTorch, H, v_seq and v_last are the state U (before the delayed reset).
    """
    spike_dtype = x.dtype if spike_dtype is None else spike_dtype
    s, v, h, vs = _run_forward(x, v_init, p, x.dtype if save_h else None, want_v_seq,
                               spike_dtype)
    v = v.reshape(x.shape[1:]).to(x.dtype)
    empty = lambda: x.new_empty(0)  # two separate ones: outputs may not alias
    s, v, h, vs = _separate(s.view(x.shape), v, None if h is None else h.view(x.shape),
                            None if vs is None else vs.view(x.shape))
    return s, v, empty() if h is None else h, empty() if vs is None else vs


@torch.no_grad()
def lif_backward_torch(
    grad_s: torch.Tensor,
    grad_v_last: torch.Tensor | None,
    grad_v_seq: torch.Tensor | None,
    h_seq: torch.Tensor,
    p: NeuronParams,
    v_dtype: torch.dtype,
    v_init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(grad_x, grad_v_init)``, both in ``v_dtype``, from the saved (or recomputed)
    ``h_seq``. ``grad_s`` may come in another dtype (the spikes'). ``v_init`` is needed by
    the snnTorch zero reset (the reset of step 0 is ``v_init > V_th``)."""
    return _backward(grad_s, grad_v_last, grad_v_seq, h_seq, None, v_init, p, v_dtype)


@torch.no_grad()
def lif_backward_recompute_torch(
    grad_s: torch.Tensor,
    grad_v_last: torch.Tensor | None,
    grad_v_seq: torch.Tensor | None,
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    p: NeuronParams,
    v_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``lif_backward_torch`` for ``recompute=True``: H is recomputed from ``x`` inside the
    backward's own graph, never stored (bit-identical to ``recompute_h_torch`` followed by
    ``lif_backward_torch``, which is what runs for T above MAX_UNROLL)."""
    if x.shape[0] > MAX_UNROLL:
        h_seq = recompute_h_torch(x, v_init, p)
        return _backward(grad_s, grad_v_last, grad_v_seq, h_seq, None, v_init, p, v_dtype)
    return _backward(grad_s, grad_v_last, grad_v_seq, None, x, v_init, p, v_dtype)


def _backward(grad_s, grad_v_last, grad_v_seq, h_seq, x, v_init, p: NeuronParams, v_dtype):
    """The backward from the saved ``h_seq``, or (``h_seq`` None) from ``x`` recomputed."""
    src = x if h_seq is None else h_seq
    T, shape = src.shape[0], src.shape[1:]
    n = shape.numel()
    cdt = compute_dtype(src.dtype)
    gv = _mark(_initial(grad_v_last, 0.0, n, cdt, src.device), 0)
    r0 = None
    if p.snntorch and p.hard_reset and v_init is not None:
        r0 = _mark(v_init.reshape(-1).to(cdt) > p.v_threshold, 0)
    c = _constants(p, cdt, None, src.device)
    gs, gvs, srcf = (_flat(a, T, n) for a in (grad_s, grad_v_seq, src))
    flags = (p.snntorch, p.decay_input, p.hard_reset, p.detach_reset, p.surrogate.name, v_dtype)
    key = (src.dtype, grad_s.dtype, None if gvs is None else gvs.dtype, r0 is not None)
    parts = []
    if T and n and h_seq is None:
        v = _mark(_initial(v_init, p.v_init, n, cdt, src.device), 0)
        fn = _loop_function(_recompute_backward_loop, ("rc-bwd", *key, T, *flags))
        gx, gv = fn(gs, gv, gvs, srcf, v, r0, c, T, *flags)
        parts.append(gx)
    for t0, t1 in reversed(_chunks(T)) if T and n and h_seq is not None else []:
        fn = _loop_function(_backward_loop, ("bwd", *key, t0, t1, *flags))
        gx, gv = fn(gs, gv, gvs, srcf, r0, c, t0, t1, *flags)
        parts.append(gx)
    if not parts:
        grad_x = torch.empty(src.shape, dtype=v_dtype, device=src.device)
    else:
        grad_x = (parts[0] if len(parts) == 1 else torch.cat(parts[::-1])).view(src.shape)
    return grad_x, gv.reshape(shape).to(v_dtype)


def recompute_h_torch(x: torch.Tensor, v_init: torch.Tensor | None, p: NeuronParams):
    """H[t] (the state U for snnTorch) recomputed from x in the compute dtype, by the same
    graph as the forward's, so bit-identical to it."""
    h = _run_forward(x, v_init, p, compute_dtype(x.dtype), False, None)[2]
    return h.view(x.shape)
