"""Triton kernels of spiking self-attention with the attention LIF fused in, and launchers.

Per time step ``Y_t = scale * (Q_t K'^T_t) V_t`` (``K' = m ⊙ K``, ``m`` the key mask; no
softmax), then the LIF over t. Two exact orders, chosen by the caller:

* ``(Q K^T) V`` (flash-attention style, the only exact one under a causal mask): one program
  per (batch*head, block of ``BLOCK_M`` queries) runs the whole time loop with the membrane
  of its ``BLOCK_M x Dh`` tile in registers; per step it walks the key blocks (up to the
  diagonal when causal) with ``S = q k^T`` and ``acc += S v`` tiles in registers. The
  ``L x L`` map never reaches global memory.
* ``Q (K^T V)``: a small kernel first writes ``KV_t = K'^T_t V_t`` (``Dh x Dh``, fp32) per
  (t, batch, head); the fused kernel then computes ``Y_t = scale * q_t KV_t``.

Exactness on spikes: every product is 0/1 and accumulates in fp32 (exact to 2^24).
``S = q k^T`` holds integers <= Dh <= 256, exact in bf16/fp16, so ``S v`` runs on tensor
cores exactly. fp32 operands (``KV``, the backward's ``W``) meet a 16-bit tile as a hi + lo
pair of 16-bit tiles (two dots): exact for integers below 2^16 (bf16) and ~16 significant
bits otherwise.

Precision rule for fp32 inputs: every dot runs on tensor cores as ``tf32x3`` (each operand
split into a tf32 hi part and a tf32 lo remainder, three MMAs, fp32 accumulation). It is
exact whenever each operand holds at most 22 significant bits: spikes, the integer scores
``S`` and integer ``KV``/``W`` sums below 2^22, so spike inputs give the same spikes as an
IEEE fp32 product; real-valued inputs lose a few fp32 ulps per product (the lo x lo term is
dropped). For the full tensor-core rate, emit the spikes in bf16 (``lif(...,
spike_dtype=torch.bfloat16)``), exact for 0/1: the op then runs its 16-bit kernels.

Backward, ``G = dL/dY`` (scaled by nothing; ``scale`` is applied at the end):

1. ``_attn_bwd_dq_kernel`` per query block: the LIF backward over reversed t (membrane
   gradient in registers, H from the forward's saved copy or an fp32 recomputation) gives
   ``G_t``, stored once in the input dtype; then ``dQ = scale (G V'^T ⊙ C) K`` key block by
   key block, or ``dQ = scale G KV^T``.
2. ``(Q K^T) V`` order: ``_attn_bwd_dkdv_kernel`` per key block walks the query blocks:
   ``dV = scale (K Q^T ⊙ C^T) G``, ``dK = scale (V G^T ⊙ C^T) Q``, masked key rows zeroed.
   ``Q (K^T V)`` order: ``W_t = Q_t^T G_t`` by the gram kernel, then
   ``dK = scale V' W^T``, ``dV = scale K' W``.

Saved for backward: H in the input dtype (2 B per output element for bf16; clamped to the
spike's side of the threshold so that rounding cannot flip backward's reset mask), or
nothing with ``recompute`` (backward re-runs the forward kernel into an fp32 scratch H).
Tiles per pass, dtype and head dim (``_TILES``) are the largest that compile for sm_90
without register spills (``bench/sm90.py``); they are not timed on hardware yet.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import interpreter_enabled
from ..params import NeuronParams, threshold_bracket
from .attention_ref import from_layout
from .neuron_triton import charge, fire_and_reset, grad_membrane


@triton.jit
def _mma(a, b, acc, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``acc + a @ b`` (fp32 accumulator). ``UPCAST`` (interpreter with bfloat16 only): the
    Triton 3.9 interpreter multiplies bfloat16 tiles as raw 16-bit integers, so go via fp32;
    the products of bf16 values are exact in fp32 either way."""
    if UPCAST:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    return out


@triton.jit
def _dot_f32(a, b, SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``a @ b`` for ``a`` in the input dtype and ``b`` fp32: hi + lo 16-bit halves of b."""
    if SPLIT:
        hi = b.to(a.dtype)
        lo = (b - hi.to(tl.float32)).to(a.dtype)
        out = _mma(a, hi, None, DOT_PRECISION, UPCAST)
        out = _mma(a, lo, out, DOT_PRECISION, UPCAST)
    else:
        out = _mma(a, b, None, DOT_PRECISION, UPCAST)
    return out


@triton.jit
def _mask_scores(sc, mask_row, offs_m, offs_n, sm_l, n_ok,
                 HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr):
    """Zero the ``[BLOCK_M, BLOCK_N]`` scores of padded keys and (causal) future keys."""
    if HAS_MASK:
        km = tl.load(mask_row + offs_n * sm_l, mask=n_ok, other=0.0)
        sc = tl.where((km != 0)[None, :], sc, 0.0)
    if CAUSAL:
        sc = tl.where(offs_n[None, :] <= offs_m[:, None], sc, 0.0)
    return sc


@triton.jit
def _program_block(NH, L, D, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's batch*head ``pid_bh`` (of ``BH``; batch ``b``, head ``hh``) and block of
    ``BLOCK`` rows (queries or keys, by ``program_id(1)``): ``(pid_bh, BH, b, hh, offs,
    offs_d, ok, d_ok, tile_ok, idx)`` with ``idx`` the rows as int64 ``[BLOCK, 1]``."""
    pid_bh = tl.program_id(0).to(tl.int64)
    BH = tl.num_programs(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    ok = offs < L
    d_ok = offs_d < D
    return (pid_bh, BH, pid_bh // NH, pid_bh % NH, offs, offs_d, ok, d_ok,
            ok[:, None] & d_ok[None, :], offs.to(tl.int64)[:, None])


@triton.jit
def _masked_scores_dot(a, b_head, sb_l, sb_d, c_head, sc_l, sc_d, mask_row, sm_l, offs_m,
                       offs_d, d_ok, L, n_end,
                       HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """``((a B^T) ⊙ M) C`` (fp32 ``[BLOCK_M, BLOCK_D]``) key block by key block up to
    ``n_end``, with M the key mask (and the causal one): the forward's ``(Q K^T) V`` and
    dQ's ``(G V^T) K``."""
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, n_end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < L
        cols = offs_n.to(tl.int64)[:, None]
        nd_ok = n_ok[:, None] & d_ok[None, :]
        bt = tl.load(b_head + cols * sb_l + offs_d[None, :] * sb_d, mask=nd_ok, other=0.0)
        c = tl.load(c_head + cols * sc_l + offs_d[None, :] * sc_d, mask=nd_ok, other=0.0)
        sc = _mma(a, tl.trans(bt), None, DOT_PRECISION, UPCAST)
        sc = _mask_scores(sc, mask_row, offs_m, offs_n, sm_l, n_ok, HAS_MASK, CAUSAL)
        acc = _mma(sc.to(c.dtype), c, acc, DOT_PRECISION, UPCAST)
    return acc


@triton.jit
def _kept_keys(mask_row, offs_n, sm_l, n_ok, HAS_MASK: tl.constexpr):
    """The keys of the block that exist and are not padding."""
    keep = n_ok
    if HAS_MASK:
        km = tl.load(mask_row + offs_n * sm_l, mask=n_ok, other=0.0)
        keep = keep & (km != 0)
    return keep


@triton.jit
def _store_dk_dv(dk, dv, keep, scale, dk_ptr, dv_ptr, c_tile, nd_ok):
    """dK and dV of a key block: scaled, zero on padded keys."""
    dk = tl.where(keep[:, None], dk * scale, 0.0)
    dv = tl.where(keep[:, None], dv * scale, 0.0)
    tl.store(dk_ptr + c_tile, dk.to(dk_ptr.dtype.element_ty), mask=nd_ok)
    tl.store(dv_ptr + c_tile, dv.to(dv_ptr.dtype.element_ty), mask=nd_ok)


@triton.jit(do_not_specialize=["T", "L"])
def _attn_fwd_kernel(

    q_ptr, k_ptr, v_ptr, mask_ptr, kv_ptr, s_ptr, h_ptr,
    sq_t, sq_b, sq_h, sq_l, sq_d,
    sk_t, sk_b, sk_h, sk_l, sk_d,
    sv_t, sv_b, sv_h, sv_l, sv_d,
    ss_t, ss_b, ss_h, ss_l, ss_d,
    sm_b, sm_l,
    T, NH, L, D, scale, tau, v_threshold, v_reset, v_start, h_below, h_above,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, KV_ORDER: tl.constexpr,
    STORE_S: tl.constexpr, STORE_H: tl.constexpr, NARROW_H: tl.constexpr,
    DECAY_INPUT: tl.constexpr,
    HARD_RESET: tl.constexpr, SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_bh, BH, b, hh, offs_m, offs_d, _, d_ok, md_ok, rows = _program_block(
        NH, L, D, BLOCK_M, BLOCK_D)
    pid_m = tl.program_id(1)
    q_tile = q_ptr + b * sq_b + hh * sq_h + rows * sq_l + offs_d[None, :] * sq_d
    s_tile = s_ptr + b * ss_b + hh * ss_h + rows * ss_l + offs_d[None, :] * ss_d
    h_tile = h_ptr + pid_bh * L * D + rows * D + offs_d[None, :]
    h_step = BH * L * D
    k_head = k_ptr + b * sk_b + hh * sk_h
    v_head = v_ptr + b * sv_b + hh * sv_h
    mask_row = mask_ptr + b * sm_b
    kv_tile = kv_ptr + pid_bh * D * D + offs_d[:, None] * D + offs_d[None, :]
    dd_ok = d_ok[:, None] & d_ok[None, :]
    if CAUSAL:
        n_end = tl.minimum(L, (pid_m + 1) * BLOCK_M)
    else:
        n_end = L
    vmem = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32) + v_start
    for _ in range(T):
        q = tl.load(q_tile, mask=md_ok, other=0.0)
        if KV_ORDER:
            kv = tl.load(kv_tile, mask=dd_ok, other=0.0)
            acc = _dot_f32(q, kv, SPLIT, DOT_PRECISION, UPCAST)
            kv_tile += BH * D * D
        else:
            acc = _masked_scores_dot(q, k_head, sk_l, sk_d, v_head, sv_l, sv_d, mask_row, sm_l,
                                     offs_m, offs_d, d_ok, L, n_end, HAS_MASK, CAUSAL,
                                     DOT_PRECISION, UPCAST, BLOCK_M, BLOCK_N, BLOCK_D)
            k_head += sk_t
            v_head += sv_t
        h = charge(vmem, acc * scale, tau, v_reset, DECAY_INPUT)
        fired, vmem = fire_and_reset(h, v_threshold, v_reset, HARD_RESET)
        if STORE_S:
            # via fp32: the interpreter cannot cast int1 to bfloat16 directly
            spike = tl.where(fired, 1.0, 0.0)
            tl.store(s_tile, spike.to(s_ptr.dtype.element_ty), mask=md_ok)
        if STORE_H:
            if NARROW_H:
                # rounding to fp16/bf16 must not carry H across the threshold (backward
                # derives the reset mask H < V_th from it): clamp to the nearest
                # representable values on the spike's side, h_below < V_th <= h_above
                # (a NaN H stays NaN; the enum is passed inline: bound to a local it
                # becomes a value Triton's compiler cannot convert to a tensor)
                h = tl.where(fired, tl.maximum(h, h_above, propagate_nan=tl.PropagateNan.ALL),
                             tl.minimum(h, h_below, propagate_nan=tl.PropagateNan.ALL))
            tl.store(h_tile, h.to(h_ptr.dtype.element_ty), mask=md_ok)
        q_tile += sq_t
        s_tile += ss_t
        h_tile += h_step


@triton.jit(do_not_specialize=["L"])
def _gram_kernel(
    a_ptr, b_ptr, mask_ptr, out_ptr,
    sa_t, sa_b, sa_h, sa_l, sa_d,
    sb_t, sb_b, sb_h, sb_l, sb_d,
    sm_b, sm_l,
    NH, BH, L, D,
    HAS_MASK: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """``out[t, bh] = A'^T B`` (``Dh x Dh``, fp32) with the key mask zeroing rows of A."""
    pid = tl.program_id(0).to(tl.int64)
    t = pid // BH
    bh = pid % BH
    b = bh // NH
    hh = bh % NH
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    a_head = a_ptr + t * sa_t + b * sa_b + hh * sa_h
    b_head = b_ptr + t * sb_t + b * sb_b + hh * sb_h
    acc = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    for start in range(0, L, BLOCK_L):
        offs_l = start + tl.arange(0, BLOCK_L)
        l_ok = offs_l < L
        rows = offs_l.to(tl.int64)[:, None]
        ld_ok = l_ok[:, None] & d_ok[None, :]
        a = tl.load(a_head + rows * sa_l + offs_d[None, :] * sa_d, mask=ld_ok, other=0.0)
        bt = tl.load(b_head + rows * sb_l + offs_d[None, :] * sb_d, mask=ld_ok, other=0.0)
        if HAS_MASK:
            km = tl.load(mask_ptr + b * sm_b + offs_l * sm_l, mask=l_ok, other=0.0)
            a = tl.where((km != 0)[:, None], a, 0.0)
        acc = _mma(tl.trans(a), bt, acc, DOT_PRECISION, UPCAST)
    out = out_ptr + pid * D * D + offs_d[:, None] * D + offs_d[None, :]
    tl.store(out, acc, mask=d_ok[:, None] & d_ok[None, :])


@triton.jit(do_not_specialize=["T", "L"])
def _attn_bwd_dq_kernel(
    gs_ptr, h_ptr, k_ptr, v_ptr, mask_ptr, kv_ptr, g_ptr, dq_ptr,
    sg_t, sg_b, sg_h, sg_l, sg_d,
    sk_t, sk_b, sk_h, sk_l, sk_d,
    sv_t, sv_b, sv_h, sv_l, sv_d,
    sm_b, sm_l,
    T, NH, L, D, scale, tau, decay, v_threshold, v_reset, alpha,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, KV_ORDER: tl.constexpr,
    DECAY_INPUT: tl.constexpr, HARD_RESET: tl.constexpr, DETACH_RESET: tl.constexpr,
    SURROGATE: tl.constexpr, SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Reverse-time LIF backward (G = dL/dY, stored) fused with dQ for one query block."""
    pid_bh, BH, b, hh, offs_m, offs_d, _, d_ok, md_ok, rows = _program_block(
        NH, L, D, BLOCK_M, BLOCK_D)
    pid_m = tl.program_id(1)
    last = (T - 1).to(tl.int64)
    gs_tile = gs_ptr + last * sg_t + b * sg_b + hh * sg_h + rows * sg_l + offs_d[None, :] * sg_d
    # h, g and dq are contiguous [T, B, H, L, Dh]
    c_tile = (last * BH + pid_bh) * L * D + rows * D + offs_d[None, :]
    c_step = BH * L * D
    k_head = k_ptr + last * sk_t + b * sk_b + hh * sk_h
    v_head = v_ptr + last * sv_t + b * sv_b + hh * sv_h
    mask_row = mask_ptr + b * sm_b
    # KV^T: element [i, j] = KV[j, i]
    kv_tile = kv_ptr + (last * BH + pid_bh) * D * D + offs_d[None, :] * D + offs_d[:, None]
    dd_ok = d_ok[:, None] & d_ok[None, :]
    if CAUSAL:
        n_end = tl.minimum(L, (pid_m + 1) * BLOCK_M)
    else:
        n_end = L
    grad_v = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for _ in range(T):
        grad_s = tl.load(gs_tile, mask=md_ok, other=0.0).to(tl.float32)
        h = tl.load(h_ptr + c_tile, mask=md_ok, other=0.0).to(tl.float32)
        grad_h = grad_membrane(grad_s, grad_v, h, v_threshold, v_reset, alpha,
                               HARD_RESET, DETACH_RESET, SURROGATE)
        if DECAY_INPUT:
            grad_y = tl.math.div_rn(grad_h, tau)
        else:
            grad_y = grad_h
        grad_v = grad_h * decay
        g = grad_y.to(g_ptr.dtype.element_ty)
        tl.store(g_ptr + c_tile, g, mask=md_ok)
        if KV_ORDER:
            kv_t = tl.load(kv_tile, mask=dd_ok, other=0.0)
            dq = _dot_f32(g, kv_t, SPLIT, DOT_PRECISION, UPCAST)
            kv_tile -= BH * D * D
        else:
            dq = _masked_scores_dot(g, v_head, sv_l, sv_d, k_head, sk_l, sk_d, mask_row, sm_l,
                                    offs_m, offs_d, d_ok, L, n_end, HAS_MASK, CAUSAL,
                                    DOT_PRECISION, UPCAST, BLOCK_M, BLOCK_N, BLOCK_D)
            k_head -= sk_t
            v_head -= sv_t
        tl.store(dq_ptr + c_tile, (dq * scale).to(dq_ptr.dtype.element_ty), mask=md_ok)
        gs_tile -= sg_t
        c_tile -= c_step


@triton.jit(do_not_specialize=["T", "L"])
def _attn_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, mask_ptr, dk_ptr, dv_ptr,
    sq_t, sq_b, sq_h, sq_l, sq_d,
    sk_t, sk_b, sk_h, sk_l, sk_d,
    sv_t, sv_b, sv_h, sv_l, sv_d,
    sm_b, sm_l,
    T, NH, L, D, scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """``(Q K^T) V`` order: dK and dV of one key block, walking the query blocks."""
    pid_bh, BH, b, hh, offs_n, offs_d, n_ok, d_ok, nd_ok, cols = _program_block(
        NH, L, D, BLOCK_N, BLOCK_D)
    k_tile = k_ptr + b * sk_b + hh * sk_h + cols * sk_l + offs_d[None, :] * sk_d
    v_tile = v_ptr + b * sv_b + hh * sv_h + cols * sv_l + offs_d[None, :] * sv_d
    q_head = q_ptr + b * sq_b + hh * sq_h
    # g, dk and dv are contiguous [T, B, H, L, Dh]
    g_head = g_ptr + pid_bh * L * D
    c_tile = pid_bh * L * D + cols * D + offs_d[None, :]
    c_step = BH * L * D
    keep = _kept_keys(mask_ptr + b * sm_b, offs_n, sm_l, n_ok, HAS_MASK)
    if CAUSAL:
        m_start = (tl.program_id(1) * BLOCK_N // BLOCK_M) * BLOCK_M
    else:
        m_start = 0
    for _ in range(T):
        k = tl.load(k_tile, mask=nd_ok, other=0.0)
        v = tl.load(v_tile, mask=nd_ok, other=0.0)
        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        for start_m in range(m_start, L, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            m_ok = offs_m < L
            rows = offs_m.to(tl.int64)[:, None]
            md_ok = m_ok[:, None] & d_ok[None, :]
            q = tl.load(q_head + rows * sq_l + offs_d[None, :] * sq_d, mask=md_ok, other=0.0)
            g = tl.load(g_head + rows * D + offs_d[None, :], mask=md_ok, other=0.0)
            p_t = _mma(k, tl.trans(q), None, DOT_PRECISION, UPCAST)
            dp_t = _mma(v, tl.trans(g), None, DOT_PRECISION, UPCAST)
            if CAUSAL:
                future = offs_n[:, None] <= offs_m[None, :]
                p_t = tl.where(future, p_t, 0.0)
                dp_t = tl.where(future, dp_t, 0.0)
            dv = _mma(p_t.to(g.dtype), g, dv, DOT_PRECISION, UPCAST)
            dk = _mma(dp_t.to(q.dtype), q, dk, DOT_PRECISION, UPCAST)
        _store_dk_dv(dk, dv, keep, scale, dk_ptr, dv_ptr, c_tile, nd_ok)
        k_tile += sk_t
        v_tile += sv_t
        q_head += sq_t
        g_head += c_step
        c_tile += c_step


@triton.jit(do_not_specialize=["T", "L"])
def _attn_bwd_dkdv_kv_kernel(
    k_ptr, v_ptr, w_ptr, mask_ptr, dk_ptr, dv_ptr,
    sk_t, sk_b, sk_h, sk_l, sk_d,
    sv_t, sv_b, sv_h, sv_l, sv_d,
    sm_b, sm_l,
    T, NH, L, D, scale,
    HAS_MASK: tl.constexpr, SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """``Q (K^T V)`` order: ``dK = scale V' W^T``, ``dV = scale K' W`` with ``W_t = Q^T G``."""
    pid_bh, BH, b, hh, offs_n, offs_d, n_ok, d_ok, nd_ok, cols = _program_block(
        NH, L, D, BLOCK_N, BLOCK_D)
    dd_ok = d_ok[:, None] & d_ok[None, :]
    k_tile = k_ptr + b * sk_b + hh * sk_h + cols * sk_l + offs_d[None, :] * sk_d
    v_tile = v_ptr + b * sv_b + hh * sv_h + cols * sv_l + offs_d[None, :] * sv_d
    w_tile = w_ptr + pid_bh * D * D + offs_d[:, None] * D + offs_d[None, :]
    w_t_tile = w_ptr + pid_bh * D * D + offs_d[None, :] * D + offs_d[:, None]
    c_tile = pid_bh * L * D + cols * D + offs_d[None, :]
    keep = _kept_keys(mask_ptr + b * sm_b, offs_n, sm_l, n_ok, HAS_MASK)
    for _ in range(T):
        k = tl.load(k_tile, mask=nd_ok, other=0.0)
        v = tl.load(v_tile, mask=nd_ok, other=0.0)
        w = tl.load(w_tile, mask=dd_ok, other=0.0)
        w_t = tl.load(w_t_tile, mask=dd_ok, other=0.0)
        dv = _dot_f32(k, w, SPLIT, DOT_PRECISION, UPCAST)
        dk = _dot_f32(v, w_t, SPLIT, DOT_PRECISION, UPCAST)
        _store_dk_dv(dk, dv, keep, scale, dk_ptr, dv_ptr, c_tile, nd_ok)
        k_tile += sk_t
        v_tile += sv_t
        w_tile += BH * D * D
        w_t_tile += BH * D * D
        c_tile += BH * L * D


# (BLOCK_M, BLOCK_N, num_warps) per (pass, 16-bit input?, BLOCK_D), picked from ``ptxas -v``
# for sm_90 (registers and spills at L = 64..128, bench/sm90.py): "rows" = the
# forward and the dQ kernels (BLOCK_M query rows, BLOCK_N keys per inner step), "cols" =
# the dK/dV kernel (BLOCK_N key rows, BLOCK_M queries per inner step), "kv" = the Q (K^T V)
# kernels (BLOCK_N rows of the gram / dK dV kernels). fp32 tiles are smaller: tf32x3 keeps
# hi and lo halves of both operands.
_TILES = {
    ("rows", True, 16): (64, 64, 4), ("rows", True, 32): (64, 64, 4),
    ("rows", True, 64): (64, 64, 8), ("rows", True, 128): (64, 64, 8),
    ("rows", True, 256): (16, 32, 8),
    ("cols", True, 16): (64, 64, 4), ("cols", True, 32): (64, 64, 4),
    ("cols", True, 64): (64, 64, 8), ("cols", True, 128): (32, 32, 8),
    ("cols", True, 256): (16, 32, 8),
    ("rows", False, 16): (32, 32, 4), ("rows", False, 32): (32, 32, 8),
    ("rows", False, 64): (32, 32, 8), ("rows", False, 128): (16, 32, 8),
    ("rows", False, 256): (16, 32, 8),
    ("cols", False, 16): (32, 32, 4), ("cols", False, 32): (16, 32, 8),
    ("cols", False, 64): (16, 32, 8), ("cols", False, 128): (16, 16, 8),
    ("cols", False, 256): (16, 32, 8),
}
_KV_TILES = {
    (True, 16): (64, 4), (True, 32): (64, 4), (True, 64): (64, 4), (True, 128): (16, 8),
    (False, 16): (64, 4), (False, 32): (64, 4), (False, 64): (16, 8), (False, 128): (16, 8),
}


# no FP contraction: the neuron's charge must round as the PyTorch path does (a fused
# multiply-add could flip a spike at an exact tie); the dots accumulate in fp32 either way
_COMPILE = dict(enable_fp_fusion=False)
# Q (K^T V) kernels: their only loop is the time loop, which Triton's pipeliner would
# otherwise prefetch with Dh x Dh fp32 tiles in flight (over 227 KB of shared memory at
# Dh = 128, more than an H100/H200 block may have); one stage keeps them under 100 KB
_COMPILE_KV = dict(_COMPILE, num_stages=1)


def _blocks(kind: str, dtype: torch.dtype, L: int, D: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D, num_warps) of one pass; rows and keys blocks shrink to
    ``L`` rounded up to a power of two (at least 16, the smallest tensor-core tile)."""
    block_d = max(16, triton.next_power_of_2(D))
    fit = max(16, triton.next_power_of_2(L))
    if kind == "kv":
        cap_n, warps = _KV_TILES[(dtype.itemsize == 2, block_d)]
        return 0, min(cap_n, fit), block_d, warps
    cap_m, cap_n, warps = _TILES[(kind, dtype.itemsize == 2, block_d)]
    return min(cap_m, fit), min(cap_n, fit), block_d, warps


def _precision(dtype: torch.dtype, split: bool = True) -> dict:
    """Dot flags. DOT_PRECISION: fp32 inputs use "tf32x3" (tensor cores; each operand is a
    tf32 hi + lo pair, three products): exact where every operand has at most 22
    significant bits, which covers spikes and integer sums below 2^22, and otherwise within
    a few fp32 rounding steps; 16-bit inputs ignore the flag. SPLIT (kernels with fp32
    operands such as KV and W): 16-bit inputs meet them as a hi + lo pair of 16-bit tiles.
    UPCAST: see ``_mma``."""
    fp32 = dtype == torch.float32
    flags = dict(DOT_PRECISION="tf32x3" if fp32 else "tf32",
                 UPCAST=interpreter_enabled() and dtype == torch.bfloat16)
    return dict(flags, SPLIT=not fp32) if split else flags


def _strides(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.stride())


def _mask_args(key_mask: torch.Tensor | None, dummy: torch.Tensor):
    if key_mask is None:
        return dummy, (0, 0)
    return key_mask, _strides(key_mask)


def gram_triton(a: torch.Tensor, b: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """``A'^T B`` per (t, batch, head): ``[T, B*H, Dh, Dh]`` fp32, A's masked rows zeroed."""
    T, B, H, L, D = a.shape
    out = torch.empty((T, B * H, D, D), dtype=torch.float32, device=a.device)
    _, block_l, block_d, warps = _blocks("kv", a.dtype, L, D)
    mask, mask_strides = _mask_args(key_mask, a)
    _gram_kernel[(T * B * H,)](
        a, b, mask, out, *_strides(a), *_strides(b), *mask_strides,
        H, B * H, L, D,
        HAS_MASK=key_mask is not None, **_precision(a.dtype, split=False),
        BLOCK_L=block_l, BLOCK_D=block_d, num_warps=warps, **_COMPILE,
    )
    return out


def _forward_launch(q, k, v, key_mask, kv, p: NeuronParams, scale, causal, s5, h_seq,
                    store_s: bool, store_h: bool) -> None:
    T, B, H, L, D = q.shape
    block_m, block_n, block_d, warps = _blocks("rows", q.dtype, L, D)
    mask, mask_strides = _mask_args(key_mask, q)
    narrow_h = store_h and h_seq.element_size() < 4
    h_below, h_above = threshold_bracket(p.v_threshold, h_seq.dtype) if narrow_h else (0.0, 0.0)
    _attn_fwd_kernel[(B * H, triton.cdiv(L, block_m))](
        q, k, v, mask, q if kv is None else kv,
        s5 if store_s else q, h_seq if store_h else q,
        *_strides(q), *_strides(k), *_strides(v), *(_strides(s5) if store_s else (0,) * 5),
        *mask_strides,
        T, H, L, D, scale, p.tau, p.v_threshold, p.charge_reset, p.v_init, h_below, h_above,
        HAS_MASK=key_mask is not None, CAUSAL=causal, KV_ORDER=kv is not None,
        STORE_S=store_s, STORE_H=store_h, NARROW_H=narrow_h, DECAY_INPUT=p.decay_input,
        HARD_RESET=p.hard_reset, **_precision(q.dtype),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=warps,
        **(_COMPILE if kv is None else _COMPILE_KV),
    )


def attention_forward_triton(
    q, k, v, key_mask, p: NeuronParams, scale: float, causal: bool, kv_order: bool,
    save_h: bool, out_blhd: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(spikes, H or empty)``: spikes in q's dtype, ``[T,B,H,L,Dh]`` or
    ``[T,B,L,H*Dh]``; H contiguous ``[T,B,H,L,Dh]`` in q's dtype."""
    T, B, H, L, D = q.shape
    out_shape = (T, B, L, H * D) if out_blhd else (T, B, H, L, D)
    s = torch.empty(out_shape, dtype=q.dtype, device=q.device)
    h_seq = torch.empty(q.shape, dtype=q.dtype, device=q.device) if save_h else q.new_empty(0)
    if q.numel() == 0:
        return s, h_seq
    kv = gram_triton(k, v, key_mask) if kv_order else None
    _forward_launch(q, k, v, key_mask, kv, p, scale, causal, from_layout(s, q.shape, out_blhd),
                    h_seq, store_s=True, store_h=save_h)
    return s, h_seq


def attention_backward_triton(
    grad_s, q, k, v, key_mask, saved_h, p: NeuronParams, scale: float, causal: bool,
    kv_order: bool, recompute: bool, out_blhd: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(dq, dk, dv)`` (contiguous, q's dtype) by the kernels of the module docstring."""
    T, B, H, L, D = q.shape
    dq, dk, dv = (torch.empty(q.shape, dtype=q.dtype, device=q.device) for _ in range(3))
    if q.numel() == 0:
        return dq, dk, dv
    kv = gram_triton(k, v, key_mask) if kv_order else None
    if recompute:
        h_seq = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        _forward_launch(q, k, v, key_mask, kv, p, scale, causal, q, h_seq,
                        store_s=False, store_h=True)
    else:
        h_seq = saved_h
    gs5 = from_layout(grad_s, q.shape, out_blhd)
    g = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    block_m, block_n, block_d, warps = _blocks("rows", q.dtype, L, D)
    mask, mask_strides = _mask_args(key_mask, q)
    _attn_bwd_dq_kernel[(B * H, triton.cdiv(L, block_m))](
        gs5, h_seq, k, v, mask, q if kv is None else kv, g, dq,
        *_strides(gs5), *_strides(k), *_strides(v), *mask_strides,
        T, H, L, D, scale, p.tau, 1.0 - 1.0 / p.tau, p.v_threshold, p.charge_reset,
        p.surrogate.alpha,
        HAS_MASK=key_mask is not None, CAUSAL=causal, KV_ORDER=kv_order,
        DECAY_INPUT=p.decay_input, HARD_RESET=p.hard_reset, DETACH_RESET=p.detach_reset,
        SURROGATE=p.surrogate.kind, **_precision(q.dtype),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=warps,
        **(_COMPILE_KV if kv_order else _COMPILE),
    )
    del h_seq
    if kv_order:
        w = gram_triton(q, g, None)
        _, block_n, block_d, warps = _blocks("kv", q.dtype, L, D)
        _attn_bwd_dkdv_kv_kernel[(B * H, triton.cdiv(L, block_n))](
            k, v, w, mask, dk, dv, *_strides(k), *_strides(v), *mask_strides,
            T, H, L, D, scale,
            HAS_MASK=key_mask is not None, **_precision(q.dtype),
            BLOCK_N=block_n, BLOCK_D=block_d, num_warps=warps, **_COMPILE_KV,
        )
    else:
        block_m, block_n, block_d, warps = _blocks("cols", q.dtype, L, D)
        _attn_bwd_dkdv_kernel[(B * H, triton.cdiv(L, block_n))](
            q, k, v, g, mask, dk, dv, *_strides(q), *_strides(k), *_strides(v), *mask_strides,
            T, H, L, D, scale,
            HAS_MASK=key_mask is not None, CAUSAL=causal,
            **_precision(q.dtype, split=False),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=warps, **_COMPILE,
        )
    return dq, dk, dv
