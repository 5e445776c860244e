"""csr_conv2d: nn.Conv2d's computation with its (out_channels, in_channels/groups * kh * kw) weight in CSR, run as
an implicit GEMM over the input (no unfold copy; see csrc/cpu/csr_conv2d.cpp). Fake kernel, autograd, and the
typed entry point.

Differentiable w.r.t. the input, the stored values (restricted to the pattern: pruned weights stay pruned) and the
bias. The backward runs ATen's convolution_backward on the materialised weight and gathers the weight gradient at
the stored positions: correct for training, at the cost of the dense convolution's backward.
"""

from __future__ import annotations

import torch

from .._C_loader import _C, require_C
from .._checks import check_dim, check_same, fail
from ..formats.csr import CSRMatrix, _rows_of, col_as_long


def conv_padding(where: str, padding, kernel_size, dilation) -> tuple[int, int, int, int]:
    """nn.Conv2d's padding (int, pair, "same" or "valid"; or already (top, bottom, left, right)) as (top, bottom,
    left, right). "same" puts the odd unit of an even total on the bottom/right, as PyTorch does."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        out = []
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    if isinstance(padding, str):
        fail(where, ValueError, f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    if len(p) == 4:
        return tuple(int(v) for v in p)
    if len(p) != 2:
        fail(where, ValueError, f"padding must be an int, a pair or (top, bottom, left, right), got {padding!r}")
    return (int(p[0]), int(p[0]), int(p[1]), int(p[1]))


def out_size(size: int, before: int, after: int, k: int, s: int, d: int) -> int:
    return (size + before + after - d * (k - 1) - 1) // s + 1


def wants_channels_last(x: torch.Tensor) -> bool:
    """nn.Conv2d's output follows a channels_last input; a tensor contiguous both ways (C == 1, H == W == 1)
    stays NCHW."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


if _C is not None:

    @torch.library.register_fake("sparsekern::csr_conv2d")
    def _csr_conv2d_fake(x, crow, col, val, bias, kernel_size, stride, padding, dilation, groups, channels_last):
        op = "sparsekern.csr_conv2d"
        torch._check(x.dim() == 4, lambda: f"{op}: x must be 4-D (N, C, H, W)")
        torch._check(x.dtype == val.dtype, lambda: f"{op}: x and values must have the same dtype")
        torch._check(crow.dim() == 1 and col.dim() == 1 and val.dim() == 1, lambda: f"{op}: components must be 1-D")
        torch._check(col.shape[0] == val.shape[0], lambda: f"{op}: col_indices and values differ in length")
        M = crow.shape[0] - 1
        torch._check(x.shape[1] % groups == 0 and M % groups == 0, lambda: f"{op}: groups must divide the channels")
        if bias is not None:
            torch._check(bias.dim() == 1 and bias.shape[0] == M, lambda: f"{op}: bias must be (M,)")
        Ho = out_size(x.shape[2], padding[0], padding[1], kernel_size[0], stride[0], dilation[0])
        Wo = out_size(x.shape[3], padding[2], padding[3], kernel_size[1], stride[1], dilation[1])
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return torch.empty((x.shape[0], M, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=fmt)

    def _setup(ctx, inputs, output):
        x, crow, col, val, bias, kernel_size, stride, padding, dilation, groups, _ = inputs
        ctx.save_for_backward(x, crow, col, val)
        ctx.conv = (tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation), groups)

    def _backward(ctx, grad):
        x, crow, col, val = ctx.saved_tensors
        (kh, kw), stride, (pt, pb, pl, pr), dilation, groups = ctx.conv
        need_x, need_val, need_bias = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        M, nnz = crow.shape[0] - 1, col.shape[0]
        cig = x.shape[1] // groups
        rows, cols = _rows_of(crow, nnz), col_as_long(col)
        W = val.new_zeros(M, cig * kh * kw).index_put_((rows, cols), val, accumulate=True)
        xp = torch.nn.functional.pad(x, (pl, pr, pt, pb))
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad, xp, W.view(M, cig, kh, kw), None, list(stride), [0, 0], list(dilation), False, [0, 0], groups,
            [need_x, need_val, False])
        grad_x = gx[:, :, pt:pt + x.shape[2], pl:pl + x.shape[3]] if need_x else None
        grad_val = gw.reshape(M, -1)[rows, cols] if need_val else None
        grad_bias = grad.sum((0, 2, 3)) if need_bias else None
        return grad_x, None, None, grad_val, grad_bias, None, None, None, None, None, None

    torch.library.register_autograd("sparsekern::csr_conv2d", _backward, setup_context=_setup)


def csr_conv2d(x: torch.Tensor, A: CSRMatrix, bias: torch.Tensor | None = None, *, kernel_size, stride=1,
               padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """F.conv2d(x, W.view(out, in/groups, kh, kw), bias, stride, padding, dilation, groups) for the CSR matrix A
    = W (out_channels, in_channels/groups * kh * kw), x (N, C, H, W) or unbatched (C, H, W). padding: int, pair,
    "same", "valid" or (top, bottom, left, right). The output is channels_last where x is, like nn.Conv2d's."""
    require_C("csr_conv2d")
    where = "sparsekern.csr_conv2d"
    if not isinstance(A, CSRMatrix):
        fail(where, TypeError, f"A must be a CSRMatrix, got {type(A).__name__}")
    pair = torch.nn.modules.utils._pair
    kernel_size, stride, dilation = pair(kernel_size), pair(stride), pair(dilation)
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    check_dim(where, x, "x", 4)
    check_same(where, x, "x", A.values, "A.values")
    M, K = A.shape
    taps = kernel_size[0] * kernel_size[1]
    if groups < 1 or M % groups or K % taps or x.shape[1] != K // taps * groups:
        fail(where, ValueError, f"A is {A.shape}, expected (out_channels, in_channels / groups * kh * kw) with "
                                f"in_channels = {x.shape[1]}, groups = {groups}, kernel_size = {kernel_size}")
    if bias is not None:
        check_same(where, bias, "bias", A.values, "A.values")
    pad = conv_padding(where, padding, kernel_size, dilation)
    y = torch.ops.sparsekern.csr_conv2d(x, A.crow_indices, A.col_indices, A.values, bias, list(kernel_size),
                                        list(stride), list(pad), list(dilation), groups, wants_channels_last(x))
    return y.squeeze(0) if unbatched else y


__all__ = ["csr_conv2d", "conv_padding"]
