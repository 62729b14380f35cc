"""The PyTorch path of the multi-step LIF: the time loop as compiled multi-step kernels.

The forward (charge, fire, reset) and the backward (the surrogate gradient, in reverse) of
a run of ``MAX_UNROLL`` (4) time steps are each one Python function; ``torch.compile``
unrolls its steps and fuses them into one kernel that reads X once and writes the spikes
(and the saved H) straight into the outputs, the membrane in registers between steps
(docs/DESIGN.md §6). T steps are ceil(T/4) calls of that one graph (plus one graph for a
shorter last chunk), not one call per step; why not all T in one kernel: ``MAX_UNROLL``.
The neuron count is dynamic and the chunks' offsets are not guarded, so new neuron counts
and new T never recompile. The neuron's constants (tau, V_th, V_reset, beta, alpha) reach
the graphs as 0-d tensors, not Python floats, so new values do not recompile either (and a
float specialised into a cached graph could be reused for the next value:
pytorch/pytorch#194976). Where no compiler works, or with ``SPIKE_KERNELS_CPU_COMPILE=0``,
the same functions run eagerly.

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
# Time steps per compiled kernel. Each step adds three [N] streams to the kernel's one loop
# over the neurons (X, S, H forward; H, dL/dS, dL/dX backward), all N elements apart: with
# N a power of two (2^20, or B*L*D in a model) they share cache sets, and the hardware
# prefetchers track a limited number of streams. Measured (fp32 fwd+bwd, N=2^20, T=16, one
# thread, CPU time): one 16-step kernel 402 ms, four 4-step kernels 307 ms. T runs as
# ceil(T/4) calls of one 4-step graph (plus one for a shorter last chunk), which also bounds
# compile time and the number of graphs.
MAX_UNROLL = 4


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


def _forward_chunk(x, v, s, h, vs, c: tuple, snntorch: bool, decay_input: bool,
                   hard_reset: bool):
    """Steps over ``x [K, N]`` from the state ``v [N]``, writing spikes ``s``, H ``h`` and
    the state sequence ``vs`` (lists of K rows ``[N]``, or None) in their dtypes; returns
    the state. (Rows, each overwritten whole: a copy into a slice of a graph input becomes
    a read-modify-write of the whole input plus temporaries.)

    H narrower than the compute dtype is clamped to the threshold bracket ``c[4:6]``.
    """
    for k in range(x.shape[0]):
        fired, hk, v = _step(v, x[k].to(v.dtype), c, snntorch, decay_input, hard_reset)
        if s is not None:
            s[k].copy_(fired)
        if h is not None:
            if h[k].dtype != hk.dtype:
                # Rounding to fp16/bf16 must not carry H across the threshold (backward
                # re-derives the spike mask from it): clamp to the nearest representable
                # values on the spike's side. (Clamping, not comparing a rounded copy:
                # inductor may elide an fp32 -> bf16 -> fp32 round trip.)
                hk = torch.where(fired, hk.clamp(min=c[5]), hk.clamp(max=c[4]))
            h[k].copy_(hk)
        if vs is not None:
            vs[k].copy_(v)
    return v


def _backward_chunk(gs, gv, gvs, h, r_first, gx, c: tuple, snntorch: bool, decay_input: bool,
                    hard_reset: bool, detach_reset: bool, surrogate: str):
    """Steps ``K-1`` down to 0 of ``h`` (``[K, N]`` or a list of K ``[N]``), from ``gv``,
    the gradient reaching the chunk's last state; writes dL/dX into the rows ``gx`` and returns
    the gradient reaching the state before the chunk. ``r_first``: the snnTorch reset of the
    chunk's first step (zero reset only; None: no reset)."""
    tau, v_th, v_reset, beta, alpha = c[0], c[1], c[2], c[3], c[6]
    cdt = gv.dtype
    for k in range(len(h) - 1, -1, -1):
        if gvs is not None:
            gv = gv + gvs[k].to(cdt)
        hk = h[k].to(cdt)
        if snntorch:
            gu = gs[k].to(cdt) * surrogate_grad(hk - v_th, surrogate, alpha) + gv
            gx[k].copy_(gu)
            gv = beta * gu
            if hard_reset:
                r = (h[k - 1].to(cdt) > v_th) if k > 0 else r_first
                gv = gv if r is None else torch.where(r, 0.0, gv)
        else:
            gh = grad_membrane(gs[k].to(cdt), gv, hk, v_th, v_reset, hard_reset,
                               detach_reset, surrogate, alpha)
            gx[k].copy_(gh / tau if decay_input else gh)
            gv = gh * (1.0 - 1.0 / tau)
    return gv


def _recompute_backward_chunk(gs, gv, gvs, x, v, r_first, gx, c: tuple, snntorch: bool,
                              decay_input: bool, hard_reset: bool, detach_reset: bool,
                              surrogate: str):
    """``_backward_chunk`` with H recomputed from ``x`` and the state ``v`` before the
    chunk, in the same kernel: H is never stored (reads X and dL/dS, writes dL/dX)."""
    hs = []
    for k in range(x.shape[0]):
        _, hk, v = _step(v, x[k].to(v.dtype), c, snntorch, decay_input, hard_reset)
        hs.append(hk)
    return _backward_chunk(gs, gv, gvs, hs, r_first, gx, c, snntorch, decay_input,
                           hard_reset, detach_reset, surrogate)


def _compile_enabled() -> bool:
    return os.environ.get("SPIKE_KERNELS_CPU_COMPILE", "1") not in ("0", "")


def _loop_function(fn: Callable, key: tuple) -> Callable:
    """``fn`` compiled for one flag combination and chunk length ``key`` (eager when
    compiling is off)."""
    return _compiled(fn, key) if _compile_enabled() else fn


@functools.cache
def _compiled(fn: Callable, key: tuple) -> Callable:
    """``fn`` under ``torch.compile``, falling back to ``fn`` itself where compiling fails.

    TorchDynamo keeps its compile cache (8 entries) on the code object, so each flag
    combination and chunk length gets a fresh copy of the code object and thus a cache of
    its own. Tensors come in with their neuron dimension marked dynamic (``_mark``), so
    within a cache only a neuron count of 1 (which PyTorch always specialises) adds an
    entry. (The chunks' storage offsets are not guarded: every chunk reuses the graph.)
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


def _row_list(a: torch.Tensor | None, t0: int, t1: int) -> list[torch.Tensor] | None:
    """Rows ``t0:t1`` of a contiguous ``[T, n]`` tensor, each a ``[n]`` tensor of its own."""
    if a is None:
        return None
    n, base = a.shape[1], a.storage_offset()
    return [_mark(a.new_empty(0).set_(a.untyped_storage(), base + t * n, (n,), (1,)), 0)
            for t in range(t0, t1)]


def _rows(a: torch.Tensor | None, t0: int, t1: int) -> torch.Tensor | None:
    """Rows ``t0:t1`` of a contiguous ``[T, n]`` tensor as a tensor of their own (``set_`` on
    the same storage, not a view: TorchDynamo guards on the base of a view input, so views
    of differently shaped tensors would recompile), its neuron dimension dynamic."""
    if a is None:
        return None
    n = a.shape[1]
    rows = a.new_empty(0).set_(a.untyped_storage(), a.storage_offset() + t0 * n,
                               (t1 - t0, n), (n, 1))
    return _mark(rows, 1)


def _mark(a: torch.Tensor | None, dim: int) -> torch.Tensor | None:
    if a is not None:
        torch._dynamo.maybe_mark_dynamic(a, dim)
    return a


def _flat(a: torch.Tensor | None, T: int, n: int) -> torch.Tensor | None:
    """``a`` as a contiguous ``[T, n]`` (a copy only where its layout needs one)."""
    return None if a is None else a.reshape(T, n).contiguous()


def _initial(value: torch.Tensor | None, fill: float, n: int, dtype, device) -> torch.Tensor:
    """A fresh flat fp32/fp64 state (not a view): ``value`` copied, or ``fill`` everywhere."""
    if value is None:
        state = torch.full((n,), fill, dtype=dtype, device=device)
    else:
        state = value.reshape(-1).to(dtype, copy=True)
    return _mark(state, 0)


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
    """``[(t0, t1), ...]`` covering ``0 .. T-1``: runs of MAX_UNROLL steps, then the rest."""
    bounds = [*range(0, T, MAX_UNROLL), T]
    return list(itertools.pairwise(bounds)) if T else []


@torch.no_grad()  # the loops are never differentiated (backward is hand-written)
def _run_forward(x, v_init, p: NeuronParams, h_dtype, want_v_seq, spike_dtype):
    """The forward over flat ``[T, N]``: ``(spikes or None, final state, H or None, v_seq or
    None)`` with the sequences ``[T, N]`` and contiguous."""
    T, n = x.shape[0], x.shape[1:].numel()
    cdt = compute_dtype(x.dtype)
    v = _initial(v_init, p.v_init, n, cdt, x.device)
    c = _constants(p, cdt, h_dtype, x.device)
    xf = _flat(x, T, n)
    new = lambda dtype: None if dtype is None else x.new_empty((T, n), dtype=dtype)
    s, h, vs = new(spike_dtype), new(h_dtype), new(x.dtype if want_v_seq else None)
    flags = (p.snntorch, p.decay_input, p.hard_reset)
    for t0, t1 in _chunks(T) if n else []:
        key = ("fwd", t1 - t0, x.dtype, spike_dtype, h_dtype, want_v_seq, *flags)
        fn = _loop_function(_forward_chunk, key)
        v = fn(_rows(xf, t0, t1), v, _row_list(s, t0, t1), _row_list(h, t0, t1),
               _row_list(vs, t0, t1), c, *flags)
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
    # .to(copy=True): the returned state is never an alias of v_init or of another output
    v = v.reshape(x.shape[1:]).to(x.dtype, copy=True)
    empty = lambda: x.new_empty(0)  # two separate ones: outputs may not alias
    return (s.view(x.shape), v, empty() if h is None else h.view(x.shape),
            empty() if vs is None else vs.view(x.shape))


@torch.no_grad()
def lif_backward_torch(
    grad_s: torch.Tensor,
    grad_v_last: torch.Tensor | None,
    grad_v_seq: torch.Tensor | None,
    saved: torch.Tensor,
    v_init: torch.Tensor | None,
    p: NeuronParams,
    v_dtype: torch.dtype,
    recompute: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(grad_x, grad_v_init)``, both in ``v_dtype``, from ``saved``: the saved (or
    recomputed) H, or with ``recompute`` x itself. ``grad_s`` may come in another dtype (the
    spikes'). ``v_init`` is needed by the snnTorch zero reset (the reset of step 0 is
    ``v_init > V_th``) and by ``recompute``.

    ``recompute`` is bit-identical to ``recompute_h_torch`` followed by the backward from H,
    without storing H: a first pass over x keeps only the state at each chunk start (one row
    per MAX_UNROLL steps), then each chunk's backward kernel recomputes its H from x and that
    state (reads X twice and dL/dS once, writes dL/dX)."""
    h_seq, x = (None, saved) if recompute else (saved, None)
    return _backward(grad_s, grad_v_last, grad_v_seq, h_seq, x, v_init, p, v_dtype)


def _backward(grad_s, grad_v_last, grad_v_seq, h_seq, x, v_init, p: NeuronParams, v_dtype):
    """The backward from the saved ``h_seq``, or (``h_seq`` None) from H recomputed from
    ``x`` chunk by chunk in the backward kernels."""
    src = x if h_seq is None else h_seq
    T, shape = src.shape[0], src.shape[1:]
    n = shape.numel()
    cdt = compute_dtype(src.dtype)
    gv = _initial(grad_v_last, 0.0, n, cdt, src.device)
    r0 = None  # the snnTorch zero reset of step 0: from v_init (never from the default 0)
    if p.snntorch and p.hard_reset and v_init is not None:
        r0 = _mark(v_init.reshape(-1).to(cdt) > p.v_threshold, 0)
    c = _constants(p, cdt, None, src.device)
    gs, gvs, srcf = (_flat(a, T, n) for a in (grad_s, grad_v_seq, src))
    gx = src.new_empty((T, n), dtype=v_dtype)
    flags = (p.snntorch, p.decay_input, p.hard_reset, p.detach_reset, p.surrogate.name)
    starts = {}  # recompute: the state before each chunk
    if h_seq is None and n:
        v = _initial(v_init, p.v_init, n, cdt, src.device)
        for t0, t1 in _chunks(T):
            starts[t0] = v
            fn = _loop_function(_forward_chunk, ("fwd", t1 - t0, src.dtype, None, None, False,
                                                 *flags[:3]))
            v = fn(_rows(srcf, t0, t1), v, None, None, None, c, *flags[:3])
    for t0, t1 in reversed(_chunks(T)) if n else []:
        r = r0
        if t0 > 0 and p.snntorch and p.hard_reset:  # U[t0-1] > V_th
            r = _mark((srcf[t0 - 1].to(cdt) if h_seq is not None else starts[t0]) >
                      p.v_threshold, 0)
        key = (t1 - t0, src.dtype, grad_s.dtype, None if gvs is None else gvs.dtype,
               r is not None, v_dtype, *flags)
        rows = [_rows(a, t0, t1) for a in (gs, gvs, srcf)] + [_row_list(gx, t0, t1)]
        if h_seq is None:
            fn = _loop_function(_recompute_backward_chunk, ("rc-bwd", *key))
            gv = fn(rows[0], gv, rows[1], rows[2], starts[t0], r, rows[3], c, *flags)
        else:
            fn = _loop_function(_backward_chunk, ("bwd", *key))
            gv = fn(rows[0], gv, rows[1], rows[2], r, rows[3], c, *flags)
    return gx.view(src.shape), gv.reshape(shape).to(v_dtype)


def recompute_h_torch(x: torch.Tensor, v_init: torch.Tensor | None, p: NeuronParams):
    """H[t] (the state U for snnTorch) recomputed from x in the compute dtype, by the same
    graph as the forward's, so bit-identical to it."""
    return _run_forward(x, v_init, p, compute_dtype(x.dtype), False, None)[2].view(x.shape)
