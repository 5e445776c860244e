"""csr_mm / csr_linear / csr_sddmm: fake kernels, autograd, GPU fallback, and the typed entry points.

Differentiable: the dense operand (B, or x in the Linear orientation), the bias, and the stored values (through
csr_sddmm, restricted to the sparsity pattern, so pruned weights stay pruned). Indices are not differentiable.
The gradient w.r.t. the dense operand multiplies by Aᵀ, built by sorting the nnz entries once per backward.
"""

from __future__ import annotations

import torch

from .._C_loader import _C
from ..formats.csr import COMPACT_COL_DTYPE, CSRMatrix, check_csr, csr_transpose, row_order_of
from ._registry import LINEAR, check_mm_args, register_gpu_fallback


def _check_components(op: str, crow, col, val, row_order=None) -> None:
    torch._check(crow.dim() == 1 and col.dim() == 1 and val.dim() == 1, lambda: f"sparsekern.{op}: components must be 1-D")
    torch._check(crow.dtype in (torch.int32, torch.int64), lambda: f"sparsekern.{op}: crow_indices must be int32 or int64")
    torch._check(
        col.dtype in (crow.dtype, COMPACT_COL_DTYPE),
        lambda: f"sparsekern.{op}: col_indices must have the dtype of crow_indices or be int16",
    )
    torch._check(col.shape[0] == val.shape[0], lambda: f"sparsekern.{op}: col_indices and values differ in length")
    torch._check(crow.shape[0] >= 1, lambda: f"sparsekern.{op}: crow_indices must have M + 1 >= 1 entries")
    if row_order is not None:
        torch._check(
            row_order.dim() == 1 and row_order.shape[0] == crow.shape[0] - 1 and row_order.dtype == crow.dtype,
            lambda: f"sparsekern.{op}: row_order must be 1-D with M entries of crow_indices' dtype",
        )


def _check_dense(op: str, t, name: str, val) -> None:
    torch._check(t.dim() == 2, lambda: f"sparsekern.{op}: {name} must be 2-D")
    torch._check(t.dtype == val.dtype, lambda: f"sparsekern.{op}: {name} and values must have the same dtype")


if _C is not None:

    @torch.library.register_fake("sparsekern::csr_mm")
    def _csr_mm_fake(crow, col, val, B, row_order=None):
        _check_components("csr_mm", crow, col, val, row_order)
        _check_dense("csr_mm", B, "B", val)
        return B.new_empty((crow.shape[0] - 1, B.shape[1]))

    @torch.library.register_fake("sparsekern::csr_linear")
    def _csr_linear_fake(x, crow, col, val, bias, row_order=None):
        _check_components("csr_linear", crow, col, val, row_order)
        _check_dense("csr_linear", x, "x", val)
        if bias is not None:
            torch._check(bias.dim() == 1 and bias.shape[0] == crow.shape[0] - 1, lambda: "sparsekern.csr_linear: bias must be (M,)")
        return x.new_empty((x.shape[0], crow.shape[0] - 1))

    @torch.library.register_fake("sparsekern::csr_sddmm")
    def _csr_sddmm_fake(crow, col, G, B):
        torch._check(G.dim() == 2 and B.dim() == 2, lambda: "sparsekern.csr_sddmm: G and B must be 2-D")
        torch._check(G.shape[0] == crow.shape[0] - 1, lambda: "sparsekern.csr_sddmm: G must have M rows")
        torch._check(G.shape[1] == B.shape[1], lambda: "sparsekern.csr_sddmm: G and B differ in columns")
        return G.new_empty((col.shape[0],))

    def _csr_mm_setup(ctx, inputs, output):
        crow, col, val, B, _ = inputs
        ctx.save_for_backward(crow, col, val, B)

    def _csr_mm_backward(ctx, grad):
        crow, col, val, B = ctx.saved_tensors
        grad_val = grad_B = None
        if ctx.needs_input_grad[2]:
            grad_val = torch.ops.sparsekern.csr_sddmm(crow, col, grad, B)
        if ctx.needs_input_grad[3]:
            t_crow, t_col, t_val = csr_transpose(crow, col, val, B.shape[0])
            grad_B = torch.ops.sparsekern.csr_mm(t_crow, t_col, t_val, grad, row_order_of(t_crow))
        return None, None, grad_val, grad_B, None

    def _csr_linear_setup(ctx, inputs, output):
        x, crow, col, val, bias, _ = inputs
        ctx.save_for_backward(x, crow, col, val)

    def _csr_linear_backward(ctx, grad):
        x, crow, col, val = ctx.saved_tensors
        grad_x = grad_val = grad_bias = None
        if ctx.needs_input_grad[0]:
            # dx = grad @ A = grad @ (Aᵀ)ᵀ: csr_linear with the transpose's components.
            t_crow, t_col, t_val = csr_transpose(crow, col, val, x.shape[1])
            grad_x = torch.ops.sparsekern.csr_linear(grad, t_crow, t_col, t_val, None, row_order_of(t_crow))
        if ctx.needs_input_grad[3]:
            grad_val = torch.ops.sparsekern.csr_sddmm(crow, col, grad.t(), x.t())
        if ctx.needs_input_grad[4]:
            grad_bias = grad.sum(0)
        return grad_x, None, None, grad_val, grad_bias, None

    torch.library.register_autograd("sparsekern::csr_mm", _csr_mm_backward, setup_context=_csr_mm_setup)
    torch.library.register_autograd("sparsekern::csr_linear", _csr_linear_backward, setup_context=_csr_linear_setup)

    def _triton_csr_mm():
        from .._triton.csr_mm import csr_mm

        return csr_mm

    def _triton_csr_linear():
        from .._triton.csr_mm import csr_linear

        return csr_linear

    def _triton_csr_sddmm():
        from .._triton.csr_sddmm import csr_sddmm

        return csr_sddmm

    register_gpu_fallback("csr_mm", _triton_csr_mm)
    register_gpu_fallback("csr_linear", _triton_csr_linear)
    register_gpu_fallback("csr_sddmm", _triton_csr_sddmm)


def csr_mm(A: CSRMatrix, B: torch.Tensor, *, validate: bool = False) -> torch.Tensor:
    """A (M, K) CSR @ B (K, N) dense -> (M, N) dense in B's dtype, accumulated in fp32.

    `validate=True` also checks the index contents (a device sync on GPU); the CPU kernel always checks them.
    GPU kernels walk the rows in A.row_order (longest first) and read compact (int16) columns natively.
    """
    check_mm_args("csr_mm", A, CSRMatrix, B)
    if validate:
        check_csr("sparsekern.csr_mm", A.crow_indices, A.col_indices, A.values, A.shape, row_order=A.row_order)
    return torch.ops.sparsekern.csr_mm(A.crow_indices, A.col_indices, A.values, B, A.row_order)


def _csr_linear(x2d: torch.Tensor, A: CSRMatrix, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.sparsekern.csr_linear(x2d, A.crow_indices, A.col_indices, A.values, bias, A.row_order)


def _csr_check(A: CSRMatrix) -> None:
    check_csr("sparsekern.sparse_linear", A.crow_indices, A.col_indices, A.values, A.shape, row_order=A.row_order)


LINEAR[CSRMatrix] = (_csr_linear, _csr_check)

__all__ = ["csr_mm"]
