"""What a benchmark case is: one problem, the methods that solve it, and the work it represents."""

from __future__ import annotations

import copy
import glob
import math
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
    """A (M, K) weight with unstructured sparsity: each element zero with probability `sparsity`. Drawn on
    `device` (on a GPU in milliseconds, where a CPU takes about a second per large layer)."""
    g = torch.Generator(device=device).manual_seed(seed)
    W = torch.randn(M, K, generator=g, device=device)
    W[torch.rand(M, K, generator=g, device=device) < sparsity] = 0
    return W.to(dtype)


def last_level_cache_bytes() -> int:
    """The largest CPU cache (Linux sysfs); 0 when unknown."""
    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        text = open(path).read().strip()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes, default=0)


def rotation_copies(dense_weight_bytes: int, device: torch.device, most: int = 24) -> int:
    """How many distinct copies of a problem to rotate through so that each call reads its weight from memory,
    as in a real model whose weights exceed the caches. On a GPU, do_bench flushes L2 anyway: a few copies.
    On a CPU, enough copies of the dense weight to fill twice the last-level cache (which can be hundreds of
    MiB on server parts)."""
    if device.type == "cuda":
        return 4
    llc = last_level_cache_bytes() or 64 << 20
    return max(2, min(most, math.ceil(2 * llc / max(dense_weight_bytes, 1))))


def footprint(obj) -> int:
    """Bytes of the tensors an object holds: a tensor (sparse layouts: their components) or a format's fields."""
    if isinstance(obj, torch.Tensor):
        if obj.layout in (torch.sparse_csr, torch.sparse_bsr):
            return sum(footprint(t) for t in (obj.crow_indices(), obj.col_indices(), obj.values()))
        return obj.numel() * obj.element_size()
    return sum(footprint(t) for t in vars(obj).values() if isinstance(t, torch.Tensor))


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    c = copy.copy(obj)
    for name, t in vars(obj).items():
        if isinstance(t, torch.Tensor):
            setattr(c, name, t.clone())
    return c


def sparse_rotation(items: list, device: torch.device) -> list:
    """Enough distinct copies of a sparse weight to exceed the caches, as rotation_copies gives the dense one:
    the same count would leave sparse weights cache-resident (a 95%-sparse 4096 x 4096 CSR matrix is ~7 MB, 15
    copies fit a 480 MiB L3) and flatter them. Clones (same values, new memory) make up the count."""
    n = max(len(items), rotation_copies(footprint(items[0]), device, most=256))
    return [items[i] if i < len(items) else _clone(items[i % len(items)]) for i in range(n)]
