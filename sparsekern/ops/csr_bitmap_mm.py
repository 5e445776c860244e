"""csr_bitmap_mm and csr_bitmap_linear: csr_mm and csr_linear for a CSR matrix that also carries a bitmap of its
stored columns, computed by the tensor-core kernel (Triton on GPU; the AVX-512 expand-load kernel on CPU).
Their argument checks, fake kernels, autograd (csr_mm's formulas: the schemas name the same arguments) and GPU
backend. No entry point of their own: sk.ops.csr_mm and sparse_linear pick them per call (sparsekern.dispatch).
"""

from __future__ import annotations

from .csr_mm import check_csr_args, linear_backward, mm_backward
from ._registry import register


def check_csr_bitmap_mm(crow, col, val, bitmap, B) -> None:
    check_csr_args("csr_bitmap_mm", crow, col, val, B, "B", bitmap=bitmap)


def check_csr_bitmap_linear(x, crow, col, val, bitmap, bias) -> None:
    check_csr_args("csr_bitmap_linear", crow, col, val, x, "x", bitmap=bitmap, bias=bias, linear=True)


def _csr_bitmap_mm_fake(crow, col, val, bitmap, B):
    check_csr_bitmap_mm(crow, col, val, bitmap, B)
    return B.new_empty((crow.shape[0] - 1, B.shape[1]))


def _csr_bitmap_linear_fake(x, crow, col, val, bitmap, bias):
    check_csr_bitmap_linear(x, crow, col, val, bitmap, bias)
    return x.new_empty((x.shape[0], crow.shape[0] - 1))


# Triton only on GPU: the tensor-core kernel has no CUDA C++ counterpart.
register("csr_bitmap_mm", fake=_csr_bitmap_mm_fake, backward=mm_backward, save=("crow", "col", "val", "B"),
         triton="csr_bitmap_mm")
register("csr_bitmap_linear", fake=_csr_bitmap_linear_fake, backward=linear_backward,
         save=("x", "crow", "col", "val"), triton="csr_bitmap_mm")
