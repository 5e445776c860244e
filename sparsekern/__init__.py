"""sparsekern: sparse GEMM kernels (CSR, BSR, 2:4) for PyTorch and the pruning layer that produces their
formats."""

from . import formats, ops, pruning
from .backends import backends
from .formats import BSRMatrix, CSRMatrix, Semi24Matrix
from .report import report

__version__ = "0.1.0"

__all__ = ["BSRMatrix", "CSRMatrix", "Semi24Matrix", "backends", "formats", "ops", "pruning", "report"]
