"""What this installation can run: which kernels were compiled, whether Triton and a GPU are there."""

from __future__ import annotations

import importlib.util
import platform

import torch

from ._C_loader import LOAD_ERROR, _C, has_kernel
from .dispatch import cpu_isa
from .ops._registry import GPU_BACKEND


def backends() -> dict:
    """A plain dict describing the available backends (no CUDA context is created unless a GPU exists)."""
    triton_version = None
    if importlib.util.find_spec("triton") is not None:
        import triton

        triton_version = triton.__version__
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "extension": "loaded" if _C is not None else f"missing ({LOAD_ERROR})",
        "cpu_kernels": [op for op in GPU_BACKEND if has_kernel(op, "CPU")],
        # The CPU kernels' instruction set (SPARSEKERN_CPU_ISA=avx2|base caps it).
        "cpu_isa": cpu_isa() if _C is not None else None,
        # "cuda": compiled kernel; "triton": fallback (needs triton on the GPU machine); "none". sk.explain says
        # which op a call runs.
        "gpu_backend": dict(GPU_BACKEND),
        "gpu": gpu,
    }
