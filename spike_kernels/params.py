"""Parameters of the multi-step LIF neuron, validated once and shared by every op, and the
argument checks every op and module uses (``check_real``, ``check_bool``, ...).

Two conventions, time-first ``[T, ...]`` (docs/DESIGN.md §1).

``convention="spikingjelly"`` (SpikingJelly ``LIFNode``)::

    decay_input=True : H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau
    decay_input=False: H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]
    S[t] = Heaviside(H[t] - V_th)                        # fires when H >= V_th
    hard reset: V[t] = V_reset if S[t] else H[t]          # v_reset is a float
    soft reset: V[t] = H[t] - V_th if S[t] else H[t]      # v_reset is None (charge uses 0)

``convention="snntorch"`` (snnTorch 1.0 ``Leaky``, ``reset_delay=True``); the state U is the
membrane before any reset, and the reset of a spike is applied at the next step::

    r[t] = U[t-1] > V_th                                  # detached
    subtract (v_reset=None): U[t] = beta U[t-1] + X[t] - V_th r[t]
    zero     (v_reset=0.0) : U[t] = beta (1 - r[t]) U[t-1] + X[t]
    S[t] = U[t] > V_th                                    # strict '>'
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass, field

import torch

from .surrogate import Surrogate, get_surrogate

CONVENTIONS: tuple[str, ...] = ("spikingjelly", "snntorch")
DEFAULT_TAU = 2.0


def check_real(name: str, value: object) -> float:
    """``value`` as a finite float, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


_check_real = check_real  # old private name, still imported by the attention op and module


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool, else a TypeError naming ``name`` (no truthiness guessing)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_float_dtype(name: str, value: object) -> torch.dtype | None:
    """``None`` or a floating-point ``torch.dtype``, else a TypeError naming ``name``."""
    if value is None:
        return None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype or None, got {value!r}")
    return value


def check_tensor(x: object, name: str = "x") -> torch.Tensor:
    """A floating-point tensor with a leading time dimension, or a clear TypeError/ValueError."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got {x.dtype}"
        )
    if x.dim() == 0:
        raise ValueError(f"{name} must have a leading time dimension [T, ...], got a 0-d tensor")
    return x


@dataclass(frozen=True)
class NeuronParams:
    """Validated LIF parameters. ``v_reset=None`` selects the soft (subtractive) reset.

    ``decay_input`` and ``detach_reset`` default (``None``) to the convention's own:
    True/False for SpikingJelly, False/True for snnTorch (the only values snnTorch has).
    ``beta`` is snnTorch's decay (required there, unused by SpikingJelly, which decays by
    ``1/tau``); ``tau`` is unused by snnTorch and must stay at its default.
    """

    tau: float = DEFAULT_TAU
    decay_input: bool | None = None
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    detach_reset: bool | None = None
    surrogate: Surrogate = field(default_factory=lambda: get_surrogate("sigmoid"))
    convention: str = "spikingjelly"
    beta: float | None = None

    def __post_init__(self) -> None:
        conv = check_choice("convention", self.convention, CONVENTIONS)
        snn = conv == "snntorch"
        tau = check_real("tau", self.tau)
        v_th = check_real("v_threshold", self.v_threshold)
        if v_th < 0:
            raise ValueError(f"v_threshold must be >= 0, got {v_th}")
        v_reset = None if self.v_reset is None else check_real("v_reset", self.v_reset)
        decay_input = (not snn) if self.decay_input is None else check_bool(
            "decay_input", self.decay_input)
        detach_reset = snn if self.detach_reset is None else check_bool(
            "detach_reset", self.detach_reset)
        if not isinstance(self.surrogate, Surrogate):
            raise TypeError("surrogate must be resolved with get_surrogate() first")
        beta = None if self.beta is None else check_real("beta", self.beta)
        if snn:
            if beta is None:
                raise ValueError("convention='snntorch' needs beta (U[t] = beta U[t-1] + X[t])")
            if not 0.0 <= beta <= 1.0:
                raise ValueError(f"beta must be in [0, 1], got {beta}")
            if tau != DEFAULT_TAU:
                raise ValueError("convention='snntorch' decays by beta, not tau: leave tau at "
                                 f"its default {DEFAULT_TAU} and set beta, got tau={tau}")
            if decay_input:
                raise ValueError("convention='snntorch' adds X[t] undecayed: decay_input must "
                                 "be False (or left unset)")
            if not detach_reset:
                raise ValueError("convention='snntorch' always detaches the reset: "
                                 "detach_reset must be True (or left unset)")
            if v_reset not in (None, 0.0):
                raise ValueError("convention='snntorch' resets by subtraction (v_reset=None) "
                                 f"or to zero (v_reset=0.0), got v_reset={v_reset}")
        else:
            if beta is not None:
                raise ValueError("beta is snnTorch's decay: pass convention='snntorch' with "
                                 "it, or use tau (decay 1/tau) for SpikingJelly's LIF")
            if tau <= 1.0:
                raise ValueError(f"tau must be > 1 (membrane time constant), got {tau}")
        for name, value in (("tau", tau), ("v_threshold", v_th), ("v_reset", v_reset),
                            ("decay_input", decay_input), ("detach_reset", detach_reset),
                            ("beta", beta)):
            object.__setattr__(self, name, value)

    @classmethod
    def make(
        cls,
        *,
        tau: float = DEFAULT_TAU,
        decay_input: bool | None = None,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool | None = None,
        surrogate: str | Surrogate = "sigmoid",
        alpha: float | None = None,
        convention: str = "spikingjelly",
        beta: float | None = None,
    ) -> NeuronParams:
        """Build from user-facing arguments (surrogate by name or object, optional alpha)."""
        return cls(tau, decay_input, v_threshold, v_reset, detach_reset,
                   get_surrogate(surrogate, alpha), convention, beta)

    @property
    def snntorch(self) -> bool:
        """True for snnTorch ``Leaky`` semantics (a compile-time flag of the kernels)."""
        return self.convention == "snntorch"

    @property
    def hard_reset(self) -> bool:
        return self.v_reset is not None

    @property
    def charge_reset(self) -> float:
        """The V_reset used in the charge equation (0 for the soft reset)."""
        return 0.0 if self.v_reset is None else self.v_reset

    @property
    def v_init(self) -> float:
        """Default initial membrane: V_reset (0 for the soft reset and for snnTorch)."""
        return 0.0 if self.snntorch else self.charge_reset

    @property
    def decay(self) -> float:
        """dV[t]/dV[t-1] away from the reset: ``1 - 1/tau``, or ``beta`` for snnTorch."""
        return self.beta if self.snntorch else 1.0 - 1.0 / self.tau


# ------------------------------------------------------------------ narrow-H threshold bracket

_BITS = {torch.float16: 16, torch.bfloat16: 16, torch.float32: 32}


def _to_bits(value: float, dtype: torch.dtype) -> int:
    """IEEE bits of ``value`` (an fp32 number) rounded to nearest-even in ``dtype``."""
    f32 = struct.unpack("<I", struct.pack("<f", value))[0]
    if dtype == torch.float32:
        return f32
    if dtype == torch.bfloat16:  # the upper half of fp32, rounded to nearest even
        return ((f32 + 0x7FFF + ((f32 >> 16) & 1)) >> 16) & 0xFFFF
    try:
        return struct.unpack("<H", struct.pack("<e", value))[0]
    except OverflowError:
        return 0xFC00 if value < 0 else 0x7C00  # +-inf, as torch rounds


def _from_bits(bits: int, dtype: torch.dtype) -> float:
    if dtype == torch.float16:
        return struct.unpack("<e", struct.pack("<H", bits))[0]
    if dtype == torch.bfloat16:
        bits <<= 16
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _next(bits: int, up: bool, dtype: torch.dtype) -> int:
    """Bits of the neighbouring ``dtype`` value above (``up``) or below (sign-magnitude)."""
    sign = 1 << (_BITS[dtype] - 1)
    if bits & ~sign == 0:  # +-0: the smallest subnormal of the requested sign
        return 1 if up else sign | 1
    return bits + 1 if (bits & sign == 0) == up else bits - 1


@functools.lru_cache(maxsize=256)
def threshold_bracket(
    v_threshold: float, dtype: torch.dtype, strict: bool = False
) -> tuple[float, float]:
    """``(below, above)``: the ``dtype`` values next to the (fp32) threshold on each side.

    H saved in fp16/bf16 for backward is rounded; where rounding would carry it across the
    threshold, the kernels store ``below`` or ``above`` instead, so that backward's spike
    mask (re-derived from the saved H) agrees with the forward's spikes:
    ``below < V_th <= above`` for ``H >= V_th`` (SpikingJelly), or ``below <= V_th < above``
    for ``strict`` ``H > V_th`` (snnTorch). Pure Python bit arithmetic, cached: it runs on
    every call of the ops and must not touch a device.
    """
    th = struct.unpack("<f", struct.pack("<f", v_threshold))[0]  # as the kernels see it
    r_bits = _to_bits(th, dtype)
    r = _from_bits(r_bits, dtype)
    if r > th or (r == th and not strict):
        return _from_bits(_next(r_bits, False, dtype), dtype), r
    return r, _from_bits(_next(r_bits, True, dtype), dtype)
