"""CSR (compressed sparse row) matrix: the format of unstructured sparsity."""

from __future__ import annotations

import torch

from .._checks import FLOAT_DTYPES, INDEX_DTYPES, check_float, fail, index_dtype_for


def check_csr(
    where: str,
    crow: torch.Tensor,
    col: torch.Tensor,
    val: torch.Tensor,
    shape: tuple[int, int],
    contents: bool = True,
) -> None:
    """Checks CSR components against `shape`. With `contents`, also reads the indices (a device sync on GPU):
    crow starts at 0, never decreases and ends at nnz; every column lies in [0, K)."""
    M, K = shape
    for name, t in (("crow_indices", crow), ("col_indices", col), ("values", val)):
        if t.dim() != 1:
            fail(where, ValueError, f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if crow.dtype not in INDEX_DTYPES:
        fail(where, TypeError, f"crow_indices must be int32 or int64, got {crow.dtype}")
    if col.dtype != crow.dtype:
        fail(where, TypeError, f"col_indices must have the dtype of crow_indices ({crow.dtype}), got {col.dtype}")
    check_float(where, val, "values")
    if not (crow.device == col.device == val.device):
        fail(where, ValueError, f"components must share a device, got {crow.device}, {col.device}, {val.device}")
    if crow.numel() != M + 1:
        fail(where, ValueError, f"crow_indices must have M + 1 = {M + 1} entries, got {crow.numel()}")
    if col.numel() != val.numel():
        fail(where, ValueError, f"col_indices and values differ in length: {col.numel()} vs {val.numel()}")
    if not contents:
        return
    nnz = col.numel()
    if int(crow[0]) != 0:
        fail(where, ValueError, f"crow_indices[0] must be 0, got {int(crow[0])}")
    if int(crow[-1]) != nnz:
        fail(where, ValueError, f"crow_indices[-1] must equal nnz = {nnz}, got {int(crow[-1])}")
    if M > 0 and bool((crow.diff() < 0).any()):
        i = int(torch.nonzero(crow.diff() < 0)[0])
        fail(where, ValueError, f"crow_indices must be non-decreasing, but [{i}] = {int(crow[i])} > [{i + 1}] = {int(crow[i + 1])}")
    if nnz > 0 and bool(((col < 0) | (col >= K)).any()):
        j = int(torch.nonzero((col < 0) | (col >= K))[0])
        fail(where, IndexError, f"col_indices[{j}] = {int(col[j])} is out of range for K = {K}")


def csr_transpose(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, K: int):
    """Components of the (K, M) transpose, with torch ops only (any device, traceable: every shape is static).
    Costs a sort of the nnz entries; used by the backward of the CSR ops."""
    M = crow.numel() - 1
    nnz = col.numel()
    rows = torch.repeat_interleave(
        torch.arange(M, device=crow.device, dtype=crow.dtype), crow.diff(), output_size=nnz
    )
    perm = torch.argsort(col.long() * max(M, 1) + rows.long(), stable=True)
    sorted_col = col[perm]
    t_crow = torch.searchsorted(sorted_col, torch.arange(K + 1, device=col.device, dtype=col.dtype))
    return t_crow.to(crow.dtype), rows[perm], val[perm]


class CSRMatrix:
    """A sparse (M, K) matrix in CSR form: `crow_indices` (M+1), `col_indices` (nnz), `values` (nnz).

    Indices are int32 where every index and offset fits, int64 beyond. The constructor validates the components
    (including their contents: this reads them, a sync on GPU); pass `validate=False` only for components that
    are known good.
    """

    def __init__(self, crow_indices, col_indices, values, shape, *, validate: bool = True):
        self.crow_indices = crow_indices
        self.col_indices = col_indices
        self.values = values
        self.shape = (int(shape[0]), int(shape[1]))
        if validate:
            check_csr("CSRMatrix", crow_indices, col_indices, values, self.shape)

    # Construction and conversion

    @classmethod
    def from_dense(cls, W: torch.Tensor, mask: torch.Tensor | None = None, index_dtype: torch.dtype | None = None):
        """Keeps the entries of W (M, K) that are nonzero or, with `mask`, where mask is True (explicit zeros
        included)."""
        if W.dim() != 2:
            fail("CSRMatrix.from_dense", ValueError, f"W must be 2-D, got shape {tuple(W.shape)}")
        if W.dtype not in FLOAT_DTYPES:
            fail("CSRMatrix.from_dense", TypeError, f"W must be float32, float16 or bfloat16, got {W.dtype}")
        if mask is None:
            keep = W != 0
        else:
            if mask.shape != W.shape:
                fail("CSRMatrix.from_dense", ValueError, f"mask shape {tuple(mask.shape)} != W shape {tuple(W.shape)}")
            keep = mask.to(device=W.device, dtype=torch.bool)
        M, K = W.shape
        idx = index_dtype or index_dtype_for(int(keep.sum()), K, M)
        crow = torch.zeros(M + 1, dtype=idx, device=W.device)
        crow[1:] = keep.sum(1).cumsum(0)
        col = keep.nonzero()[:, 1].to(idx)
        return cls(crow, col, W[keep].contiguous(), (M, K), validate=False)

    @classmethod
    def from_torch(cls, t: torch.Tensor, index_dtype: torch.dtype | None = None):
        """From a torch.sparse_csr tensor (components are copied, so they own their storage)."""
        if t.layout != torch.sparse_csr:
            fail("CSRMatrix.from_torch", TypeError, f"expected a torch.sparse_csr tensor, got layout {t.layout}")
        crow, col = t.crow_indices(), t.col_indices()
        idx = index_dtype or index_dtype_for(col.numel(), t.shape[0], t.shape[1])
        return cls(crow.to(idx, copy=True), col.to(idx, copy=True), t.values().clone(), tuple(t.shape))

    def to_torch(self) -> torch.Tensor:
        return torch.sparse_csr_tensor(
            self.crow_indices, self.col_indices, self.values, self.shape, check_invariants=False
        )

    def to_dense(self) -> torch.Tensor:
        M, K = self.shape
        rows = torch.repeat_interleave(
            torch.arange(M, device=self.device), self.crow_indices.diff(), output_size=self.nnz
        )
        out = torch.zeros(M, K, dtype=self.dtype, device=self.device)
        out.index_put_((rows, self.col_indices.long()), self.values, accumulate=True)
        return out

    def to(self, device=None, dtype: torch.dtype | None = None) -> CSRMatrix:
        """Moves the components; `dtype` converts the values only."""
        return CSRMatrix(
            self.crow_indices.to(device),
            self.col_indices.to(device),
            self.values.to(device=device, dtype=dtype),
            self.shape,
            validate=False,
        )

    def t(self) -> CSRMatrix:
        """The (K, M) transpose, as a new CSRMatrix."""
        crow, col, val = csr_transpose(self.crow_indices, self.col_indices, self.values, self.shape[1])
        return CSRMatrix(crow, col, val, (self.shape[1], self.shape[0]), validate=False)

    # Properties

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def density(self) -> float:
        M, K = self.shape
        return self.nnz / (M * K) if M * K else 0.0

    def __repr__(self) -> str:
        return (
            f"CSRMatrix(shape={self.shape}, nnz={self.nnz}, density={self.density:.3f}, dtype={self.dtype}, "
            f"index_dtype={self.crow_indices.dtype}, device={self.device})"
        )
