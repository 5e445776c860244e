"""csr_mm benchmark cases: dense matmul (MKL / cuBLAS), torch.sparse CSR (MKL sparse / cuSPARSE) and
sk.ops.csr_mm on the same weights and the same dense operand."""

from __future__ import annotations

import warnings

import torch

from ..formats import CSRMatrix
from ..ops import csr_mm
from .case import Case, random_weight, rotation_copies


def cases(preset: dict, device: torch.device):
    for dtype in preset["dtypes"]:
        for M, K in preset["shapes"]:
            copies = rotation_copies(M * K * torch.tensor([], dtype=dtype).element_size(), device)
            for sparsity in preset["sparsities"]:
                W = [random_weight(M, K, sparsity, dtype, device, seed=i) for i in range(copies)]
                A = [CSRMatrix.from_dense(w) for w in W]
                with warnings.catch_warnings():  # torch's "sparse CSR is in beta" notice
                    warnings.simplefilter("ignore", UserWarning)
                    T = [w.to_sparse_csr() for w in W]
                nnz = A[0].nnz
                idx_bytes = A[0].col_indices.element_size()
                for N in preset["ns"]:
                    B = [torch.randn(K, N, device=device, dtype=dtype) for _ in range(copies)]
                    elt = B[0].element_size()
                    io_bytes = (K * N + M * N) * elt
                    yield Case(
                        op="csr_mm",
                        params=dict(M=M, K=K, N=N, sparsity=sparsity, dtype=str(dtype).replace("torch.", "")),
                        flops=2 * nnz * N,
                        bytes=nnz * (elt + idx_bytes) + (M + 1) * idx_bytes + io_bytes,
                        dense_bytes=M * K * elt + io_bytes,
                        methods={
                            "dense": [lambda w=w, b=b: w @ b for w, b in zip(W, B)],
                            "torch.sparse": [lambda t=t, b=b: t @ b for t, b in zip(T, B)],
                            "sparsekern": [lambda a=a, b=b: csr_mm(a, b) for a, b in zip(A, B)],
                        },
                    )
