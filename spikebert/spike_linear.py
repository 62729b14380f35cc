"""A Linear layer for spike inputs that keeps its input for backward in 16 bits.

``y = x W^T + b`` as ``nn.Linear``; backward needs ``x`` for ``dW = g^T x``. Inside SpikeBERT
every such ``x`` is a spike tensor or a residual sum of spikes: small non-negative integers,
exact in bfloat16 up to 256 (the stream of an N-block model holds at most 2N + 1). Saving
``x`` in bf16 halves the activation memory of every spiking layer's input, with bit-identical
gradients. Used by the ``neuron_impl="spike_kernels"`` model only (docs/DESIGN.md §2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SAVED_DTYPE = torch.bfloat16


class _SpikeLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        y = F.linear(x, weight, bias)  # autocast (if on) applies here as in nn.Linear
        ctx.compute_dtype, ctx.input_dtype = y.dtype, x.dtype
        ctx.save_for_backward(x.to(SAVED_DTYPE) if x.dtype.itemsize > 2 else x, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        dtype = ctx.compute_dtype  # the forward matmul's dtype (bf16 under autocast)
        grad = grad.to(dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight.to(dtype)).to(ctx.input_dtype)
        if ctx.needs_input_grad[1]:
            g2 = grad.reshape(-1, grad.shape[-1])
            grad_w = (g2.t() @ x.reshape(-1, x.shape[-1]).to(dtype)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.reshape(-1, grad.shape[-1]).sum(0, dtype=torch.float32)
            grad_b = grad_b.to(weight.dtype)
        return grad_x, grad_w, grad_b


class SpikeLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) for spike-count inputs: saves its input
    for backward in bf16 (exact for integers up to 256, see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return F.linear(x, self.weight, self.bias)
        return _SpikeLinearFn.apply(x, self.weight, self.bias)
