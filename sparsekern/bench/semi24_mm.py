"""semi24_mm benchmark cases: 2:4 weights (exactly 2 nonzeros in every group of 4 along K, 50% sparsity) against
dense matmul (MKL / cuBLAS) and the vendor 2:4 paths where they run: on a GPU, torch's
to_sparse_semi_structured with the cuSPARSELt and the CUTLASS backend (CUTLASS is compute capability 8.x only);
on a CPU, which has no 2:4 path in torch, torch.sparse CSR of the same weight."""

from __future__ import annotations

import warnings

import torch

from ..formats import Semi24Matrix
from ..ops import semi24_mm
from .case import Case, rotation_copies, sparse_rotation


def random_24_weight(M: int, K: int, dtype: torch.dtype, device: torch.device, seed: int) -> torch.Tensor:
    """A (M, K) weight with 2 nonzeros at random places in every group of 4 along K (K % 4 == 0), drawn on
    `device`."""
    g = torch.Generator(device=device).manual_seed(seed)
    keep = torch.rand(M, K // 4, 4, generator=g, device=device).argsort(-1)[..., :2]
    mask = torch.zeros(M, K // 4, 4, dtype=torch.bool, device=device).scatter_(-1, keep, True).view(M, K)
    return (torch.randn(M, K, generator=g, device=device) * mask).to(dtype)


def _semi_structured(W: list[torch.Tensor], cutlass: bool, probe: torch.Tensor):
    """torch's 2:4 tensors of W with the chosen backend, or None where that backend does not run here."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    forced = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = cutlass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            T = [to_sparse_semi_structured(w) for w in W]
            T[0] @ probe  # CUTLASS raises on compute capability 9.x; shapes below the minimum raise too
        return T
    except (RuntimeError, ValueError, NotImplementedError, AssertionError):
        return None
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = forced


def cases(preset: dict, device: torch.device):
    for dtype in preset["dtypes"]:
        for M, K in preset["shapes"]:
            elt = torch.tensor([], dtype=dtype).element_size()
            copies = rotation_copies(M * K * elt, device)
            W = [random_24_weight(M, K, dtype, device, seed=i) for i in range(copies)]
            A = sparse_rotation([Semi24Matrix.from_dense(w) for w in W], device)
            anchors = {}
            if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
                probe = torch.randn(K, 64, device=device, dtype=dtype)
                for name, cutlass in (("cuSPARSELt", False), ("CUTLASS", True)):
                    T = _semi_structured(W, cutlass, probe)
                    if T is not None:
                        anchors[name] = T
            elif device.type == "cpu":
                with warnings.catch_warnings():  # torch's "sparse CSR is in beta" notice
                    warnings.simplefilter("ignore", UserWarning)
                    anchors["torch.sparse"] = sparse_rotation([w.to_sparse_csr() for w in W], device)
            weight_bytes = A[0].values.numel() * elt + A[0].metadata.numel() * 4
            for N in preset["ns"]:
                B = [torch.randn(K, N, device=device, dtype=dtype)
                     for _ in range(max(len(A), *(len(T) for T in anchors.values())))]
                io_bytes = (K * N + M * N) * elt
                methods = {
                    "dense": [lambda w=w, b=b: w @ b for w, b in zip(W, B)],
                    **{name: [lambda t=t, b=b: t @ b for t, b in zip(T, B)] for name, T in anchors.items()},
                    "sparsekern": [lambda a=a, b=b: semi24_mm(a, b) for a, b in zip(A, B)],
                }
                yield Case(
                    op="semi24_mm",
                    params=dict(M=M, K=K, N=N, sparsity=0.5, dtype=str(dtype).replace("torch.", "")),
                    flops=2 * A[0].nnz * N,
                    bytes=weight_bytes + io_bytes,
                    dense_bytes=M * K * elt + io_bytes,
                    methods=methods,
                )
