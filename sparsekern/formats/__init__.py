"""Sparse formats: containers of plain tensors (so ops, torch.compile and state_dict see ordinary tensors)."""

from .csr import CSRMatrix
from .semi24 import Semi24Matrix

__all__ = ["CSRMatrix", "Semi24Matrix"]
