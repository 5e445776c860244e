"""Triton SDDMM for the gradient of CSR values: out[j] = dot(G[row(j), :], B[col(j), :]).

One program per row: BLOCK_NNZ entries at a time, the dot products reduced over N in BLOCK_N slices. G and B
may be transposed views (the csr_linear backward passes gradᵀ and xᵀ), so every access goes through strides.
Compact (int16) column indices are read as unsigned.
"""

import torch
import triton
import triton.language as tl

from ..formats.csr import COMPACT_COL_DTYPE
from ..ops.csr_sddmm import check_csr_sddmm
from .csr_mm import _load_cols


@triton.jit(do_not_specialize=["nnz"])  # nnz only clamps the row pointers
def _csr_sddmm_kernel(
    crow_ptr, col_ptr, g_ptr, b_ptr, out_ptr,
    N, K, nnz,
    stride_gm, stride_gn, stride_bk, stride_bn,
    COL16: tl.constexpr, BLOCK_NNZ: tl.constexpr, BLOCK_N: tl.constexpr,
):
    m = tl.program_id(0).to(tl.int64)
    # Clamped to [0, nnz]: a bad row pointer (unvalidated input) must not make the store below write outside out.
    start = tl.maximum(tl.load(crow_ptr + m).to(tl.int64), 0)
    end = tl.minimum(tl.load(crow_ptr + m + 1).to(tl.int64), nnz)
    for j0 in range(start, end, BLOCK_NNZ):
        offs_j = j0 + tl.arange(0, BLOCK_NNZ)
        j_mask = offs_j < end
        cols, row_ok = _load_cols(col_ptr, offs_j, j_mask, K, COL16)
        acc = tl.zeros([BLOCK_NNZ], dtype=tl.float32)
        for n0 in range(0, N, BLOCK_N):
            # int64: the csr_linear backward passes gradᵀ and xᵀ (stride_gn = M, stride_bn = K), and T * M or
            # T * K may pass 2^31.
            offs_n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
            n_mask = offs_n < N
            g = tl.load(g_ptr + m * stride_gm + offs_n * stride_gn, mask=n_mask, other=0.0).to(tl.float32)
            b = tl.load(
                b_ptr + cols[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                mask=row_ok[:, None] & n_mask[None, :],
                other=0.0,
            ).to(tl.float32)
            acc += tl.sum(b * g[None, :], axis=1)
        tl.store(out_ptr + offs_j, acc.to(out_ptr.dtype.element_ty), mask=j_mask)


def csr_sddmm(crow, col, G, B):
    check_csr_sddmm(crow, col, G, B)
    M = crow.numel() - 1
    out = torch.empty(col.numel(), dtype=G.dtype, device=G.device)
    if M == 0 or col.numel() == 0:
        return out
    N = G.shape[1]
    crow, col = crow.contiguous(), col.contiguous()  # indexed as contiguous; G and B go by strides
    _csr_sddmm_kernel[(M,)](
        crow, col, G, B, out,
        N, B.shape[0], col.numel(),
        G.stride(0), G.stride(1), B.stride(0), B.stride(1),
        COL16=col.dtype == COMPACT_COL_DTYPE,
        BLOCK_NNZ=32, BLOCK_N=max(16, min(128, triton.next_power_of_2(max(N, 1)))),
    )
    return out
