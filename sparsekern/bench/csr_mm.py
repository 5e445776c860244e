"""csr_mm benchmark cases: dense matmul (MKL / cuBLAS), torch.sparse CSR (MKL sparse / cuSPARSE) and
sk.ops.csr_mm on the same weights and the same dense operand, plus each of the two kernels sk.ops.csr_mm
chooses between (sparsekern.dispatch) called directly: "sparsekern[csr]" (column indices; CUDA cores on a GPU)
and "sparsekern[bitmap]" (the weights carry a bitmap; tensor cores on a GPU, expand-loads on a CPU), so the
dispatch's crossovers can be read off the results. On CUDA also the Triton CSR kernel.

Our weights use compact (int16) column indices wherever K <= 65536, the format the GPU kernels are built for;
`bytes` counts what that format must move: values + 2-byte indices + row pointers + dense input + output.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from ..formats import CSRMatrix
from ..formats.csr import COMPACT_COL_DTYPE, COMPACT_MAX_K
from ..ops import csr_mm
from .case import Case, random_weight, rotation_copies, sparse_rotation


def weights(preset: dict, device: torch.device):
    """(dtype, M, K, sparsity, dense weights, CSRMatrix copies, torch.sparse_csr copies) for every weight: as
    many distinct copies of each as rotation_copies / sparse_rotation ask, so no call re-reads a warm weight."""
    for dtype in preset["dtypes"]:
        for M, K in preset["shapes"]:
            copies = rotation_copies(M * K * torch.tensor([], dtype=dtype).element_size(), device)
            for sparsity in preset["sparsities"]:
                W = [random_weight(M, K, sparsity, dtype, device, seed=i) for i in range(copies)]
                col_dtype = COMPACT_COL_DTYPE if K <= COMPACT_MAX_K else None
                A = sparse_rotation([CSRMatrix.from_dense(w, col_dtype=col_dtype, bitmap=True) for w in W], device)
                with warnings.catch_warnings():  # torch's "sparse CSR is in beta" notice
                    warnings.simplefilter("ignore", UserWarning)
                    T = sparse_rotation([w.to_sparse_csr() for w in W], device)
                yield dtype, M, K, sparsity, W, A, T


def sparse_bytes(A: CSRMatrix) -> int:
    """The fewest bytes of the stored matrix a kernel must read: values and row pointers, plus the cheaper index
    of the two A carries (column indices, or the bitmap's 1 bit per element)."""
    index = A.nnz * A.col_indices.element_size()
    if A.bitmap is not None:
        index = min(index, A.bitmap.numel() * A.bitmap.element_size())
    return A.nnz * A.values.element_size() + index + A.crow_indices.numel() * A.crow_indices.element_size()


def triton_kernels(device: torch.device):
    """The Triton launchers when they can run next to compiled CUDA kernels (a CUDA device with triton)."""
    if device.type != "cuda" or importlib.util.find_spec("triton") is None:
        return None
    from .._triton import csr_mm as triton_csr

    return triton_csr


def forced_kernels(A: list, X: list, linear: bool) -> dict:
    """The column-index and the bitmap CSR kernels called directly on (A, B) pairs (or (A, x) for the Linear
    orientation), bypassing the per-call choice."""
    ops = torch.ops.sparsekern
    if linear:
        return {
            "sparsekern[csr]": [lambda a=a, x=x: ops.csr_linear(x, a.crow_indices, a.col_indices, a.values, None,
                                                                a.row_order) for a, x in zip(A, X)],
            "sparsekern[bitmap]": [lambda a=a, x=x: ops.csr_bitmap_linear(x, a.crow_indices, a.col_indices, a.values,
                                                                          a.bitmap, None) for a, x in zip(A, X)],
        }
    return {
        "sparsekern[csr]": [lambda a=a, b=b: ops.csr_mm(a.crow_indices, a.col_indices, a.values, b, a.row_order)
                            for a, b in zip(A, X)],
        "sparsekern[bitmap]": [lambda a=a, b=b: ops.csr_bitmap_mm(a.crow_indices, a.col_indices, a.values, a.bitmap, b)
                               for a, b in zip(A, X)],
    }


def _configured(config: str, call):
    """call() with SPARSEKERN_CSR_MM_CONFIG = config (read by the CUDA kernels per call), restored after."""
    old = os.environ.get("SPARSEKERN_CSR_MM_CONFIG")
    os.environ["SPARSEKERN_CSR_MM_CONFIG"] = config
    try:
        return call()
    finally:
        if old is None:
            del os.environ["SPARSEKERN_CSR_MM_CONFIG"]
        else:
            os.environ["SPARSEKERN_CSR_MM_CONFIG"] = old


def add_variants(methods: dict, preset: dict) -> dict:
    """One extra method per forced kernel configuration in preset["variants"] (bench --variants)."""
    for config in preset.get("variants", ()):
        methods[f"sparsekern[{config}]"] = [lambda f=f, c=config: _configured(c, f) for f in methods["sparsekern"]]
    return methods


def sparse_case(op: str, preset: dict, dtype, M: int, K: int, N: int, sparsity: float, A: CSRMatrix,
                methods: dict) -> Case:
    """A case of (M, K) sparse times N dense vectors, with our forced variants added to `methods`."""
    elt = A.values.element_size()
    io_bytes = (K * N + M * N) * elt
    return Case(
        op=op,
        params=dict(M=M, K=K, N=N, sparsity=sparsity, dtype=str(dtype).replace("torch.", "")),
        flops=2 * A.nnz * N,
        bytes=sparse_bytes(A) + io_bytes,
        dense_bytes=M * K * elt + io_bytes,
        methods=add_variants(methods, preset),
    )


def cases(preset: dict, device: torch.device):
    tri = triton_kernels(device)
    for dtype, M, K, sparsity, W, A, T in weights(preset, device):
        for N in preset["ns"]:
            B = [torch.randn(K, N, device=device, dtype=dtype) for _ in range(max(len(A), len(T)))]
            methods = {
                "dense": [lambda w=w, b=b: w @ b for w, b in zip(W, B)],
                "torch.sparse": [lambda t=t, b=b: t @ b for t, b in zip(T, B)],
                "sparsekern": [lambda a=a, b=b: csr_mm(a, b) for a, b in zip(A, B)],
                **forced_kernels(A, B, linear=False),
            }
            if tri is not None:
                methods["triton"] = [
                    lambda a=a, b=b: tri.csr_mm(a.crow_indices, a.col_indices, a.values, b, a.row_order)
                    for a, b in zip(A, B)
                ]
            yield sparse_case("csr_mm", preset, dtype, M, K, N, sparsity, A[0], methods)
