"""Triton CSR SpMM: the GPU fallback for csr_mm and csr_linear when the extension has no CUDA kernels.

Two kernels, the orientation set by strides (csr_linear reads x (T, K) as B = xᵀ and writes the (M, T) result
through out's strides into the (T, M) output):

* rows (N > 16): one program per (row, BLOCK_N output columns), walking the row's entries BLOCK_NNZ at a time:
  it gathers the matching rows of B as a (BLOCK_NNZ, BLOCK_N) tile and reduces over the entries in fp32.
* decode (N <= 16): one program per BLOCK_M rows, all N columns at once: a (BLOCK_M, BLOCK_NNZ) tile of entries
  and a (BLOCK_M, BLOCK_NNZ, BLOCK_N) gather of B. Every stored value and index is read once, BLOCK_M rows' worth
  per load, so the kernel streams the matrix at memory speed instead of paying a program per row.

Both walk rows in `row_order` (rows sorted by length, longest first) when given, so a program's rows have
similar lengths (the decode loop runs to the longest of them) and the heaviest rows start first. Compact
(int16) column indices are read as unsigned. Out-of-range columns or order entries (only possible with
unvalidated input) are masked, never dereferenced, and row pointers are clamped to [0, nnz].

Linear orientation with T > 16: x is copied once into xᵀ (K, T) row-major, T*K elements, small next to the
nnz*T multiply-adds, so that each stored entry gathers one contiguous row instead of T scattered elements.
"""

import torch
import triton
import triton.language as tl

from .._constants import DECODE_MAX_N
from ..formats.csr import COMPACT_COL_DTYPE
from ..ops.csr_mm import check_csr_linear, check_csr_mm


@triton.jit
def _load_cols(col_ptr, offs, mask, K, COL16: tl.constexpr):
    """Columns at offs as int64 (int16 read as unsigned) and whether each is a usable column in [0, K)."""
    cols = tl.load(col_ptr + offs, mask=mask, other=0).to(tl.int64)
    if COL16:
        cols = cols & 0xFFFF
    return cols, mask & (cols >= 0) & (cols < K)


# nnz only clamps the row pointers: not specialised on (each value class would be another compile).
@triton.jit(do_not_specialize=["nnz"])
def _csr_mm_rows_kernel(
    crow_ptr, col_ptr, val_ptr, order_ptr, b_ptr, bias_ptr, out_ptr,
    M, N, K, nnz,
    stride_bk, stride_bn, stride_om, stride_on,
    HAS_ORDER: tl.constexpr, HAS_BIAS: tl.constexpr, COL16: tl.constexpr,
    BLOCK_NNZ: tl.constexpr, BLOCK_N: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    if HAS_ORDER:
        m = tl.load(order_ptr + i).to(tl.int64)
    else:
        m = i
    m_ok = (m >= 0) & (m < M)
    m = tl.where(m_ok, m, 0)
    # int64: the Linear orientation writes through out.t() (stride_on = M), and T * M may pass 2^31.
    offs_n = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    n_mask = offs_n < tl.where(m_ok, N, 0)  # a skipped row stores nothing
    start = tl.maximum(tl.load(crow_ptr + m).to(tl.int64), 0)
    end = tl.where(m_ok, tl.minimum(tl.load(crow_ptr + m + 1).to(tl.int64), nnz), start)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for j0 in range(start, end, BLOCK_NNZ):
        offs_j = j0 + tl.arange(0, BLOCK_NNZ)
        cols, ok = _load_cols(col_ptr, offs_j, offs_j < end, K, COL16)
        vals = tl.load(val_ptr + offs_j, mask=ok, other=0.0).to(tl.float32)
        b = tl.load(
            b_ptr + cols[:, None] * stride_bk + offs_n[None, :] * stride_bn,
            mask=ok[:, None] & n_mask[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(vals[:, None] * b, axis=0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + m).to(tl.float32)
    tl.store(out_ptr + m * stride_om + offs_n * stride_on, acc.to(out_ptr.dtype.element_ty), mask=n_mask)


@triton.jit(do_not_specialize=["nnz"])
def _csr_mm_decode_kernel(
    crow_ptr, col_ptr, val_ptr, order_ptr, b_ptr, bias_ptr, out_ptr,
    M, N, K, nnz,
    stride_bk, stride_bn, stride_om, stride_on,
    HAS_ORDER: tl.constexpr, HAS_BIAS: tl.constexpr, COL16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_NNZ: tl.constexpr, BLOCK_N: tl.constexpr,
):
    offs_i = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    i_mask = offs_i < M
    if HAS_ORDER:
        rows = tl.load(order_ptr + offs_i, mask=i_mask, other=0).to(tl.int64)
    else:
        rows = offs_i
    r_mask = i_mask & (rows >= 0) & (rows < M)
    rows = tl.where(r_mask, rows, 0)
    starts = tl.maximum(tl.load(crow_ptr + rows, mask=r_mask, other=0).to(tl.int64), 0)
    ends = tl.minimum(tl.load(crow_ptr + rows + 1, mask=r_mask, other=0).to(tl.int64), nnz)
    ends = tl.where(r_mask, ends, starts)
    offs_n = tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for j0 in range(0, tl.max(ends - starts, axis=0), BLOCK_NNZ):
        offs_j = starts[:, None] + j0 + tl.arange(0, BLOCK_NNZ)[None, :]
        cols, ok = _load_cols(col_ptr, offs_j, offs_j < ends[:, None], K, COL16)
        vals = tl.load(val_ptr + offs_j, mask=ok, other=0.0).to(tl.float32)
        b = tl.load(
            b_ptr + cols[:, :, None] * stride_bk + offs_n[None, None, :] * stride_bn,
            mask=ok[:, :, None] & n_mask[None, None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(vals[:, :, None] * b, axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rows, mask=r_mask, other=0.0).to(tl.float32)[:, None]
    tl.store(
        out_ptr + rows[:, None] * stride_om + offs_n[None, :] * stride_on,
        acc.to(out_ptr.dtype.element_ty),
        mask=r_mask[:, None] & n_mask[None, :],
    )


def _launch(crow, col, val, B, bias, out, row_order):
    """out (M, N) = A @ B (+ bias[:, None]); B (K, N) and out may have any strides."""
    M, N = out.shape
    if M == 0 or N == 0:
        return out
    # The kernels index these as contiguous (no-ops for a CSRMatrix); the dense operands go by strides.
    crow, col, val = crow.contiguous(), col.contiguous(), val.contiguous()
    row_order = row_order.contiguous() if row_order is not None else None
    bias = bias.contiguous() if bias is not None else None
    args = (
        crow, col, val, row_order if row_order is not None else crow, B, bias if bias is not None else val, out,
        M, N, B.shape[0], col.numel(),
        B.stride(0), B.stride(1), out.stride(0), out.stride(1),
    )
    flags = dict(HAS_ORDER=row_order is not None, HAS_BIAS=bias is not None, COL16=col.dtype == COMPACT_COL_DTYPE)
    if N <= DECODE_MAX_N:
        block_m = 8
        _csr_mm_decode_kernel[(triton.cdiv(M, block_m),)](
            *args, **flags, BLOCK_M=block_m, BLOCK_NNZ=32, BLOCK_N=triton.next_power_of_2(N)
        )
    else:
        block_n = min(128, triton.next_power_of_2(N))
        _csr_mm_rows_kernel[(M, triton.cdiv(N, block_n))](*args, **flags, BLOCK_NNZ=32, BLOCK_N=block_n)
    return out


def csr_mm(crow, col, val, B, row_order=None):
    check_csr_mm(crow, col, val, B, row_order)
    out = torch.empty((crow.numel() - 1, B.shape[1]), dtype=B.dtype, device=B.device)
    return _launch(crow, col, val, B, None, out, row_order)


def csr_linear(x, crow, col, val, bias, row_order=None):
    check_csr_linear(x, crow, col, val, bias, row_order)
    M = crow.numel() - 1
    out = torch.empty((x.shape[0], M), dtype=x.dtype, device=x.device)
    xt = x.t() if x.shape[0] <= DECODE_MAX_N else x.t().contiguous()
    _launch(crow, col, val, xt, bias, out.t(), row_order)
    return out
