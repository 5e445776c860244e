"""SparseConv2d: nn.Conv2d with its weight in a sparse format.

The weight is held as nn.Conv2d's weight viewed 2-D, (out_channels, in_channels/groups * kh * kw), so the
state_dict and `.weight` keep the standard shapes and a 2:4 group of 4 never straddles two kernels' channels.
Compute paths, by format:

- csr: `sk.ops.csr_conv2d`, an implicit GEMM over the input (every stride, padding, dilation and groups value,
  NCHW or channels_last, no unfold). Groups need no slicing: each stored weight's input offset includes its group.
  A 1x1 convolution whose input the kernel cannot read in place (grids that are not a multiple of 8 positions,
  strided, channels_last) runs inside the op as csr_mm on each image's (C, H*W) view. The module calls the op on
  its stored components (checked once, at construction). It is a CPU kernel; on a GPU csr takes the bsr / 2:4
  path below (csr_mm / csr_linear have GPU kernels).
- bsr / 2:4 (groups == 1): a 1x1 convolution is one GEMM on the activations (NCHW: W @ x[b].view(C, H*W) per image
  with bsr_mm / semi24_mm; channels_last: x viewed (N*H*W, C) through sparse_linear, giving a channels_last
  output); k x k runs unfold + sparse_linear. With groups > 1 they compute through the materialised dense weight:
  neither format has a grouped kernel, and sparsekern.nn.auto never picks them for a grouped convolution.
- dense: F.conv2d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import fail
from ..ops.csr_conv2d import conv_padding, out_size, run_csr_conv2d, wants_channels_last
from . import auto
from ._weight import SparseWeight, weight_in_format

_pair = nn.modules.utils._pair


class SparseConv2d(SparseWeight):
    """nn.Conv2d (zeros padding) whose (out_channels, in_channels/groups*kh*kw) weight is sparse.

    Build it with `SparseConv2d.from_dense(conv, format="auto")`. Only the stored values are trainable, so
    fine-tuning keeps the sparsity pattern.
    """

    _where = "SparseConv2d"

    def __init__(self, weight, bias, in_channels: int, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1):
        super().__init__()
        self.in_channels, self.groups = int(in_channels), int(groups)
        self.kernel_size = _pair(kernel_size)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self._pad4 = conv_padding(self._where, self.padding, self.kernel_size, self.dilation)
        self._init_weight(weight, bias, "(out_channels, in_channels/groups*kh*kw)")
        self.out_channels = self._shape[0]
        kh, kw = self.kernel_size
        if self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups:
            fail(self._where, ValueError, f"groups = {self.groups} must divide in_channels ({self.in_channels}) "
                                          f"and out_channels ({self.out_channels})")
        if self._shape[1] != self.in_channels // self.groups * kh * kw:
            fail(self._where, ValueError, f"weight is {self._shape}, expected ({self.out_channels}, "
                                          f"{self.in_channels // self.groups * kh * kw})")

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, format: str = "auto", *, blocksize=None, mask=None, n_tokens=None):
        """A SparseConv2d computing what `conv` computes, keeping its nonzero weights (or where `mask`, shaped like
        conv.weight, is True). format: "csr", "bsr" (give `blocksize`), "2:4" (at most 2 kept in every aligned 4
        along in_channels/groups*kh*kw), "dense", or "auto" (n_tokens: output positions per image)."""
        where = f"{cls._where}.from_dense"
        if not isinstance(conv, nn.Conv2d):
            fail(where, TypeError, f"expected an nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            fail(where, ValueError, f"only padding_mode='zeros' is supported, got {conv.padding_mode!r}")
        if conv.weight.dim() != 4:
            fail(where, ValueError, f"expected a 4-D weight, got shape {tuple(conv.weight.shape)}")
        W = conv.weight.detach().reshape(conv.out_channels, -1)
        if mask is not None and tuple(mask.shape) != tuple(conv.weight.shape):
            fail(where, ValueError, f"mask must be shaped like conv.weight {tuple(conv.weight.shape)}, "
                                    f"got {tuple(mask.shape)}")
        m2 = None if mask is None else mask.reshape(W.shape)
        if format == "auto":
            # Grouped bsr / 2:4 have no sparse kernel here (see the module docstring): only csr competes.
            allowed = None if conv.groups == 1 else {"csr"}
            decision = auto.choose(W, mask=m2, n_tokens=n_tokens, kind="conv", allowed=allowed)
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
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            fail(self._where, ValueError, f"expected input (N, {self.in_channels}, H, W) or ({self.in_channels}, H, "
                                          f"W), got shape {tuple(x.shape)}")
        if self._format == "dense" or (self._format != "csr" and self.groups > 1) or (
                self._format == "csr" and self.groups > 1 and x.device.type != "cpu"):
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        unbatched = x.dim() == 3
        xb = x.unsqueeze(0) if unbatched else x
        if self._format == "csr" and x.device.type == "cpu":
            y = run_csr_conv2d(xb, self.weight_crow_indices, self.weight_col_indices, self.weight_values, self.bias,
                               list(self.kernel_size), list(self.stride), list(self._pad4), list(self.dilation),
                               self.groups)
        else:
            y = self._gemm_forward(xb)
        return y.squeeze(0) if unbatched else y

    def kernel(self, n_tokens: int) -> str:
        """The op that computes this layer for `n_tokens` output positions (sparsekern.explain says why)."""
        if self._format == "dense" or (self._format != "csr" and self.groups > 1):
            return "F.conv2d"
        if self._format == "csr" and self.weight_values.device.type == "cpu":
            return "csr_conv2d"
        one_by_one = self.kernel_size == (1, 1) and self._pad4 == (0, 0, 0, 0)
        return {"csr": "csr_mm" if one_by_one else "csr_linear", "bsr": "bsr_mm" if one_by_one else "bsr_linear",
                "2:4": "semi24_mm" if one_by_one else "semi24_linear"}[self._format]

    def _gemm_forward(self, x: torch.Tensor) -> torch.Tensor:
        """groups == 1 off the CPU kernel (bsr, 2:4; csr on a GPU, where csr_conv2d has no kernel): 1x1 as a GEMM
        on the activations, k x k as unfold + sparse_linear."""
        from ..ops import bsr_mm, csr_mm, semi24_mm, sparse_linear

        A = self.matrix()
        channels_last = wants_channels_last(x)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        pt, pb, pl, pr = self._pad4
        N, C, H, W = x.shape
        Ho, Wo = out_size(H, pt, pb, kh, sh, dh), out_size(W, pl, pr, kw, sw, dw)
        co = self.out_channels
        if kh == kw == 1 and self._pad4 == (0, 0, 0, 0):
            x = x[:, :, ::sh, ::sw]
            if not channels_last:
                mm = {"csr": csr_mm, "bsr": bsr_mm, "2:4": semi24_mm}[self._format]
                y = torch.stack([mm(A, x[b].reshape(C, Ho * Wo)) for b in range(N)])
                if self.bias is not None:
                    y = y + self.bias[:, None]
                return y.view(N, co, Ho, Wo)
            rows = x.permute(0, 2, 3, 1).reshape(N * Ho * Wo, C)
        else:
            if pt != pb or pl != pr:
                x, pad = F.pad(x, (pl, pr, pt, pb)), (0, 0)
            else:
                pad = (pt, pl)
            cols = F.unfold(x, self.kernel_size, self.dilation, pad, self.stride)  # (N, C*kh*kw, Ho*Wo)
            rows = cols.transpose(1, 2).reshape(N * Ho * Wo, C * kh * kw)
        # (N*Ho*Wo, co) row-major is the channels_last layout of (N, co, Ho, Wo).
        y = sparse_linear(rows, A, self.bias).view(N, Ho, Wo, co).permute(0, 3, 1, 2)
        return y if channels_last else y.contiguous()

    def to_dense_module(self) -> nn.Conv2d:
        """An nn.Conv2d computing the same function (weights copied)."""
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
