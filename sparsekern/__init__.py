"""sparsekern: sparse GEMM kernels (CSR, BSR, 2:4) for PyTorch and the modules that use them."""

from . import formats, ops, pruning
from .report import report
from .backends import backends
from .formats import BSRMatrix, CSRMatrix, Semi24Matrix

__version__ = "0.1.0"

__all__ = ["BSRMatrix", "CSRMatrix", "Semi24Matrix", "backends", "formats", "ops", "pruning", "report"]
