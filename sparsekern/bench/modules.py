"""`python -m sparsekern bench --modules`: the drop-in modules against the dense model in the same run.

- one Linear(4096, 4096) at sparsity {0, 50, 70, 90}% (magnitude), sparsify_(format="auto") at its default token
  counts, timed at N {1, 16, 64}: auto must never lose to dense;
- 4 x [Linear(4096, 4096) + ReLU] at 90%, sparsify_ at N {1, 16, 64, 256} (the DeepSparse anchor's MLP);
- ResNet-50 (sparsekern.bench.conv2d) at 80% unstructured, batch 1, 224 x 224.
Weights rotate through copies that together exceed the last-level cache, as in the kernel benchmark.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..nn import sparsify_
from ..pruning import prune, remove
from .timing import median_ms


def _pruned(model: nn.Module, sparsity: float) -> nn.Module:
    if sparsity > 0:
        prune(model, sparsity)
        remove(model)
    return model


def _timed(models: list[nn.Module], x: torch.Tensor) -> float:
    return median_ms([lambda m=m: m(x) for m in models], x.device)


def _formats(model: nn.Module) -> str:
    return ",".join(sorted({getattr(m, "format", "") for m in model.modules() if hasattr(m, "weight_values")})) or "dense"


def linear_rows(log=print, copies: int = 3) -> list[dict]:
    rows = []
    for sparsity in (0.0, 0.5, 0.7, 0.9):
        dense = [_pruned(nn.Linear(4096, 4096), sparsity) for _ in range(copies)]
        sparse = [sparsify_(copy.deepcopy(m)) for m in dense]
        for n in (1, 16, 64):
            x = torch.randn(n, 4096)
            d, s = _timed(dense, x), _timed(sparse, x)
            rows.append(dict(case="Linear(4096, 4096)", sparsity=sparsity, tokens=n, dense_ms=d, sparse_ms=s,
                             speedup=d / s, formats=_formats(sparse[0])))
            log(f"Linear 4096x4096 {sparsity:4.0%} N={n:3d}: dense {d:7.3f} ms, auto ({rows[-1]['formats']}) "
                f"{s:7.3f} ms, {d / s:5.2f}x")
    return rows


def mlp_rows(log=print, copies: int = 2) -> list[dict]:
    rows = []
    make = lambda: _pruned(nn.Sequential(*(m for _ in range(4) for m in (nn.Linear(4096, 4096), nn.ReLU()))), 0.9)  # noqa: E731
    dense = [make() for _ in range(copies)]
    for n in (1, 16, 64, 256):
        x = torch.randn(n, 4096)
        sparse = [sparsify_(copy.deepcopy(m), example_inputs=x) for m in dense]
        d, s = _timed(dense, x), _timed(sparse, x)
        rows.append(dict(case="4 x [Linear(4096, 4096) + ReLU]", sparsity=0.9, tokens=n, dense_ms=d, sparse_ms=s,
                         speedup=d / s, formats=_formats(sparse[0])))
        log(f"MLP 4x4096 90% N={n:3d}: dense {d:8.3f} ms, sparsify_ ({rows[-1]['formats']}) {s:8.3f} ms, "
            f"{d / s:5.2f}x")
    return rows


def run(log=print) -> list[dict]:
    with torch.no_grad():
        rows = linear_rows(log) + mlp_rows(log)
        from .conv2d import resnet50_speedup

        r = resnet50_speedup(sparsity=0.8)
        rows.append(dict(case="ResNet-50, batch 1, 224x224", **r))
        log(f"ResNet-50 80%: {r}")
    return rows
