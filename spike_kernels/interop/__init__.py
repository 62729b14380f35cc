"""Interoperability with SpikingJelly and snnTorch: their surrogate objects, a one-line swap
of SpikingJelly's ``LIFNode`` for :class:`~spike_kernels.LIF`, and an snnTorch ``Leaky``.

Neither library is a dependency: each submodule imports its library only when called.
"""

from __future__ import annotations

from ..surrogate import Surrogate, get_surrogate


def to_surrogate(surrogate: object) -> Surrogate:
    """Resolve a surrogate given as a name, a :class:`Surrogate`, a SpikingJelly surrogate
    object (``surrogate.ATan(alpha=3.0)``) or an snnTorch ``spike_grad``
    (``surrogate.atan(alpha=3.0)``, ``surrogate.sigmoid(slope=25)``)."""
    if isinstance(surrogate, str | Surrogate):
        return get_surrogate(surrogate)
    modules = [getattr(c, "__module__", "") or "" for c in type(surrogate).__mro__]
    if any(m.startswith("spikingjelly.") for m in modules):
        from .spikingjelly import surrogate_from_spikingjelly

        return surrogate_from_spikingjelly(surrogate)
    if (getattr(surrogate, "__module__", "") or "").startswith("snntorch."):
        from .snntorch import surrogate_from_snntorch

        return surrogate_from_snntorch(surrogate)
    raise TypeError(
        "surrogate must be a name, a spike_kernels.surrogate.Surrogate, a SpikingJelly "
        "surrogate object (surrogate.Sigmoid(), ATan(), PiecewiseQuadratic(), PiecewiseExp(), "
        f"SoftSign(), SuperSpike(), Erf()) or an snnTorch spike_grad, got "
        f"{type(surrogate).__name__}"
    )
