"""A Linear layer for spike inputs that keeps its input for backward in 16 bits on GPUs.

``y = x W^T + b`` as ``nn.Linear``; backward needs ``x`` for ``dW = g^T x``. Inside SpikeBERT
every such ``x`` is a spike tensor or a residual sum of spikes: small non-negative integers,
exact in bfloat16 up to 256 (the stream of an N-block model holds at most 2N + 1). Saving
``x`` in bf16 halves the activation memory of every spiking layer's input, with bit-identical
gradients. Used by the ``neuron_impl="spike_kernels"`` model only (docs/DESIGN.md §2).

On CPU an fp32 ``x`` is kept as it is: the two conversions (fp32 -> bf16 in forward, back in
backward, each a fresh allocation) cost more than they save there. Measured on the `mini`
training step (one thread, AMD EPYC, huge-page malloc): 2.70 s with fp32 saved inputs vs
3.12 s with bf16, peak 932 vs 839 MiB (bench/test_bench_train_step.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SAVED_DTYPE = torch.bfloat16


def saved_dtype(dtype: torch.dtype, device_type: str) -> torch.dtype:
    """The dtype an input of ``dtype`` on ``device_type`` is saved in for backward: bf16 for
    a wider input on a GPU, else the input's own (16-bit inputs and every CPU input)."""
    if dtype.itemsize > 2 and device_type != "cpu":
        return SAVED_DTYPE
    return dtype


class _SpikeLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        y = F.linear(x, weight, bias)  # autocast (if on) applies here as in nn.Linear
        ctx.compute_dtype, ctx.input_dtype = y.dtype, x.dtype
        ctx.save_for_backward(x.to(saved_dtype(x.dtype, x.device.type)), weight)
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
    for backward in bf16 on GPUs (exact for integers up to 256, see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return F.linear(x, self.weight, self.bias)
        return _SpikeLinearFn.apply(x, self.weight, self.bias)
