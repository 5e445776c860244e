"""Triton tensor-core CSR SpMM, "load as sparse, compute as dense" (after SpInfer's bitmap encoding): the GPU
kernel of csr_bitmap_mm and csr_bitmap_linear, which sk.ops.csr_mm and sparse_linear pick for a CSRMatrix that
carries a bitmap when sparsekern.dispatch expects tensor cores to beat the CUDA-core kernels.

Index: one 32-bit word per (row, 32 columns), bit b of word w set where column 32 w + b is stored, beside CSR's
values. A row's values are stored in column order, so the value of column 32 w + b sits at
`cursor + popcount(word & ((1 << b) - 1))`, with `cursor` the row's count of entries in earlier words. The kernel
never reads column indices: a (BLOCK_M, 32) tile of A costs BLOCK_M words plus its nonzero values, i.e.
1/8 + 2 * density bytes per element in fp16, against dense's 2 and CSR's 4 * density (int16 columns): fewer
bytes than both from ~6% density up.

One program per (BLOCK_M rows, BLOCK_N columns[, K split]). Per word step it expands the rows' words to a
(BLOCK_M, 32) bit tile, turns each bit into its value's offset with a popcount of the bits below it (one popc per
element, no shuffles between threads), gathers the values into a zero-filled tile in registers and multiplies it
with the (32, BLOCK_N) tile of B by tl.dot in fp32 (tensor cores: wgmma on Hopper for 64-row tiles, mma.sync
otherwise; fp32 operands as configs.FP32_INPUT_PRECISION). The loop costs ~17 SASS instructions per tile element
at decode (BLOCK (64, 16)) and ~31 with 256-column tiles, whatever the density (bench/NOTES.md: the count, and why
a CUDA C++ fragment-building kernel was not landed): the price of tensor cores here. It wins over the CUDA-core kernels
where there are many nonzeros (low sparsity) or many columns to reuse each expanded tile for.

Decode (N <= 16): ceil(M / BLOCK_M) programs are too few for the GPU, so SPLIT_K programs take contiguous word
ranges of the same rows; each finds its start in the rows' values by popcounting the words before its range
(SWAR popcount, one word per row per instruction sequence, ~1/30 of a step's cost) and writes fp32 partials
that are summed after: deterministic, unlike atomics.

A word whose entries would leave its row's [crow[r], crow[r + 1]) range or [0, nnz) (only possible with
unvalidated input) is dropped, never dereferenced. csr_bitmap_linear reads x (T, K) as B = xᵀ and writes the
(M, T) result through out's strides into the (T, M) output.
"""

import functools

import torch
import triton
import triton.language as tl

from .._constants import DECODE_MAX_N
from ..ops.csr_bitmap_mm import check_csr_bitmap_linear, check_csr_bitmap_mm
from . import configs
from .tiles import finish_split_k, on_gpu, store_tile, time_candidate


@triton.jit
def _popcount(x):
    """Set bits of each uint32 element (SWAR: pairs, nibbles, bytes, then a multiply sums the four bytes)."""
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) >> 24).to(tl.int32)


# nnz and n_bucket only bound and key: not specialised on (see bsr_mm.py).
@triton.jit(do_not_specialize=["nnz", "n_bucket"])
def _csr_bitmap_mm_kernel(
    crow_ptr, val_ptr, bitmap_ptr, b_ptr, bias_ptr, out_ptr, ws_ptr,
    M, N, K, nnz, words, n_bucket,
    stride_bk, stride_bn, stride_om, stride_on,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr,
):
    # n_bucket only keys the autotuner (batch sizes that share a config).
    pid = tl.program_id(0)
    # Row tiles vary fastest: programs running together share one BLOCK_N-wide strip of B in L2.
    num_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_m
    pid_n = pid // num_m
    split = tl.program_id(1)

    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    cursor = tl.load(crow_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    end = tl.load(crow_ptr + rows + 1, mask=row_ok, other=0).to(tl.int64)
    end = tl.minimum(end, nnz)
    word_rows = bitmap_ptr + rows * words

    per_split = tl.cdiv(words, SPLIT_K)
    w_begin = split * per_split
    w_end = tl.minimum(w_begin + per_split, words)
    if SPLIT_K > 1:
        offs_w = tl.arange(0, 32)
        for w0 in range(0, w_begin, 32):
            ww = w0 + offs_w
            before = tl.load(word_rows[:, None] + ww[None, :], mask=row_ok[:, None] & (ww < w_begin)[None, :], other=0)
            cursor += tl.sum(_popcount(before.to(tl.uint32, bitcast=True)), axis=1).to(tl.int64)

    bit = tl.arange(0, 32)
    one_bit = tl.full([32], 1, tl.uint32) << bit.to(tl.uint32)
    below = one_bit - 1
    # Each row's next value as a pointer, advanced per word: a value's address is then that pointer plus a 32-bit
    # offset (one wide multiply-add) instead of 64-bit offset arithmetic per element. Kept beside `cursor` on
    # purpose: deriving it from cursor every step compiled to 32 more instructions per thread (409 vs 377).
    row_vals = val_ptr + cursor
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for w in range(w_begin, w_end):
        word = tl.load(word_rows + w, mask=row_ok, other=0).to(tl.uint32, bitcast=True)
        count = _popcount(word)
        # A word that would reach outside its row's values (only with unvalidated input) is dropped, so every
        # offset below lies in [crow[r], crow[r + 1]) and the per-element mask is the bit alone.
        word = tl.where((cursor >= 0) & (cursor + count <= end), word, 0)
        # A value's offset from its row's next value is the popcount of the word's bits below it: thread-local
        # (one popc per element), where a prefix sum across the tile would shuffle between threads.
        present = (word[:, None] & one_bit[None, :]) != 0
        a = tl.load(row_vals[:, None] + _popcount(word[:, None] & below[None, :]), mask=present, other=0.0)
        kk = w * 32 + bit
        # int64 offsets: x (T, K) read as B = xᵀ has stride_bn = K, and T * K may pass 2^31.
        b = tl.load(
            b_ptr + kk[:, None].to(tl.int64) * stride_bk + offs_n[None, :].to(tl.int64) * stride_bn,
            mask=(kk < K)[:, None] & n_ok[None, :],
            other=0.0,
        )
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        b32 = b.to(tl.float32)
        if tl.min(((b32 == b32) & (tl.abs(b32) != float("inf"))).to(tl.int32)) == 1:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        else:
            # Unstored entries must not touch B (torch.sparse's semantics, every kernel's): in the dot, a zero of
            # the expanded tile times an Inf or NaN of B is NaN. A step whose B tile holds one (rare) goes column
            # by column instead, each row's product masked by its bit.
            for i in range(32):
                bit_i = tl.sum(tl.where(bit == i, one_bit, 0), axis=0)
                has = (word & bit_i) != 0
                a_i = tl.load(row_vals + _popcount(word & (bit_i - 1)), mask=has, other=0.0).to(tl.float32)
                k_i = offs_n.to(tl.int64) * 0 + w * 32 + i  # a tensor (the loop counters are ints when interpreted)
                b_i = tl.load(b_ptr + k_i * stride_bk + offs_n.to(tl.int64) * stride_bn, mask=n_ok & (k_i < K),
                              other=0.0).to(tl.float32)
                acc += tl.where(has[:, None], a_i[:, None] * b_i[None, :], 0.0)
        cursor += count
        row_vals += count

    store_tile(acc, rows, row_ok, offs_n, n_ok, split, M, N, bias_ptr, out_ptr, ws_ptr, stride_om, stride_on,
               HAS_BIAS, SPLIT_K)


@functools.cache
def _autotuner(decode: bool):
    """The autotuned kernel of a regime (decode: N <= DECODE_MAX_N), built on first use: Triton
    3.2 looks up the GPU driver when an autotuner is defined, which fails on a machine without a GPU."""
    return triton.autotune(
        configs.csr_bitmap_mm_candidates(decode),
        key=["M", "K", "n_bucket"],
        prune_configs_by={"early_config_prune": configs.csr_bitmap_mm_prune},
        do_bench=time_candidate,
    )(_csr_bitmap_mm_kernel)


def _launch(crow, val, bitmap, B, bias, out, config="auto"):
    """out (M, N) = A @ B (+ bias[:, None]); B (K, N) and out may have any strides. `config`: "auto" (the
    autotuner on a GPU, the defaults in the interpreter or with configs.AUTOTUNE off) or a config dict."""
    K, N = B.shape
    M = crow.numel() - 1
    if M == 0 or N == 0:
        return out
    # The kernel indexes these as contiguous (no-ops for a CSRMatrix); the dense operands go by strides.
    crow, val, bitmap = crow.contiguous(), val.contiguous(), bitmap.contiguous()
    bias = bias.contiguous() if bias is not None else None
    if config == "auto":
        config = None if on_gpu(B.device) and configs.AUTOTUNE else configs.csr_bitmap_mm_default(N)
    tuner = _autotuner(N <= DECODE_MAX_N) if config is None else None
    max_split = config["SPLIT_K"] if config is not None else max(c.kwargs["SPLIT_K"] for c in tuner.configs)
    ws = torch.empty((max_split, M, N), dtype=torch.float32, device=B.device) if max_split > 1 else out
    args = (
        crow, val, bitmap, B, bias if bias is not None else val, out, ws,
        M, N, K, val.numel(), bitmap.shape[1], configs.n_bucket(N),
        B.stride(0), B.stride(1), out.stride(0), out.stride(1),
    )
    meta = dict(
        HAS_BIAS=bias is not None,
        PRECISION=configs.FP32_INPUT_PRECISION if val.dtype == torch.float32 else None,
        # The interpreter's tl.dot multiplies bf16 bit patterns as integers; fp32 products of bf16 values are
        # exact, so widening first gives what the GPU's bf16 MMA (fp32 accumulation) computes.
        UPCAST=not on_gpu(B.device) and val.dtype == torch.bfloat16,
    )

    def grid(m):
        return (triton.cdiv(M, m["BLOCK_M"]) * triton.cdiv(N, m["BLOCK_N"]), m["SPLIT_K"])

    if config is not None:
        _csr_bitmap_mm_kernel[grid(config)](*args, **meta, **config)
        split = config["SPLIT_K"]
    else:
        tuner[grid](*args, **meta)
        split = tuner.best_config.kwargs["SPLIT_K"]
    return finish_split_k(ws, split, bias, out)


def csr_bitmap_mm(crow, col, val, bitmap, B, config="auto"):
    check_csr_bitmap_mm(crow, col, val, bitmap, B)
    out = torch.empty((crow.numel() - 1, B.shape[1]), dtype=B.dtype, device=B.device)
    return _launch(crow, val, bitmap, B, None, out, config)


def csr_bitmap_linear(x, crow, col, val, bitmap, bias, config="auto"):
    check_csr_bitmap_linear(x, crow, col, val, bitmap, bias)
    M = crow.numel() - 1
    out = torch.empty((x.shape[0], M), dtype=x.dtype, device=x.device)
    _launch(crow, val, bitmap, x.t(), bias, out.t(), config)
    return out
