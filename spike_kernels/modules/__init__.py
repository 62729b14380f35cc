"""The ``nn.Module`` layer over the ops: the drop-in :class:`LIF` and :class:`SpikingAttention`."""

from .attention import SpikingAttention
from .lif import LIF, reset_net

__all__ = ["LIF", "SpikingAttention", "reset_net"]
