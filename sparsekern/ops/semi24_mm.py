"""semi24_mm and semi24_linear (A (M, K) in 2:4 times a dense operand, in the two orientations): their argument
checks, fake kernels, autograd and GPU backend, and the typed entry point `sk.ops.semi24_mm` (plus the
Semi24Matrix hook of sk.ops.sparse_linear).

Backends: the C++ CPU kernel, and the CUDA kernel (csrc/cuda/semi24_mm.cu: sparse tensor cores for fp16/bf16, a
plain SIMT kernel for fp32). No Triton fallback exists (Triton has no 2:4 instruction), so a build without CUDA
kernels raises a clear error when called with CUDA tensors.

Differentiable: the dense operand (B, or x in the Linear orientation), the bias, and the stored values (each
stored slot gets the dense gradient at its column, zero in the padding and on slots that store a zero, which
are pruned weights or fillers: slots keep their columns and zeros stay zero, so a trained weight stays 2:4 and
pruned weights stay pruned). The backward products use the dense reconstruction of A (torch ops, any device): training is
not the hot path this format is for.
"""

from __future__ import annotations

import torch

from .._checks import check_dense, check_dim, check_linear_bias, check_tensor
from ..formats.semi24 import Semi24Matrix, check_semi24, decode_groups, unpack_metadata
from ._registry import LINEAR, check_mm_args, register


def check_semi24_args(op: str, values, metadata, dense, name: str, bias=None, linear: bool = False) -> None:
    """What every 2:4 op checks before it runs, without reading the metadata, in the order and words of
    csrc/semi24_checks.h: the dense operand (B (K, N), or x (T, K) with `linear`), the values and metadata, the
    bias. The fake kernels call it through the per-op checks below."""
    where = f"sparsekern.{op}"
    check_dense(where, dense, name, values)
    check_tensor(where, values, "values")
    check_dim(where, values, "values", 2)
    check_semi24(where, values, metadata, (values.shape[0], dense.shape[1] if linear else dense.shape[0]),
                 contents=False)
    if linear:
        check_linear_bias(where, bias, values, values.shape[0])


def check_semi24_mm(values, metadata, B) -> None:
    check_semi24_args("semi24_mm", values, metadata, B, "B")


def check_semi24_linear(x, values, metadata, bias) -> None:
    check_semi24_args("semi24_linear", values, metadata, x, "x", bias=bias, linear=True)


def _dense_weight(values: torch.Tensor, metadata: torch.Tensor, K: int) -> torch.Tensor:
    return decode_groups(values, unpack_metadata(metadata, values.shape[0]))[:, :K]


def _values_grad(G: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
    """Gradient of the stored slots from the dense gradient G (M, K) of A: G at each slot's column, and 0 in the
    padding columns and on slots that store a zero.

    A group with fewer than 2 weights fills its second slot with a zero (column 2 or 3; see formats/semi24.py),
    and the metadata cannot tell that filler from a kept weight that is exactly zero. The rule is the one
    from_dense applies: a zero is a pruned weight. Its slot gets no gradient, so training never revives it."""
    M, K = G.shape
    Kp = values.shape[1] * 2
    Gp = G.new_zeros(M, Kp)
    Gp[:, :K] = G
    nib = unpack_metadata(metadata, M)
    idx = torch.stack((nib & 3, (nib >> 2) & 3), -1)
    grad = Gp.view(M, Kp // 4, 4).gather(-1, idx).reshape(M, Kp // 2)
    return torch.where(values != 0, grad, 0)


def _semi24_mm_fake(values, metadata, B):
    check_semi24_mm(values, metadata, B)
    return B.new_empty((values.shape[0], B.shape[1]))


def _semi24_linear_fake(x, values, metadata, bias):
    check_semi24_linear(x, values, metadata, bias)
    return x.new_empty((x.shape[0], values.shape[0]))


def _semi24_mm_backward(grad, need, values, metadata, B):
    grads = {}
    if need["values"]:
        grads["values"] = _values_grad(grad @ B.t(), values, metadata)
    if need["B"]:
        grads["B"] = _dense_weight(values, metadata, B.shape[0]).t() @ grad
    return grads


def _semi24_linear_backward(grad, need, x, values, metadata):
    grads = {}
    if need["x"]:
        grads["x"] = grad @ _dense_weight(values, metadata, x.shape[1])
    if need["values"]:
        grads["values"] = _values_grad(grad.t() @ x, values, metadata)
    if need["bias"]:
        grads["bias"] = grad.sum(0)
    return grads


# No Triton fallback (Triton has no 2:4 instruction): a build without CUDA kernels raises on CUDA tensors.
register("semi24_mm", fake=_semi24_mm_fake, backward=_semi24_mm_backward, save=("values", "metadata", "B"))
register("semi24_linear", fake=_semi24_linear_fake, backward=_semi24_linear_backward,
         save=("x", "values", "metadata"))


def semi24_mm(A: Semi24Matrix, B: torch.Tensor, *, validate: bool = False) -> torch.Tensor:
    """A (M, K) 2:4 @ B (K, N) dense -> (M, N) dense in B's dtype, accumulated in fp32.

    `validate=True` also checks the metadata contents (a device sync on GPU).
    """
    check_mm_args("semi24_mm", A, Semi24Matrix, B)
    if validate:
        check_semi24("sparsekern.semi24_mm", A.values, A.metadata, A.shape)
    return torch.ops.sparsekern.semi24_mm(A.values, A.metadata, B)


def _semi24_linear(x2d: torch.Tensor, A: Semi24Matrix, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.sparsekern.semi24_linear(x2d, A.values, A.metadata, bias)


LINEAR[Semi24Matrix] = (
    _semi24_linear, lambda A: check_semi24("sparsekern.sparse_linear", A.values, A.metadata, A.shape))

__all__ = ["semi24_mm"]
