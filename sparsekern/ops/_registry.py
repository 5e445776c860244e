"""Per-format hooks that the format-generic entry points (sparse_linear) dispatch on, and the GPU fallback
registration shared by every op."""

from __future__ import annotations

from typing import Callable

import torch

from .._C_loader import _C, has_kernel, require_C
from .._checks import check_dim, check_same, check_tensor, fail

# format class -> (fn(x2d, A, bias) -> (T, M), fn(A) checking A's index contents)
LINEAR: dict[type, tuple[Callable, Callable]] = {}

# op -> "cuda" (compiled kernel) or "triton" (fallback registered here), for every op with a GPU path
GPU_BACKEND: dict[str, str] = {}


def register_gpu_fallback(op: str, load_triton_impl: Callable[[], Callable]) -> None:
    """Registers a Triton implementation for `sparsekern::<op>` on CUDA when the build has no CUDA kernel.

    `load_triton_impl` imports the Triton module on first use, so `import sparsekern` neither imports Triton
    nor touches CUDA, and TRITON_INTERPRET set after import is still honoured.
    """
    if _C is None:
        return
    if has_kernel(op, "CUDA"):
        GPU_BACKEND[op] = "cuda"
        return
    GPU_BACKEND[op] = "triton"
    impl = None

    def cuda_impl(*args):
        nonlocal impl
        if impl is None:
            try:
                impl = load_triton_impl()
            except ImportError as e:
                raise RuntimeError(
                    f"sparsekern.{op}: no GPU backend: this build has no CUDA kernels and Triton is not "
                    f"importable ({e}); install triton or rebuild with nvcc"
                ) from e
        return impl(*args)

    torch.library.register_kernel(f"sparsekern::{op}", "cuda", cuda_impl)


def check_mm_args(op: str, A, fmt: type, B: torch.Tensor) -> None:
    """The checks every `sk.ops.<format>_mm(A, B)` entry point makes before calling its op: the extension is
    built, A is of the op's format, B is a 2-D (K, N) operand of A's dtype and device."""
    require_C(op)
    where = f"sparsekern.{op}"
    if not isinstance(A, fmt):
        fail(where, TypeError, f"A must be a {fmt.__name__}, got {type(A).__name__}")
    check_tensor(where, B, "B")
    check_dim(where, B, "B", 2)
    check_same(where, B, "B", A.values, "A.values")
    if B.shape[0] != A.shape[1]:
        fail(where, ValueError, f"A is {A.shape} but B has {B.shape[0]} rows (shape {tuple(B.shape)})")
