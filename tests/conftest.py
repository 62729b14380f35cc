"""Test configuration shared by every test under ``tests/``.

Without a CUDA device the Triton kernels run on CPU tensors through Triton's interpreter,
which must be switched on before ``triton`` is first imported (``spike_kernels`` imports it
lazily, only when a Triton kernel is first launched).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
