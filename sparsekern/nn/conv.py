"""SparseConv2d: nn.Conv2d with its weight in a sparse format.

The weight is held as the (out_channels, in_channels/groups * kh * kw) matrix of nn.Conv2d's weight.view(co, -1)
and the convolution runs as unfold + sparse_linear, one group at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import fail
from . import auto
from ._weight import SparseWeight, format_of, weight_in_format


class SparseConv2d(SparseWeight):
    """nn.Conv2d (zeros padding) whose (out_channels, in_channels/groups*kh*kw) weight is sparse."""

    _where = "SparseConv2d"

    def __init__(self, weight, bias, in_channels: int, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1):
        super().__init__()
        format_of(weight)
        self.in_channels, self.groups = int(in_channels), int(groups)
        self.kernel_size = nn.modules.utils._pair(kernel_size)
        self.stride, self.dilation = nn.modules.utils._pair(stride), nn.modules.utils._pair(dilation)
        self.padding = padding if isinstance(padding, str) else nn.modules.utils._pair(padding)
        self._set_matrix(weight)
        self.out_channels = self._shape[0]
        kh, kw = self.kernel_size
        if self._shape[1] != self.in_channels // self.groups * kh * kw:
            fail(self._where, ValueError, f"weight is {self._shape}, expected ({self.out_channels}, "
                                          f"{self.in_channels // self.groups * kh * kw})")
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().to(self.weight_values.dtype))

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, format: str = "auto", *, blocksize=None, mask=None, n_tokens=None):
        where = f"{cls._where}.from_dense"
        if not isinstance(conv, nn.Conv2d):
            fail(where, TypeError, f"expected an nn.Conv2d, got {type(conv).__name__}")
        W = conv.weight.detach().reshape(conv.out_channels, -1)
        m2 = None if mask is None else mask.reshape(W.shape)
        if format == "auto":
            decision = auto.choose(W, mask=m2, n_tokens=n_tokens, kind="conv")
            format, blocksize = decision.format, decision.blocksize
        else:
            decision = None
        module = cls(weight_in_format(where, W, format, m2, blocksize), conv.bias, conv.in_channels, conv.kernel_size,
                     conv.stride, conv.padding, conv.dilation, conv.groups)
        module.decision = decision
        return module

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, in/groups, kh, kw) weight, materialised on every read (O(weight) memory and time)."""
        return self.dense_weight_2d().view(self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._format == "dense":
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        from ..ops import sparse_linear

        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        N, _, H, W = x.shape
        kh, kw = self.kernel_size
        pad = self.padding
        if isinstance(pad, str):
            pad = (0, 0) if pad == "valid" else tuple(self.dilation[i] * (self.kernel_size[i] - 1) // 2 for i in range(2))
        cols = F.unfold(x, self.kernel_size, self.dilation, pad, self.stride)  # (N, C*kh*kw, L)
        Ho = (H + 2 * pad[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        Wo = (W + 2 * pad[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        A = self.matrix()
        y = sparse_linear(cols.transpose(1, 2), A, self.bias)  # (N, L, out)
        y = y.transpose(1, 2).reshape(N, self.out_channels, Ho, Wo)
        return y.squeeze(0) if unbatched else y

    def to_dense_module(self) -> nn.Conv2d:
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, bias=self.bias is not None, device=self.weight_values.device,
                         dtype=self.weight_values.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, {self._format_repr()}")
