"""What a benchmark case is: one problem, the methods that solve it, and the work it represents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class Case:
    op: str
    params: dict
    flops: float  # useful work: 2 * nnz * N multiply-adds for a sparse op
    bytes: int  # the least the sparse method must move: stored weight + indices + dense input + output
    dense_bytes: int  # the same for the dense method
    # method name -> calls over rotated input copies; "dense" is the speedup reference, "sparsekern" ours
    methods: dict[str, list[Callable[[], torch.Tensor]]] = field(default_factory=dict)


def random_weight(M: int, K: int, sparsity: float, dtype: torch.dtype, device: torch.device, seed: int):
    """A (M, K) weight with unstructured sparsity: each element zero with probability `sparsity`."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    W = torch.randn(M, K, generator=g)
    W[torch.rand(M, K, generator=g) < sparsity] = 0
    return W.to(device=device, dtype=dtype)
