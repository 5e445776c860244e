"""bsr_mm benchmark cases: dense matmul (MKL / cuBLAS), torch.sparse BSR (MKL sparse on CPU, torch's Triton BSR
kernel on GPU) and sk.ops.bsr_mm on the same block-sparse weights and the same dense operand.

Sparsity here is block sparsity: the fraction of (bm, bk) blocks that are zero. Block sizes come from the
preset's "blocksizes" when it has them, else 32x32 on CPU and 16/32/64 squares on GPU.
"""

from __future__ import annotations

import warnings

import torch

from ..formats import BSRMatrix
from ..ops import bsr_mm
from .case import Case, rotation_copies, sparse_rotation

DEFAULT_BLOCKSIZES = {"cpu": [(32, 32)], "cuda": [(16, 16), (32, 32), (64, 64)]}


def random_block_weight(M: int, K: int, blocksize, sparsity: float, dtype: torch.dtype, device: torch.device,
                        seed: int) -> torch.Tensor:
    """A (M, K) weight whose (bm, bk) blocks are each zero with probability `sparsity`, normal inside (drawn on
    `device`)."""
    bm, bk = blocksize
    g = torch.Generator(device=device).manual_seed(seed)
    MB, KB = -(-M // bm), -(-K // bk)
    keep = torch.rand(MB, KB, generator=g, device=device) >= sparsity
    mask = keep.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
    return (torch.randn(M, K, generator=g, device=device) * mask).to(dtype)


def cases(preset: dict, device: torch.device):
    blocksizes = preset.get("blocksizes") or DEFAULT_BLOCKSIZES.get(device.type, [(32, 32)])
    for dtype in preset["dtypes"]:
        for M, K in preset["shapes"]:
            copies = rotation_copies(M * K * torch.tensor([], dtype=dtype).element_size(), device)
            for blocksize in blocksizes:
                bm, bk = blocksize
                for sparsity in preset["sparsities"]:
                    W = [random_block_weight(M, K, blocksize, sparsity, dtype, device, seed=i) for i in range(copies)]
                    A = sparse_rotation([BSRMatrix.from_dense(w, blocksize) for w in W], device)
                    # torch.sparse_bsr needs M, K divisible by the block: the padded form is the same product.
                    T = None
                    if M % bm == 0 and K % bk == 0:
                        with warnings.catch_warnings():  # torch's "sparse BSR is in beta" notice
                            warnings.simplefilter("ignore", UserWarning)
                            T = sparse_rotation([a.to_torch() for a in A[:copies]], device)
                    nnz = A[0].nnz
                    idx_bytes = A[0].col_indices.element_size()
                    for N in preset["ns"]:
                        B = [torch.randn(K, N, device=device, dtype=dtype) for _ in range(max(len(A), len(T or ())))]
                        elt = B[0].element_size()
                        io_bytes = (K * N + M * N) * elt
                        methods = {"dense": [lambda w=w, b=b: w @ b for w, b in zip(W, B)]}
                        if T is not None:
                            methods["torch.sparse"] = [lambda t=t, b=b: t @ b for t, b in zip(T, B)]
                        methods["sparsekern"] = [lambda a=a, b=b: bsr_mm(a, b) for a, b in zip(A, B)]
                        yield Case(
                            op="bsr_mm",
                            params=dict(M=M, K=K, N=N, sparsity=sparsity, dtype=str(dtype).replace("torch.", ""),
                                        blocksize=f"{bm}x{bk}"),
                            flops=2 * nnz * N,
                            bytes=A[0].nblocks * (bm * bk * elt + idx_bytes)
                            + A[0].crow_indices.numel() * idx_bytes
                            + io_bytes,
                            dense_bytes=M * K * elt + io_bytes,
                            methods=methods,
                        )
