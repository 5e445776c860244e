"""How an op module declares its op: `register` attaches the fake kernel, the autograd formula and the GPU backend
to a `sparsekern::<op>` schema, and `LINEAR` maps each format to its Linear-orientation kernel for sparse_linear.

The schemas and CPU kernels come from the compiled extension (csrc/sparsekern.cpp). Without it there is nothing to
register onto: `register` records nothing and returns, `import sparsekern` still works, and every typed entry
point raises the clear error of `require_C` when called.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

from .._C_loader import _C, has_kernel, require_C
from .._checks import check_dim, check_same, check_tensor, fail

# format class -> (fn(x2d, A, bias) -> (T, M), fn(A) checking A's index contents)
LINEAR: dict[type, tuple[Callable, Callable]] = {}

# op -> "cuda" (compiled kernel), "triton" (the Triton fallback) or "none" (no GPU kernel), for every registered op.
# sparsekern.explain and sparsekern.backends() read it; nothing else decides an op's GPU backend.
GPU_BACKEND: dict[str, str] = {}


def register(op: str, *, fake: Callable, backward: Callable | None = None, save: tuple[str, ...] = (),
             triton: str | None = None) -> None:
    """Declares `sparsekern::<op>`'s Python side.

    fake: the fake kernel (torch.compile, meta tensors), called with the schema's arguments.
    backward: `backward(grad, need, **saved) -> {argument name: gradient}`, where `saved` holds the schema
        arguments named in `save` and `need` maps each argument name to whether its gradient is wanted.
        Arguments wiring by name, so ops whose schemas share names (csr_mm and csr_bitmap_mm) share a formula.
    triton: the `sparsekern._triton` module whose function named `op` runs on CUDA when the build has no CUDA
        kernel for it; None for an op without a Triton kernel (a CUDA call then raises a clear error).
    """
    if _C is None:
        return
    qualname = f"sparsekern::{op}"
    torch.library.register_fake(qualname, fake)
    if backward is not None:
        _register_autograd(op, backward, save)
    if has_kernel(op, "CUDA"):
        GPU_BACKEND[op] = "cuda"
    elif triton is None:
        GPU_BACKEND[op] = "none"
        torch.library.register_kernel(qualname, "cuda", _no_gpu_kernel(op))
    else:
        GPU_BACKEND[op] = "triton"
        torch.library.register_kernel(qualname, "cuda", _lazy_triton(op, triton))


def _register_autograd(op: str, backward: Callable, save: tuple[str, ...]) -> None:
    names = [a.name for a in getattr(torch.ops.sparsekern, op).default._schema.arguments]
    unknown = set(save) - set(names)
    if unknown:
        raise ValueError(f"sparsekern::{op} has no arguments {sorted(unknown)} (its schema: {names})")

    def setup_context(ctx, inputs, output):
        args = dict(zip(names, inputs))
        ctx.tensor_names = [n for n in save if isinstance(args[n], torch.Tensor)]
        ctx.other_args = {n: args[n] for n in save if n not in ctx.tensor_names}
        ctx.save_for_backward(*(args[n] for n in ctx.tensor_names))

    def backward_by_name(ctx, grad):
        saved = dict(zip(ctx.tensor_names, ctx.saved_tensors), **ctx.other_args)
        grads = backward(grad, dict(zip(names, ctx.needs_input_grad)), **saved)
        return tuple(grads.get(n) for n in names)

    torch.library.register_autograd(f"sparsekern::{op}", backward_by_name, setup_context=setup_context)


def _lazy_triton(op: str, module: str) -> Callable:
    """The CUDA implementation of `op` that imports `sparsekern._triton.<module>` on first call, so `import
    sparsekern` neither imports Triton nor touches CUDA, and TRITON_INTERPRET set after import is still honoured."""
    impl = None

    def cuda_impl(*args):
        nonlocal impl
        if impl is None:
            try:
                impl = getattr(importlib.import_module(f"sparsekern._triton.{module}"), op)
            except ImportError as e:
                raise RuntimeError(
                    f"sparsekern.{op}: no GPU backend: this build has no CUDA kernels and Triton is not "
                    f"importable ({e}); install triton or rebuild with nvcc"
                ) from e
        return impl(*args)

    return cuda_impl


def _no_gpu_kernel(op: str) -> Callable:
    def cuda_impl(*args):
        raise RuntimeError(
            f"sparsekern.{op}: this build of sparsekern has no CUDA kernels (and {op} has no Triton fallback); "
            "rebuild on a machine with nvcc and a CUDA build of torch, or move the operands to the CPU"
        )

    return cuda_impl


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
