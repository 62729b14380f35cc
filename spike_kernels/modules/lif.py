"""``nn.Module`` wrappers: the drop-in :class:`LIF` neuron and :func:`reset_net`."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ..backend import BACKENDS
from ..ops.lif_op import lif
from ..params import NeuronParams
from ..surrogate import Surrogate

STEP_MODES = ("s", "m")
# Attributes backed by properties: assigned through them even when the value is an
# nn.Module (a SpikingJelly surrogate), which nn.Module.__setattr__ would register instead.
_LIVE = frozenset({"tau", "decay_input", "v_threshold", "v_reset", "detach_reset",
                   "surrogate_function", "beta", "step_mode", "store_v_seq"})


def _check_step_mode(step_mode: object) -> str:
    if step_mode not in STEP_MODES:
        raise ValueError(f"step_mode must be 'm' (multi-step) or 's' (single-step), "
                         f"got {step_mode!r}")
    return step_mode


class LIF(nn.Module):
    """Leaky integrate-and-fire neuron with SpikingJelly ``LIFNode``'s constructor and
    attributes (equations: :func:`spike_kernels.lif`).

    ``step_mode="m"`` takes ``[T, B, ...]`` and runs the whole time loop in one fused op;
    ``step_mode="s"`` takes ``[B, ...]``, one step per call. The membrane ``v`` carries over
    between calls until :meth:`reset` (or :func:`reset_net`, or SpikingJelly's
    ``functional.reset_net``); :meth:`detach` cuts its graph (``functional.detach_net``).
    ``tau, decay_input, v_threshold, v_reset, detach_reset, surrogate_function, step_mode`` are
    live attributes: setting one (validated) changes the next step. ``surrogate_function``
    takes a name, a :class:`~spike_kernels.surrogate.Surrogate` or SpikingJelly's objects
    (``surrogate.ATan(alpha=3.0)``).

    ``convention="snntorch"`` with ``beta`` gives snnTorch ``Leaky``'s exact dynamics (see
    :meth:`from_beta`; ``v`` is then snnTorch's ``mem``). ``spike_dtype`` sets the dtype of
    the spikes (default the input's); the membrane stays fp32 (fp64 for fp64 inputs).
    """

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool | None = None,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: object = "sigmoid",
        detach_reset: bool | None = None,
        step_mode: str = "s",
        backend: str = "auto",
        store_v_seq: bool = False,
        recompute: bool = False,
        *,
        convention: str = "spikingjelly",
        beta: float | None = None,
        spike_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if spike_dtype is not None and not (isinstance(spike_dtype, torch.dtype)
                                            and spike_dtype.is_floating_point):
            raise TypeError(f"spike_dtype must be a floating torch.dtype or None, "
                            f"got {spike_dtype!r}")
        # decay_input / detach_reset None: the convention's own (LIFNode's True / False)
        self.params = NeuronParams(tau, decay_input, v_threshold, v_reset, detach_reset,
                                   _surrogate(surrogate_function), convention, beta)
        self.step_mode = step_mode
        self.backend = backend
        self.recompute = recompute
        self.spike_dtype = spike_dtype
        self.v: torch.Tensor | None = None
        self.store_v_seq = store_v_seq  # also sets v_seq = None

    # ---------------------------------------------------------------- live attributes

    def _set(self, **change) -> None:
        self.params = dataclasses.replace(self.params, **change)  # validated again

    tau = property(lambda self: self.params.tau, lambda self, v: self._set(tau=v),
                   doc="Membrane time constant (> 1).")
    decay_input = property(lambda self: self.params.decay_input,
                           lambda self, v: self._set(decay_input=v))
    v_threshold = property(lambda self: self.params.v_threshold,
                           lambda self, v: self._set(v_threshold=v))
    v_reset = property(lambda self: self.params.v_reset, lambda self, v: self._set(v_reset=v),
                       doc="Hard-reset potential; None selects the soft (subtractive) reset.")
    detach_reset = property(lambda self: self.params.detach_reset,
                            lambda self, v: self._set(detach_reset=v))
    surrogate_function = property(
        lambda self: self.params.surrogate,
        lambda self, v: self._set(surrogate=_surrogate(v)),
        doc="The surrogate (callable like SpikingJelly's: Heaviside forward, g' backward).")
    beta = property(lambda self: self.params.beta, lambda self, v: self._set(beta=v),
                    doc="snnTorch's decay (convention='snntorch' only).")

    @property
    def convention(self) -> str:
        return self.params.convention

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        self._step_mode = _check_step_mode(value)

    @property
    def store_v_seq(self) -> bool:
        """Keep the membrane after every step in ``v_seq`` ``[T, ...]``: the last call's in
        ``'m'`` mode, every step since :meth:`reset` in ``'s'`` mode (as ``LIFNode``)."""
        return self._store_v_seq

    @store_v_seq.setter
    def store_v_seq(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"store_v_seq must be a bool, got {type(value).__name__}")
        self._store_v_seq = value
        self.v_seq = None

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LIVE:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def supported_step_mode(self) -> tuple[str, ...]:
        return STEP_MODES

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_beta(
        cls,
        beta: float,
        threshold: float = 1.0,
        reset_mechanism: str = "subtract",
        surrogate_function: object = "atan",
        **kwargs,
    ) -> LIF:
        """snnTorch's ``Leaky(beta, threshold, reset_mechanism)`` (``reset_delay=True``, its
        default), exactly: ``convention="snntorch"``, fires on ``U > threshold``, the reset
        (detached) lands at the next step; ``v`` is snnTorch's ``mem``.

        Single-step (``step_mode="s"``, snnTorch's per-step loop) unless ``step_mode="m"``
        is passed; other keyword arguments (``backend``, ``store_v_seq``, ``spike_dtype``,
        ...) pass through. ``beta`` is used as given (snnTorch rounds it to fp32 first;
        :class:`spike_kernels.Leaky` does too). For ``reset_delay=False``, or a reset that is
        not detached, use SpikingJelly's convention: ``LIF(tau=1/(1-beta), decay_input=False,
        v_reset=None, detach_reset=...)`` resets in the step that fired (and fires on ``>=``).
        """
        if isinstance(beta, bool) or not isinstance(beta, int | float):
            raise TypeError(f"beta must be a float, got {type(beta).__name__}")
        if not (math.isfinite(beta) and 0.0 <= beta <= 1.0):
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        resets = {"subtract": None, "zero": 0.0}
        if reset_mechanism not in resets:
            raise ValueError(f"reset_mechanism must be 'subtract' or 'zero' ('none' has no "
                             f"fused equivalent), got {reset_mechanism!r}")
        for name in ("tau", "decay_input", "detach_reset", "v_reset", "convention"):
            if name in kwargs:
                raise ValueError(
                    f"from_beta builds snnTorch's Leaky, which has no {name} to set (it "
                    f"decays by beta, adds X undecayed, detaches the reset and resets by "
                    f"reset_mechanism); for other dynamics build LIF(...) directly")
        settings = dict(v_threshold=threshold, v_reset=resets[reset_mechanism],
                        surrogate_function=surrogate_function, step_mode="s")
        settings.update(kwargs)
        return cls(convention="snntorch", beta=float(beta), **settings)

    @classmethod
    def from_spikingjelly(cls, node: nn.Module, *, backend: str = "auto",
                          recompute: bool = False) -> LIF:
        """This neuron with a SpikingJelly ``LIFNode``'s parameters, step mode and state."""
        from ..interop.spikingjelly import from_spikingjelly

        return from_spikingjelly(node, backend=backend, recompute=recompute, cls=cls)

    # ---------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget the membrane potential (back to ``v_reset``) and ``v_seq``."""
        self.v = None
        self.v_seq = None

    def detach(self) -> None:
        """Cut the state from the graph of earlier steps (truncated BPTT)."""
        if self.v is not None:
            self.v = self.v.detach()
        if self.v_seq is not None:
            self.v_seq = self.v_seq.detach()

    # ---------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        single = self.step_mode == "s"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"LIF expects a torch.Tensor, got {type(x).__name__}")
        if single:
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
            convention=p.convention, beta=p.beta, spike_dtype=self.spike_dtype,
            backend=self.backend, recompute=self.recompute, return_v=True,
            return_v_seq=self.store_v_seq,
        )
        s, self.v = out[0], out[1]
        if self.store_v_seq:
            # 's' mode appends each step until reset(), as LIFNode does
            keep = single and self.v_seq is not None and self.v_seq.shape[1:] == out[2].shape[1:]
            self.v_seq = torch.cat((self.v_seq, out[2])) if keep else out[2]
        return s[0] if single else s

    def extra_repr(self) -> str:
        p = self.params
        if p.snntorch:
            return (
                f"convention='snntorch', beta={p.beta}, v_threshold={p.v_threshold}, "
                f"reset_mechanism={'subtract' if p.v_reset is None else 'zero'!r}, "
                f"surrogate={p.surrogate.name}(alpha={p.surrogate.alpha}), "
                f"step_mode={self.step_mode!r}, backend={self.backend!r}"
            )
        return (
            f"tau={p.tau}, decay_input={p.decay_input}, v_threshold={p.v_threshold}, "
            f"v_reset={p.v_reset}, surrogate={p.surrogate.name}(alpha={p.surrogate.alpha}), "
            f"detach_reset={p.detach_reset}, step_mode={self.step_mode!r}, "
            f"backend={self.backend!r}, recompute={self.recompute}"
        )


def _surrogate(surrogate: object) -> Surrogate:
    from ..interop import to_surrogate

    return to_surrogate(surrogate)


def reset_net(net: nn.Module) -> None:
    """Reset the state of every stateful neuron in ``net``, at any depth: ours (:class:`LIF`,
    :class:`spike_kernels.Leaky`), SpikingJelly's memory modules and snnTorch's neurons
    (those with ``reset_mem()``)."""
    for module in net.modules():
        if isinstance(module, LIF) or (
            hasattr(module, "reset") and hasattr(module, "_memories")
        ):
            module.reset()
        elif callable(getattr(module, "reset_mem", None)):
            module.reset_mem()
