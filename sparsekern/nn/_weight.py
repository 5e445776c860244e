"""A module's (M, K) weight held in one sparsekern format, as the plain tensors of that format.

The stored values are a Parameter (`weight_values`: an optimiser updates only them, so fine-tuning keeps the
pattern); the indices are buffers. Both are ordinary state_dict entries, and the format, logical shape and
blocksize travel as the module's extra state, so `load_state_dict` accepts a state_dict whose pattern, nnz or even
format differs from the module's: the pattern is data. Incoming components are validated before anything is
copied, so a bad state_dict raises and leaves the module as it was.

| format | Parameter       | buffers                                                                       |
| ------ | --------------- | ----------------------------------------------------------------------------- |
| csr    | values (nnz,)   | crow_indices (M+1), col_indices (nnz), row_order (M), bitmap (M, ceil(K/32))  |
| bsr    | values (nb,bm,bk)| crow_indices, col_indices                                                    |
| 2:4    | values (M, Kp/2)| metadata                                                                      |
| dense  | values (M, K)   | -                                                                             |

Every buffer name is prefixed `weight_`. The CSR row order and bitmap are stored rather than recomputed per call:
rebuilding either is a sort or a scatter over the pattern, and a bitmap only exists where the CPU decode kernel or
the GPU tensor-core kernel can use it.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import fail
from ..formats import BSRMatrix, CSRMatrix, Semi24Matrix
from ..formats.csr import compact_col_dtype, row_order_of

FORMATS = ("csr", "bsr", "2:4", "dense")
_BUFFERS = {
    "csr": ("crow_indices", "col_indices", "row_order", "bitmap"),
    "bsr": ("crow_indices", "col_indices"),
    "2:4": ("metadata",),
    "dense": (),
}
_OPTIONAL = {"bitmap"}


def format_of(W) -> str:
    """The format name of a format object or dense tensor."""
    if isinstance(W, CSRMatrix):
        return "csr"
    if isinstance(W, BSRMatrix):
        return "bsr"
    if isinstance(W, Semi24Matrix):
        return "2:4"
    if isinstance(W, torch.Tensor):
        return "dense"
    raise TypeError(f"expected a CSRMatrix, BSRMatrix, Semi24Matrix or dense tensor, got {type(W).__name__}")


def components(W) -> dict[str, torch.Tensor | None]:
    """{component name: tensor} of a format object (or a dense 2-D tensor), values first."""
    fmt = format_of(W)
    if fmt == "dense":
        return {"values": W}
    out = {"values": W.values}
    for name in _BUFFERS[fmt]:
        out[name] = getattr(W, name)
    return out


def build(fmt: str, shape: tuple[int, int], comps: dict[str, torch.Tensor], validate: bool):
    """The format object for components `comps` (as stored by SparseWeight)."""
    if fmt == "csr":
        return CSRMatrix(comps["crow_indices"], comps["col_indices"], comps["values"], shape,
                         row_order=comps["row_order"], bitmap=comps.get("bitmap"), validate=validate)
    if fmt == "bsr":
        return BSRMatrix(comps["crow_indices"], comps["col_indices"], comps["values"], shape, validate=validate)
    if fmt == "2:4":
        return Semi24Matrix(comps["values"], comps["metadata"], shape, validate=validate)
    return comps["values"]


class SparseWeight(nn.Module):
    """Base of SparseLinear and SparseConv2d: owns `weight_*` components of a (M, K) matrix in one format.

    Subclasses give `_where` (the name used in error messages) and compute with `self.matrix()`.
    """

    _where = "SparseWeight"

    def _init_weight(self, weight, bias: torch.Tensor | None, layout: str) -> None:
        """Checks and stores the weight (a format object, or a dense 2-D `layout` tensor) and the (out,) bias."""
        try:
            format_of(weight)
        except TypeError as e:
            fail(self._where, TypeError, str(e))
        if isinstance(weight, torch.Tensor) and weight.dim() != 2:
            fail(self._where, ValueError, f"a dense weight must be given 2-D {layout}, got shape {tuple(weight.shape)}")
        self._set_matrix(weight)
        out = self._shape[0]
        if bias is not None:
            if tuple(bias.shape) != (out,):
                fail(self._where, ValueError, f"bias must have shape ({out},), got {tuple(bias.shape)}")
            bias = nn.Parameter(bias.detach().clone().to(self.weight_values.dtype))
        self.bias = bias

    def _set_matrix(self, W, requires_grad: bool = True) -> None:
        """Replaces the stored weight by `W` (a format object, or a dense 2-D tensor for format "dense")."""
        fmt = format_of(W)
        for name in ("values", *_BUFFERS["csr"], *_BUFFERS["2:4"]):
            key = f"weight_{name}"
            self._parameters.pop(key, None)
            self._buffers.pop(key, None)
        comps = components(W)
        if fmt == "csr" and comps["row_order"] is None:
            comps["row_order"] = row_order_of(comps["crow_indices"])
        self.weight_values = nn.Parameter(comps.pop("values").detach(), requires_grad=requires_grad)
        for name, t in comps.items():
            self.register_buffer(f"weight_{name}", t)
        self._format = fmt
        self._shape = tuple(int(s) for s in W.shape)

    # What the module computes with

    @property
    def format(self) -> str:
        return self._format

    def matrix(self, validate: bool = False):
        """The weight as a format object (components shared, not copied; a dense (M, K) Parameter for "dense")."""
        comps = {name: getattr(self, f"weight_{name}") for name in ("values", *_BUFFERS[self._format])}
        return build(self._format, self._shape, comps, validate)

    def dense_weight_2d(self) -> torch.Tensor:
        """The (M, K) weight, materialised (differentiable w.r.t. the stored values)."""
        W = self.matrix()
        return W if self._format == "dense" else W.to_dense()

    @property
    def nnz(self) -> int:
        """Nonzero weights (explicit zeros in stored entries, blocks or 2:4 groups not counted). Every format keeps
        each weight in at most one value slot and zeros in its padding, so this reads only the values."""
        return int((self.weight_values != 0).sum())

    @property
    def sparsity(self) -> float:
        M, K = self._shape
        return 1.0 - self.nnz / (M * K) if M * K else 0.0

    def _format_repr(self) -> str:
        extra = f", blocksize={self.matrix().blocksize}" if self._format == "bsr" else ""
        return f"format={self._format!r}{extra}, sparsity={self.sparsity:.1%}"

    # state_dict: the pattern is data

    def get_extra_state(self):
        return {"format": self._format, "shape": list(self._shape)}

    def set_extra_state(self, state) -> None:
        self._format, self._shape = state["format"], tuple(state["shape"])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        where = f"{self._where}.load_state_dict"
        what = prefix.rstrip(".") or "the module"
        extra = state_dict.get(prefix + "_extra_state")
        fmt, shape = (extra["format"], tuple(extra["shape"])) if extra is not None else (self._format, self._shape)
        if fmt not in FORMATS:
            fail(where, ValueError, f"{what}: unknown format {fmt!r} in the state_dict")
        if shape != self._shape:
            fail(where, ValueError, f"{what}: the weight is {self._shape}, the state_dict's is {shape}")
        names = ("values", *_BUFFERS[fmt])
        incoming = {n: state_dict[prefix + f"weight_{n}"] for n in names if prefix + f"weight_{n}" in state_dict}
        required = [n for n in names if n not in _OPTIONAL]
        if all(n in incoming for n in required):
            dtype, device = self.weight_values.dtype, self.weight_values.device
            comps = {n: t.to(device=device, dtype=dtype if n == "values" else t.dtype) for n, t in incoming.items()}
            if fmt == "csr" and "row_order" not in comps:
                comps["row_order"] = state_dict[prefix + "weight_row_order"] = row_order_of(comps["crow_indices"])
            try:
                build(fmt, shape, comps, validate=True)
            except (TypeError, ValueError, IndexError) as e:
                fail(where, ValueError, f"{what}: the state_dict's weight components are invalid: {e}")
            # Re-shape this module's components to the incoming ones; super() then copies them in place.
            requires_grad = self.weight_values.requires_grad
            self._set_matrix(build(fmt, shape, {n: torch.empty_like(t) for n, t in comps.items()}, validate=False),
                             requires_grad)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def weight_in_format(where: str, W: torch.Tensor, fmt: str, mask: torch.Tensor | None = None, blocksize=None,
              bitmap: bool = False):
    """W (M, K) dense, kept where `mask` is True (where W != 0 without one), in format `fmt`.

    ValueError naming `where` when the pattern cannot be held: 2:4 needs <= 2 kept weights in every aligned group
    of 4 along K."""
    if W.dim() != 2:
        fail(where, ValueError, f"the weight must be 2-D here, got shape {tuple(W.shape)}")
    if fmt not in FORMATS:
        fail(where, ValueError, f"format must be one of {FORMATS} or 'auto', got {fmt!r}")
    W = W.detach()
    if mask is not None:
        W = W * mask.to(device=W.device, dtype=W.dtype)
    if fmt == "dense":
        return W.clone()
    if fmt == "csr":
        return CSRMatrix.from_dense(W, mask=mask, bitmap=bitmap, col_dtype=compact_col_dtype(W.shape[1]))
    if fmt == "bsr":
        if blocksize is None:
            fail(where, ValueError, "format 'bsr' needs a blocksize, e.g. blocksize=(32, 32)")
        return BSRMatrix.from_dense(W, blocksize=blocksize, mask=mask)
    try:
        return Semi24Matrix.from_dense(W)
    except ValueError as e:
        fail(where, ValueError, f"format '2:4' cannot hold this weight's pattern: {e}")
