"""sparsekern: sparse GEMM kernels (CSR, BSR, 2:4) for PyTorch, drop-in sparse modules, and the pruning layer
that produces their formats."""

from . import formats, nn, ops, pruning
from .backends import backends
from .explain import explain
from .formats import BSRMatrix, CSRMatrix, Semi24Matrix
from .interop import load_compressed, save_compressed
from .nn import SparseConv2d, SparseLinear, densify_, sparsify_
from .report import report
from .tuning import tune

__version__ = "0.1.0"

__all__ = ["BSRMatrix", "CSRMatrix", "Semi24Matrix", "SparseConv2d", "SparseLinear", "backends", "densify_",
           "explain", "formats", "load_compressed", "nn", "ops", "pruning", "report", "save_compressed", "sparsify_",
           "tune"]
