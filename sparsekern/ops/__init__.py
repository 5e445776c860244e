"""Typed entry points over `torch.ops.sparsekern.*`, one module per op family, each declaring its ops' argument
checks, fake kernels, autograd and GPU backend at import (`_registry.register`) and its format's Linear-orientation
kernel in `_registry.LINEAR`. An op `<family>_linear` lives with `<family>_mm`, its other orientation:

    csr_mm, csr_linear                  csr_mm.py         (C++ CPU, CUDA or Triton)
    csr_bitmap_mm, csr_bitmap_linear    csr_bitmap_mm.py  (C++ CPU, Triton)
    csr_sddmm                           csr_sddmm.py      (C++ CPU, CUDA or Triton; the CSR ops' backward)
    bsr_mm, bsr_linear                  bsr_mm.py         (C++ CPU, Triton)
    semi24_mm, semi24_linear            semi24_mm.py      (C++ CPU, CUDA)
    csr_conv2d                          csr_conv2d.py     (C++ CPU)

Which of them computes a given call, and on which backend, is sparsekern.explain's to say."""

from __future__ import annotations

import math

import torch

from .._C_loader import require_C
from .._checks import check_same, check_tensor, fail
from ._registry import LINEAR
from . import csr_bitmap_mm as _csr_bitmap_mm, csr_sddmm as _csr_sddmm  # noqa: F401  (registration only)
from .bsr_mm import bsr_mm
from .csr_conv2d import csr_conv2d
from .csr_mm import csr_mm
from .semi24_mm import semi24_mm


def sparse_linear(x: torch.Tensor, A, bias: torch.Tensor | None = None, *, validate: bool = False) -> torch.Tensor:
    """x (*, K) @ A.T + bias -> (*, M), for A (M, K) in any sparsekern format: the nn.Linear orientation.

    `validate=True` also checks A's index contents (a device sync on GPU).
    """
    require_C("sparse_linear")
    where = "sparsekern.sparse_linear"
    hooks = LINEAR.get(type(A))
    if hooks is None:
        fail(where, TypeError, f"A must be one of {sorted(c.__name__ for c in LINEAR)}, got {type(A).__name__}")
    linear, check = hooks
    check_tensor(where, x, "x")
    M, K = A.shape
    if x.dim() < 1 or x.shape[-1] != K:
        fail(where, ValueError, f"A is {A.shape} but x has shape {tuple(x.shape)}; expected (*, {K})")
    check_same(where, x, "x", A.values, "A.values")
    if bias is not None:
        check_tensor(where, bias, "bias")
        check_same(where, bias, "bias", A.values, "A.values")
        if bias.shape != (M,):
            fail(where, ValueError, f"bias must have shape ({M},), got {tuple(bias.shape)}")
    if validate:
        check(A)
    return run_linear(x, A, bias)


def run_linear(x: torch.Tensor, A, bias: torch.Tensor | None) -> torch.Tensor:
    """sparse_linear without its argument checks: what SparseLinear calls per forward, its weight and bias having
    been checked at construction (the checks cost about as much as the op's own dispatch at one token)."""
    M, K = A.shape
    y = LINEAR[type(A)][0](x.reshape(math.prod(x.shape[:-1]), K), A, bias)
    return y.reshape(*x.shape[:-1], M)


__all__ = ["bsr_mm", "csr_conv2d", "csr_mm", "semi24_mm", "sparse_linear"]
