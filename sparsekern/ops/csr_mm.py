"""csr_mm and csr_linear (A (M, K) in CSR times a dense operand, in the two orientations): their argument checks,
fake kernels, autograd and GPU backend, and the typed entry point `sk.ops.csr_mm` (plus the CSRMatrix hook of
sk.ops.sparse_linear). Both entry points send a call to the bitmap variants (ops/csr_bitmap_mm.py) when A carries
a bitmap and sparsekern.dispatch expects that kernel to be faster.

Differentiable: the dense operand (B, or x in the Linear orientation), the bias, and the stored values (through
csr_sddmm, restricted to the sparsity pattern, so pruned weights stay pruned). Indices are not differentiable.
The gradient w.r.t. the dense operand multiplies by Aᵀ, built by sorting the nnz entries once per backward.
"""

from __future__ import annotations

import torch

from .._checks import check_dense, check_linear_bias
from ..dispatch import use_bitmap_kernel
from ..formats.csr import CSRMatrix, check_bitmap, check_csr, csr_transpose, row_order_of
from ._registry import LINEAR, check_mm_args, register


def check_csr_args(op: str, crow, col, val, dense, name: str, row_order=None, bitmap=None, bias=None,
                   linear: bool = False) -> None:
    """What every CSR product op checks before it runs, without reading index contents, in the order and words of
    csrc/checks.h: the components, row_order, the dense operand (B (K, N), or x (T, K) with `linear`), the
    bitmap, the bias. The fake kernels and the Triton launchers call it through the per-op checks below."""
    where = f"sparsekern.{op}"
    M = crow.shape[0] - 1 if isinstance(crow, torch.Tensor) and crow.dim() == 1 else 0
    K = dense.shape[1 if linear else 0] if isinstance(dense, torch.Tensor) and dense.dim() == 2 else 0
    check_csr(where, crow, col, val, (M, K), contents=False, row_order=row_order)
    check_dense(where, dense, name, val)
    if bitmap is not None:
        check_bitmap(where, bitmap, crow, col, K, contents=False)
    if linear:
        check_linear_bias(where, bias, val, M)


def check_csr_mm(crow, col, val, B, row_order=None) -> None:
    check_csr_args("csr_mm", crow, col, val, B, "B", row_order=row_order)


def check_csr_linear(x, crow, col, val, bias, row_order=None) -> None:
    check_csr_args("csr_linear", crow, col, val, x, "x", row_order=row_order, bias=bias, linear=True)


def _csr_mm_fake(crow, col, val, B, row_order=None):
    check_csr_mm(crow, col, val, B, row_order)
    return B.new_empty((crow.shape[0] - 1, B.shape[1]))


def _csr_linear_fake(x, crow, col, val, bias, row_order=None):
    check_csr_linear(x, crow, col, val, bias, row_order)
    return x.new_empty((x.shape[0], crow.shape[0] - 1))


# The gradients run on the CSR components, so the bitmap variants (whose schemas name the same arguments) share
# these formulas: Aᵀ has no bitmap.


def mm_backward(grad, need, crow, col, val, B):
    grads = {}
    if need["val"]:
        grads["val"] = torch.ops.sparsekern.csr_sddmm(crow, col, grad, B)
    if need["B"]:
        t_crow, t_col, t_val = csr_transpose(crow, col, val, B.shape[0])
        grads["B"] = torch.ops.sparsekern.csr_mm(t_crow, t_col, t_val, grad, row_order_of(t_crow))
    return grads


def linear_backward(grad, need, x, crow, col, val):
    grads = {}
    if need["x"]:
        # dx = grad @ A = grad @ (Aᵀ)ᵀ: csr_linear with the transpose's components.
        t_crow, t_col, t_val = csr_transpose(crow, col, val, x.shape[1])
        grads["x"] = torch.ops.sparsekern.csr_linear(grad, t_crow, t_col, t_val, None, row_order_of(t_crow))
    if need["val"]:
        grads["val"] = torch.ops.sparsekern.csr_sddmm(crow, col, grad.t(), x.t())
    if need["bias"]:
        grads["bias"] = grad.sum(0)
    return grads


register("csr_mm", fake=_csr_mm_fake, backward=mm_backward, save=("crow", "col", "val", "B"), triton="csr_mm")
register("csr_linear", fake=_csr_linear_fake, backward=linear_backward, save=("x", "crow", "col", "val"),
         triton="csr_mm")


def csr_op(A: CSRMatrix, N: int, *, linear: bool) -> str:
    """The op that computes A's product with N columns of B (N rows of x with `linear`): the bitmap variant where
    A carries a bitmap and sparsekern.dispatch expects it to be faster. The entry points below call what it says;
    SparseLinear.kernel and sk.explain report it."""
    family = "csr_bitmap" if use_bitmap_kernel(A, N, A.device) else "csr"
    return f"{family}_{'linear' if linear else 'mm'}"


def csr_mm(A: CSRMatrix, B: torch.Tensor, *, validate: bool = False) -> torch.Tensor:
    """A (M, K) CSR @ B (K, N) dense -> (M, N) dense in B's dtype, accumulated in fp32.

    `validate=True` also checks the index contents (a device sync on GPU); the CPU kernel always checks them.
    GPU kernels walk the rows in A.row_order (longest first) and read compact (int16) columns natively. When A
    carries a bitmap, sparsekern.dispatch may send the call to the tensor-core kernel (csr_bitmap_mm).
    """
    check_mm_args("csr_mm", A, CSRMatrix, B)
    if validate:
        _validate("sparsekern.csr_mm", A)
    if csr_op(A, B.shape[1], linear=False) == "csr_bitmap_mm":
        return torch.ops.sparsekern.csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, A.bitmap, B)
    return torch.ops.sparsekern.csr_mm(A.crow_indices, A.col_indices, A.values, B, A.row_order)


def _csr_linear(x2d: torch.Tensor, A: CSRMatrix, bias: torch.Tensor | None) -> torch.Tensor:
    if csr_op(A, x2d.shape[0], linear=True) == "csr_bitmap_linear":
        return torch.ops.sparsekern.csr_bitmap_linear(x2d, A.crow_indices, A.col_indices, A.values, A.bitmap, bias)
    return torch.ops.sparsekern.csr_linear(x2d, A.crow_indices, A.col_indices, A.values, bias, A.row_order)


def _validate(where: str, A: CSRMatrix) -> None:
    check_csr(where, A.crow_indices, A.col_indices, A.values, A.shape, row_order=A.row_order)
    if A.bitmap is not None:
        check_bitmap(where, A.bitmap, A.crow_indices, A.col_indices, A.shape[1])


LINEAR[CSRMatrix] = (_csr_linear, lambda A: _validate("sparsekern.sparse_linear", A))

__all__ = ["csr_mm"]
