"""Surrogate gradients for the Heaviside spike function.

The forward pass of every surrogate is the Heaviside step ``S = (x >= 0)``; only the
backward pass differs: ``dS/dx ~= g'(x)`` with ``x = H - V_th``. Names and default
``alpha`` follow SpikingJelly (docs/DESIGN.md §1):

=====================  =====  ==================================================
name                   alpha  g'(x)
=====================  =====  ==================================================
sigmoid                4.0    alpha * sig(alpha x) * (1 - sig(alpha x))
atan                   2.0    alpha / (2 * (1 + (pi/2 * alpha * x)^2))
piecewise_quadratic    1.0    max(0, alpha - alpha^2 * |x|)
piecewise_exp          1.0    alpha/2 * exp(-alpha * |x|)
soft_sign              2.0    1 / (2 alpha (1/alpha + |x|)^2)
super_spike            1.0    alpha / (|x| + 1)^2
erf                    2.0    alpha / sqrt(pi) * exp(-(alpha x)^2)
=====================  =====  ==================================================

A surrogate is selected by name (``"atan"``) or as an object carrying its alpha
(``ATan(alpha=3.0)``). ``Surrogate.kind`` is the integer the Triton kernels specialise on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SURROGATE_NAMES: tuple[str, ...] = (
    "sigmoid",
    "atan",
    "piecewise_quadratic",
    "piecewise_exp",
    "soft_sign",
    "super_spike",
    "erf",
)
DEFAULT_ALPHA: dict[str, float] = {
    "sigmoid": 4.0,
    "atan": 2.0,
    "piecewise_quadratic": 1.0,
    "piecewise_exp": 1.0,
    "soft_sign": 2.0,
    "super_spike": 1.0,
    "erf": 2.0,
}


@dataclass(frozen=True)
class Surrogate:
    """A named surrogate gradient with its sharpness ``alpha`` (> 0, finite)."""

    name: str
    alpha: float

    def __post_init__(self) -> None:
        if self.name not in SURROGATE_NAMES:
            raise ValueError(
                f"unknown surrogate {self.name!r}; expected one of {', '.join(SURROGATE_NAMES)}"
            )
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float):
            raise TypeError(f"surrogate alpha must be a float, got {type(self.alpha).__name__}")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"surrogate alpha must be finite and > 0, got {self.alpha}")
        object.__setattr__(self, "alpha", float(self.alpha))

    @property
    def kind(self) -> int:
        """Index of this surrogate in :data:`SURROGATE_NAMES` (a Triton compile-time flag)."""
        return SURROGATE_NAMES.index(self.name)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """g'(x): the surrogate derivative of the spike with respect to ``x = H - V_th``."""
        return surrogate_grad(x, self.name, self.alpha)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Heaviside forward with this surrogate's backward (SpikingJelly's calling convention)."""
        return _SpikeFunction.apply(x, self.name, self.alpha)


def _named(name: str):
    def make(alpha: float | None = None) -> Surrogate:
        return Surrogate(name, DEFAULT_ALPHA[name] if alpha is None else alpha)

    make.__name__ = name
    make.__doc__ = f"The ``{name}`` surrogate (default alpha {DEFAULT_ALPHA[name]})."
    return make


Sigmoid = _named("sigmoid")
ATan = _named("atan")
PiecewiseQuadratic = _named("piecewise_quadratic")
PiecewiseExp = _named("piecewise_exp")
SoftSign = _named("soft_sign")
SuperSpike = _named("super_spike")
Erf = _named("erf")


def get_surrogate(surrogate: str | Surrogate, alpha: float | None = None) -> Surrogate:
    """Resolve a name or a :class:`Surrogate` (optionally overriding its alpha)."""
    if isinstance(surrogate, Surrogate):
        return surrogate if alpha is None else Surrogate(surrogate.name, alpha)
    if isinstance(surrogate, str):
        key = surrogate.lower()
        if key not in DEFAULT_ALPHA:
            raise ValueError(
                f"unknown surrogate {surrogate!r}; expected one of {', '.join(SURROGATE_NAMES)}"
            )
        return Surrogate(key, DEFAULT_ALPHA[key] if alpha is None else alpha)
    raise TypeError(
        f"surrogate must be a name or a spike_kernels.surrogate.Surrogate, "
        f"got {type(surrogate).__name__}"
    )


def surrogate_grad(x: torch.Tensor, name: str, alpha: float) -> torch.Tensor:
    """g'(x) of the named surrogate, in plain PyTorch (the reference for the kernels)."""
    if name == "sigmoid":
        sg = torch.sigmoid(alpha * x)
        return alpha * sg * (1.0 - sg)
    if name == "atan":
        return alpha / (2.0 * (1.0 + (math.pi / 2.0 * alpha * x) ** 2))
    if name == "piecewise_quadratic":
        return torch.clamp(alpha - alpha * alpha * x.abs(), min=0.0)
    if name == "piecewise_exp":
        return alpha / 2.0 * torch.exp(-alpha * x.abs())
    if name == "soft_sign":
        return 1.0 / (2.0 * alpha * (1.0 / alpha + x.abs()) ** 2)
    if name == "super_spike":
        return alpha / (x.abs() + 1.0) ** 2
    if name == "erf":
        return alpha / math.sqrt(math.pi) * torch.exp(-((alpha * x) ** 2))
    raise ValueError(f"unknown surrogate {name!r}; expected one of {', '.join(SURROGATE_NAMES)}")


class _SpikeFunction(torch.autograd.Function):
    """S = Heaviside(x) forward, dS/dx = g'(x) backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, name: str, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.name, ctx.alpha = name, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * surrogate_grad(x, ctx.name, ctx.alpha), None, None


def spike(x: torch.Tensor, surrogate: str | Surrogate = "sigmoid", alpha: float | None = None):
    """Heaviside(x) with the surrogate's gradient (used by the references and the models)."""
    s = get_surrogate(surrogate, alpha)
    return _SpikeFunction.apply(x, s.name, s.alpha)
