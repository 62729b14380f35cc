"""spike_kernels: fused Triton kernels for spiking neural networks, with a PyTorch CPU path.

>>> from spike_kernels import LIF, lif, reset_net, replace_neurons, Leaky
"""

from .interop.spikingjelly import replace_neurons
from .modules import LIF, SpikingAttention, reset_net
from .ops.attention_op import attention_map, spiking_attention
from .ops.attention_ref import spiking_attention_ref
from .ops.lif_op import lif
from .ops.lif_ref import lif_ref
from .params import NeuronParams
from .surrogate import (
    SURROGATE_NAMES,
    ATan,
    Erf,
    PiecewiseExp,
    PiecewiseQuadratic,
    Sigmoid,
    SoftSign,
    SuperSpike,
    Surrogate,
    get_surrogate,
    spike,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # Leaky subclasses snntorch.Leaky: snnTorch is imported only when it is asked for.
    if name == "Leaky":
        try:
            from .interop.snntorch import Leaky
        except ImportError as e:
            raise ImportError("spike_kernels.Leaky is snnTorch's Leaky on the fused kernels "
                              "and needs snntorch installed (pip install snntorch)") from e
        return Leaky
    raise AttributeError(f"module 'spike_kernels' has no attribute {name!r}")


__all__ = [
    "LIF",
    "SURROGATE_NAMES",
    "ATan",
    "Erf",
    "Leaky",
    "NeuronParams",
    "PiecewiseExp",
    "PiecewiseQuadratic",
    "Sigmoid",
    "SoftSign",
    "SpikingAttention",
    "SuperSpike",
    "Surrogate",
    "attention_map",
    "get_surrogate",
    "lif",
    "lif_ref",
    "replace_neurons",
    "reset_net",
    "spike",
    "spiking_attention",
    "spiking_attention_ref",
]
