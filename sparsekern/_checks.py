"""Python-side input checks, one definition per rule, shared by the format constructors, the typed entry points,
the fake kernels (torch.compile / meta tensors) and the Triton launchers. Messages name the op or function
("sparsekern.csr_mm: ...", "CSRMatrix.from_dense: ...") and use the wording of the C++ checks (csrc/checks.h), so a
bad input reads the same whichever path refused it.

Checks on sizes go through `require` (torch._check_with), which also works on the symbolic sizes a fake kernel
sees under torch.compile; checks on dtypes, devices and Python types are plain comparisons."""

from __future__ import annotations

import numbers
from typing import Callable

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


def fail(where: str, exc: type, msg: str):
    raise exc(f"{where}: {msg}")


def require(cond, where: str, exc: type, msg: str | Callable[[], str]) -> None:
    """Raises exc("where: msg") unless cond; cond may be a SymBool (a fake kernel's symbolic sizes)."""
    if cond is True:
        return
    torch._check_with(exc, cond, lambda: f"{where}: {msg() if callable(msg) else msg}")


def check_tensor(where: str, t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        fail(where, TypeError, f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_float(where: str, t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        fail(where, TypeError, f"{name} must be float32, float16 or bfloat16, got {t.dtype}")


def check_dim(where: str, t: torch.Tensor, name: str, dim: int) -> None:
    if t.dim() != dim:
        fail(where, ValueError, f"{name} must be {dim}-D, got shape {list(t.shape)}")


def check_same_dtype(where: str, a: torch.Tensor, an: str, b: torch.Tensor, bn: str) -> None:
    if a.dtype != b.dtype:
        fail(where, TypeError, f"{an} and {bn} must have the same dtype, got {a.dtype} and {b.dtype}")


def check_same_device(where: str, a: torch.Tensor, an: str, b: torch.Tensor, bn: str) -> None:
    if a.device != b.device:
        fail(where, ValueError, f"{an} and {bn} must be on the same device, got {a.device} and {b.device}")


def check_same(where: str, a: torch.Tensor, an: str, b: torch.Tensor, bn: str) -> None:
    """Same dtype and device."""
    check_same_dtype(where, a, an, b, bn)
    check_same_device(where, a, an, b, bn)


def check_has_values(where: str, t: torch.Tensor, name: str) -> None:
    """Functions that read a tensor's values (constructors, pruning) refuse a meta tensor, which has none."""
    if t.is_meta:
        fail(where, ValueError, f"{name} is on the meta device, which holds no values to read")


def check_dense(where: str, t, name: str, val: torch.Tensor) -> None:
    """A dense operand of an op (B, x): a 2-D float tensor with the values' dtype and device (csrc/checks.h
    check_dense, in its order and words)."""
    check_tensor(where, t, name)
    check_dim(where, t, name, 2)
    check_float(where, t, name)
    check_same(where, val, "values", t, name)


def check_linear_bias(where: str, bias, val: torch.Tensor, M) -> None:
    """The optional bias of a Linear-orientation op: (M,), the values' dtype and device (csrc/checks.h
    check_linear_bias, in its order and words)."""
    if bias is None:
        return
    check_tensor(where, bias, "bias")
    check_dim(where, bias, "bias", 1)
    check_same(where, val, "values", bias, "bias")
    require(bias.shape[0] == M, where, ValueError, lambda: f"bias must have M = {M} entries, got {bias.shape[0]}")


def _is_int(v) -> bool:
    return isinstance(v, (numbers.Integral, torch.SymInt)) and not isinstance(v, bool)


def check_int(where: str, v, name: str, minimum: int | None = None) -> int:
    """An int (not a bool, not a float that happens to be integral); at least `minimum` if given."""
    if not _is_int(v):
        fail(where, TypeError, f"{name} must be an int, got {v!r} ({type(v).__name__})")
    if minimum is not None and v < minimum:
        fail(where, ValueError, f"{name} must be >= {minimum}, got {v}")
    return v if isinstance(v, torch.SymInt) else int(v)


def check_pair(where: str, value, name: str, minimum: int) -> tuple[int, int]:
    """A pair of ints, each >= minimum: a matrix shape (minimum 0) or a block size (minimum 1)."""
    desc = "non-negative" if minimum == 0 else "positive"
    if isinstance(value, (torch.Tensor, str)) or not hasattr(value, "__len__"):
        fail(where, TypeError, f"{name} must be a pair of {desc} ints, got {value!r}")
    if len(value) != 2:
        fail(where, ValueError, f"{name} must be a pair of {desc} ints, got {value!r}")
    a, b = value
    if not (_is_int(a) and _is_int(b)):
        fail(where, TypeError, f"{name} must be a pair of {desc} ints, got {value!r}")
    if a < minimum or b < minimum:
        fail(where, ValueError, f"{name} must be a pair of {desc} ints, got {tuple(value)!r}")
    return int(a), int(b)


def check_shape(where: str, shape) -> tuple[int, int]:
    return check_pair(where, shape, "shape", 0)


def check_fraction(where: str, v, name: str = "sparsity") -> float:
    """A real number in [0, 1] (NaN refused)."""
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        fail(where, TypeError, f"{name} must be a number in [0, 1], got {v!r} ({type(v).__name__})")
    if not (0.0 <= v <= 1.0):  # also False for NaN
        fail(where, ValueError, f"{name} must be in [0, 1], got {v}")
    return float(v)


def index_dtype_for(*extents: int) -> torch.dtype:
    """int32 where every index and offset fits, int64 beyond 2**31 - 1."""
    return torch.int32 if max(extents, default=0) < 2**31 else torch.int64


def check_index_dtype(where: str, dtype, *extents: int) -> torch.dtype:
    """The index dtype a constructor was asked for, or (None) the smallest that holds `extents`: int32 or int64,
    and int32 only where every extent (index or offset) is below 2**31."""
    if dtype is None:
        return index_dtype_for(*extents)
    if dtype not in INDEX_DTYPES:
        fail(where, TypeError, f"index_dtype must be None, torch.int32 or torch.int64, got {dtype!r}")
    if dtype == torch.int32 and max(extents, default=0) >= 2**31:
        fail(where, ValueError, f"index_dtype torch.int32 cannot hold an index or offset of {max(extents)}: use torch.int64")
    return dtype


def cdiv(a, b):
    return -(-a // b)

