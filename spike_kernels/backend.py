"""Which implementation runs an op: Triton on CUDA, the PyTorch path on the CPU.

``backend="auto"`` picks ``"triton"`` for CUDA tensors and ``"torch"`` otherwise;
``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1`` (set before Triton is imported);
``"torch"`` runs the PyTorch path on any device.
"""

from __future__ import annotations

import functools
import os

import torch

BACKENDS = ("auto", "triton", "torch")


def interpreter_enabled() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """Return ``"triton"`` or ``"torch"`` for a tensor on ``device``, or raise a clear error."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise ValueError("backend='triton' needs the triton package; pip install triton")
        if device.type == "cpu" and not interpreter_enabled():
            raise ValueError(
                "backend='triton' got CPU tensors: Triton runs on CPU only under its "
                "interpreter (set TRITON_INTERPRET=1 before importing triton); use "
                "backend='torch' or 'auto' for the CPU path"
            )
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend='triton' supports cuda tensors, got {device.type}")
    return backend
