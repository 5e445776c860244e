"""sparsekern.explain: the one place that says which format, kernel, instruction set and backend compute a layer,
a matrix or a whole model, and why.

It derives nothing itself; it asks the code that decides:
- format: the layer's recorded choice (nn.auto.choose, from sparsekern.tuning's measured tables);
- kernel: the layer's `kernel(n_tokens)`, and for a CSR matrix ops.csr_mm.csr_op (the choice sk.ops.csr_mm and
  sparse_linear act on, from sparsekern.dispatch's cost model);
- CPU instruction set: dispatch.cpu_isa (torch.ops.sparsekern.cpu_isa: csrc/cpu/isa.h's detection, capped by
  SPARSEKERN_CPU_ISA);
- GPU backend: ops/_registry.GPU_BACKEND (CUDA C++, Triton or none, fixed per build when the op registers);
- GPU regime: decode up to sparsekern._constants.DECODE_MAX_N columns, the threshold every GPU kernel shares (the
  CUDA CSR kernel refines its plan in csrc/cuda/csr_mm.cu choose_plan).
"""

from __future__ import annotations

import torch
from torch import nn

from ._constants import DECODE_MAX_N
from .dispatch import cpu_isa
from .formats import BSRMatrix, CSRMatrix, Semi24Matrix

_GPU_BACKENDS = {"cuda": "CUDA C++ kernel", "triton": "Triton kernel"}


def _backend(op: str, device: torch.device, n_tokens: int) -> str:
    if op in ("F.linear", "F.conv2d"):
        return "torch dense (MKL / oneDNN)" if device.type == "cpu" else "torch dense (cuBLAS / cuDNN)"
    if device.type == "cpu":
        return f"C++ CPU kernel, {cpu_isa()}, {torch.get_num_threads()} threads"
    from .ops._registry import GPU_BACKEND

    backend = _GPU_BACKENDS.get(GPU_BACKEND.get(op, "none"))
    if backend is None:
        return "no GPU kernel"
    decode = n_tokens <= DECODE_MAX_N
    return f"{backend}, {'decode' if decode else 'prefill'} regime (N {'<=' if decode else '>'} {DECODE_MAX_N})"


def _matrix_kernel(A, n_tokens: int) -> str:
    if isinstance(A, CSRMatrix):
        from .ops.csr_mm import csr_op

        return csr_op(A, n_tokens, linear=True)
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
                f"{_backend(kernel, device, n)}; chosen because {why}")
    if isinstance(obj, (nn.Linear, nn.Conv2d)):
        W = obj.weight.detach().reshape(obj.weight.shape[0], -1)
        d = choose(W, n_tokens=n_tokens, kind="conv" if isinstance(obj, nn.Conv2d) else "linear")
        return f"{label}{type(obj).__name__} (dense now): format='auto' would pick {d.reason}"
    if isinstance(obj, (CSRMatrix, BSRMatrix, Semi24Matrix)):
        n = n_tokens if n_tokens is not None else 1
        kernel = _matrix_kernel(obj, n)
        return f"{label}{type(obj).__name__} {obj.shape} at N={n}: {kernel} on {_backend(kernel, obj.device, n)}"
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
