"""snnTorch 1.0 interop: :class:`Leaky`, snnTorch's ``Leaky`` on the fused LIF kernels.

    import spike_kernels as sk
    lif1 = sk.Leaky(beta=0.9)          # was: snn.Leaky(beta=0.9)

It *is* an ``snntorch.Leaky`` (a subclass: same constructor, buffers, ``state_dict``,
``init_leaky``, ``reset_mem``, ``snntorch.utils.reset``), whose forward runs
:func:`spike_kernels.lif` with ``convention="snntorch"`` (one fused op, no Python loop)::

    r[t] = U[t-1] > threshold  (detached)     U[t] = beta U[t-1] + X[t] - threshold r[t]
    (zero reset: U[t] = beta (1 - r[t]) U[t-1] + X[t])          S[t] = U[t] > threshold

``step_mode="s"`` (default, snnTorch's per-step loop) or ``"m"``: ``[T, B, ...]`` in one
call, returning ``(spikes [T, ...], mem [T, ...])``.
"""

from __future__ import annotations

import torch
from snntorch import Leaky as _SnnLeaky

from ..modules.lif import _check_step_mode
from ..ops.lif_op import lif
from ..surrogate import Surrogate

# snnTorch's spike_grad closures -> (our surrogate, name of the closure's parameter).
# fast_sigmoid(k): 1 / (k|x| + 1)^2 = (2/k) * soft_sign(alpha=k); the factor 2/k scales the
# gradient reaching the spikes, which equals scaling g' because the reset is detached.
_SPIKE_GRADS = {
    "atan.<locals>.inner": ("atan", "alpha"),
    "sigmoid.<locals>.inner": ("sigmoid", "slope"),
    "fast_sigmoid.<locals>.inner": ("soft_sign", "slope"),
}


def spike_grad_from_snntorch(fn: object) -> tuple[Surrogate, float]:
    """``surrogate.atan(alpha)`` / ``sigmoid(slope)`` / ``fast_sigmoid(slope)`` ->
    ``(Surrogate, gradient scale)``."""
    qualname = getattr(fn, "__qualname__", type(fn).__name__)
    if getattr(fn, "__module__", None) != "snntorch.surrogate" or qualname not in _SPIKE_GRADS:
        raise TypeError(
            f"spike_grad {qualname} has no fused equivalent; supported: snntorch.surrogate."
            f"atan(alpha), sigmoid(slope), fast_sigmoid(slope) (or None: atan(2.0))")
    name, param = _SPIKE_GRADS[qualname]
    cells = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__),
                     strict=True))
    value = float(cells[param])
    if name == "soft_sign":
        return Surrogate(name, value), 2.0 / value
    return Surrogate(name, value), 1.0


def surrogate_from_snntorch(fn: object) -> Surrogate:
    """An snnTorch spike_grad as a :class:`Surrogate` (for :class:`~spike_kernels.LIF`)."""
    surrogate, scale = spike_grad_from_snntorch(fn)
    if scale != 1.0:
        raise TypeError("fast_sigmoid has no exact LIF surrogate; use spike_kernels.Leaky "
                        "(snnTorch's Leaky, which supports it) or surrogate 'soft_sign'")
    return surrogate


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient times ``scale`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def _unsupported(**options: bool) -> None:
    bad = [name for name, is_set in options.items() if is_set]
    if bad:
        raise NotImplementedError(
            f"spike_kernels.Leaky does not support {', '.join(bad)}; use snntorch.Leaky for "
            f"these (the fused kernel has a scalar beta and threshold, subtract/zero reset "
            f"one step late, and a surrogate gradient)")


class Leaky(_SnnLeaky):
    """snnTorch ``Leaky`` on the fused kernels (module docstring). Same arguments as
    ``snntorch.Leaky`` plus ``step_mode``, ``backend`` and ``spike_dtype``.

    Supported: scalar ``beta`` (``learn_beta`` too: its gradient is sum_t dL/dU[t] dU[t]/dbeta;
    ``step_mode="m"`` then runs the forward twice), scalar ``threshold``, ``reset_mechanism``
    'subtract'/'zero', ``spike_grad`` atan/sigmoid/fast_sigmoid, ``init_hidden``, ``output``,
    ``graded_spikes_factor``, explicit ``mem``. The others (``reset_delay=False``,
    ``learn_threshold``, ``inhibition``, ``state_quant``, ``surrogate_disable``,
    ``reset_mechanism='none'``, per-neuron beta/threshold) raise NotImplementedError.
    Spikes come in the input's dtype (snnTorch's are always fp32).
    """

    def __init__(self, beta, threshold=1.0, spike_grad=None, surrogate_disable=False,
                 init_hidden=False, inhibition=False, learn_beta=False, learn_threshold=False,
                 reset_mechanism="subtract", state_quant=False, output=False,
                 graded_spikes_factor=1.0, learn_graded_spikes_factor=False, reset_delay=True,
                 *, step_mode: str = "s", backend: str = "auto",
                 spike_dtype: torch.dtype | None = None) -> None:
        _unsupported(**{"reset_delay=False": not reset_delay, "learn_threshold": learn_threshold,
                        "inhibition": inhibition, "state_quant": bool(state_quant),
                        "surrogate_disable": surrogate_disable,
                        "reset_mechanism='none'": reset_mechanism == "none"})
        for name, value in (("beta", beta), ("threshold", threshold)):
            if torch.as_tensor(value).numel() != 1:
                _unsupported(**{f"a per-neuron {name} (shape "
                                f"{tuple(torch.as_tensor(value).shape)})": True})
        surrogate, self_scale = spike_grad_from_snntorch(spike_grad) if spike_grad else (
            Surrogate("atan", 2.0), 1.0)
        super().__init__(beta, threshold, spike_grad, surrogate_disable, init_hidden,
                         inhibition, learn_beta, learn_threshold, reset_mechanism, state_quant,
                         output, graded_spikes_factor, learn_graded_spikes_factor, reset_delay)
        self.surrogate, self.grad_scale = surrogate, self_scale
        self.step_mode = _check_step_mode(step_mode)
        self.backend = backend
        self.spike_dtype = spike_dtype

    def forward(self, input_: torch.Tensor, mem: torch.Tensor | None = None):
        """One step ``[B, ...]`` (``step_mode="s"``) or a sequence ``[T, B, ...]`` ("m").
        Returns ``(spk, mem)``, or ``spk`` alone with ``init_hidden=True`` and
        ``output=False`` (as snnTorch); in "m" mode ``mem`` is the membrane at every step."""
        if self.init_hidden and mem is not None:
            raise TypeError("`mem` should not be passed as an argument while `init_hidden=True`")
        if not isinstance(input_, torch.Tensor):
            raise TypeError(f"Leaky expects a torch.Tensor, got {type(input_).__name__}")
        if self.reset_mechanism not in ("subtract", "zero"):  # changed after construction
            _unsupported(**{f"reset_mechanism={self.reset_mechanism!r}": True})
        if mem is not None:
            self.mem = mem
        multi = self.step_mode == "m"
        x = input_ if multi else input_.unsqueeze(0)
        if self.mem.shape != x.shape[1:]:
            if self.mem.numel() != 0:  # snnTorch would silently restart from zeros
                raise ValueError(
                    f"Leaky state mem has shape {tuple(self.mem.shape)} but the input step is "
                    f"{tuple(x.shape[1:])}; call init_leaky()/reset_mem() (or "
                    f"snntorch.utils.reset) between sequences")
            self.mem = torch.zeros_like(x[0])
        beta = self.beta.clamp(0, 1)
        beta_value, threshold = float(beta.detach()), float(self.threshold.detach())
        zero = self.reset_mechanism == "zero"
        if beta.requires_grad and torch.is_grad_enabled():
            x = x + (beta - beta.detach()).to(x.dtype) * self._dU_dbeta(x, beta_value,
                                                                        threshold, zero)
        s, v_last, *v_seq = lif(
            x, self.mem, v_threshold=threshold, v_reset=0.0 if zero else None,
            surrogate=self.surrogate, convention="snntorch", beta=beta_value,
            spike_dtype=self.spike_dtype, backend=self.backend, return_v=True,
            return_v_seq=multi)
        self.mem = v_last
        spk = s if multi else s[0]
        if self.grad_scale != 1.0:
            spk = _ScaleGrad.apply(spk, self.grad_scale)
        if self.graded_spikes_factor.requires_grad or float(self.graded_spikes_factor) != 1.0:
            spk = spk * self.graded_spikes_factor
        out_mem = v_seq[0] if multi else v_last
        if self.init_hidden and not self.output:
            return spk
        return spk, out_mem

    def _dU_dbeta(self, x: torch.Tensor, beta: float, threshold: float,
                  zero: bool) -> torch.Tensor:
        """dU[t]/dbeta at fixed U[t-1] (detached): U[t-1], times (1 - r[t]) for the zero reset.
        Added to X as (beta - beta.detach()) * this (zero in value), it routes dL/dU[t] (the
        kernel's dL/dX[t], as dU[t]/dX[t] = 1) to beta."""
        u_prev = self.mem.detach()[None]
        if x.shape[0] > 1:
            with torch.no_grad():
                _, u_seq = lif(x.detach(), self.mem.detach(), v_threshold=threshold,
                               v_reset=0.0 if zero else None, surrogate=self.surrogate,
                               convention="snntorch", beta=beta, backend=self.backend,
                               return_v_seq=True)
            u_prev = torch.cat((u_prev, u_seq[:-1]))
        return u_prev * (u_prev <= threshold).to(u_prev.dtype) if zero else u_prev

    def extra_repr(self) -> str:
        return (f"beta={float(self.beta)}, threshold={float(self.threshold)}, "
                f"reset_mechanism={self.reset_mechanism!r}, "
                f"surrogate={self.surrogate.name}(alpha={self.surrogate.alpha})"
                + (f"*{self.grad_scale:g}" if self.grad_scale != 1.0 else "")
                + f", step_mode={self.step_mode!r}, backend={self.backend!r}")


__all__ = ["Leaky", "spike_grad_from_snntorch", "surrogate_from_snntorch"]
