"""``nn.Module`` wrappers: the drop-in :class:`LIF` neuron and :func:`reset_net`."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..backend import BACKENDS
from ..ops.lif_op import lif
from ..params import NeuronParams
from ..surrogate import Surrogate, get_surrogate

STEP_MODES = ("m", "s")


class LIF(nn.Module):
    """Leaky integrate-and-fire neuron with SpikingJelly ``LIFNode``'s constructor.

    ``step_mode="m"`` takes ``[T, B, ...]`` and runs the whole time loop in one fused op;
    ``step_mode="s"`` takes ``[B, ...]``, one step per call. The membrane ``v`` carries over
    between calls until :meth:`reset` (or :func:`reset_net`). Equations: :func:`spike_kernels.lif`.
    """

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: str | Surrogate = "sigmoid",
        detach_reset: bool = False,
        step_mode: str = "s",
        backend: str = "auto",
        store_v_seq: bool = False,
        recompute: bool = False,
    ) -> None:
        super().__init__()
        if step_mode not in STEP_MODES:
            raise ValueError(f"step_mode must be 'm' (multi-step) or 's' (single-step), "
                             f"got {step_mode!r}")
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        self.params = NeuronParams(tau, decay_input, v_threshold, v_reset, detach_reset,
                                   get_surrogate(surrogate_function))
        self.step_mode = step_mode
        self.backend = backend
        self.store_v_seq = store_v_seq
        self.recompute = recompute
        self.v: torch.Tensor | None = None
        self.v_seq: torch.Tensor | None = None

    @classmethod
    def from_beta(
        cls,
        beta: float,
        threshold: float = 1.0,
        reset_mechanism: str = "subtract",
        surrogate_function: str | Surrogate = "atan",
        **kwargs,
    ) -> LIF:
        """An snnTorch ``Leaky(beta, threshold, reset_mechanism)`` neuron.

        ``U[t] = beta U[t-1] + X[t] - reset``: here ``tau = 1 / (1 - beta)``,
        ``decay_input=False``, ``detach_reset=True``. Two differences remain: snnTorch fires on
        ``U > threshold`` (we fire on ``>=``), and it subtracts the reset one step late (at
        the next step's update) while we reset in the step that fired.
        """
        if isinstance(beta, bool) or not isinstance(beta, int | float):
            raise TypeError(f"beta must be a float, got {type(beta).__name__}")
        if not (math.isfinite(beta) and 0.0 < beta < 1.0):
            raise ValueError(f"beta must be in (0, 1) (tau = 1 / (1 - beta) > 1), got {beta}")
        resets = {"subtract": None, "zero": 0.0}
        if reset_mechanism not in resets:
            raise ValueError(f"reset_mechanism must be 'subtract' or 'zero', "
                             f"got {reset_mechanism!r}")
        kwargs.setdefault("step_mode", "m")
        return cls(tau=1.0 / (1.0 - beta), decay_input=False, v_threshold=threshold,
                   v_reset=resets[reset_mechanism], surrogate_function=surrogate_function,
                   detach_reset=True, **kwargs)

    def reset(self) -> None:
        """Forget the membrane potential (back to ``v_reset``)."""
        self.v = None
        self.v_seq = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        if self.step_mode == "s":
            x = x.unsqueeze(0)
        v_init = self.v
        if v_init is not None and (v_init.shape != x.shape[1:] or v_init.dtype != x.dtype):
            raise ValueError(
                f"LIF state has shape {tuple(v_init.shape)} and dtype {v_init.dtype} but the "
                f"input step is {tuple(x.shape[1:])} {x.dtype}; call reset() between sequences"
            )
        out = lif(
            x, v_init, tau=p.tau, decay_input=p.decay_input, v_threshold=p.v_threshold,
            v_reset=p.v_reset, surrogate=p.surrogate, detach_reset=p.detach_reset,
            backend=self.backend, recompute=self.recompute, return_v=True,
            return_v_seq=self.store_v_seq,
        )
        s, self.v = out[0], out[1]
        if self.store_v_seq:
            self.v_seq = out[2] if self.step_mode == "m" else out[2][0]
        return s[0] if self.step_mode == "s" else s

    def extra_repr(self) -> str:
        p = self.params
        return (
            f"tau={p.tau}, decay_input={p.decay_input}, v_threshold={p.v_threshold}, "
            f"v_reset={p.v_reset}, surrogate={p.surrogate.name}(alpha={p.surrogate.alpha}), "
            f"detach_reset={p.detach_reset}, step_mode={self.step_mode!r}, "
            f"backend={self.backend!r}, recompute={self.recompute}"
        )


def reset_net(net: nn.Module) -> None:
    """Reset the state of every stateful neuron in ``net`` (any module with ``reset()``
    that keeps membrane state: ours, and SpikingJelly's memory modules)."""
    for module in net.modules():
        if isinstance(module, LIF) or (
            hasattr(module, "reset") and hasattr(module, "_memories")
        ):
            module.reset()
