"""Sparse formats: containers of plain tensors (so ops, torch.compile and state_dict see ordinary tensors)."""

from .bsr import BSRMatrix
from .csr import CSRMatrix
from .semi24 import Semi24Matrix

__all__ = ["BSRMatrix", "CSRMatrix", "Semi24Matrix"]
