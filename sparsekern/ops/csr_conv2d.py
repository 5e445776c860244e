"""csr_conv2d: nn.Conv2d's computation with its (out_channels, in_channels/groups * kh * kw) weight in CSR, run as
an implicit GEMM over the input (no unfold copy; see csrc/cpu/csr_conv2d.cpp). Its argument checks, fake kernel,
autograd and GPU backend (none), and the typed entry point `sk.ops.csr_conv2d`.

Differentiable w.r.t. the input, the stored values (restricted to the pattern: pruned weights stay pruned) and the
bias. The backward runs ATen's convolution_backward on the materialised weight and gathers the weight gradient at
the stored positions: correct for training, at the cost of the dense convolution's backward.
"""

from __future__ import annotations

import torch

from .._C_loader import require_C
from .._checks import check_dim, check_float, check_linear_bias, check_same, check_tensor, fail, require
from ..formats.csr import CSRMatrix, _rows_of, check_csr, col_as_long
from ._registry import register


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


def check_csr_conv2d(x, crow, col, val, bias, kernel_size, stride, padding, dilation, groups) -> None:
    """What csr_conv2d checks before it runs, without reading index contents, in the order and words of
    csrc/cpu/csr_conv2d.cpp (the fake kernel calls it)."""
    where = "sparsekern.csr_conv2d"
    M = crow.shape[0] - 1 if isinstance(crow, torch.Tensor) and crow.dim() == 1 else 0
    check_csr(where, crow, col, val, (M, 0), contents=False)
    check_tensor(where, x, "x")
    check_dim(where, x, "x", 4)
    check_float(where, x, "x")
    check_same(where, val, "values", x, "x")
    if not (len(kernel_size) == 2 and len(stride) == 2 and len(dilation) == 2 and len(padding) == 4):
        fail(where, ValueError, "kernel_size, stride and dilation take 2 ints, padding 4 (top, bottom, left, right)")
    if min(*kernel_size, *stride, *dilation) < 1:
        fail(where, ValueError, f"kernel_size, stride and dilation must be >= 1, got {list(kernel_size)}, "
                                f"{list(stride)}, {list(dilation)}")
    if min(padding) < 0:
        fail(where, ValueError, f"padding must be >= 0, got {list(padding)}")
    C = x.shape[1]
    require(groups >= 1 and C % groups == 0 and M % groups == 0, where, ValueError,
            lambda: f"groups = {groups} must divide the input channels ({C}) and the output channels ({M})")
    Hp, Wp = x.shape[2] + padding[0] + padding[1], x.shape[3] + padding[2] + padding[3]
    kh, kw = dilation[0] * (kernel_size[0] - 1) + 1, dilation[1] * (kernel_size[1] - 1) + 1
    require(Hp >= kh and Wp >= kw, where, ValueError,
            lambda: f"the padded input ({Hp}, {Wp}) is smaller than the dilated kernel ({kh}, {kw})")
    check_linear_bias(where, bias, val, M)


def _csr_conv2d_fake(x, crow, col, val, bias, kernel_size, stride, padding, dilation, groups, channels_last):
    check_csr_conv2d(x, crow, col, val, bias, kernel_size, stride, padding, dilation, groups)
    Ho = out_size(x.shape[2], padding[0], padding[1], kernel_size[0], stride[0], dilation[0])
    Wo = out_size(x.shape[3], padding[2], padding[3], kernel_size[1], stride[1], dilation[1])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((x.shape[0], crow.shape[0] - 1, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=fmt)


def _csr_conv2d_backward(grad, need, x, crow, col, val, kernel_size, stride, padding, dilation, groups):
    (kh, kw), (pt, pb, pl, pr) = kernel_size, padding
    M, nnz = crow.shape[0] - 1, col.shape[0]
    cig = x.shape[1] // groups
    rows, cols = _rows_of(crow, nnz), col_as_long(col)
    W = val.new_zeros(M, cig * kh * kw).index_put_((rows, cols), val, accumulate=True)
    xp = torch.nn.functional.pad(x, (pl, pr, pt, pb))
    gx, gw, _ = torch.ops.aten.convolution_backward(
        grad, xp, W.view(M, cig, kh, kw), None, list(stride), [0, 0], list(dilation), False, [0, 0], groups,
        [need["x"], need["val"], False])
    grads = {}
    if need["x"]:
        grads["x"] = gx[:, :, pt:pt + x.shape[2], pl:pl + x.shape[3]]
    if need["val"]:
        grads["val"] = gw.reshape(M, -1)[rows, cols]
    if need["bias"]:
        grads["bias"] = grad.sum((0, 2, 3))
    return grads


# No GPU kernel: a CUDA call raises a clear error (nn.SparseConv2d runs a CSR layer on GPU as unfold + csr_linear).
register("csr_conv2d", fake=_csr_conv2d_fake, backward=_csr_conv2d_backward,
         save=("x", "crow", "col", "val", "kernel_size", "stride", "padding", "dilation", "groups"))


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
    y = run_csr_conv2d(x, A.crow_indices, A.col_indices, A.values, bias, list(kernel_size), list(stride), list(pad),
                       list(dilation), groups)
    return y.squeeze(0) if unbatched else y


def run_csr_conv2d(x, crow, col, val, bias, kernel_size: list[int], stride: list[int], padding: list[int],
                   dilation: list[int], groups: int) -> torch.Tensor:
    """The op on a batched x with arguments already checked and normalised (pairs; padding as (top, bottom, left,
    right)): what SparseConv2d calls per forward, having checked its weight once at construction. The checks and
    the CSRMatrix of the public entry point cost 3x the op's own dispatch (44 us against 14 us per call on a Zen 3
    EPYC), ~2 ms per ResNet-50 image."""
    return torch.ops.sparsekern.csr_conv2d(x, crow, col, val, bias, kernel_size, stride, padding, dilation, groups,
                                           wants_channels_last(x))


__all__ = ["csr_conv2d", "conv_padding"]
