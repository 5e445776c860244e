"""sparsekern.explain: the one place that says which format, kernel, instruction set and backend compute a layer,
a matrix or a whole model, and why."""

from __future__ import annotations

import torch
from torch import nn

from . import tuning
from .formats import BSRMatrix, CSRMatrix, Semi24Matrix


def _backend(op: str, device: torch.device) -> str:
    if op in ("F.linear", "F.conv2d"):
        return "torch dense (MKL / oneDNN)" if device.type == "cpu" else "torch dense (cuBLAS / cuDNN)"
    if device.type == "cpu":
        return f"C++ CPU kernel, {tuning.cpu_isa()}, {torch.get_num_threads()} threads"
    from .ops._registry import GPU_BACKEND

    base = op.replace("_linear", "_mm") if op not in GPU_BACKEND else op
    return {"cuda": "CUDA C++ kernel", "triton": "Triton kernel"}.get(GPU_BACKEND.get(base, ""), "no GPU kernel")


def _matrix_kernel(A, n_tokens: int) -> str:
    if isinstance(A, CSRMatrix):
        from .dispatch import use_bitmap_kernel

        return "csr_bitmap_linear" if use_bitmap_kernel(A, n_tokens, A.device) else "csr_linear"
    return "bsr_linear" if isinstance(A, BSRMatrix) else "semi24_linear"


def _one(obj, n_tokens, name: str = "") -> str:
    from .nn._weight import SparseWeight
    from .nn.auto import choose

    label = f"{name}: " if name else ""
    if isinstance(obj, SparseWeight):
        n = n_tokens if n_tokens is not None else 1
        kernel = obj.kernel(n)
        device = obj.weight_values.device
        why = getattr(obj, "decision", None)
        why = why.reason if why is not None else f"format={obj.format!r} was asked for"
        return (f"{label}{type(obj).__name__} {obj.format} ({obj.sparsity:.1%} sparse) at N={n}: {kernel} on "
                f"{_backend(kernel, device)}; chosen because {why}")
    if isinstance(obj, (nn.Linear, nn.Conv2d)):
        W = obj.weight.detach().reshape(obj.weight.shape[0], -1)
        d = choose(W, n_tokens=n_tokens, kind="conv" if isinstance(obj, nn.Conv2d) else "linear")
        return f"{label}{type(obj).__name__} (dense now): format='auto' would pick {d.reason}"
    if isinstance(obj, (CSRMatrix, BSRMatrix, Semi24Matrix)):
        n = n_tokens if n_tokens is not None else 1
        kernel = _matrix_kernel(obj, n)
        return f"{label}{type(obj).__name__} {obj.shape} at N={n}: {kernel} on {_backend(kernel, obj.device)}"
    if isinstance(obj, torch.Tensor):
        d = choose(obj.reshape(obj.shape[0], -1), n_tokens=n_tokens)
        return f"{label}dense weight {tuple(obj.shape)}: format='auto' would pick {d.reason}"
    raise TypeError(f"sparsekern.explain: expected a module, a sparsekern matrix or a weight tensor, "
                    f"got {type(obj).__name__}")


def explain(obj, n_tokens: int | None = None) -> str:
    """Which format, kernel and ISA/backend compute `obj`, and why, at `n_tokens` rows of input (default 1 for
    a single layer; a model's layers use their own recorded choice).

    obj: a SparseLinear / SparseConv2d (what runs and the decision that chose it), an nn.Linear / nn.Conv2d or a
    weight tensor (what format="auto" would pick), a CSRMatrix / BSRMatrix / Semi24Matrix (which kernel an op
    call runs), or a whole model (one line per Linear / Conv2d / sparse layer)."""
    from .nn._weight import SparseWeight

    if isinstance(obj, nn.Module) and not isinstance(obj, (SparseWeight, nn.Linear, nn.Conv2d)):
        lines = [_one(m, n_tokens, n) for n, m in obj.named_modules()
                 if isinstance(m, (SparseWeight, nn.Linear, nn.Conv2d))]
        return "\n".join(lines) if lines else "no Linear / Conv2d / sparse layers"
    return _one(obj, n_tokens)
