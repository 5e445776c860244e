"""BSR (block sparse row) matrix: the format of block sparsity, where every stored element sits in a dense
(bm, bk) block so kernels run dense micro-GEMMs (tensor cores on GPU, register tiles on CPU).

M and K need not be multiples of the block: the last block row / block column is padded internally. The padding
is never visible (shape, to_dense and the ops see the logical (M, K)), and kernels never read it as data: rows past
M are not stored, and columns past K meet no row of the dense operand. Its contents are therefore irrelevant;
`from_dense` fills it with zeros.
"""

from __future__ import annotations

import torch

from .._checks import (
    cdiv,
    check_dim,
    check_float,
    check_index_dtype,
    check_pair,
    check_same_device,
    check_shape,
    check_tensor,
    fail,
    require,
)
from .base import SparseMatrix
from .csr import check_crow_contents, check_dense_weight, check_index_components, csr_transpose


def check_bsr(
    where: str,
    crow: torch.Tensor,
    col: torch.Tensor,
    val: torch.Tensor,
    shape,
    contents: bool = True,
) -> None:
    """The one check of BSR components against the logical `shape` (M, K), used by the constructor, the typed
    entry points (validate=True) and the fake kernels. With `contents`, also reads the indices (a device sync on
    GPU): crow starts at 0, never decreases and ends at nblocks; every block column lies in [0, ⌈K/bk⌉)."""
    M, K = shape
    check_index_components(where, crow, col)
    if col.dtype != crow.dtype:
        fail(where, TypeError, f"col_indices must have the dtype of crow_indices ({crow.dtype}), got {col.dtype}")
    check_tensor(where, val, "values")
    check_dim(where, val, "values", 3)
    check_float(where, val, "values")
    check_same_device(where, crow, "crow_indices", val, "values")
    bm, bk = val.shape[1], val.shape[2]
    require(bm >= 1 and bk >= 1, where, ValueError,
            lambda: f"values must be (nblocks, bm, bk) with bm, bk >= 1, got shape {list(val.shape)}")
    require(M >= 0, where, ValueError, lambda: f"M must be >= 0, got {M}")
    MB, KB = cdiv(M, bm), cdiv(K, bk)
    require(crow.shape[0] == MB + 1, where, ValueError,
            lambda: f"crow_indices must have ceil(M / bm) + 1 = {MB + 1} entries for M = {M}, bm = {bm}, "
                    f"got {crow.shape[0]}")
    require(col.shape[0] == val.shape[0], where, ValueError,
            lambda: f"col_indices and values must have the same number of blocks, got {col.shape[0]} and "
                    f"{val.shape[0]}")
    if not contents:
        return
    nblocks = col.numel()
    check_crow_contents(where, crow, nblocks, f"the number of blocks {nblocks}")
    if nblocks > 0 and bool(((col < 0) | (col >= KB)).any()):
        j = int(torch.nonzero((col < 0) | (col >= KB))[0])
        fail(where, IndexError, f"col_indices[{j}] = {int(col[j])} is out of range for ceil(K / bk) = {KB} block columns (K = {K}, bk = {bk})")


def bsr_transpose(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, KB: int):
    """Components of the transpose (blocks (bk, bm), KB block rows): the CSR transpose of the block structure
    with each block transposed. Torch ops only (any device, traceable); used by the backward of the BSR ops."""
    t_crow, t_col, t_val = csr_transpose(crow, col, val, KB)
    return t_crow, t_col, t_val.transpose(1, 2).contiguous()


class BSRMatrix(SparseMatrix):
    """A sparse (M, K) matrix in BSR form: `crow_indices` (⌈M/bm⌉ + 1), `col_indices` (nblocks, block-column
    indices), `values` (nblocks, bm, bk), `blocksize` (bm, bk).

    Any blocksize >= 1 works; the kernels are tuned and tested for bm, bk in {16, 32, 64, 128} (the Triton kernel
    pads other sizes to a power of two >= 16). Indices are int32 where they fit, int64 beyond. `nnz` counts stored
    elements (nblocks * bm * bk, including zeros inside kept blocks and the padding of edge blocks): the memory and
    the multiply-adds the kernels spend. The constructor validates the components including their contents (a
    sync on GPU); pass `validate=False` only for components known to be good.
    """

    def __init__(self, crow_indices, col_indices, values, shape, *, validate: bool = True):
        self.crow_indices = crow_indices
        self.col_indices = col_indices
        self.values = values
        self.shape = check_shape("BSRMatrix", shape)
        if validate:
            check_bsr("BSRMatrix", crow_indices, col_indices, values, self.shape)

    # Construction and conversion

    @classmethod
    def from_dense(
        cls,
        W: torch.Tensor,
        blocksize=(32, 32),
        mask: torch.Tensor | None = None,
        index_dtype: torch.dtype | None = None,
    ) -> BSRMatrix:
        """Keeps every (bm, bk) block of W (M, K) holding a nonzero or, with `mask`, a True element. Elements of a
        kept block where mask is False are stored as zeros, so to_dense() == W where kept, 0 elsewhere."""
        where = "BSRMatrix.from_dense"
        keep = check_dense_weight(where, W, mask)
        bm, bk = check_pair(where, blocksize, "blocksize", 1)
        M, K = W.shape
        MB, KB = cdiv(M, bm), cdiv(K, bk)
        pad = (0, KB * bk - K, 0, MB * bm - M)
        Wp = torch.nn.functional.pad(torch.where(keep, W, 0), pad)
        keep_p = torch.nn.functional.pad(keep, pad)
        # (MB, KB, bm, bk) views: block (i, j) is kept if any of its elements is.
        blocks = Wp.view(MB, bm, KB, bk).transpose(1, 2)
        block_keep = keep_p.view(MB, bm, KB, bk).any(dim=(1, 3))
        nblocks = int(block_keep.sum())
        idx = check_index_dtype(where, index_dtype, nblocks, MB + 1, KB)
        crow = torch.zeros(MB + 1, dtype=idx, device=W.device)
        crow[1:] = block_keep.sum(1).cumsum(0)
        col = block_keep.nonzero()[:, 1].to(idx)
        return cls(crow, col, blocks[block_keep].contiguous(), (M, K), validate=False)

    @classmethod
    def from_torch(cls, t: torch.Tensor, shape=None, index_dtype: torch.dtype | None = None) -> BSRMatrix:
        """From a 2-D torch.sparse_bsr tensor (components are copied, so they own their storage). `shape` declares
        a smaller logical (M, K) when t is the padded form of a ragged matrix (as `to_torch(padded=True)` gives)."""
        where = "BSRMatrix.from_torch"
        check_tensor(where, t, "t")
        if t.layout != torch.sparse_bsr:
            fail(where, TypeError, f"expected a torch.sparse_bsr tensor, got layout {t.layout}")
        if t.dim() != 2 or t.values().dim() != 3:
            fail(where, ValueError, f"expected a 2-D BSR tensor without batch or dense dims, got shape {tuple(t.shape)}")
        crow, col, val = t.crow_indices(), t.col_indices(), t.values()
        bm, bk = val.shape[1], val.shape[2]
        Mp, Kp = t.shape
        M, K = (Mp, Kp) if shape is None else check_shape(where, shape)
        if not (Mp - bm < M <= Mp or M == Mp == 0) or not (Kp - bk < K <= Kp or K == Kp == 0):
            fail(where, ValueError, f"shape {(M, K)} does not pad to the tensor's shape {(Mp, Kp)} with blocksize {(bm, bk)}")
        idx = check_index_dtype(where, index_dtype, col.numel(), crow.numel(), cdiv(K, bk))
        return cls(crow.to(idx, copy=True), col.to(idx, copy=True), val.clone(), (M, K))

    def to_torch(self, padded: bool = False) -> torch.Tensor:
        """As a torch.sparse_bsr tensor sharing the components. torch requires the shape to be a multiple of the
        block, so a ragged matrix needs `padded=True`, which returns the (⌈M/bm⌉·bm, ⌈K/bk⌉·bk) tensor (padding
        included; `from_torch(t, shape=A.shape)` restores A). Without it a ragged matrix raises ValueError rather
        than silently changing the shape."""
        Mp, Kp = self.padded_shape
        if (Mp, Kp) != self.shape and not padded:
            fail(
                "BSRMatrix.to_torch",
                ValueError,
                f"shape {self.shape} is not a multiple of blocksize {self.blocksize}; torch.sparse_bsr cannot "
                f"represent it: call to_torch(padded=True) for the {(Mp, Kp)} tensor",
            )
        return torch.sparse_bsr_tensor(
            self.crow_indices, self.col_indices, self.values, (Mp, Kp), check_invariants=False
        )

    def to_dense(self) -> torch.Tensor:
        M, K = self.shape
        bm, bk = self.blocksize
        MB, KB = self.block_shape
        rows = torch.repeat_interleave(
            torch.arange(MB, device=self.device), self.crow_indices.diff(), output_size=self.nblocks
        )
        out = torch.zeros(MB, KB, bm, bk, dtype=self.dtype, device=self.device)
        out.index_put_((rows, self.col_indices.long()), self.values, accumulate=True)
        return out.transpose(1, 2).reshape(MB * bm, KB * bk)[:M, :K].contiguous()

    def to(self, device=None, dtype: torch.dtype | None = None) -> BSRMatrix:
        """Moves the components; `dtype` converts the values only."""
        return BSRMatrix(
            self.crow_indices.to(device),
            self.col_indices.to(device),
            self.values.to(device=device, dtype=dtype),
            self.shape,
            validate=False,
        )

    def t(self) -> BSRMatrix:
        """The (K, M) transpose, with (bk, bm) blocks, as a new BSRMatrix."""
        crow, col, val = bsr_transpose(self.crow_indices, self.col_indices, self.values, self.block_shape[1])
        return BSRMatrix(crow, col, val, (self.shape[1], self.shape[0]), validate=False)

    # Properties

    @property
    def blocksize(self) -> tuple[int, int]:
        return int(self.values.shape[1]), int(self.values.shape[2])

    @property
    def block_shape(self) -> tuple[int, int]:
        """(⌈M/bm⌉, ⌈K/bk⌉): block rows and block columns."""
        (M, K), (bm, bk) = self.shape, self.blocksize
        return cdiv(M, bm), cdiv(K, bk)

    @property
    def padded_shape(self) -> tuple[int, int]:
        (MB, KB), (bm, bk) = self.block_shape, self.blocksize
        return MB * bm, KB * bk

    @property
    def nblocks(self) -> int:
        return self.values.shape[0]

    @property
    def density(self) -> float:
        """Fraction of blocks stored."""
        MB, KB = self.block_shape
        return self.nblocks / (MB * KB) if MB * KB else 0.0

    def __repr__(self) -> str:
        return (
            f"BSRMatrix(shape={self.shape}, blocksize={self.blocksize}, nblocks={self.nblocks}, "
            f"block_density={self.density:.3f}, dtype={self.dtype}, index_dtype={self.crow_indices.dtype}, "
            f"device={self.device})"
        )
