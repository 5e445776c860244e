"""This machine's crossovers: how fast each sparse format runs against dense, measured once and cached.

A table holds, for each format (csr, bsr16, bsr32, bsr64, 2:4) and token count N, the speedup over dense
(dense ms / sparse ms, > 1 = faster) of the Linear orientation on a reference (M, K) weight at a few densities
(for BSR the fraction of blocks kept; 2:4 has one density, 1/2). `format="auto"` reads it through `speedup()`.

Where a table comes from, first match wins:
1. the cache written by `tune()` for this machine: `$SPARSEKERN_CACHE_DIR` (default `~/.cache/sparsekern`), one
   file per key = CPU model, ISA, threads and torch version (GPU name and torch version on CUDA);
2. on the CPU, the table shipped for the detected ISA (`sparsekern/tables/cpu_<isa>.json`, measured by `tune()`
   on the machine its `meta` names; where `meta.runs` > 1, each cell is the median of that many runs);
3. none (CUDA without a tune run): auto then keeps every layer dense, because no rate for that GPU was measured.

Why measure rather than model: the same kernels sit on different sides of dense on different CPUs (the
2026-12-02 AVX2 EPYC took the bitmap decode kernel at 0.42x dense where the Xeon's table said it wins), and dense
itself differs (MKL's fp32 GEMM on that EPYC ran at a third of ONNX Runtime's).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import platform
import re
import time
from functools import lru_cache
from pathlib import Path

import torch

from .dispatch import cpu_isa

TOKENS = (1, 16, 64, 256)
DENSITIES = (0.05, 0.1, 0.2, 0.35, 0.5)
BSR_BLOCKS = (16, 32, 64)
FORMATS = ("csr", *(f"bsr{b}" for b in BSR_BLOCKS), "2:4")
REFERENCE_SHAPE = (2048, 2048)
_TABLES = Path(__file__).parent / "tables"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(device: torch.device | str = "cpu") -> dict:
    """What a table is valid for: the same key means the same kernels on the same hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(device), "torch": torch.__version__}
    return {"device": "cpu", "cpu": _cpu_model(), "isa": cpu_isa(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def cache_dir() -> Path:
    root = os.environ.get("SPARSEKERN_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sparsekern"


def cache_path(device: torch.device | str = "cpu") -> Path:
    key = machine_key(device)
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(str(v) for v in key.values()).lower()).strip("-")
    return cache_dir() / f"tune-{slug}.json"


def shipped_path(isa: str) -> Path:
    return _TABLES / f"cpu_{isa}.json"


@lru_cache(maxsize=None)
def _load(path: str, mtime: float) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def table(device: torch.device | str = "cpu") -> tuple[dict | None, str]:
    """(table, where it came from) for `device`: the tune cache, else the shipped CPU table, else (None, why)."""
    device = torch.device(device)
    for path, source in ((cache_path(device), "tuned on this machine"),
                         *(((shipped_path(cpu_isa()), f"shipped table for {cpu_isa()}"),) if device.type == "cpu"
                           else ())):
        if path.exists():
            t = _load(str(path), path.stat().st_mtime)
            if t is not None:
                return t, f"{source} ({path})"
    return None, f"no measured table for {device.type}: run sparsekern.tune() on this machine"


def _interp(xs, ys, x: float) -> float:
    """Piecewise-linear in x, clamped at the ends."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ys[i - 1] + t * (ys[i] - ys[i - 1])


def speedup(tab: dict, fmt: str, density: float, n_tokens: int) -> float:
    """Predicted dense ms / sparse ms for format `fmt` at `density` (kept fraction; of blocks for BSR) and N.

    Between measured densities the speedup is interpolated; below the sparsest it is held (conservative: sparser
    is faster); above the densest the sparse time is scaled with the density (the kernels' work is nnz * N).
    Between token counts it is interpolated in log N and held past the ends.
    """
    rows = tab["speedup"][fmt]
    tokens = [int(n) for n in rows]
    logs = [math.log(n) for n in tokens]

    def at(n):
        ys = rows[str(n)]
        if fmt == "2:4":
            return ys[0]
        ds = tab["densities"]
        if density > ds[-1]:
            return ys[-1] * ds[-1] / density
        return _interp(ds, ys, density)

    return _interp(logs, [at(n) for n in tokens], math.log(max(n_tokens, 1)))


def _paired_speedup(dense, sparse, repeats: int) -> tuple[float, float]:
    """(dense / sparse speedup, dense seconds) from `repeats` back-to-back dense-then-sparse pairs: the fastest
    dense call over the fastest sparse call of the same short window.

    Why not a median of each, timed series after series: on a shared cloud VM (the 2-core EPYC, 2026-12-02) the
    dense GEMM's own speed drifted 2x between two tune runs a minute apart, and single calls stalled 4x for a few
    milliseconds at a time, so one table had the same kernel at 0.27x and 2.6x in neighbouring cells. Pairing
    keeps the drift out of the ratio; the minimum (the work is deterministic, noise only adds time) keeps the
    stalls out, where a median of 9 still let them in."""
    dense(), sparse()
    dense_s, sparse_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dense()
        t1 = time.perf_counter()
        sparse()
        dense_s.append(t1 - t0)
        sparse_s.append(time.perf_counter() - t1)
    return min(dense_s) / min(sparse_s), min(dense_s)


def measure(shape=REFERENCE_SHAPE, tokens=TOKENS, densities=DENSITIES, dtype=torch.float32, device="cpu",
            repeats: int = 9, copies: int = 3, log=None) -> dict:
    """Times dense and each format on random weights of `shape`; returns a table (see the module docstring).

    `copies` weights rotate between calls so that no call reads a weight the previous one left in cache (3 x
    2048 x 2048 fp32 = 48 MiB, over the last-level caches of the machines this was written on)."""
    from . import ops
    from .formats import BSRMatrix, CSRMatrix, Semi24Matrix
    from .formats.csr import compact_col_dtype
    from .pruning import block_mask, nm_mask

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    M, K = shape
    gen = torch.Generator().manual_seed(0)
    dense_w = [torch.randn(M, K, generator=gen).to(device=device, dtype=dtype) for _ in range(copies)]

    def rotating(weights, call):
        it = iter(range(1 << 30))

        def step():
            call(weights[next(it) % len(weights)])
            sync()

        return step

    out = {"meta": {**machine_key(device), "shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
                    "date": time.strftime("%Y-%m-%d"), "repeats": repeats},
           "tokens": list(tokens), "densities": list(densities), "speedup": {f: {} for f in FORMATS},
           "dense_ms": {}}
    xs = {n: torch.randn(n, K, generator=gen).to(device=device, dtype=dtype) for n in tokens}
    dense = {n: rotating(dense_w, lambda W, x=xs[n]: torch.nn.functional.linear(x, W)) for n in tokens}
    dense_s: dict[int, list[float]] = {n: [] for n in tokens}
    for fmt in FORMATS:
        rows: dict[int, list[float]] = {n: [] for n in tokens}
        for d in (0.5,) if fmt == "2:4" else densities:
            # Each (format, density) is built once and timed at every N: building dominates otherwise.
            if fmt == "2:4":
                mats = [Semi24Matrix.from_dense(W * nm_mask(W, 2, 4)) for W in dense_w]
            elif fmt == "csr":
                mats = [CSRMatrix.from_dense(W * (torch.rand(M, K, generator=gen) < d).to(device),
                                             col_dtype=compact_col_dtype(K)) for W in dense_w]
            else:
                b = int(fmt[3:])
                mats = [BSRMatrix.from_dense(W * block_mask(W, 1 - d, (b, b)), blocksize=(b, b)) for W in dense_w]
            for n in tokens:
                sparse = rotating(mats, lambda A, x=xs[n]: ops.sparse_linear(x, A))
                ratio, t_dense = _paired_speedup(dense[n], sparse, repeats)
                rows[n].append(ratio)
                dense_s[n].append(t_dense)
                if log:
                    log(f"N={n:4d} {fmt:6s} density {d:.2f}: {ratio:.2f}x dense")
        out["speedup"][fmt] = {str(n): r for n, r in rows.items()}
    out["dense_ms"] = {str(n): min(t) * 1e3 for n, t in dense_s.items()}
    return out


def tune(device="cpu", dtype=torch.float32, *, save: bool = True, verbose: bool = True, **kw) -> dict:
    """Measures this machine's crossovers (about 20 s on a 2-core CPU) and caches them for `format="auto"`.

    Keyword arguments go to `measure` (shape, tokens, densities, repeats, copies)."""
    tab = measure(device=device, dtype=dtype, log=print if verbose else None, **kw)
    if save:
        path = cache_path(device)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(tab, indent=1))
        if verbose:
            print(f"sparsekern.tune: wrote {path}")
    return tab
