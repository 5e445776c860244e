"""semi24_mm / semi24_linear: fake kernels, autograd, the CUDA-less error path, and the typed entry points.

Backends: the C++ CPU kernel, and the CUDA kernel (csrc/cuda/semi24_mm.cu: sparse tensor cores for fp16/bf16, a
plain SIMT kernel for fp32). No Triton fallback exists (Triton has no 2:4 instruction), so a build without CUDA
kernels raises a clear error when called with CUDA tensors.

Differentiable: the dense operand (B, or x in the Linear orientation), the bias, and the stored values (each
stored slot gets the dense gradient at its column, zero in the padding; slots keep their columns, so a trained
weight stays 2:4). The backward products use the dense reconstruction of A (torch ops, any device): training is
not the hot path this format is for.
"""

from __future__ import annotations

import torch

from .._C_loader import _C, has_kernel
from ..formats.semi24 import M_BLOCK, Semi24Matrix, check_semi24, decode_groups, padded_k, unpack_metadata
from ._registry import GPU_BACKEND, LINEAR, check_mm_args


def _check_components(op: str, values, metadata, K) -> None:
    torch._check(values.dim() == 2, lambda: f"sparsekern.{op}: values must be 2-D")
    torch._check(metadata.dtype == torch.int32, lambda: f"sparsekern.{op}: metadata must be int32")
    torch._check(values.shape[1] * 2 == padded_k(K), lambda: f"sparsekern.{op}: values must have padded K / 2 columns")
    torch._check(
        metadata.dim() == 3
        and metadata.shape[0] == (values.shape[0] + M_BLOCK - 1) // M_BLOCK
        and metadata.shape[1] == values.shape[1] // 16
        and metadata.shape[2] == 32,
        lambda: f"sparsekern.{op}: metadata must have shape (ceil(M/32), Kp/32, 32)",
    )


def _check_dense(op: str, t, name: str, values) -> None:
    torch._check(t.dim() == 2, lambda: f"sparsekern.{op}: {name} must be 2-D")
    torch._check(t.dtype == values.dtype, lambda: f"sparsekern.{op}: {name} and values must have the same dtype")


def _dense_weight(values: torch.Tensor, metadata: torch.Tensor, K: int) -> torch.Tensor:
    return decode_groups(values, unpack_metadata(metadata, values.shape[0]))[:, :K]


def _values_grad(G: torch.Tensor, metadata: torch.Tensor, Kp: int) -> torch.Tensor:
    """Gradient of the stored slots from the dense gradient G (M, K) of A: G at each slot's column (0 in the
    padding columns)."""
    M, K = G.shape
    Gp = G.new_zeros(M, Kp)
    Gp[:, :K] = G
    nib = unpack_metadata(metadata, M)
    idx = torch.stack((nib & 3, (nib >> 2) & 3), -1)
    return Gp.view(M, Kp // 4, 4).gather(-1, idx).reshape(M, Kp // 2)


if _C is not None:

    @torch.library.register_fake("sparsekern::semi24_mm")
    def _semi24_mm_fake(values, metadata, B):
        _check_dense("semi24_mm", B, "B", values)
        _check_components("semi24_mm", values, metadata, B.shape[0])
        return B.new_empty((values.shape[0], B.shape[1]))

    @torch.library.register_fake("sparsekern::semi24_linear")
    def _semi24_linear_fake(x, values, metadata, bias):
        _check_dense("semi24_linear", x, "x", values)
        _check_components("semi24_linear", values, metadata, x.shape[1])
        if bias is not None:
            torch._check(bias.dim() == 1 and bias.shape[0] == values.shape[0], lambda: "sparsekern.semi24_linear: bias must be (M,)")
        return x.new_empty((x.shape[0], values.shape[0]))

    def _semi24_mm_setup(ctx, inputs, output):
        values, metadata, B = inputs
        ctx.save_for_backward(values, metadata, B)

    def _semi24_mm_backward(ctx, grad):
        values, metadata, B = ctx.saved_tensors
        grad_values = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_values = _values_grad(grad @ B.t(), metadata, values.shape[1] * 2)
        if ctx.needs_input_grad[2]:
            grad_B = _dense_weight(values, metadata, B.shape[0]).t() @ grad
        return grad_values, None, grad_B

    def _semi24_linear_setup(ctx, inputs, output):
        x, values, metadata, bias = inputs
        ctx.save_for_backward(x, values, metadata)

    def _semi24_linear_backward(ctx, grad):
        x, values, metadata = ctx.saved_tensors
        grad_x = grad_values = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ _dense_weight(values, metadata, x.shape[1])
        if ctx.needs_input_grad[1]:
            grad_values = _values_grad(grad.t() @ x, metadata, values.shape[1] * 2)
        if ctx.needs_input_grad[3]:
            grad_bias = grad.sum(0)
        return grad_x, grad_values, None, grad_bias

    torch.library.register_autograd("sparsekern::semi24_mm", _semi24_mm_backward, setup_context=_semi24_mm_setup)
    torch.library.register_autograd(
        "sparsekern::semi24_linear", _semi24_linear_backward, setup_context=_semi24_linear_setup
    )

    def _no_cuda_kernel(op: str):
        def impl(*args):
            raise RuntimeError(
                f"sparsekern.{op}: this build of sparsekern has no CUDA kernels (2:4 has no Triton fallback); "
                "rebuild on a machine with nvcc and a CUDA build of torch, or move the operands to the CPU"
            )

        return impl

    for _op in ("semi24_mm", "semi24_linear"):
        if has_kernel(_op, "CUDA"):
            GPU_BACKEND[_op] = "cuda"
        else:
            GPU_BACKEND[_op] = "none"
            torch.library.register_kernel(f"sparsekern::{_op}", "cuda", _no_cuda_kernel(_op))


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


def _semi24_check(A: Semi24Matrix) -> None:
    check_semi24("sparsekern.sparse_linear", A.values, A.metadata, A.shape)


LINEAR[Semi24Matrix] = (_semi24_linear, _semi24_check)

__all__ = ["semi24_mm"]
