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
        dense = [_pruned(nn.Sequential(nn.Linear(4096, 4096)), sparsity) for _ in range(copies)]
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


def resnet_rows(log=print, repeats: int = 7) -> list[dict]:
    """ResNet-50 the way a user gets it: prune every conv but the 7x7 stem to 80% (per-layer magnitude), bake the
    masks in, sparsify_ with the example image, and time it against that masked dense model."""
    from .conv2d import _alternating, resnet50

    dense, source = resnet50()
    prune(dense, 0.8, filter_fn=lambda n, m: isinstance(m, nn.Conv2d) and m.kernel_size != (7, 7))
    remove(dense)
    x = torch.randn(1, 3, 224, 224)
    sparse = sparsify_(copy.deepcopy(dense), example_inputs=x)
    t = _alternating({"dense": lambda: dense(x), "sparse": lambda: sparse(x)}, repeats)
    n_sparse = sum(hasattr(m, "weight_values") for m in sparse.modules())
    row = dict(case=f"ResNet-50 ({source}), batch 1, 224x224", sparsity=0.8, tokens=None, dense_ms=t["dense"],
               sparse_ms=t["sparse"], speedup=t["dense"] / t["sparse"], formats=_formats(sparse),
               sparse_layers=n_sparse, max_abs_diff=float((dense(x).logits - sparse(x).logits).abs().max())
               if hasattr(dense(x), "logits") else None)
    log(f"ResNet-50 80%: dense {t['dense']:.1f} ms, sparsify_ ({n_sparse} layers sparse) {t['sparse']:.1f} ms, "
        f"{row['speedup']:.2f}x")
    return [row]


def run(log=print) -> list[dict]:
    with torch.no_grad():
        return linear_rows(log) + mlp_rows(log) + resnet_rows(log)
