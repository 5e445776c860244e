"""Per-format hooks that the format-generic entry points (sparse_linear) dispatch on, and the GPU fallback
registration shared by every op."""

from __future__ import annotations

from typing import Callable

import torch

from .._C_loader import _C, has_kernel

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
