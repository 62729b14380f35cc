"""Parameters of the multi-step LIF neuron, validated once and shared by every op.

SpikingJelly ``LIFNode`` semantics (SPEC.md §1), time-first ``[T, ...]``::

    decay_input=True : H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau
    decay_input=False: H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]
    S[t] = Heaviside(H[t] - V_th)                        # fires when H >= V_th
    hard reset: V[t] = V_reset if S[t] else H[t]          # v_reset is a float
    soft reset: V[t] = H[t] - V_th if S[t] else H[t]      # v_reset is None (charge uses 0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .surrogate import Surrogate, get_surrogate


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


@dataclass(frozen=True)
class NeuronParams:
    """Validated LIF parameters. ``v_reset=None`` selects the soft (subtractive) reset."""

    tau: float = 2.0
    decay_input: bool = True
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    detach_reset: bool = False
    surrogate: Surrogate = field(default_factory=lambda: get_surrogate("sigmoid"))

    def __post_init__(self) -> None:
        tau = _check_real("tau", self.tau)
        if tau <= 1.0:
            raise ValueError(f"tau must be > 1 (membrane time constant), got {tau}")
        v_th = _check_real("v_threshold", self.v_threshold)
        if v_th < 0:
            raise ValueError(f"v_threshold must be >= 0, got {v_th}")
        v_reset = None if self.v_reset is None else _check_real("v_reset", self.v_reset)
        for flag in ("decay_input", "detach_reset"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {type(getattr(self, flag)).__name__}")
        if not isinstance(self.surrogate, Surrogate):
            raise TypeError("surrogate must be resolved with get_surrogate() first")
        object.__setattr__(self, "tau", tau)
        object.__setattr__(self, "v_threshold", v_th)
        object.__setattr__(self, "v_reset", v_reset)

    @classmethod
    def make(
        cls,
        *,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool = False,
        surrogate: str | Surrogate = "sigmoid",
        alpha: float | None = None,
    ) -> NeuronParams:
        """Build from user-facing arguments (surrogate by name or object, optional alpha)."""
        return cls(tau, decay_input, v_threshold, v_reset, detach_reset,
                   get_surrogate(surrogate, alpha))

    @property
    def hard_reset(self) -> bool:
        return self.v_reset is not None

    @property
    def charge_reset(self) -> float:
        """The V_reset used in the charge equation (0 for the soft reset)."""
        return 0.0 if self.v_reset is None else self.v_reset

    @property
    def v_init(self) -> float:
        """Default initial membrane potential: V_reset (0 for the soft reset)."""
        return self.charge_reset


def threshold_bracket(v_threshold: float, dtype: torch.dtype) -> tuple[float, float]:
    """``(below, above)``: the largest ``dtype`` value under the (fp32) threshold and the
    smallest one at or over it.

    H saved in fp16/bf16 for backward is rounded; where rounding would carry it across the
    threshold, the kernels store ``below`` or ``above`` instead, so that backward's
    ``H < V_th`` (the reset mask) agrees with the spikes of the forward.
    """
    th = torch.tensor(v_threshold, dtype=torch.float32)
    r = th.to(dtype)
    toward = lambda direction: torch.nextafter(r, torch.tensor(direction, dtype=dtype))
    if r.float() >= th:
        return toward(-math.inf).item(), r.item()
    return r.item(), toward(math.inf).item()
