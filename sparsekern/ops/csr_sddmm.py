"""csr_sddmm: out[j] = G[row(j), :] · B[col(j), :] for each stored entry j of a CSR pattern (the gradient of CSR
values, which restricts dL/dA to the pattern). Its argument checks, fake kernel, autograd and GPU backend; no typed
entry point (the CSR ops' backward calls it).
"""

from __future__ import annotations

import torch

from .._checks import check_dim, check_float, check_same, check_same_device, check_tensor, require
from ..formats.csr import check_col_dtype, check_index_components, csr_transpose, row_order_of
from ._registry import register


def check_csr_sddmm(crow, col, G, B) -> None:
    """The pattern's indices, G (M, N) and B (K, N) of one float dtype, all on one device (csrc/checks.h
    check_sddmm_args, in its order and words)."""
    where = "sparsekern.csr_sddmm"
    check_index_components(where, crow, col)
    check_col_dtype(where, crow, col)
    for name, t in (("G", G), ("B", B)):
        check_tensor(where, t, name)
        check_dim(where, t, name, 2)
    check_float(where, G, "G")
    check_same(where, G, "G", B, "B")
    check_same_device(where, crow, "crow_indices", G, "G")
    require(G.shape[0] == crow.shape[0] - 1, where, ValueError,
            lambda: f"G must have M = {crow.shape[0] - 1} rows, got {G.shape[0]}")
    require(B.shape[1] == G.shape[1], where, ValueError,
            lambda: f"G and B must have the same number of columns, got {G.shape[1]} and {B.shape[1]}")


def _csr_sddmm_fake(crow, col, G, B):
    check_csr_sddmm(crow, col, G, B)
    return G.new_empty((col.shape[0],))


# csr_sddmm is linear in G and in B, and its backward is two CSR products with the incoming gradient as values:
# dG = A(grad) @ B, dB = A(grad)ᵀ @ G. Registering it makes second derivatives through the CSR ops right (double
# backward of csr_mm / sparse_linear runs csr_sddmm's backward).
def sddmm_backward(grad, need, crow, col, G, B):
    grads = {}
    if need["G"]:
        grads["G"] = torch.ops.sparsekern.csr_mm(crow, col, grad, B, None)
    if need["B"]:
        t_crow, t_col, t_val = csr_transpose(crow, col, grad, B.shape[0])
        grads["B"] = torch.ops.sparsekern.csr_mm(t_crow, t_col, t_val, G, row_order_of(t_crow))
    return grads


register("csr_sddmm", fake=_csr_sddmm_fake, backward=sddmm_backward, save=("crow", "col", "G", "B"),
         triton="csr_sddmm")
