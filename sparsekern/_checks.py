"""Python-side input checks. Messages name the op ("sparsekern.csr_mm: ...") like the C++ checks do."""

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


def fail(where: str, exc: type, msg: str):
    raise exc(f"{where}: {msg}")


def check_float(where: str, t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        fail(where, TypeError, f"{name} must be float32, float16 or bfloat16, got {t.dtype}")


def check_dim(where: str, t: torch.Tensor, name: str, dim: int) -> None:
    if t.dim() != dim:
        fail(where, ValueError, f"{name} must be {dim}-D, got shape {tuple(t.shape)}")


def check_same(where: str, a: torch.Tensor, an: str, b: torch.Tensor, bn: str) -> None:
    """Same dtype and device."""
    if a.dtype != b.dtype:
        fail(where, TypeError, f"{an} and {bn} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        fail(where, ValueError, f"{an} and {bn} must be on the same device, got {a.device} and {b.device}")


def index_dtype_for(*extents: int) -> torch.dtype:
    """int32 where every index and offset fits, int64 beyond 2**31 - 1."""
    return torch.int32 if max(extents, default=0) < 2**31 else torch.int64
