"""SpikeBERT's neurons: the multi-step LIF of ``spike_kernels`` or, for comparison, the same
neuron built from SpikingJelly (the one SpikingJelly adapter of the project), and the
firing-rate recorder (forward hooks, no argument threaded through the model).

Every neuron is stateless over calls and time-first: ``[T, ...]`` in, spikes ``[T, ...]`` out
(equations in ``docs/DESIGN.md §1``).
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Iterator, Mapping

import torch
from torch import nn

import spike_kernels
from spike_kernels.surrogate import get_surrogate

from .configuration_spikebert import SpikeBertConfig

# spike_kernels.lif emits spikes in another dtype itself where it supports it (no extra copy)
_LIF_SPIKE_DTYPE = "spike_dtype" in inspect.signature(spike_kernels.lif).parameters


def spike_dtype_for(x: torch.Tensor, mode: str) -> torch.dtype:
    """The dtype spikes are emitted in: under autocast (``mode="auto"``) its 16-bit dtype, so
    the next matmul reads them without a cast (0/1 is exact in any float dtype); else x's."""
    if mode == "auto" and torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class LIFNeuron(nn.Module):
    """Stateless multi-step LIF over the leading time dim (``spike_kernels.lif``)."""

    def __init__(self, config: SpikeBertConfig, v_threshold: float) -> None:
        super().__init__()
        self.kwargs = dict(
            tau=config.tau, decay_input=config.decay_input, v_threshold=v_threshold,
            v_reset=config.v_reset, surrogate=config.surrogate, alpha=config.surrogate_alpha,
            detach_reset=config.detach_reset, backend=config.backend,
            recompute=config.lif_recompute,
        )
        self.spike_dtype = config.spike_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = spike_dtype_for(x, self.spike_dtype)
        if dtype == x.dtype:
            return spike_kernels.lif(x, **self.kwargs)
        if _LIF_SPIKE_DTYPE:
            return spike_kernels.lif(x, spike_dtype=dtype, **self.kwargs)
        return spike_kernels.lif(x, **self.kwargs).to(dtype)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.kwargs.items())


def spikingjelly_lif_node(*, tau: float, decay_input: bool, v_threshold: float,
                          v_reset: float | None, detach_reset: bool, surrogate: str,
                          alpha: float | None = None, backend: str = "auto") -> nn.Module:
    """SpikingJelly's ``LIFNode(step_mode="m")`` with these parameters and the same-named
    surrogate (SpikingJelly spells our ``"atan"`` ``ATan``, the rest in CamelCase)."""
    try:
        from spikingjelly.activation_based import neuron
        from spikingjelly.activation_based import surrogate as sj_surrogate
    except ImportError as err:
        raise ImportError('neuron_impl="spikingjelly" needs spikingjelly '
                          "(pip install spikingjelly)") from err
    sur = get_surrogate(surrogate, alpha)
    cls_name = "ATan" if sur.name == "atan" else sur.name.title().replace("_", "")
    kwargs = dict(tau=tau, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                  detach_reset=detach_reset, step_mode="m",
                  surrogate_function=getattr(sj_surrogate, cls_name)(alpha=sur.alpha))
    if "backend" in inspect.signature(neuron.LIFNode).parameters:  # SpikingJelly < 2
        kwargs["backend"] = "torch" if backend == "auto" else backend
    elif backend != "auto":
        raise ValueError(f"this spikingjelly version chooses its backend itself; "
                         f"use backend='auto', not {backend!r}")
    return neuron.LIFNode(**kwargs)


class SpikingJellyNeuron(nn.Module):
    """The same neuron as :class:`LIFNeuron` from SpikingJelly, reset after every call."""

    def __init__(self, config: SpikeBertConfig, v_threshold: float) -> None:
        super().__init__()
        self.node = spikingjelly_lif_node(
            tau=config.tau, decay_input=config.decay_input, v_threshold=v_threshold,
            v_reset=config.v_reset, detach_reset=config.detach_reset,
            surrogate=config.surrogate, alpha=config.surrogate_alpha, backend=config.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.node(x)
        self.node.reset()
        return s


def make_neuron(config: SpikeBertConfig, v_threshold: float) -> nn.Module:
    """The neuron factory: a multi-step LIF from ``config.neuron_impl``."""
    if config.neuron_impl == "spikingjelly":
        return SpikingJellyNeuron(config, v_threshold)
    return LIFNeuron(config, v_threshold)


# --------------------------------------------------------------------------------------------
# firing rates


class FiringRates(Mapping):
    """``{layer name: firing rate}`` over every forward pass recorded so far: the mean spike
    output of the layer over steps, neurons and real tokens (pads excluded), tokens of all
    passes weighted alike. Values are 0-d fp32 tensors, summed on the model's device without a
    host sync until read."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._tokens: dict[str, torch.Tensor] = {}

    def add(self, name: str, spikes: torch.Tensor, mask: torch.Tensor | None) -> None:
        """``spikes`` ``[T, B, L, D]``; ``mask`` ``[B, L]`` (nonzero = token) or None."""
        per_token = spikes.detach().float().mean(dim=(0, 3))  # [B, L]
        if mask is None:
            total, tokens = per_token.sum(), per_token.new_tensor(float(per_token.numel()))
        else:
            m = (mask != 0).to(per_token.dtype)
            total, tokens = (per_token * m).sum(), m.sum()
        self._sums[name] = self._sums.get(name, 0) + total
        self._tokens[name] = self._tokens.get(name, 0) + tokens

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._sums[name] / self._tokens[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sums)

    def __len__(self) -> int:
        return len(self._sums)


def _rate_names(path: str) -> tuple[str, ...]:
    """Module path inside the base model -> the layer names its spikes are reported under:
    ``encoding`` -> ``embeddings``, ``encoder.layer.0.attention.qkv`` -> its ``query``,
    ``key`` and ``value``, ``...attention.core`` -> ``...attention.attention``."""
    path = path.removeprefix("encoder.")
    if path == "encoding":
        return ("embeddings",)
    if path.endswith(".qkv"):
        head = path.removesuffix("qkv")
        return (f"{head}query", f"{head}key", f"{head}value")
    return (re.sub(r"\.core$", ".attention", path),)


@contextlib.contextmanager
def record_firing_rates(model: nn.Module) -> Iterator[FiringRates]:
    """Record the firing rate of every spiking layer of a SpikeBERT model while the context is
    open (forward hooks, removed on exit)::

        with record_firing_rates(model) as rates:
            model(input_ids, attention_mask)
        rates["layer.0.mlp.fc1"]        # 0-d tensor

    Record in eval mode or without activation checkpointing: a checkpointed block's forward
    runs again in backward and would be counted twice.
    """
    from .modeling_spikebert import SpikeBertModel, is_rate_source

    base = model if isinstance(model, SpikeBertModel) else getattr(model, "spikebert", None)
    if not isinstance(base, SpikeBertModel):
        raise TypeError(f"expected a SpikeBERT model, got {type(model).__name__}")
    rates, state = FiringRates(), {"mask": None}

    def capture_mask(module, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        state["mask"] = mask if isinstance(mask, torch.Tensor) else None

    def hook_for(names: tuple[str, ...]):
        def hook(module, inputs, output):
            if len(names) == 1:
                rates.add(names[0], output, state["mask"])
                return
            for i, name in enumerate(names):  # [T, B, L, n, D]: one layer per slot
                rates.add(name, output.select(-2, i), state["mask"])
        return hook

    handles = [base.register_forward_pre_hook(capture_mask, with_kwargs=True)]
    try:
        for path, module in base.named_modules():
            if is_rate_source(module):
                handles.append(module.register_forward_hook(hook_for(_rate_names(path))))
        yield rates
    finally:
        for h in handles:
            h.remove()


__all__ = [
    "FiringRates",
    "LIFNeuron",
    "SpikingJellyNeuron",
    "make_neuron",
    "record_firing_rates",
    "spike_dtype_for",
    "spikingjelly_lif_node",
]
