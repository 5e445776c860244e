"""Timing that does not flatter sparse kernels: median of many calls, rotating between distinct input copies so
a weight is never re-read from a warm cache, and the machine's own copy bandwidth as the memory reference."""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Callable, Sequence

import torch


def median_ms(calls: Sequence[Callable[[], object]], device: torch.device, min_reps: int = 7,
              max_reps: int = 30, budget_s: float = 1.0, rep_ms: float = 100, warmup_s: float = 0.2) -> float:
    """Median wall time of one call in ms; `calls` are the same computation on different input copies. On a GPU
    the calls repeat for `rep_ms` of GPU time after a quarter of that as warm-up (triton's do_bench defaults:
    100 and 25)."""
    if device.type == "cuda":
        from triton.testing import do_bench  # flushes L2 between calls

        rotation = itertools.cycle(calls)
        return float(do_bench(lambda: next(rotation)(), warmup=rep_ms / 4, rep=rep_ms, return_mode="median"))
    # Warm-up of at least `warmup_s`: first-touch page faults, the thread pool's start, and the first second after
    # a benchmark allocates its weights, which measured up to 1.8x slower on a sub-millisecond call.
    warm_start = time.perf_counter()
    while True:
        for call in calls:
            call()
        if time.perf_counter() - warm_start >= warmup_s:
            break
    samples: list[float] = []
    start = time.perf_counter()
    for call in itertools.cycle(calls):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
        if len(samples) >= max_reps or (len(samples) >= min_reps and time.perf_counter() - start > budget_s):
            break
    return statistics.median(samples) * 1e3


def copy_bandwidth_gbs(device: torch.device, nbytes: int = 512 << 20) -> float:
    """Measured device-memory bandwidth of a large copy (bytes read + written per second), the reference for
    '% of memory floor'."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = median_ms([lambda: dst.copy_(src)], device, min_reps=5, max_reps=10)
    return 2 * nbytes / (ms * 1e-3) / 1e9
