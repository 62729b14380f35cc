"""Op implementations: references (``*_ref``), the CPU path, Triton kernels, custom ops."""
