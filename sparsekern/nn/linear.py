"""SparseLinear: nn.Linear with its weight in a sparse format, computed by sparsekern.ops.sparse_linear."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import fail
from . import auto
from ._weight import SparseWeight, weight_in_format


class SparseLinear(SparseWeight):
    """y = x @ W.T + bias with W (out_features, in_features) stored as CSR, BSR, 2:4 or dense.

    Build it with `SparseLinear.from_dense(linear, format="auto")`, or from a format object:
    `SparseLinear(sk.CSRMatrix.from_dense(W), bias)`. Only the stored values are trainable, so fine-tuning keeps
    the sparsity pattern.
    """

    _where = "SparseLinear"

    def __init__(self, weight, bias: torch.Tensor | None = None):
        super().__init__()
        self._init_weight(weight, bias, "(out_features, in_features)")
        self.out_features, self.in_features = self._shape

    @classmethod
    def from_dense(cls, linear: nn.Linear, format: str = "auto", *, blocksize=None, mask: torch.Tensor | None = None,
                   n_tokens=None) -> SparseLinear:
        """A SparseLinear computing what `linear` computes, keeping its nonzero weights (or where `mask` is True).

        format: "csr", "bsr" (give `blocksize`), "2:4" (the weight must already be 2:4 along in_features),
        "dense", or "auto": the fastest on this machine for this pattern at `n_tokens` (an int or a list of the
        token counts the layer will see; default sparsekern.nn.auto.DEFAULT_TOKENS), dense unless a sparse
        format is predicted faster at every one of them (see sparsekern.explain).
        """
        where = f"{cls._where}.from_dense"
        if not isinstance(linear, nn.Linear):
            fail(where, TypeError, f"expected an nn.Linear, got {type(linear).__name__}")
        W = linear.weight.detach()
        if format == "auto":
            decision = auto.choose(W, mask=mask, n_tokens=n_tokens, kind="linear")
            format, blocksize = decision.format, decision.blocksize
        else:
            decision = None
        module = cls(weight_in_format(where, W, format, mask, blocksize, bitmap=auto.wants_bitmap(W, mask, format)),
                     linear.bias)
        module.decision = decision
        return module

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out_features, in_features) weight, for code that reads `.weight` (nn.MultiheadAttention reads
        `out_proj.weight`). For a sparse format this materialises it on every read: O(out * in) memory and time,
        the cost of the dense layer, and no sparse kernel runs on that path. Differentiable w.r.t. the stored
        values. For format "dense" it is the Parameter itself."""
        return self.dense_weight_2d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._format == "dense":
            return F.linear(x, self.weight_values, self.bias)
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            fail(self._where, ValueError, f"expected input (*, {self.in_features}), got shape {tuple(x.shape)}")
        from ..ops import run_linear

        return run_linear(x, self.matrix(), self.bias)

    def kernel(self, n_tokens: int) -> str:
        """The op that computes this layer for `n_tokens` rows of input (sparsekern.explain says why)."""
        if self._format == "dense":
            return "F.linear"
        if self._format == "csr":
            from ..ops.csr_mm import csr_op

            return csr_op(self.matrix(), n_tokens, linear=True)
        return {"bsr": "bsr_linear", "2:4": "semi24_linear"}[self._format]

    def to_dense_module(self) -> nn.Linear:
        """An nn.Linear computing the same function (weights copied)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight_values.device, dtype=self.weight_values.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.dense_weight_2d())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self._format_repr()}")
