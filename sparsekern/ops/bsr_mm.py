"""bsr_mm and bsr_linear (A (M, K) in BSR times a dense operand, in the two orientations): their argument checks,
fake kernels, autograd and GPU backend (Triton), and the typed entry point `sk.ops.bsr_mm` (plus the BSRMatrix hook
of sk.ops.sparse_linear).

Differentiable: the dense operand (B, or x in the Linear orientation), the bias, and the stored blocks (dL/dA
restricted to the stored blocks, so pruned blocks stay pruned). Indices are not differentiable. The gradient
w.r.t. the dense operand multiplies by Aᵀ (blocks transposed, structure sorted once per backward); the gradient
of the values is a block SDDMM done with batched dense products over chunks of blocks.
"""

from __future__ import annotations

import torch

from .._checks import cdiv, check_dense, check_linear_bias
from ..formats.bsr import BSRMatrix, bsr_transpose, check_bsr
from ._registry import LINEAR, check_mm_args, register

# Elements of G and B gathered per chunk by the values gradient (bounds its temporary memory to ~64 MiB fp32).
_SDDMM_CHUNK_ELEMENTS = 1 << 24


def check_bsr_args(op: str, crow, col, val, M, dense, name: str, bias=None, linear: bool = False) -> None:
    """What every BSR op checks before it runs, without reading index contents, in the order and words of
    csrc/cpu/bsr_mm.cpp: the dense operand (B (K, N), or x (T, K) with `linear`), the components, the bias. The
    fake kernels and the Triton launchers call it through the per-op checks below."""
    where = f"sparsekern.{op}"
    check_dense(where, dense, name, val)
    check_bsr(where, crow, col, val, (M, dense.shape[1] if linear else dense.shape[0]), contents=False)
    if linear:
        check_linear_bias(where, bias, val, M)


def check_bsr_mm(crow, col, val, M, B) -> None:
    check_bsr_args("bsr_mm", crow, col, val, M, B, "B")


def check_bsr_linear(x, crow, col, val, M, bias) -> None:
    check_bsr_args("bsr_linear", crow, col, val, M, x, "x", bias=bias, linear=True)


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


def _bsr_mm_fake(crow, col, val, M, B):
    check_bsr_mm(crow, col, val, M, B)
    return B.new_empty((M, B.shape[1]))


def _bsr_linear_fake(x, crow, col, val, M, bias):
    check_bsr_linear(x, crow, col, val, M, bias)
    return x.new_empty((x.shape[0], M))


def _bsr_mm_backward(grad, need, crow, col, val, B):
    grads = {}
    bm, bk = val.shape[1], val.shape[2]
    if need["val"]:
        grads["val"] = _bsr_values_grad(crow, col, grad, B, (bm, bk))
    if need["B"]:
        K = B.shape[0]
        t_crow, t_col, t_val = bsr_transpose(crow, col, val, cdiv(K, bk))
        grads["B"] = torch.ops.sparsekern.bsr_mm(t_crow, t_col, t_val, K, grad)
    return grads


def _bsr_linear_backward(grad, need, x, crow, col, val):
    grads = {}
    bm, bk = val.shape[1], val.shape[2]
    if need["x"]:
        # dx = grad @ A = grad @ (Aᵀ)ᵀ: bsr_linear with the transpose's components.
        K = x.shape[1]
        t_crow, t_col, t_val = bsr_transpose(crow, col, val, cdiv(K, bk))
        grads["x"] = torch.ops.sparsekern.bsr_linear(grad, t_crow, t_col, t_val, K, None)
    if need["val"]:
        grads["val"] = _bsr_values_grad(crow, col, grad.t(), x.t(), (bm, bk))
    if need["bias"]:
        grads["bias"] = grad.sum(0)
    return grads


register("bsr_mm", fake=_bsr_mm_fake, backward=_bsr_mm_backward, save=("crow", "col", "val", "B"), triton="bsr_mm")
register("bsr_linear", fake=_bsr_linear_fake, backward=_bsr_linear_backward, save=("x", "crow", "col", "val"),
         triton="bsr_mm")


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


LINEAR[BSRMatrix] = (
    _bsr_linear, lambda A: check_bsr("sparsekern.sparse_linear", A.crow_indices, A.col_indices, A.values, A.shape))

__all__ = ["bsr_mm"]
