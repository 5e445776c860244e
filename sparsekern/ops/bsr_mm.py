"""bsr_mm / bsr_linear: fake kernels, autograd, GPU implementation (Triton), and the typed entry points.

Differentiable: the dense operand (B, or x in the Linear orientation), the bias, and the stored blocks (dL/dA
restricted to the stored blocks, so pruned blocks stay pruned). Indices are not differentiable. The gradient
w.r.t. the dense operand multiplies by Aᵀ (blocks transposed, structure sorted once per backward); the gradient
of the values is a block SDDMM done with batched dense products over chunks of blocks.
"""

from __future__ import annotations

import importlib

import torch

from .._C_loader import _C
from .._checks import cdiv, check_dense, check_linear_bias
from ..formats.bsr import BSRMatrix, bsr_transpose, check_bsr
from ._registry import LINEAR, check_mm_args, register_gpu_fallback

# Elements of G and B gathered per chunk by the values gradient (bounds its temporary memory to ~64 MiB fp32).
_SDDMM_CHUNK_ELEMENTS = 1 << 24


def check_op_args(op: str, crow, col, val, M, dense, name: str, bias=None, linear: bool = False) -> None:
    """What every BSR op checks before it runs (without reading index contents): the fake kernels call it; the
    C++ kernels make the same checks with the same words."""
    where = f"sparsekern.{op}"
    check_dense(where, dense, name, val)
    check_bsr(where, crow, col, val, (M, dense.shape[1] if linear else dense.shape[0]), contents=False)
    if linear:
        check_linear_bias(where, bias, val, M)


def _bsr_values_grad(crow, col, G, B, blocksize) -> torch.Tensor:
    """(nblocks, bm, bk): block j of G (M, N) @ B (K, N)ᵀ at the stored block positions (the gradient of the
    values). Torch ops only, so it runs on any device and traces under torch.compile."""
    bm, bk = blocksize
    M, N = G.shape
    K = B.shape[0]
    MB, KB = crow.numel() - 1, cdiv(K, bk)
    Gp = torch.nn.functional.pad(G, (0, 0, 0, MB * bm - M)).reshape(MB, bm, N)
    Bp = torch.nn.functional.pad(B, (0, 0, 0, KB * bk - K)).reshape(KB, bk, N)
    nblocks = col.numel()
    rows = torch.repeat_interleave(torch.arange(MB, device=crow.device), crow.diff(), output_size=nblocks)
    cols = col.long()
    chunk = max(1, _SDDMM_CHUNK_ELEMENTS // max(1, (bm + bk) * N))
    parts = [
        torch.bmm(Gp[rows[s : s + chunk]], Bp[cols[s : s + chunk]].transpose(1, 2))
        for s in range(0, nblocks, chunk)
    ]
    return torch.cat(parts) if parts else G.new_zeros((0, bm, bk))


if _C is not None:

    @torch.library.register_fake("sparsekern::bsr_mm")
    def _bsr_mm_fake(crow, col, val, M, B):
        check_op_args("bsr_mm", crow, col, val, M, B, "B")
        return B.new_empty((M, B.shape[1]))

    @torch.library.register_fake("sparsekern::bsr_linear")
    def _bsr_linear_fake(x, crow, col, val, M, bias):
        check_op_args("bsr_linear", crow, col, val, M, x, "x", bias=bias, linear=True)
        return x.new_empty((x.shape[0], M))

    def _bsr_mm_setup(ctx, inputs, output):
        crow, col, val, M, B = inputs
        ctx.save_for_backward(crow, col, val, B)

    def _bsr_mm_backward(ctx, grad):
        crow, col, val, B = ctx.saved_tensors
        grad_val = grad_B = None
        bm, bk = val.shape[1], val.shape[2]
        if ctx.needs_input_grad[2]:
            grad_val = _bsr_values_grad(crow, col, grad, B, (bm, bk))
        if ctx.needs_input_grad[4]:
            K = B.shape[0]
            t_crow, t_col, t_val = bsr_transpose(crow, col, val, cdiv(K, bk))
            grad_B = torch.ops.sparsekern.bsr_mm(t_crow, t_col, t_val, K, grad)
        return None, None, grad_val, None, grad_B

    def _bsr_linear_setup(ctx, inputs, output):
        x, crow, col, val, M, bias = inputs
        ctx.save_for_backward(x, crow, col, val)

    def _bsr_linear_backward(ctx, grad):
        x, crow, col, val = ctx.saved_tensors
        grad_x = grad_val = grad_bias = None
        bm, bk = val.shape[1], val.shape[2]
        if ctx.needs_input_grad[0]:
            # dx = grad @ A = grad @ (Aᵀ)ᵀ: bsr_linear with the transpose's components.
            K = x.shape[1]
            t_crow, t_col, t_val = bsr_transpose(crow, col, val, cdiv(K, bk))
            grad_x = torch.ops.sparsekern.bsr_linear(grad, t_crow, t_col, t_val, K, None)
        if ctx.needs_input_grad[3]:
            grad_val = _bsr_values_grad(crow, col, grad.t(), x.t(), (bm, bk))
        if ctx.needs_input_grad[5]:
            grad_bias = grad.sum(0)
        return grad_x, None, None, grad_val, None, grad_bias

    torch.library.register_autograd("sparsekern::bsr_mm", _bsr_mm_backward, setup_context=_bsr_mm_setup)
    torch.library.register_autograd("sparsekern::bsr_linear", _bsr_linear_backward, setup_context=_bsr_linear_setup)

    for _op in ("bsr_mm", "bsr_linear"):
        # The launcher of the same name in _triton/bsr_mm.py, imported on first GPU call.
        register_gpu_fallback(_op, lambda op=_op: getattr(importlib.import_module("sparsekern._triton.bsr_mm"), op))


def bsr_mm(A: BSRMatrix, B: torch.Tensor, *, validate: bool = False) -> torch.Tensor:
    """A (M, K) BSR @ B (K, N) dense -> (M, N) dense in B's dtype, accumulated in fp32.

    `validate=True` also checks the index contents (a device sync on GPU); the CPU kernel always checks them.
    On GPU, fp32 operands run as TF32 (see sparsekern._triton.configs.FP32_INPUT_PRECISION).
    """
    check_mm_args("bsr_mm", A, BSRMatrix, B)
    if validate:
        check_bsr("sparsekern.bsr_mm", A.crow_indices, A.col_indices, A.values, A.shape)
    return torch.ops.sparsekern.bsr_mm(A.crow_indices, A.col_indices, A.values, A.shape[0], B)


def _bsr_linear(x2d: torch.Tensor, A: BSRMatrix, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.sparsekern.bsr_linear(x2d, A.crow_indices, A.col_indices, A.values, A.shape[0], bias)


def _bsr_check(A: BSRMatrix) -> None:
    check_bsr("sparsekern.sparse_linear", A.crow_indices, A.col_indices, A.values, A.shape)


LINEAR[BSRMatrix] = (_bsr_linear, _bsr_check)

__all__ = ["bsr_mm"]
