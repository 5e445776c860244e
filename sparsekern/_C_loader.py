"""Loads the compiled extension tolerantly: a missing or broken build leaves `import sparsekern` working and
says why in `sparsekern.backends()`; the ops then raise a clear error when called."""

import importlib

import torch

try:
    _C = importlib.import_module("sparsekern._C")
    LOAD_ERROR = None
except ImportError as e:  # not built, or built against another torch
    _C = None
    LOAD_ERROR = f"{type(e).__name__}: {e}"


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the compiled library registered `sparsekern::<op>` for `dispatch_key` ("CPU", "CUDA")."""
    return _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"sparsekern::{op}", dispatch_key)


def require_C(op: str) -> None:
    if _C is None:
        raise RuntimeError(
            f"sparsekern.{op}: the compiled extension sparsekern._C is not available ({LOAD_ERROR}); "
            "build it with `pip install --no-build-isolation -e .`"
        )
