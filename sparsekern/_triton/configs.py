"""Launch configurations of the Triton kernels: autotune candidate lists, and tuned tables keyed by GPU name that
skip autotuning for the shapes they hold.

A tuned table holds only measured winners: `sparsekern._triton.bsr_mm.tuned_entries()` turns the autotuner's
choices on the current GPU into entries to paste here. No entry exists until measured on that GPU; shapes
without one are autotuned on first use (per process) over the candidate lists below. A table that
`python -m sparsekern._triton.bsr_mm_tune --out FILE` wrote is used before it is pasted here when the
environment variable SPARSEKERN_BSR_MM_TUNED names FILE (a benchmark right after tuning, without autotuning
again).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import torch
import triton

from .._constants import DECODE_MAX_N

# fp32 operands of tl.dot run on tensor cores as TF32 (10-bit mantissa, fp32 accumulation: relative error ~1e-3,
# like torch.backends.cuda.matmul.allow_tf32 = True). Set to "ieee" for full fp32 products (no tensor cores,
# several times slower) or "tf32x3" (three TF32 products, close to fp32) before the first call.
FP32_INPUT_PRECISION = "tf32"

# False: GPU launches use the tuned table, else the defaults below, never the autotuner (reproducible timings,
# no tuning pause on first call). The environment variable SPARSEKERN_AUTOTUNE=0 sets it False at import.
AUTOTUNE = os.environ.get("SPARSEKERN_AUTOTUNE", "1") != "0"


def n_bucket(N: int) -> int:
    """Batch sizes sharing one tuned entry: the next power of two, so a new batch size reuses its neighbour's
    choice instead of autotuning again."""
    return triton.next_power_of_2(max(int(N), 1))


# ---------------------------------------------------------------------------------------------- bsr_mm

# Decode regime (N <= DECODE_MAX_N): one 16-column tile; the grid has only ceil(M / bm) programs, so stored
# blocks of a block row are split over SPLIT_K programs (fp32 partials, summed after) to fill the GPU.


# Pipeline depths: for this loop (an index load feeding two tile loads) Triton 3.9 compiles num_stages 3 and 4 to
# the same kernel (2 tile buffers; checked by compiling for sm_90 ahead of time), 5 gives 3 buffers, 2 gives
# prefetch of one tile, 1 none.
_BSR_MM_STAGES = (2, 3, 5)


def bsr_mm_candidates(decode: bool) -> list[triton.Config]:
    if decode:
        return [
            triton.Config({"BLOCK_N": 16, "SPLIT_K": s}, num_warps=w, num_stages=st)
            for s in (1, 2, 4, 8)
            for w in (2, 4)
            for st in _BSR_MM_STAGES
        ]
    return [
        triton.Config({"BLOCK_N": n, "SPLIT_K": 1}, num_warps=w, num_stages=st)
        for n in (32, 64, 128)
        for w in (4, 8)
        for st in _BSR_MM_STAGES
    ]


# Shared memory a block may use where the device does not say (an A100's opt-in limit; an H100 has 227 KiB).
_SHARED_BYTES = 163 * 1024


def _shared_bytes(device: torch.device) -> int:
    if device.type != "cuda":
        return _SHARED_BYTES
    props = torch.cuda.get_device_properties(device)
    return getattr(props, "shared_memory_per_block_optin", _SHARED_BYTES)


def bsr_mm_prune(configs, named_args, **kwargs):
    """Drops tiles far wider than N, register-heavy tiles with too few warps, and pipelines whose tile buffers
    (estimated as num_stages - 1 of them) would not fit in shared memory. An estimate: compiled with Triton 3.6
    and 3.9, sm_80 (mma.sync) keeps 1 buffer for num_stages 2 and 3 and 2 for 5, sm_90 with wgmma (64+ row
    tiles) 2, 2 and 3; a candidate that still does not fit fails to compile, which the autotuner counts as
    infinitely slow."""
    args = {**named_args, **kwargs}
    N, bm, bk, val = args["N"], args["BM_P2"], args["BK_P2"], args["val_ptr"]
    width = max(32, triton.next_power_of_2(N))
    limit = _shared_bytes(val.device)

    def fits(c):
        return max(1, c.num_stages - 1) * (bm * bk + bk * c.kwargs["BLOCK_N"]) * val.element_size() <= limit

    kept = [
        c for c in configs
        if c.kwargs["BLOCK_N"] <= width and not (bm * c.kwargs["BLOCK_N"] >= 128 * 128 and c.num_warps < 8) and fits(c)
    ]
    return kept or [min(configs, key=lambda c: (c.num_stages, c.kwargs["BLOCK_N"]))]


def bsr_mm_default(N: int, bm: int, fp32: bool = False) -> dict:
    """The config used without autotuning (the interpreter, or a caller that asks for no tuning). fp32 blocks of
    128+ rows pipeline 2 stages, not 3: Triton 3.2 keeps 3 tile buffers for 3 stages on sm_90 (3 x 80 KiB, over
    an H100's 227 KiB: the launch failed), while 3.6 and 3.9 compile 2 and 3 stages to the same buffers (2 on
    sm_90, 1 on sm_80; checked by compiling ahead of time)."""
    stages = 2 if fp32 and bm >= 128 else 3
    if N <= DECODE_MAX_N:
        return {"BLOCK_N": 16, "SPLIT_K": 1, "num_warps": 4, "num_stages": stages}
    return {"BLOCK_N": 64 if bm <= 64 else 32, "SPLIT_K": 1, "num_warps": 4, "num_stages": stages}


# GPU name (torch.cuda.get_device_name) -> {(M, K, n_bucket(N), bm, bk, dtype name): config dict as in
# bsr_mm_default}. Entries only from measurements on that GPU.
BSR_MM_TUNED: dict[str, dict[tuple, dict]] = {
    "NVIDIA H100 80GB HBM3": {},
    "NVIDIA H100 PCIe": {},
    "NVIDIA H200": {},
}


def bsr_mm_tuned(gpu: str, M: int, K: int, N: int, bm: int, bk: int, dtype_name: str) -> dict | None:
    return BSR_MM_TUNED.get(gpu, {}).get((M, K, n_bucket(N), bm, bk, dtype_name))


def load_bsr_mm_tuned(path: str | os.PathLike) -> None:
    """Adds the entries of a file written by `bsr_mm_tune --out` ({GPU name: {key: config}}, a Python literal)
    to BSR_MM_TUNED, replacing entries of the same key."""
    for gpu, entries in ast.literal_eval(Path(path).read_text()).items():
        BSR_MM_TUNED.setdefault(gpu, {}).update(entries)


if os.environ.get("SPARSEKERN_BSR_MM_TUNED"):
    load_bsr_mm_tuned(os.environ["SPARSEKERN_BSR_MM_TUNED"])


# ---------------------------------------------------------------------------------------------- csr_bitmap_mm

# Decode regime (N <= DECODE_MAX_N): one 16-column tile, and ceil(M / BLOCK_M) row tiles split along K (SPLIT_K
# word ranges, fp32 partials) so that an LLM layer (M ~ 4096) still gives every SM several programs.


def csr_bitmap_mm_candidates(decode: bool) -> list[triton.Config]:
    # 24 and 32 candidates: each costs a compile and a timing on first use of a shape.
    if decode:
        return [
            triton.Config({"BLOCK_M": m, "BLOCK_N": 16, "SPLIT_K": s}, num_warps=4, num_stages=st)
            for m in (16, 32, 64)
            for s in (1, 2, 4, 8)
            for st in (2, 3)
        ]
    # Wide BLOCK_N: the bit expansion of a tile is paid once per BLOCK_N columns, so wider tiles amortise it.
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "SPLIT_K": 1}, num_warps=w, num_stages=st)
        for m in (64, 128)
        for n in (32, 64, 128, 256)
        for w in (4, 8)
        for st in (2, 3)
    ]


def csr_bitmap_mm_prune(configs, named_args, **kwargs):
    """Drops tiles far wider than N, and register-heavy tiles (accumulator plus the expanded bit tile) with too
    few warps."""
    N = {**named_args, **kwargs}["N"]
    width = max(32, triton.next_power_of_2(N))
    def heavy(c):
        return c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] >= 128 * 128 and c.num_warps < 8

    kept = [c for c in configs if c.kwargs["BLOCK_N"] <= width and not heavy(c)]
    return kept or [min(configs, key=lambda c: (c.kwargs["BLOCK_N"], c.kwargs["BLOCK_M"]))]


def csr_bitmap_mm_default(N: int) -> dict:
    """The config used without autotuning (the interpreter, or configs.AUTOTUNE off)."""
    if N <= DECODE_MAX_N:
        return {"BLOCK_M": 32, "BLOCK_N": 16, "SPLIT_K": 4, "num_warps": 4, "num_stages": 2}
    return {"BLOCK_M": 64, "BLOCK_N": 64, "SPLIT_K": 1, "num_warps": 4, "num_stages": 3}
