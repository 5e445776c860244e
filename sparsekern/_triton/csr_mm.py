"""Triton CSR SpMM: the GPU fallback for csr_mm and csr_linear (one kernel, the orientation set by strides).

One program per (row, BLOCK_N output columns): it walks the row's entries BLOCK_NNZ at a time, gathers the
matching rows of B as a (BLOCK_NNZ, BLOCK_N) tile and reduces over the entries in fp32. csr_linear reads x
(T, K) as B = xᵀ and writes the (M, T) result through out's strides into the (T, M) output, so neither A nor x
is copied. This is the simple, correct baseline; the load-balanced fast paths are their own kernels.
"""

import torch
import triton
import triton.language as tl

from .._checks import check_dim, check_same, fail
from ..formats.csr import check_csr


@triton.jit
def _csr_mm_kernel(
    crow_ptr, col_ptr, val_ptr, b_ptr, bias_ptr, out_ptr,
    N, K,
    stride_bk, stride_bn, stride_om, stride_on,
    HAS_BIAS: tl.constexpr, BLOCK_NNZ: tl.constexpr, BLOCK_N: tl.constexpr,
):
    m = tl.program_id(0).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    start = tl.load(crow_ptr + m).to(tl.int64)
    end = tl.load(crow_ptr + m + 1).to(tl.int64)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for j0 in range(start, end, BLOCK_NNZ):
        offs_j = j0 + tl.arange(0, BLOCK_NNZ)
        j_mask = offs_j < end
        cols = tl.load(col_ptr + offs_j, mask=j_mask, other=0).to(tl.int64)
        vals = tl.load(val_ptr + offs_j, mask=j_mask, other=0.0).to(tl.float32)
        # Out-of-range columns (only possible with unvalidated input) read zeros instead of faulting.
        row_ok = j_mask & (cols >= 0) & (cols < K)
        b = tl.load(
            b_ptr + cols[:, None] * stride_bk + offs_n[None, :] * stride_bn,
            mask=row_ok[:, None] & n_mask[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(vals[:, None] * b, axis=0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + m).to(tl.float32)
    tl.store(out_ptr + m * stride_om + offs_n * stride_on, acc.to(out_ptr.dtype.element_ty), mask=n_mask)


def _launch(crow, col, val, B, bias, out):
    """out (M, N) = A @ B (+ bias[:, None]); B (K, N) and out may have any strides."""
    M, N = out.shape
    if M == 0 or N == 0:
        return out
    block_n = max(16, min(128, triton.next_power_of_2(N)))
    grid = (M, triton.cdiv(N, block_n))
    _csr_mm_kernel[grid](
        crow, col, val, B, bias if bias is not None else val, out,
        N, B.shape[0],
        B.stride(0), B.stride(1), out.stride(0), out.stride(1),
        HAS_BIAS=bias is not None, BLOCK_NNZ=32, BLOCK_N=block_n,
    )
    return out


def _check(op, crow, col, val, dense, name, K):
    where = f"sparsekern.{op}"
    check_csr(where, crow, col, val, (crow.numel() - 1, K), contents=False)
    check_dim(where, dense, name, 2)
    check_same(where, dense, name, val, "values")


def csr_mm(crow, col, val, B):
    _check("csr_mm", crow, col, val, B, "B", B.shape[0] if B.dim() == 2 else 0)
    out = torch.empty((crow.numel() - 1, B.shape[1]), dtype=B.dtype, device=B.device)
    return _launch(crow, col, val, B, None, out)


def csr_linear(x, crow, col, val, bias):
    _check("csr_linear", crow, col, val, x, "x", x.shape[1] if x.dim() == 2 else 0)
    M = crow.numel() - 1
    if bias is not None:
        check_same("sparsekern.csr_linear", bias, "bias", val, "values")
        if bias.shape != (M,):
            fail("sparsekern.csr_linear", ValueError, f"bias must have shape ({M},), got {tuple(bias.shape)}")
    out = torch.empty((x.shape[0], M), dtype=x.dtype, device=x.device)
    _launch(crow, col, val, x.t(), bias, out.t())
    return out
