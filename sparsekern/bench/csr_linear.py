"""csr_linear benchmark cases, the nn.Linear orientation y = x @ Wᵀ with x (N tokens, K): F.linear (cuBLAS /
MKL), torch.sparse as a user would write it ((W_csr @ xᵀ)ᵀ), and sk.ops.sparse_linear, on the weights of the
csr_mm cases. N is the token count: N <= 16 is decode, larger N prefill."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import sparse_linear
from .csr_mm import forced_kernels, sparse_case, triton_kernels, weights


def cases(preset: dict, device: torch.device):
    tri = triton_kernels(device)
    for dtype, M, K, sparsity, W, A, T in weights(preset, device):
        for N in preset["ns"]:
            X = [torch.randn(N, K, device=device, dtype=dtype) for _ in range(max(len(A), len(T)))]
            methods = {
                "dense": [lambda w=w, x=x: F.linear(x, w) for w, x in zip(W, X)],
                "torch.sparse": [lambda t=t, x=x: (t @ x.t()).t() for t, x in zip(T, X)],
                "sparsekern": [lambda a=a, x=x: sparse_linear(x, a) for a, x in zip(A, X)],
                **forced_kernels(A, X, linear=True),
            }
            if tri is not None:
                methods["triton"] = [
                    lambda a=a, x=x: tri.csr_linear(x, a.crow_indices, a.col_indices, a.values, None, a.row_order)
                    for a, x in zip(A, X)
                ]
            yield sparse_case("csr_linear", preset, dtype, M, K, N, sparsity, A[0], methods)
