"""Masks to the formats the kernels consume, on the weight's 2-D view (Conv2d: (co, ci*kh*kw)).

element / vector / kernel / channel masks -> CSRMatrix (any pattern); block masks -> BSRMatrix, whose blocks are
then exactly the kept tiles (no explicit zeros stored); n:m masks with n <= 2, m = 4 -> Semi24Matrix.
"""

from __future__ import annotations

import torch

import sparsekern

from .._checks import fail
from .masks import is_block_pattern, is_nm, view2d

FORMATS = ("csr", "bsr", "2:4")


def to_format(W: torch.Tensor, mask: torch.Tensor, format: str = "csr", *, blocksize: tuple[int, int] | None = None):
    """W * mask on W's 2-D view, in `format`. "bsr" needs `blocksize` and a mask made of whole (bm, bk) tiles
    (block_mask / granularity="block" with the same blocksize); "2:4" needs at most 2 kept of every 4 along the
    input dim and K a multiple of 4 (nm_mask(W, 2, 4)). A mask that does not fit raises ValueError."""
    where = "sparsekern.pruning.to_format"
    if mask.shape != W.shape:
        fail(where, ValueError, f"mask shape {tuple(mask.shape)} != W shape {tuple(W.shape)}")
    W2, M2 = view2d(W.detach()), view2d(mask).to(device=W.device, dtype=torch.bool)
    if format == "csr":
        return sparsekern.CSRMatrix.from_dense(W2, mask=M2)
    if format == "bsr":
        if blocksize is None or not is_block_pattern(M2, blocksize):
            fail(where, ValueError, f"a BSR mask must consist of whole blocks of blocksize {blocksize}")
        return _format_class(where, "BSRMatrix").from_dense(W2, blocksize=tuple(blocksize), mask=M2)
    if format == "2:4":
        if W2.shape[1] % 4 or not is_nm(M2, 2, 4):
            fail(where, ValueError, f"a 2:4 mask keeps <= 2 of every 4 along K (a multiple of 4; K = {W2.shape[1]})")
        return _format_class(where, "Semi24Matrix").from_dense(W2 * M2)
    fail(where, ValueError, f"format must be one of {FORMATS}, got {format!r}")


def _format_class(where: str, name: str):
    cls = getattr(sparsekern, name, None)
    if cls is None:
        fail(where, RuntimeError, f"sparsekern.{name} is not available in this build")
    return cls
