"""Drop-in modules: SparseLinear / SparseConv2d, and sparsify_ to swap them into a model."""

from .conv import SparseConv2d
from .linear import SparseLinear
from .sparsify import densify_, sparsify_

__all__ = ["SparseConv2d", "SparseLinear", "densify_", "sparsify_"]
