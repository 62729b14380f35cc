"""The custom ops' arguments as typed ``NamedTuple`` groups.

One group per op lists its arguments in schema order, with their types; a field typed as
another group stands for that group's fields, in place (the neuron's scalars, shared by
several ops). From that one definition :func:`custom_op` infers the op's schema, and the
implementation, the fake implementation and the autograd formulas read the arguments by
name (:func:`unflatten`); callers build them by name too (:func:`flatten`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from ..params import NeuronParams
from ..surrogate import get_surrogate


class NeuronArgs(NamedTuple):
    """A :class:`~spike_kernels.params.NeuronParams` as schema scalars (the surrogate by
    name and alpha)."""

    tau: float
    decay_input: bool
    v_threshold: float
    v_reset: float | None
    detach_reset: bool
    surrogate: str
    alpha: float

    @classmethod
    def of(cls, p: NeuronParams) -> NeuronArgs:
        return cls(p.tau, p.decay_input, p.v_threshold, p.v_reset, p.detach_reset,
                   p.surrogate.name, p.surrogate.alpha)

    def params(self, **more: Any) -> NeuronParams:
        """The NeuronParams back (``more``: its other fields, e.g. the convention)."""
        return NeuronParams(tau=self.tau, decay_input=self.decay_input,
                            v_threshold=self.v_threshold, v_reset=self.v_reset,
                            detach_reset=self.detach_reset,
                            surrogate=get_surrogate(self.surrogate, self.alpha), **more)


def _is_group(t: object) -> bool:
    return isinstance(t, type) and issubclass(t, tuple) and hasattr(t, "_fields")


@functools.cache
def _types(group: type) -> dict[str, Any]:
    return typing.get_type_hints(group)


def fields(group: type) -> list[tuple[str, Any]]:
    """``group``'s op arguments in schema order, as (name, type)."""
    out: list[tuple[str, Any]] = []
    for name, t in _types(group).items():
        out.extend(fields(t) if _is_group(t) else [(name, t)])
    return out


def flatten(value: tuple) -> tuple:
    """The op arguments of a group ``value``, in schema order."""
    return tuple(x for v in value for x in (flatten(v) if _is_group(type(v)) else (v,)))


def unflatten(group: type, args: Sequence) -> Any:
    """``group`` from its op arguments ``args`` (schema order), so they are read by name."""
    rest = iter(args)

    def build(g: type) -> tuple:
        return g(*(build(t) if _is_group(t) else next(rest) for t in _types(g).values()))

    value = build(group)
    if next(rest, rest) is not rest:
        raise TypeError(f"too many arguments for {group.__name__}")
    return value


def custom_op(name: str, group: type, returns: Any) -> Callable:
    """``torch.library.custom_op(name)`` for ``impl(args: group)``: the op's arguments are
    ``group``'s fields (schema inferred from their types), handed to ``impl`` by name."""

    def define(impl: Callable) -> torch.library.CustomOpDef:
        def op(*args):
            return impl(unflatten(group, args))

        op.__name__, op.__qualname__, op.__doc__ = impl.__name__, impl.__qualname__, impl.__doc__
        op.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=t)
             for n, t in fields(group)], return_annotation=returns)
        return torch.library.custom_op(name, op, mutates_args=())

    return define


def register_fake(op: torch.library.CustomOpDef, group: type) -> Callable:
    """``op.register_fake`` for ``fake(args: group)``."""

    def register(fake: Callable) -> Callable:
        op.register_fake(lambda *args: fake(unflatten(group, args)))
        return fake

    return register
