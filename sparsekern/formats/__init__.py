"""Sparse formats: containers of plain tensors (so ops, torch.compile and state_dict see ordinary tensors)."""

from .bsr import BSRMatrix
from .csr import CSRMatrix

__all__ = ["BSRMatrix", "CSRMatrix"]
