"""Launch configurations of the Triton kernels: autotune candidate lists, and tuned tables keyed by GPU name that
skip autotuning for the shapes they hold.

A tuned table holds only measured winners: `sparsekern._triton.bsr_mm.tuned_entries()` turns the autotuner's
choices on the current GPU into entries to paste here. No entry exists until measured on that GPU; shapes
without one are autotuned on first use (per process) over the candidate lists below.
"""

from __future__ import annotations

import triton

# fp32 operands of tl.dot run on tensor cores as TF32 (10-bit mantissa, fp32 accumulation: relative error ~1e-3,
# like torch.backends.cuda.matmul.allow_tf32 = True). Set to "ieee" for full fp32 products (no tensor cores,
# several times slower) or "tf32x3" (three TF32 products, close to fp32) before the first call.
FP32_INPUT_PRECISION = "tf32"

# False: GPU launches use the tuned table, else the defaults below, never the autotuner (reproducible timings,
# no tuning pause on first call).
AUTOTUNE = True


def n_bucket(N: int) -> int:
    """Batch sizes sharing one tuned entry: the next power of two, so a new batch size reuses its neighbour's
    choice instead of autotuning again."""
    return triton.next_power_of_2(max(int(N), 1))


# ---------------------------------------------------------------------------------------------- bsr_mm

# Decode regime (N <= 16): one 16-column tile; the grid has only ceil(M / bm) programs, so stored blocks of a
# block row are split over SPLIT_K programs (fp32 partials, summed after) to fill the GPU.
BSR_MM_DECODE_N = 16


def bsr_mm_candidates(decode: bool) -> list[triton.Config]:
    if decode:
        return [
            triton.Config({"BLOCK_N": 16, "SPLIT_K": s}, num_warps=w, num_stages=st)
            for s in (1, 2, 4, 8)
            for w in (2, 4)
            for st in (2, 3, 4)
        ]
    return [
        triton.Config({"BLOCK_N": n, "SPLIT_K": 1}, num_warps=w, num_stages=st)
        for n in (32, 64, 128)
        for w in (4, 8)
        for st in (2, 3, 4)
    ]


def bsr_mm_prune(configs, named_args, **kwargs):
    """Drops tiles far wider than N and register-heavy tiles with too few warps."""
    args = {**named_args, **kwargs}
    N, bm = args["N"], args["BM_P2"]
    width = max(32, triton.next_power_of_2(N))
    kept = [
        c for c in configs
        if c.kwargs["BLOCK_N"] <= width and not (bm * c.kwargs["BLOCK_N"] >= 128 * 128 and c.num_warps < 8)
    ]
    return kept or configs[:1]


def bsr_mm_default(N: int, bm: int) -> dict:
    """The config used without autotuning (the interpreter, or a caller that asks for no tuning)."""
    if N <= BSR_MM_DECODE_N:
        return {"BLOCK_N": 16, "SPLIT_K": 1, "num_warps": 4, "num_stages": 3}
    return {"BLOCK_N": 64 if bm <= 64 else 32, "SPLIT_K": 1, "num_warps": 4, "num_stages": 3}


# GPU name (torch.cuda.get_device_name) -> {(M, K, n_bucket(N), bm, bk, dtype name): config dict as in
# bsr_mm_default}. Entries only from measurements on that GPU.
BSR_MM_TUNED: dict[str, dict[tuple, dict]] = {
    "NVIDIA H100 80GB HBM3": {},
    "NVIDIA H100 PCIe": {},
    "NVIDIA H200": {},
}


def bsr_mm_tuned(gpu: str, M: int, K: int, N: int, bm: int, bk: int, dtype_name: str) -> dict | None:
    return BSR_MM_TUNED.get(gpu, {}).get((M, K, n_bucket(N), bm, bk, dtype_name))
