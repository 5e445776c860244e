"""CSR (compressed sparse row) matrix: the format of unstructured sparsity."""

from __future__ import annotations

import torch

from .._checks import (
    INDEX_DTYPES,
    check_dim,
    check_float,
    check_has_values,
    check_index_dtype,
    check_same_device,
    check_shape,
    check_tensor,
    fail,
    require,
)
from .._constants import BITMAP_WORD_BITS, COMPACT_MAX_K
from .base import SparseMatrix

# Compact column indices: int16 tensors holding the 16-bit pattern of a column in [0, 65535] (torch has no
# usable uint16), read as unsigned everywhere (`col & 0xFFFF`). They halve the index bytes a kernel streams.
COMPACT_COL_DTYPE = torch.int16


def compact_col_dtype(K: int) -> torch.dtype | None:
    """The compact (int16) column dtype where K allows it, else None (the index dtype). SparseLinear,
    load_compressed and tune() store columns this way: a quarter fewer bytes per kept fp32 weight, and the CPU
    kernel measured 1.13-1.32x faster at one token and 1.03-1.13x at 64 (EPYC, AVX2, 10-30% density)."""
    return COMPACT_COL_DTYPE if K <= COMPACT_MAX_K else None


def col_as_long(col: torch.Tensor) -> torch.Tensor:
    """Column indices as int64, reading compact (int16) columns as unsigned."""
    return col.long() & 0xFFFF if col.dtype == COMPACT_COL_DTYPE else col.long()


def cols_to(cols: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Column indices (any integer dtype, non-negative) in `dtype`; for int16, the 16-bit pattern (c - 65536 for
    c >= 32768), written out rather than left to a narrowing conversion."""
    if dtype != COMPACT_COL_DTYPE:
        return cols.to(dtype)
    cols = cols.long()
    return torch.where(cols >= 1 << 15, cols - COMPACT_MAX_K, cols).to(dtype)


def row_order_of(crow: torch.Tensor) -> torch.Tensor:
    """The rows sorted by length, longest first (stable), in crow's dtype: the order GPU kernels walk rows in, so
    the heaviest rows start first and the rows sharing a warp have similar lengths."""
    return torch.argsort(crow.diff(), descending=True, stable=True).to(crow.dtype)


# Bitmap of the stored columns (the index the bitmap kernels read): one 32-bit word per (row, 32 columns), bit b of
# word w set where column 32 w + b is stored. int32 words: bit 31 is the sign bit, read as unsigned by kernels.


def bitmap_words(K: int) -> int:
    return -(-K // BITMAP_WORD_BITS)


def _rows_of(crow: torch.Tensor, nnz: int) -> torch.Tensor:
    """The row of every stored entry (int64)."""
    M = crow.numel() - 1
    return torch.repeat_interleave(torch.arange(M, device=crow.device), crow.diff(), output_size=nnz)


def bitmap_of(where: str, crow: torch.Tensor, col: torch.Tensor, K: int) -> torch.Tensor:
    """The (M, ceil(K / 32)) int32 bitmap of a CSR pattern (torch ops, any device). Rows must hold sorted,
    distinct columns, what a bitmap can represent (ValueError from `where` otherwise; reads the indices, a
    device sync on GPU). Distinct bits of a word add up to their OR, so one index_add builds every word."""
    M, nnz = crow.numel() - 1, col.numel()
    rows, cols = _rows_of(crow, nnz), col_as_long(col)
    bad = (rows[1:] == rows[:-1]) & (cols[1:] <= cols[:-1])
    if bool(bad.any()):
        j = int(torch.nonzero(bad)[0]) + 1
        fail(where, ValueError,
             f"a bitmap needs sorted, duplicate-free columns in every row, but col_indices[{j}] = {int(cols[j])} "
             f"follows {int(cols[j - 1])} in row {int(rows[j])}")
    W = bitmap_words(K)
    words = torch.zeros(M * W, dtype=torch.int64, device=col.device)
    words.index_add_(0, rows * W + cols // BITMAP_WORD_BITS, torch.ones_like(cols) << (cols % BITMAP_WORD_BITS))
    words = torch.where(words >= 1 << 31, words - (1 << 32), words)  # the uint32 pattern as int32
    return words.to(torch.int32).view(M, W)


def check_bitmap(where: str, bitmap: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, K,
                 contents: bool = True) -> None:
    """The bitmap is (M, ceil(K / 32)) int32 on crow's device; with `contents`, it equals the pattern's bitmap
    (reads the indices: a device sync on GPU)."""
    M = crow.shape[0] - 1
    check_tensor(where, bitmap, "bitmap")
    if bitmap.dtype != torch.int32:
        fail(where, TypeError, f"bitmap must be int32, got {bitmap.dtype}")
    require(bitmap.dim() == 2 and bitmap.shape[0] == M and bitmap.shape[1] == bitmap_words(K), where, ValueError,
            lambda: f"bitmap must have shape (M, ceil(K / 32)) = ({M}, {bitmap_words(K)}), got {list(bitmap.shape)}")
    check_same_device(where, crow, "crow_indices", bitmap, "bitmap")
    if contents:
        if not torch.equal(bitmap, bitmap_of(where, crow, col, K)):
            fail(where, ValueError, "bitmap does not match col_indices")


def check_crow_contents(where: str, crow: torch.Tensor, total: int, total_desc: str) -> None:
    """Row pointers (of rows or block rows) start at 0, never decrease and end at `total` stored entries. Reads
    crow (a device sync on GPU)."""
    if int(crow[0]) != 0:
        fail(where, ValueError, f"crow_indices[0] must be 0, got {int(crow[0])}")
    if int(crow[-1]) != total:
        fail(where, ValueError, f"crow_indices[-1] must equal {total_desc}, got {int(crow[-1])}")
    if crow.numel() > 1 and bool((crow.diff() < 0).any()):
        i = int(torch.nonzero(crow.diff() < 0)[0])
        fail(where, ValueError, f"crow_indices must be non-decreasing, but crow_indices[{i}] = {int(crow[i])} > "
                                f"crow_indices[{i + 1}] = {int(crow[i + 1])}")


def check_index_components(where: str, crow, col) -> None:
    """The index tensors of a compressed-row format (CSR rows, BSR block rows): 1-D, crow int32 or int64, with
    M + 1 >= 1 entries, one device. The dtype rule for col is the format's."""
    check_tensor(where, crow, "crow_indices")
    check_tensor(where, col, "col_indices")
    check_dim(where, crow, "crow_indices", 1)
    check_dim(where, col, "col_indices", 1)
    if crow.dtype not in INDEX_DTYPES:
        fail(where, TypeError, f"crow_indices must be int32 or int64, got {crow.dtype}")
    check_same_device(where, crow, "crow_indices", col, "col_indices")
    require(crow.shape[0] >= 1, where, ValueError, "crow_indices must have M + 1 >= 1 entries")


def check_col_dtype(where: str, crow: torch.Tensor, col: torch.Tensor) -> None:
    if col.dtype not in (crow.dtype, COMPACT_COL_DTYPE):
        fail(where, TypeError,
             f"col_indices must have the dtype of crow_indices ({crow.dtype}) or be int16, got {col.dtype}")


def check_csr(
    where: str,
    crow: torch.Tensor,
    col: torch.Tensor,
    val: torch.Tensor,
    shape,
    contents: bool = True,
    row_order: torch.Tensor | None = None,
) -> None:
    """The one check of CSR components against `shape` (M, K), used by the constructor, the typed entry points
    (validate=True), the fake kernels and the Triton launchers; csrc/checks.h check_csr_components words its
    checks the same way. With `contents`, also reads the indices (a device sync on GPU): crow starts at 0,
    never decreases and ends at nnz; every column lies in [0, K); row_order is a permutation."""
    M, K = shape
    check_index_components(where, crow, col)
    check_tensor(where, val, "values")
    check_dim(where, val, "values", 1)
    check_col_dtype(where, crow, col)
    check_float(where, val, "values")
    check_same_device(where, crow, "crow_indices", val, "values")
    require(crow.shape[0] == M + 1, where, ValueError,
            lambda: f"crow_indices must have M + 1 = {M + 1} entries, got {crow.shape[0]}")
    require(col.shape[0] == val.shape[0], where, ValueError,
            lambda: f"col_indices and values must have the same length, got {col.shape[0]} and {val.shape[0]}")
    if row_order is not None:
        check_tensor(where, row_order, "row_order")
        check_dim(where, row_order, "row_order", 1)
        if row_order.dtype != crow.dtype:
            fail(where, TypeError,
                 f"row_order must have the dtype of crow_indices ({crow.dtype}), got {row_order.dtype}")
        require(row_order.shape[0] == M, where, ValueError,
                lambda: f"row_order must have M = {M} entries, got {row_order.shape[0]}")
        check_same_device(where, crow, "crow_indices", row_order, "row_order")
    if not contents:
        return
    nnz = col.numel()
    check_crow_contents(where, crow, nnz, f"nnz = {nnz}")
    if nnz > 0:
        cols = col_as_long(col)
        bad = (cols < 0) | (cols >= K)
        if bool(bad.any()):
            j = int(torch.nonzero(bad)[0])
            fail(where, IndexError, f"col_indices[{j}] = {int(cols[j])} is out of range for K = {K}")
    if row_order is not None and M > 0:
        if not bool((torch.sort(row_order.long()).values == torch.arange(M, device=row_order.device)).all()):
            fail(where, ValueError, "row_order must be a permutation of range(M)")


def check_dense_weight(where: str, W, mask) -> torch.Tensor:
    """A from_dense argument: W a 2-D float tensor, mask (if given) shaped like W. Returns the keep-mask."""
    check_tensor(where, W, "W")
    check_dim(where, W, "W", 2)
    check_float(where, W, "W")
    check_has_values(where, W, "W")
    if mask is None:
        return W != 0
    check_tensor(where, mask, "mask")
    if mask.shape != W.shape:
        fail(where, ValueError, f"mask shape {tuple(mask.shape)} != W shape {tuple(W.shape)}")
    return mask.to(device=W.device, dtype=torch.bool)


def csr_transpose(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, K: int):
    """Components of the (K, M) transpose, with torch ops only (any device, traceable: every shape is static).
    Costs a sort of the nnz entries; used by the backward of the CSR ops. The transpose's columns are the
    original rows, so its indices have crow's dtype."""
    M = crow.numel() - 1
    nnz = col.numel()
    rows = _rows_of(crow, nnz).to(crow.dtype)
    cols = col_as_long(col)
    perm = torch.argsort(cols * max(M, 1) + rows.long(), stable=True)
    t_crow = torch.searchsorted(cols[perm], torch.arange(K + 1, device=col.device))
    return t_crow.to(crow.dtype), rows[perm], val[perm]


class CSRMatrix(SparseMatrix):
    """A sparse (M, K) matrix in CSR form: `crow_indices` (M+1), `col_indices` (nnz), `values` (nnz).

    Indices are int32 where every index and offset fits, int64 beyond. `col_indices` may instead be int16
    ("compact", K <= 65536, read as unsigned): half the index bytes for the bandwidth-bound GPU kernels.
    `row_order` (M, crow's dtype) lists the rows longest first; GPU kernels walk rows in that order for load
    balance. It is computed from crow_indices unless given.

    `bitmap` (optional, (M, ceil(K / 32)) int32, see bitmap_of) marks the stored columns, 32 per word: with it,
    csr_mm and sparse_linear may run the bitmap kernels (sparsekern.dispatch decides per call: decode, N <= 4,
    on the CPU; tensor cores on CUDA in fp16/bf16).
    It costs 1/8 byte per element of the (M, K) matrix and needs sorted, duplicate-free columns per row, which
    from_dense always produces. Build it with `bitmap=True` in from_dense / from_torch, or `with_bitmap()`.

    The constructor validates the components (including their contents: this reads them, a sync on GPU); pass
    `validate=False` only for components that are known good.
    """

    def __init__(self, crow_indices, col_indices, values, shape, *, row_order=None, bitmap=None,
                 validate: bool = True):
        self.crow_indices = crow_indices
        self.col_indices = col_indices
        self.values = values
        self.shape = check_shape("CSRMatrix", shape)
        if validate:
            check_csr("CSRMatrix", crow_indices, col_indices, values, self.shape, row_order=row_order)
            if col_indices.dtype == COMPACT_COL_DTYPE and self.shape[1] > COMPACT_MAX_K:
                fail("CSRMatrix", ValueError,
                     f"int16 (compact) col_indices need K <= {COMPACT_MAX_K}, got K = {self.shape[1]}")
            if bitmap is not None:
                check_bitmap("CSRMatrix", bitmap, crow_indices, col_indices, self.shape[1])
        self.row_order = row_order_of(crow_indices) if row_order is None else row_order
        self.bitmap = bitmap

    # Construction and conversion

    @staticmethod
    def _col_dtype(where: str, col_dtype: torch.dtype | None, index_dtype: torch.dtype, K: int) -> torch.dtype:
        if col_dtype is None or col_dtype == index_dtype:
            return index_dtype
        if col_dtype != COMPACT_COL_DTYPE:
            fail(where, TypeError,
                 f"col_dtype must be None, torch.int16 or the index dtype {index_dtype}, got {col_dtype}")
        if K > COMPACT_MAX_K:
            fail(where, ValueError, f"col_dtype=torch.int16 needs K <= {COMPACT_MAX_K}, got K = {K}")
        return col_dtype

    @classmethod
    def from_dense(
        cls,
        W: torch.Tensor,
        mask: torch.Tensor | None = None,
        index_dtype: torch.dtype | None = None,
        col_dtype: torch.dtype | None = None,
        bitmap: bool = False,
    ):
        """Keeps the entries of W (M, K) that are nonzero or, with `mask`, where mask is True (explicit zeros
        included). `col_dtype=torch.int16` stores compact column indices (K <= 65536); `bitmap=True` adds the
        bitmap (see the class)."""
        where = "CSRMatrix.from_dense"
        keep = check_dense_weight(where, W, mask)
        if not isinstance(bitmap, bool):
            fail(where, TypeError, f"bitmap must be a bool, got {type(bitmap).__name__}")
        M, K = W.shape
        idx = check_index_dtype(where, index_dtype, int(keep.sum()), K, M)
        cdt = cls._col_dtype(where, col_dtype, idx, K)
        crow = torch.zeros(M + 1, dtype=idx, device=W.device)
        crow[1:] = keep.sum(1).cumsum(0)
        col = cols_to(keep.nonzero()[:, 1], cdt)
        A = cls(crow, col, W[keep].contiguous(), (M, K), validate=False)
        return A.with_bitmap() if bitmap else A

    @classmethod
    def from_torch(cls, t: torch.Tensor, index_dtype: torch.dtype | None = None, col_dtype: torch.dtype | None = None,
                   bitmap: bool = False):
        """From a torch.sparse_csr tensor (components are copied, so they own their storage). `bitmap=True`
        needs the tensor's columns sorted within rows (torch.sparse_csr does not guarantee it)."""
        check_tensor("CSRMatrix.from_torch", t, "t")
        if t.layout != torch.sparse_csr:
            fail("CSRMatrix.from_torch", TypeError, f"expected a torch.sparse_csr tensor, got layout {t.layout}")
        crow, col = t.crow_indices(), t.col_indices()
        idx = check_index_dtype("CSRMatrix.from_torch", index_dtype, col.numel(), t.shape[0], t.shape[1])
        cdt = cls._col_dtype("CSRMatrix.from_torch", col_dtype, idx, t.shape[1])
        col = col.to(cdt, copy=True) if cdt != COMPACT_COL_DTYPE else cols_to(col, cdt)
        A = cls(crow.to(idx, copy=True), col, t.values().clone(), tuple(t.shape))
        return A.with_bitmap() if bitmap else A

    def with_bitmap(self) -> CSRMatrix:
        """This matrix (components shared, not copied) with the bitmap of its pattern; ValueError if a row's
        columns are not sorted and distinct."""
        if self.bitmap is not None:
            return self
        bitmap = bitmap_of("CSRMatrix.with_bitmap", self.crow_indices, self.col_indices, self.shape[1])
        return CSRMatrix(self.crow_indices, self.col_indices, self.values, self.shape, row_order=self.row_order,
                         bitmap=bitmap, validate=False)

    def to_torch(self) -> torch.Tensor:
        """A torch.sparse_csr tensor (compact columns are widened to crow's dtype: torch needs them equal)."""
        col = self.col_indices
        if col.dtype == COMPACT_COL_DTYPE:
            col = col_as_long(col).to(self.crow_indices.dtype)
        return torch.sparse_csr_tensor(self.crow_indices, col, self.values, self.shape, check_invariants=False)

    def to_dense(self) -> torch.Tensor:
        M, K = self.shape
        out = torch.zeros(M, K, dtype=self.dtype, device=self.device)
        rows = _rows_of(self.crow_indices, self.nnz)
        out.index_put_((rows, col_as_long(self.col_indices)), self.values, accumulate=True)
        return out

    def to(self, device=None, dtype: torch.dtype | None = None) -> CSRMatrix:
        """Moves the components; `dtype` converts the values only."""
        return CSRMatrix(
            self.crow_indices.to(device),
            self.col_indices.to(device),
            self.values.to(device=device, dtype=dtype),
            self.shape,
            row_order=self.row_order.to(device),
            bitmap=None if self.bitmap is None else self.bitmap.to(device),
            validate=False,
        )

    def t(self) -> CSRMatrix:
        """The (K, M) transpose, as a new CSRMatrix (with a bitmap when this one has one)."""
        crow, col, val = csr_transpose(self.crow_indices, self.col_indices, self.values, self.shape[1])
        At = CSRMatrix(crow, col, val, (self.shape[1], self.shape[0]), validate=False)
        return At if self.bitmap is None else At.with_bitmap()

    # Properties

    @property
    def density(self) -> float:
        M, K = self.shape
        return self.nnz / (M * K) if M * K else 0.0

    def __repr__(self) -> str:
        return (
            f"CSRMatrix(shape={self.shape}, nnz={self.nnz}, density={self.density:.3f}, dtype={self.dtype}, "
            f"index_dtype={self.crow_indices.dtype}, col_dtype={self.col_indices.dtype}, "
            f"bitmap={self.bitmap is not None}, device={self.device})"
        )
