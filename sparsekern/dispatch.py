"""Which kernel computes a product, chosen per call from the problem's shape and density.

csr_mm and sparse_linear of a CSRMatrix that carries a bitmap have two kernels each.

CPU: for N <= 4 on AVX-512 the bitmap kernel (an expand-load of each 16-column half word, dense FMAs) reads 1 bit
per element instead of a 4-byte column index per stored value plus a gathered load. Measured crossovers per
instruction set (below) decide.

CUDA, fp16/bf16: the
CUDA-core ones (csr_mm / csr_linear: bytes = values + int16 columns, work = 2 * nnz * N FMAs on CUDA cores) and
the tensor-core one (csr_bitmap_mm / csr_bitmap_linear: bytes = values + 1 bit per element, work = the dense
GEMM's on tensor cores plus a bit expansion of every element per BLOCK_N-wide column tile). Each time is
estimated as the largest of its memory, arithmetic and instruction terms, and the smaller estimate wins.

The rates below are estimates for an H100 SXM (a device copy measured at ~3.0 TB/s on the machines this project
uses; the rest from datasheets and the kernel's compiled instruction counts), not crossovers measured with these
kernels: `python -m sparsekern bench --preset gpu` times both kernels side by side (methods "sparsekern[csr]"
and "sparsekern[bitmap]") so that measured crossovers can replace them. fp32 always takes the CUDA-core
kernels, which compute in full fp32 (the tensor-core kernel would compute fp32 products as TF32).
"""

from __future__ import annotations

import math

import torch

from ._constants import DECODE_MAX_N

HBM_BYTES_PER_S = 3.0e12
# Gathered FMAs on CUDA cores as the CSR kernels run them (~30% of the fp32 datasheet rate).
CSR_FLOPS = 2.0e13
# Tensor-core fp16/bf16 rate reachable by a Triton tl.dot kernel at these tile sizes.
TENSOR_FLOPS = 6.0e14
# Instruction issue rate (132 SMs x 4 schedulers x 32 lanes x ~1.75 GHz, in lane-instructions per second) and the
# tensor-core kernel's instructions per element of A per column tile: its main loop's SASS (sm_90, the Triton
# kernel compiled ahead of time, counted with Triton's bundled cuobjdump, bench/NOTES.md) is 274 instructions
# per thread for the 16 elements each thread expands per step with BLOCK (64, 16) and 4 warps (decode), 501 with
# (128, 256) and 8 warps, the widest tile the autotuner may pick. Bit expansion, gathers, B's loads and the MMA
# issue are all in those counts.
INT_OPS = 3.0e13
LOOP_OPS_DECODE = 17
LOOP_OPS_WIDE = 31
BITMAP_MAX_BLOCK_N = 256


def csr_seconds(M: int, K: int, N: int, nnz: int, elt: int) -> float:
    bytes_ = nnz * (elt + 2) + (K + M) * N * elt
    return max(bytes_ / HBM_BYTES_PER_S, 2 * nnz * N / CSR_FLOPS)


def bitmap_seconds(M: int, K: int, N: int, nnz: int, elt: int) -> float:
    bytes_ = nnz * elt + M * K / 8 + (K + M) * N * elt
    loop = M * K * LOOP_OPS_DECODE if N <= DECODE_MAX_N else M * K * math.ceil(N / BITMAP_MAX_BLOCK_N) * LOOP_OPS_WIDE
    return max(bytes_ / HBM_BYTES_PER_S, loop / INT_OPS, 2 * M * K * N / TENSOR_FLOPS)


# CPU, per instruction set of the CPU kernels (sk.backends()["cpu_isa"]): N -> the least density at which the
# bitmap kernel beats the CSR kernel; an N not listed always takes the CSR kernel. A plain dict per ISA, so that
# measured crossovers (sk.tune) can replace a row.
# avx512: a 2-core Sapphire Rapids Xeon, 2 threads, fp32, 4096 x 4096 over 6 rotating copies, the two kernels
# alternating call by call, median of 31, 2026-12-07 (after the CSR kernel's K strips, and with the bitmap ops'
# pattern check done once per weight). CSR / bitmap ms at 85% and 90% sparsity with int32 columns: N=1 1.54 / 1.48
# and 1.09 / 1.33, N=2 2.85 / 1.87 and 2.02 / 1.78 (92%: 1.57 / 1.65), N=3 2.84 / 2.17 and 2.02 / 2.12, N=4
# 2.86 / 2.46 and 1.99 / 2.45; with int16 columns (SparseLinear's) the crossovers move by up to 0.04 in density
# (N=4 at 85%: 1.64 / 1.91). Each entry is the density where the ratio crosses 1, between the two column widths.
# CSR at N = 2 and 3 runs a 4-wide tile (csr_mm.cpp pads it), so bitmap keeps N = 2 to the sparsest.
# avx2 and base: never, and the bitmap ops themselves run the CSR kernel there (csr_bitmap_mm.cpp). Without
# AVX-512's expand-loads the bitmap kernel expanded each word through a stack tile, one store per stored value; on
# a 2-core AMD EPYC (Zen 3, AVX2) it ran at 0.42x and 0.57x dense where the CSR kernel ran at 0.84x and 1.85x
# (bench quick preset, 2026-12-02), and 10-90x slower than the CSR kernel at 5-35% density, N = 1-4 (2026-12-07).
CPU_BITMAP_MIN_DENSITY = {
    "avx512": {1: 0.15, 2: 0.08, 3: 0.10, 4: 0.15},
    "avx2": {},
    "base": {},
}


# Fixed per process (the C++ side detects it once), so torch.compile may bake it in instead of breaking the graph
# on an op that returns an int: sk.ops.csr_mm of a CSRMatrix with a bitmap asks it on every call.
@torch.compiler.assume_constant_result
def cpu_isa() -> str:
    """The instruction set the CPU kernels run with (SPARSEKERN_CPU_ISA caps it); "base" without the extension."""
    if not hasattr(torch.ops.sparsekern, "cpu_isa"):
        return "base"
    return ("base", "avx2", "avx512")[torch.ops.sparsekern.cpu_isa()]


def use_bitmap_kernel(A, N: int, device: torch.device) -> bool:
    """True when the bitmap kernel should compute A (CSRMatrix) @ (K, N) on `device`."""
    if A.bitmap is None:
        return False
    M, K = A.shape
    if device.type == "cpu":
        table = CPU_BITMAP_MIN_DENSITY[cpu_isa()]
        return N in table and A.nnz >= table[N] * M * K
    if device.type != "cuda" or A.dtype == torch.float32:
        return False
    elt = A.values.element_size()
    return bitmap_seconds(M, K, N, A.nnz, elt) < csr_seconds(M, K, N, A.nnz, elt)
