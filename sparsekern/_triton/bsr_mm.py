"""Triton BSR GEMM: the GPU implementation of bsr_mm and bsr_linear (one kernel, the orientation set by strides).

One program per (block row, BLOCK_N output columns[, split]): it walks the block row's stored blocks, loads each
(bm, bk) block and the matching (bk, BLOCK_N) tile of B, and accumulates `tl.dot` products in fp32 (tensor cores;
fp32 operands as TF32 by default, see configs.FP32_INPUT_PRECISION). Blocks that are not a power of two >= 16
are padded to one in registers with masked loads, and blocks over 128 are covered by 128-wide tiles; ragged M,
K and N are masked, so the format's padding is never read as data, and an out-of-range block column or row
pointer (unvalidated input) reads zeros instead of faulting.

Decode regime (N <= 16): a block row is one program per 16 columns, too few to fill the GPU, so SPLIT_K
programs share a block row's blocks (interleaved, for balance) and write fp32 partials that are summed after:
deterministic, unlike atomics. Launch configs: a tuned table for the GPU (configs.BSR_MM_TUNED), else the
autotuner keyed on (M, K, n_bucket(N), bm, bk, dtypes); the interpreter uses fixed defaults.
bsr_linear reads x (T, K) as B = xᵀ and writes the (M, T) result through out's strides into the (T, M) output.
"""

import functools

import torch
import triton
import triton.language as tl

from .._constants import DECODE_MAX_N
from ..ops.bsr_mm import check_bsr_linear, check_bsr_mm
from . import configs
from .tiles import finish_split_k, on_gpu, store_tile, time_candidate


# Arguments that only bound loops or key the autotuner are not specialised on (value 1, divisibility by 16):
# each specialisation is another compile of the same code, per matrix.
@triton.jit(do_not_specialize=["n_bucket", "nblocks"])
def _bsr_mm_kernel(
    crow_ptr, col_ptr, val_ptr, b_ptr, bias_ptr, out_ptr, ws_ptr,
    M, N, K, n_bucket, nblocks,
    stride_vb, stride_vm, stride_vk, stride_bk, stride_bn, stride_om, stride_on,
    BM: tl.constexpr, BK: tl.constexpr, BM_P2: tl.constexpr, BK_P2: tl.constexpr,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr,
):
    # n_bucket only keys the autotuner (batch sizes that share a config).
    pid = tl.program_id(0)
    # A block taller than its tile (bm > 128) is ROW_TILES programs, one per BM_P2 rows.
    ROW_TILES = (BM + BM_P2 - 1) // BM_P2
    # Block rows vary fastest: programs running together share one BLOCK_N-wide strip of B in L2.
    mb = tl.cdiv(M, BM) * ROW_TILES
    q = pid % mb
    i = (q // ROW_TILES).to(tl.int64)
    pid_n = pid // mb
    split = tl.program_id(1)

    offs_m = (q % ROW_TILES) * BM_P2 + tl.arange(0, BM_P2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_in_block = offs_m < BM
    n_ok = offs_n < N
    # Clamped to the stored blocks: a row pointer out of [0, nblocks] (unvalidated input) reads nothing outside.
    start = tl.maximum(tl.load(crow_ptr + i).to(tl.int64), 0)
    end = tl.minimum(tl.load(crow_ptr + i + 1).to(tl.int64), nblocks)
    # int64: x (T, K) read as B = xᵀ has stride_bn = K, and T * K may pass 2^31.
    b_cols = offs_n[None, :].to(tl.int64) * stride_bn
    # A block wider than its tile (bk > 128) is K_TILES steps of BK_P2 columns. One loop over (block, step)
    # pairs, not a loop per block: the pipeline then buffers one tile per stage whatever bk is (an unrolled inner
    # loop would buffer them all), and with K_TILES == 1 the index arithmetic folds away.
    K_TILES = (BK + BK_P2 - 1) // BK_P2
    acc = tl.zeros([BM_P2, BLOCK_N], dtype=tl.float32)
    for t in range(start * K_TILES + split, end * K_TILES, SPLIT_K):
        j = t // K_TILES
        offs_k = (t % K_TILES) * BK_P2 + tl.arange(0, BK_P2)
        c = tl.load(col_ptr + j).to(tl.int64)
        kk = c * BK + offs_k
        k_ok = (offs_k < BK) & (kk >= 0) & (kk < K)
        a = tl.load(
            val_ptr + j * stride_vb + offs_m[:, None] * stride_vm + offs_k[None, :] * stride_vk,
            mask=m_in_block[:, None] & k_ok[None, :],
            other=0.0,
        )
        b = tl.load(b_ptr + kk[:, None] * stride_bk + b_cols, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    rows = i * BM + offs_m
    store_tile(acc, rows, m_in_block & (rows < M), offs_n, n_ok, split, M, N, bias_ptr, out_ptr, ws_ptr,
               stride_om, stride_on, HAS_BIAS, SPLIT_K)


@functools.cache
def _autotuner(decode: bool):
    """The autotuned kernel of a regime (decode: N <= DECODE_MAX_N), built on first use: Triton 3.2
    looks up the GPU driver when an autotuner is defined, which fails on a machine without a GPU."""
    return triton.autotune(
        configs.bsr_mm_candidates(decode),
        key=["M", "K", "n_bucket", "BM", "BK"],
        prune_configs_by={"early_config_prune": configs.bsr_mm_prune},
        do_bench=time_candidate,
    )(_bsr_mm_kernel)


# (M, K, n_bucket, bm, bk, dtype name) -> config dict, for every shape autotuned in this process.
_tuned_here: dict[tuple, dict] = {}


def tuned_entries() -> dict[tuple, dict]:
    """The autotuner's choices made in this process, as entries for configs.BSR_MM_TUNED[<this GPU's name>]."""
    return dict(_tuned_here)


def _config_dict(c: triton.Config) -> dict:
    return {**c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages}


def _fixed_config(device: torch.device, M, K, N, bm, bk, dtype_name) -> dict | None:
    """The tuned table's entry for this GPU and shape, else the defaults where the autotuner does not run (the
    interpreter, or configs.AUTOTUNE off); None: autotune."""
    if on_gpu(device):
        cfg = configs.bsr_mm_tuned(torch.cuda.get_device_name(device), M, K, N, bm, bk, dtype_name)
        if cfg is not None or configs.AUTOTUNE:
            return cfg
    return configs.bsr_mm_default(N, bm, fp32=dtype_name == "float32")


def _tile(b: int) -> int:
    """A block side's register tile: padded to a power of two >= 16 (tl.dot's minimum), at most 128; a larger
    block is covered by several tiles, since one 256 x 256 tile does not fit shared memory (on an H100 the
    pipeline keeps two: 256 KiB in fp16, 512 KiB in fp32, against 227 KiB)."""
    return min(128, max(16, triton.next_power_of_2(b)))


def _launch(crow, col, val, M, B, bias, out, config="auto"):
    """out (M, N) = A @ B (+ bias[:, None]); B (K, N) and out may have any strides. `config`: "auto" (the tuned
    table, the autotuner or the defaults, see _fixed_config), a config dict, or None to autotune."""
    K, N = B.shape
    if M == 0 or N == 0:
        return out
    bm, bk = val.shape[1], val.shape[2]
    dtype_name = str(val.dtype).removeprefix("torch.")
    cfg = _fixed_config(B.device, M, K, N, bm, bk, dtype_name) if config == "auto" else config
    MB = crow.numel() - 1
    # The kernel indexes these as contiguous (no-ops for a BSRMatrix); values and the dense operands go by strides.
    crow, col = crow.contiguous(), col.contiguous()
    bias = bias.contiguous() if bias is not None else None
    tuner = _autotuner(N <= DECODE_MAX_N) if cfg is None else None
    # Workspace for split-K partials: the config's split, or the largest split the autotuner may try.
    max_split = cfg["SPLIT_K"] if cfg is not None else max(c.kwargs["SPLIT_K"] for c in tuner.configs)
    ws = torch.empty((max_split, M, N), dtype=torch.float32, device=B.device) if max_split > 1 else out
    args = (
        crow, col, val, B, bias if bias is not None else val, out, ws,
        M, N, K, configs.n_bucket(N), col.numel(),
        val.stride(0), val.stride(1), val.stride(2), B.stride(0), B.stride(1), out.stride(0), out.stride(1),
    )
    meta = dict(
        BM=bm, BK=bk, BM_P2=_tile(bm), BK_P2=_tile(bk),
        HAS_BIAS=bias is not None,
        PRECISION=configs.FP32_INPUT_PRECISION if val.dtype == torch.float32 else None,
        # The interpreter's tl.dot multiplies bf16 bit patterns as integers; fp32 products of bf16 values are
        # exact, so widening first gives what the GPU's bf16 MMA (fp32 accumulation) computes.
        UPCAST=not on_gpu(B.device) and val.dtype == torch.bfloat16,
    )

    def grid(m):
        return (MB * triton.cdiv(bm, meta["BM_P2"]) * triton.cdiv(N, m["BLOCK_N"]), m["SPLIT_K"])

    if cfg is not None:
        _bsr_mm_kernel[grid(cfg)](*args, **meta, **cfg)
        split = cfg["SPLIT_K"]
    else:
        tuner[grid](*args, **meta)
        _tuned_here[(M, K, configs.n_bucket(N), bm, bk, dtype_name)] = _config_dict(tuner.best_config)
        split = tuner.best_config.kwargs["SPLIT_K"]
    return finish_split_k(ws, split, bias, out)


def bsr_mm(crow, col, val, M, B):
    check_bsr_mm(crow, col, val, M, B)
    out = torch.empty((M, B.shape[1]), dtype=B.dtype, device=B.device)
    return _launch(crow, col, val, M, B, None, out)


def bsr_linear(x, crow, col, val, M, bias):
    check_bsr_linear(x, crow, col, val, M, bias)
    out = torch.empty((x.shape[0], M), dtype=x.dtype, device=x.device)
    _launch(crow, col, val, M, x.t(), bias, out.t())
    return out
