"""What the tensor-core Triton kernels (bsr_mm, csr_bitmap_mm) share: the output tile's epilogue with optional
split-K partials, the host-side sum of those partials, and the autotuner's candidate timing."""

import os

import torch
import triton
import triton.language as tl


@triton.jit
def store_tile(acc, rows, row_ok, offs_n, n_ok, split, M, N, bias_ptr, out_ptr, ws_ptr, stride_om, stride_on,
               HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr):
    """Writes an fp32 (rows, offs_n) tile: with SPLIT_K == 1 plus the bias, in the output's dtype and strides; else
    as split `split`'s fp32 partials into the contiguous (SPLIT_K, M, N) workspace, summed by finish_split_k
    (deterministic, unlike atomics), which also adds the bias once."""
    out_mask = row_ok[:, None] & n_ok[None, :]
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)[:, None]
        # int64 columns: the Linear orientation writes through out.t() (stride_on = M), and T * M may pass 2^31.
        tl.store(
            out_ptr + rows[:, None] * stride_om + offs_n[None, :].to(tl.int64) * stride_on,
            acc.to(out_ptr.dtype.element_ty),
            mask=out_mask,
        )
    else:
        tl.store(ws_ptr + (split * M + rows[:, None]) * N + offs_n[None, :], acc, mask=out_mask)


def finish_split_k(ws: torch.Tensor, split: int, bias: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """out = the sum of the first `split` fp32 partials (+ bias[:, None]), when the launch split K."""
    if split > 1:
        total = ws[:split].sum(0)
        if bias is not None:
            total += bias.float()[:, None]
        out.copy_(total)
    return out


def on_gpu(device: torch.device) -> bool:
    """Whether a launch on `device` runs compiled GPU code (not the interpreter)."""
    return device.type == "cuda" and os.environ.get("TRITON_INTERPRET") != "1"


def time_candidate(kernel_call, quantiles):
    """An autotune candidate's time over 25 ms of calls after 5 ms of warm-up (Triton's default: 100 and 25): with
    ~20-30 candidates per shape that keeps a shape's tuning to about a second plus the compiles, and a median of
    25+ calls of kernels under 1 ms still ranks the candidates."""
    from triton.testing import do_bench

    return do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)
