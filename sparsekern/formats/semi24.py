"""2:4 semi-structured matrix: at most 2 nonzeros in every aligned group of 4 along K, stored the way the
sparse tensor cores (`mma.sp::ordered_metadata ... m16n8k32`, fp16/bf16) consume it.

Storage (all plain tensors)
---------------------------
values    (M, Kp/2), row-major, in the matrix dtype: the 2 kept entries of every 4-wide group, ascending by
          column. Kp = K rounded up to SEMI24_K_TILE (64, the CUDA kernel's K step), so K is never ragged inside a
          kernel; the padding columns hold zeros and are invisible (shape, to_dense, ops see K).
metadata  (ceil(M/32), Kp/32, 32) int32: 2-bit column indices, already in mma.sp register order. One group of 4
          gets one nibble idx0 | idx1 << 2 (idx0 < idx1, a valid *ordered* pair even where the group holds
          fewer than 2 nonzeros: the missing slots are taken from columns 2, then 3 of the group, and store a 0).
          Rows past M in the last 32-row block are encoded as empty groups (0b1110).

Metadata layout: metadata[mb, kb, L] is lane L's E register for rows 32mb..32mb+31 and K = 32kb..32kb+31
--------------------------------------------------------------------------------------------------------
An m16n8k32 mma.sp takes one 32-bit E register per lane and a selector f in {0, 1}; only the lane pair
t = 2f, 2f+1 of each quad (g = lane >> 2, t = lane & 3) supplies metadata. One E register can therefore hold the
metadata of TWO 16-row tiles: tile 0 read with f = 0 (lanes t = 0, 1), tile 1 with f = 1 (lanes t = 2, 3).
Inside a supplying pair, the even lane covers K 0-15 and the odd lane K 16-31 of the k32 step; the low half-word
is row g of the tile, the high half-word row g + 8; nibble j of a half-word is 4-wide group j of that 16-K half:

    lane L = 4g + t            bits 31..16 (4 nibbles)          bits 15..0 (4 nibbles)
    t = 0 (tile 0, f = 0)      row 16*0 + g + 8, K  0..15       row 16*0 + g, K  0..15
    t = 1 (tile 0, f = 0)      row 16*0 + g + 8, K 16..31       row 16*0 + g, K 16..31
    t = 2 (tile 1, f = 1)      row 16*1 + g + 8, K  0..15       row 16*1 + g, K  0..15
    t = 3 (tile 1, f = 1)      row 16*1 + g + 8, K 16..31       row 16*1 + g, K 16..31

          K: 0    4    8   12   16   20   24   28  32
    row  0   |L0 n0|L0 n1|L0 n2|L0 n3|L1 n0|L1 n1|L1 n2|L1 n3|    (low half-words, tile 0)
    row  1   |L4 ...                 |L5 ...                 |
     ...
    row  8   |L0 n4|L0 n5|L0 n6|L0 n7|L1 n4|L1 n5|L1 n6|L1 n7|    (high half-words, tile 0)
     ...
    row 16   |L2 n0 ...              |L3 n0 ...              |    (tile 1: same with t + 2)
     ...     (Lx ny = nibble y, bits 4y+3..4y, of lane x's word)

Why this global order: a warp that owns 32 rows reads its E registers for one k32 step as 32 consecutive words,
lane L taking word L, i.e. one coalesced 128-byte load (or one 16-byte cp.async per 4 lanes) with no shuffles,
and it serves two m16 tiles (selector 0, then 1). Blocks are 32-row-major, so a thread block's metadata for a K
tile is contiguous per 32 rows, like the values. It is the word order PyTorch's CUTLASS path reorders its int16
metadata into (`torch.sparse._semi_structured_conversions`: row interleave + 2x2 swap), with the 32-row blocks
outermost instead of the k32 steps; tests/test_semi24_mm.py checks bit equality with it. Sourced: selector ->
lane pair (PTX ISA "Sparse matrix storage"); the half-word/lane assignment inside a pair is given in PTX only as a
figure and is derived here (KERNEL_NOTES) and checked against the CUTLASS layout; `semi24_mma.py` emulates how
the instruction reads this layout and the tests compare that emulation with to_dense().

The CPU kernel reads the same layout: row m's 8 nibbles of k32 step kb are half-word `hi` of the adjacent words
4g + 2*tile and 4g + 2*tile + 1 (one cache line), so it needs no copy of the indices in another order.
"""

from __future__ import annotations

import torch

from .._checks import check_dim, check_float, check_has_values, check_same_device, check_shape, check_tensor, fail, require
from .._constants import SEMI24_K_TILE, SEMI24_M_BLOCK
from .base import SparseMatrix

EMPTY_NIBBLE = 0b1110  # (idx0, idx1) = (2, 3): the encoding of a group without nonzeros
VALID_NIBBLES = (0b0100, 0b1000, 0b1001, 0b1100, 0b1101, 0b1110)  # ordered pairs idx0 < idx1


def padded_k(K: int) -> int:
    return -(-K // SEMI24_K_TILE) * SEMI24_K_TILE


def _shifts(device) -> torch.Tensor:
    # (hi, j) -> bit offset 16*hi + 4*j of the nibble inside the lane's word
    return 16 * torch.arange(2, device=device)[:, None] + 4 * torch.arange(4, device=device)[None, :]


def pack_metadata(nibbles: torch.Tensor) -> torch.Tensor:
    """(M, Kp/4) nibbles, one per 4-wide group -> (ceil(M/32), Kp/32, 32) int32 in mma.sp register order."""
    M, G = nibbles.shape
    MB, KB = -(-M // SEMI24_M_BLOCK), G // 8
    nib = torch.full((MB * SEMI24_M_BLOCK, G), EMPTY_NIBBLE, dtype=torch.int64, device=nibbles.device)
    nib[:M] = nibbles
    # row = 32mb + 16tile + 8hi + g, group = 8kb + 4half + j
    nib = nib.view(MB, 2, 2, 8, KB, 2, 4)  # mb, tile, hi, g, kb, half, j
    nib = nib.permute(0, 4, 3, 1, 5, 2, 6)  # mb, kb, g, tile, half, hi, j
    words = (nib << _shifts(nibbles.device)).sum((-2, -1))  # disjoint bits: sum == or
    # lane = 4g + 2tile + half; bit 31 set -> wrap to a negative int32 (the same 32 bits)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32).reshape(MB, KB, 32)


def unpack_metadata(metadata: torch.Tensor, M: int) -> torch.Tensor:
    """Inverse of pack_metadata: (ceil(M/32), Kp/32, 32) int32 -> (M, Kp/4) nibbles (int64)."""
    MB, KB, _ = metadata.shape
    words = metadata.to(torch.int64).view(MB, KB, 8, 2, 2, 1, 1)  # mb, kb, g, tile, half, (hi, j)
    nib = (words >> _shifts(metadata.device)) & 0xF  # mb, kb, g, tile, half, hi, j
    nib = nib.permute(0, 3, 5, 2, 1, 4, 6)  # mb, tile, hi, g, kb, half, j
    return nib.reshape(MB * SEMI24_M_BLOCK, KB * 8)[:M]


def encode_groups(W: torch.Tensor):
    """Dense (M, Kp) with <= 2 nonzeros per group -> (values (M, Kp/2), nibbles (M, Kp/4)).

    Kept slots: the nonzero columns of each group, completed to two with columns 2, then 3 (which then store a
    zero): the same choice as PyTorch's CUTLASS compressor, so full-pattern values agree byte for byte.
    """
    M, Kp = W.shape
    groups = W.view(M, Kp // 4, 4)
    nz = groups != 0
    # Rank slots: nonzeros first (ascending), then the fill order 2, 3, 0, 1 for zero slots.
    fill_rank = torch.tensor([2, 3, 0, 1], device=W.device)
    key = torch.where(nz, torch.arange(4, device=W.device), 4 + fill_rank)
    chosen = key.argsort(-1)[..., :2].sort(-1).values  # (M, G, 2) ascending column indices
    values = groups.gather(-1, chosen).reshape(M, Kp // 2)
    nibbles = chosen[..., 0] | (chosen[..., 1] << 2)
    return values, nibbles


def decode_groups(values: torch.Tensor, nibbles: torch.Tensor) -> torch.Tensor:
    """(values (M, Kp/2), nibbles (M, Kp/4)) -> dense (M, Kp)."""
    M, G = nibbles.shape
    idx = torch.stack((nibbles & 3, (nibbles >> 2) & 3), -1).long()
    dense = torch.zeros(M, G, 4, dtype=values.dtype, device=values.device)
    dense.scatter_(-1, idx, values.reshape(M, G, 2))
    return dense.view(M, G * 4)


def check_semi24(where: str, values: torch.Tensor, metadata: torch.Tensor, shape, contents: bool = True) -> None:
    """Checks the components against `shape`. With `contents`, also reads them (a device sync on GPU): every
    nibble is a valid ordered pair and the padding columns hold zeros."""
    M, K = shape
    Kp = padded_k(K)
    check_tensor(where, values, "values")
    check_tensor(where, metadata, "metadata")
    check_dim(where, values, "values", 2)
    check_float(where, values, "values")
    if metadata.dtype != torch.int32:
        fail(where, TypeError, f"metadata must be int32, got {metadata.dtype}")
    check_same_device(where, values, "values", metadata, "metadata")
    require(values.shape[1] * 2 == Kp, where, ValueError,
            lambda: f"values must have padded K / 2 = {Kp // 2} columns for K = {K}, got shape {list(values.shape)}")
    require(values.shape[0] == M, where, ValueError, lambda: f"values must have M = {M} rows, got {values.shape[0]}")
    mshape = (-(-M // SEMI24_M_BLOCK), Kp // 32, 32)
    require(metadata.dim() == 3 and metadata.shape[0] == mshape[0] and metadata.shape[1] == mshape[1]
            and metadata.shape[2] == 32, where, ValueError,
            lambda: f"metadata must have shape {mshape}, got {list(metadata.shape)}")
    if not contents or M == 0:
        return
    # All rows of the last 32-row block, not only those below M: the CUDA kernels feed the whole block's E words
    # to mma.sp, where an unordered nibble (e.g. 0b0000 from zero-padded metadata) is undefined behaviour.
    nib = unpack_metadata(metadata, metadata.shape[0] * SEMI24_M_BLOCK)
    bad = ~torch.isin(nib, torch.tensor(VALID_NIBBLES, device=nib.device))
    if bool(bad.any()):
        r, q = (int(i) for i in bad.nonzero()[0])
        pad = f" (a padding row past M = {M}: encode it as {EMPTY_NIBBLE:#06b})" if r >= M else ""
        msg = f"metadata of row {r}{pad}, group {q} is {int(nib[r, q]):#06b}, not an ordered index pair"
        fail(where, ValueError, msg)
    if Kp > K and bool((decode_groups(values, nib[:M])[:, K:] != 0).any()):
        fail(where, ValueError, f"values in the padding columns (K >= {K}) must be zero")


class Semi24Matrix(SparseMatrix):
    """A sparse (M, K) matrix with at most 2 nonzeros in every aligned group of 4 along K (2:4).

    `values` (M, Kp/2) and `metadata` (ceil(M/32), Kp/32, 32) int32 with Kp = K rounded up to 64; see the module
    docstring for the layout. The constructor validates the components (reading them: a sync on GPU) unless
    `validate=False`.
    """

    def __init__(self, values, metadata, shape, *, validate: bool = True):
        self.values = values
        self.metadata = metadata
        self.shape = check_shape("Semi24Matrix", shape)
        if validate:
            check_semi24("Semi24Matrix", values, metadata, self.shape)

    @classmethod
    def from_dense(cls, W: torch.Tensor) -> Semi24Matrix:
        """W (M, K) must already be 2:4 along K (<= 2 nonzeros in every group of 4 columns 4q..4q+3; a ragged last
        group counts its existing columns); ValueError names the first row and group that is not."""
        where = "Semi24Matrix.from_dense"
        check_tensor(where, W, "W")
        check_dim(where, W, "W", 2)
        check_float(where, W, "W")
        check_has_values(where, W, "W")
        M, K = W.shape
        Kp = padded_k(K)
        Wp = torch.zeros(M, Kp, dtype=W.dtype, device=W.device)
        Wp[:, :K] = W
        counts = (Wp.view(M, Kp // 4, 4) != 0).sum(-1)
        if bool((counts > 2).any()):
            r, q = (int(i) for i in (counts > 2).nonzero()[0])
            fail(
                where,
                ValueError,
                f"W is not 2:4 sparse along K: row {r}, group {q} (columns {4 * q}..{min(4 * q + 3, K - 1)}) "
                f"holds {int(counts[r, q])} nonzeros, at most 2 are allowed",
            )
        values, nibbles = encode_groups(Wp)
        return cls(values.contiguous(), pack_metadata(nibbles), (M, K), validate=False)

    def to_dense(self) -> torch.Tensor:
        M, K = self.shape
        return decode_groups(self.values, unpack_metadata(self.metadata, M))[:, :K]

    def to(self, device=None, dtype: torch.dtype | None = None) -> Semi24Matrix:
        """Moves the components; `dtype` converts the values only."""
        return Semi24Matrix(
            self.values.to(device=device, dtype=dtype), self.metadata.to(device), self.shape, validate=False
        )

    @property
    def padded_k(self) -> int:
        return padded_k(self.shape[1])

    @property
    def nnz(self) -> int:
        """Stored value slots inside the logical shape: 2 per 4-wide group (explicit zeros included), i.e. the
        multiply-adds per output column."""
        M, K = self.shape
        return M * -(-K // 4) * 2

    def __repr__(self) -> str:
        return f"Semi24Matrix(shape={self.shape}, padded_k={self.padded_k}, dtype={self.dtype}, device={self.device})"
