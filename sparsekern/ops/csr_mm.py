"""csr_mm / csr_linear / csr_sddmm and their bitmap (tensor-core) variants csr_bitmap_mm / csr_bitmap_linear:
fake kernels, autograd, GPU fallback, and the typed entry points, which pick the bitmap variant per call when A
carries a bitmap and sparsekern.dispatch expects it to be faster.

Differentiable: the dense operand (B, or x in the Linear orientation), the bias, and the stored values (through
csr_sddmm, restricted to the sparsity pattern, so pruned weights stay pruned). Indices are not differentiable.
The gradient w.r.t. the dense operand multiplies by Aᵀ, built by sorting the nnz entries once per backward.
"""

from __future__ import annotations

import torch

from .._C_loader import _C
from ..dispatch import use_bitmap_kernel
from .._checks import (
    check_dense,
    check_dim,
    check_float,
    check_linear_bias,
    check_same,
    check_same_device,
    check_tensor,
    require,
)
from ..formats.csr import (
    CSRMatrix,
    check_bitmap,
    check_col_dtype,
    check_csr,
    check_index_components,
    csr_transpose,
    row_order_of,
)
from ._registry import LINEAR, check_mm_args, register_gpu_fallback


def check_op_args(op: str, crow, col, val, dense, name: str, K, row_order=None, bitmap=None, bias=None,
              linear: bool = False) -> None:
    """What every CSR op checks before it runs (without reading index contents): the fake kernels and the Triton
    launchers call it; the C++ kernels make the same checks with the same words (csrc/checks.h)."""
    where = f"sparsekern.{op}"
    M = crow.shape[0] - 1 if isinstance(crow, torch.Tensor) and crow.dim() == 1 else 0
    check_csr(where, crow, col, val, (M, K), contents=False, row_order=row_order)
    check_dense(where, dense, name, val)
    if bitmap is not None:
        check_bitmap(where, bitmap, crow, col, K, contents=False)
    if linear:
        check_linear_bias(where, bias, val, M)


def check_sddmm_args(op: str, crow, col, G, B) -> None:
    """csr_sddmm: the pattern's indices, G (M, N) and B (K, N) of one float dtype, all on one device."""
    where = f"sparsekern.{op}"
    check_index_components(where, crow, col)
    check_col_dtype(where, crow, col)
    for name, t in (("G", G), ("B", B)):
        check_tensor(where, t, name)
        check_dim(where, t, name, 2)
    check_float(where, G, "G")
    check_same(where, G, "G", B, "B")
    check_same_device(where, crow, "crow_indices", G, "G")
    require(G.shape[0] == crow.shape[0] - 1, where, ValueError,
            lambda: f"G must have M = {crow.shape[0] - 1} rows, got {G.shape[0]}")
    require(B.shape[1] == G.shape[1], where, ValueError,
            lambda: f"G and B must have the same number of columns, got {G.shape[1]} and {B.shape[1]}")


if _C is not None:

    @torch.library.register_fake("sparsekern::csr_mm")
    def _csr_mm_fake(crow, col, val, B, row_order=None):
        check_op_args("csr_mm", crow, col, val, B, "B", B.shape[0], row_order=row_order)
        return B.new_empty((crow.shape[0] - 1, B.shape[1]))

    @torch.library.register_fake("sparsekern::csr_linear")
    def _csr_linear_fake(x, crow, col, val, bias, row_order=None):
        check_op_args("csr_linear", crow, col, val, x, "x", x.shape[1], row_order=row_order, bias=bias, linear=True)
        return x.new_empty((x.shape[0], crow.shape[0] - 1))

    @torch.library.register_fake("sparsekern::csr_bitmap_mm")
    def _csr_bitmap_mm_fake(crow, col, val, bitmap, B):
        check_op_args("csr_bitmap_mm", crow, col, val, B, "B", B.shape[0], bitmap=bitmap)
        return B.new_empty((crow.shape[0] - 1, B.shape[1]))

    @torch.library.register_fake("sparsekern::csr_bitmap_linear")
    def _csr_bitmap_linear_fake(x, crow, col, val, bitmap, bias):
        check_op_args("csr_bitmap_linear", crow, col, val, x, "x", x.shape[1], bitmap=bitmap, bias=bias, linear=True)
        return x.new_empty((x.shape[0], crow.shape[0] - 1))

    @torch.library.register_fake("sparsekern::csr_sddmm")
    def _csr_sddmm_fake(crow, col, G, B):
        check_sddmm_args("csr_sddmm", crow, col, G, B)
        return G.new_empty((col.shape[0],))

    # Autograd: csr_mm and csr_bitmap_mm (and the two linears) are the same function of (val, dense operand),
    # so they share one backward. The gradients run on the CSR components: Aᵀ has no bitmap.

    def _mm_grads(ctx, crow, col, val, B, grad, B_index):
        grad_val = grad_B = None
        if ctx.needs_input_grad[2]:
            grad_val = torch.ops.sparsekern.csr_sddmm(crow, col, grad, B)
        if ctx.needs_input_grad[B_index]:
            t_crow, t_col, t_val = csr_transpose(crow, col, val, B.shape[0])
            grad_B = torch.ops.sparsekern.csr_mm(t_crow, t_col, t_val, grad, row_order_of(t_crow))
        return grad_val, grad_B

    def _linear_grads(ctx, x, crow, col, val, grad, bias_index):
        grad_x = grad_val = grad_bias = None
        if ctx.needs_input_grad[0]:
            # dx = grad @ A = grad @ (Aᵀ)ᵀ: csr_linear with the transpose's components.
            t_crow, t_col, t_val = csr_transpose(crow, col, val, x.shape[1])
            grad_x = torch.ops.sparsekern.csr_linear(grad, t_crow, t_col, t_val, None, row_order_of(t_crow))
        if ctx.needs_input_grad[3]:
            grad_val = torch.ops.sparsekern.csr_sddmm(crow, col, grad.t(), x.t())
        if ctx.needs_input_grad[bias_index]:
            grad_bias = grad.sum(0)
        return grad_x, grad_val, grad_bias

    # Argument positions: (crow, col, val) are 0-2 of every mm op and 1-3 of every linear (x at 0); the dense
    # operand B, the bitmap, bias and row_order sit where each schema puts them.
    def _mm_autograd(n_args: int, b_index: int):
        def setup(ctx, inputs, output):
            ctx.save_for_backward(*inputs[:3], inputs[b_index])

        def backward(ctx, grad):
            grads = [None] * n_args
            grads[2], grads[b_index] = _mm_grads(ctx, *ctx.saved_tensors, grad, b_index)
            return tuple(grads)

        return backward, setup

    def _linear_autograd(n_args: int, bias_index: int):
        def setup(ctx, inputs, output):
            ctx.save_for_backward(*inputs[:4])

        def backward(ctx, grad):
            grads = [None] * n_args
            grads[0], grads[3], grads[bias_index] = _linear_grads(ctx, *ctx.saved_tensors, grad, bias_index)
            return tuple(grads)

        return backward, setup

    # csr_sddmm is linear in G and in B, and its backward is two CSR products with the incoming gradient as
    # values: dG = A(grad) @ B, dB = A(grad)ᵀ @ G. Registering it makes second derivatives through the CSR ops
    # right (double backward of csr_mm / sparse_linear runs csr_sddmm's backward).
    def _sddmm_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _sddmm_backward(ctx, grad):
        crow, col, G, B = ctx.saved_tensors
        grad_G = grad_B = None
        if ctx.needs_input_grad[2]:
            grad_G = torch.ops.sparsekern.csr_mm(crow, col, grad, B, None)
        if ctx.needs_input_grad[3]:
            t_crow, t_col, t_val = csr_transpose(crow, col, grad, B.shape[0])
            grad_B = torch.ops.sparsekern.csr_mm(t_crow, t_col, t_val, G, row_order_of(t_crow))
        return None, None, grad_G, grad_B

    torch.library.register_autograd("sparsekern::csr_sddmm", _sddmm_backward, setup_context=_sddmm_setup)

    for _op, (_bw, _setup) in {
        "csr_mm": _mm_autograd(5, 3),  # (crow, col, val, B, row_order)
        "csr_bitmap_mm": _mm_autograd(5, 4),  # (crow, col, val, bitmap, B)
        "csr_linear": _linear_autograd(6, 4),  # (x, crow, col, val, bias, row_order)
        "csr_bitmap_linear": _linear_autograd(6, 5),  # (x, crow, col, val, bitmap, bias)
    }.items():
        torch.library.register_autograd(f"sparsekern::{_op}", _bw, setup_context=_setup)

    def _triton_csr_mm():
        from .._triton.csr_mm import csr_mm

        return csr_mm

    def _triton_csr_linear():
        from .._triton.csr_mm import csr_linear

        return csr_linear

    def _triton_csr_sddmm():
        from .._triton.csr_sddmm import csr_sddmm

        return csr_sddmm

    def _triton_csr_bitmap_mm():
        from .._triton.csr_bitmap_mm import csr_bitmap_mm

        return csr_bitmap_mm

    def _triton_csr_bitmap_linear():
        from .._triton.csr_bitmap_mm import csr_bitmap_linear

        return csr_bitmap_linear

    register_gpu_fallback("csr_mm", _triton_csr_mm)
    register_gpu_fallback("csr_linear", _triton_csr_linear)
    register_gpu_fallback("csr_sddmm", _triton_csr_sddmm)
    # Triton only: the tensor-core kernel has no CUDA C++ counterpart.
    register_gpu_fallback("csr_bitmap_mm", _triton_csr_bitmap_mm)
    register_gpu_fallback("csr_bitmap_linear", _triton_csr_bitmap_linear)


def csr_mm(A: CSRMatrix, B: torch.Tensor, *, validate: bool = False) -> torch.Tensor:
    """A (M, K) CSR @ B (K, N) dense -> (M, N) dense in B's dtype, accumulated in fp32.

    `validate=True` also checks the index contents (a device sync on GPU); the CPU kernel always checks them.
    GPU kernels walk the rows in A.row_order (longest first) and read compact (int16) columns natively. When A
    carries a bitmap, sparsekern.dispatch may send the call to the tensor-core kernel (csr_bitmap_mm).
    """
    check_mm_args("csr_mm", A, CSRMatrix, B)
    if validate:
        _validate("sparsekern.csr_mm", A)
    if use_bitmap_kernel(A, B.shape[1], B.device):
        return torch.ops.sparsekern.csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, A.bitmap, B)
    return torch.ops.sparsekern.csr_mm(A.crow_indices, A.col_indices, A.values, B, A.row_order)


def _csr_linear(x2d: torch.Tensor, A: CSRMatrix, bias: torch.Tensor | None) -> torch.Tensor:
    if use_bitmap_kernel(A, x2d.shape[0], x2d.device):
        return torch.ops.sparsekern.csr_bitmap_linear(x2d, A.crow_indices, A.col_indices, A.values, A.bitmap, bias)
    return torch.ops.sparsekern.csr_linear(x2d, A.crow_indices, A.col_indices, A.values, bias, A.row_order)


def _validate(where: str, A: CSRMatrix) -> None:
    check_csr(where, A.crow_indices, A.col_indices, A.values, A.shape, row_order=A.row_order)
    if A.bitmap is not None:
        check_bitmap(where, A.bitmap, A.crow_indices, A.col_indices, A.shape[1])


def _csr_check(A: CSRMatrix) -> None:
    _validate("sparsekern.sparse_linear", A)


LINEAR[CSRMatrix] = (_csr_linear, _csr_check)

__all__ = ["csr_mm"]
