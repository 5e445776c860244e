"""sparsekern: sparse GEMM kernels (CSR, BSR, 2:4) for PyTorch and the modules that use them."""

from . import formats, ops, pruning
from .report import report
from .backends import backends
from .formats import CSRMatrix

__version__ = "0.1.0"

__all__ = ["CSRMatrix", "backends", "formats", "ops", "pruning", "report"]
