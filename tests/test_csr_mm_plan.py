"""The CUDA csr_mm kernels' host plan (csrc/cuda/csr_mm/plan.h), checked on the CPU through the internal op
sparsekern._csr_mm_plan. Expected values follow the rules documented at the top of plan.h, not the op's output."""

from typing import NamedTuple

import pytest
import torch

import sparsekern  # noqa: F401  (loads the extension)
from sparsekern._constants import DECODE_MAX_N

NZSPLIT, ROWSPLIT = 0, 1
STAGE_BYTES, STAGED_BLOCKS_PER_SM = 32 << 10, 2  # plan.h / config.h: kStageBytes, kStagedBlocksPerSm


class Plan(NamedTuple):
    kernel: int
    nt: int
    log_s: int
    staged: bool
    w: int
    vec: int
    trans_out: bool


def plan(M, K, N, nnz, *, elt=2, col_bytes=2, rows_vec=True, rows_vec_nt=True, sms=132, trans_out=False,
         config=None):
    return Plan(*torch.ops.sparsekern._csr_mm_plan(M, K, N, nnz, elt, col_bytes, rows_vec, rows_vec_nt, sms,
                                                    trans_out, config))


@pytest.mark.parametrize("N,kernel,nt", [
    (0, NZSPLIT, 1), (1, NZSPLIT, 1), (3, NZSPLIT, 4), (5, NZSPLIT, 8), (DECODE_MAX_N, NZSPLIT, 16),
    (DECODE_MAX_N + 1, ROWSPLIT, None), (4096, ROWSPLIT, None),
])
def test_decode_threshold_and_accumulator_width(N, kernel, nt):
    # nzsplit up to DECODE_MAX_N with NT = next_pow2(N) accumulators (1 for N = 0); rowsplit above (NT unused).
    p = plan(1000, 512, N, 8000)
    assert p.kernel == kernel
    assert nt is None or p.nt == nt


@pytest.mark.parametrize("M,nnz,log_s", [
    (1000, 0, 0), (0, 0, 0), (1000, 16_000, 0), (1000, 32_000, 1), (1000, 100_000, 3), (1000, 4_096_000, 5),
    (2**40, 2**45, 1),  # huge M: 32 entries a row -> 2 lanes
])
def test_lanes_per_row_give_each_lane_two_chunks(M, nnz, log_s):
    # log_s = min(5, ceil(log2(max(1, (nnz // M) // 16))))
    assert plan(M, 512, 8, nnz).log_s == log_s


def test_staging_boundaries():
    # N = 16 -> NT = 16; fp16 B (K, 16) fits 32 KiB up to K = 1024. Staged copies: 132 SMs * 2 blocks * 32 KiB;
    # matrix bytes nnz * (2 + 2) must be at least twice that.
    K, nt, elt = STAGE_BYTES // (16 * 2), 16, 2
    threshold = 2 * 132 * STAGED_BLOCKS_PER_SM * K * nt * elt // (elt + 2)
    assert plan(4096, K, 16, threshold, rows_vec_nt=False).staged
    assert not plan(4096, K, 16, threshold - 1, rows_vec_nt=False).staged
    assert not plan(4096, K, 16, threshold, rows_vec_nt=True).staged  # vector rows are gathered from L1
    assert not plan(4096, K + 1, 16, 100 * threshold, rows_vec_nt=False).staged  # B does not fit
    assert plan(4096, 2 * K, 8, threshold, rows_vec_nt=False).staged  # NT = 8 fits twice the K
    assert not plan(4096, K, 17, 100 * threshold, rows_vec_nt=False).staged  # rowsplit never stages


@pytest.mark.parametrize("N,elt,rows_vec,w,vec", [
    (17, 2, True, 8, 8), (100, 2, True, 16, 8), (200, 2, True, 32, 8), (1 << 20, 2, True, 32, 8),
    (60, 4, True, 16, 4), (17, 4, True, 8, 4), (100, 2, False, 32, 1), (100, 4, False, 32, 1),
])
def test_rowsplit_tiles_by_N(N, elt, rows_vec, w, vec):
    # VEC = 16 / elt when rows load as vectors, else 1; W = clamp(next_pow2(ceil(N / VEC)), 8, 32), 32 when VEC = 1.
    p = plan(4096, 4096, N, 1 << 20, elt=elt, rows_vec=rows_vec)
    assert (p.kernel, p.w, p.vec) == (ROWSPLIT, w, vec)


def test_transposed_output_needs_rowsplit_and_vectors():
    assert plan(64, 64, 64, 512, trans_out=True).trans_out
    assert not plan(64, 64, 64, 512, trans_out=True, rows_vec=False).trans_out
    assert not plan(64, 64, 8, 512, trans_out=True).trans_out
    assert not plan(64, 64, 64, 512, trans_out=False).trans_out


def test_config_override_and_bad_input():
    p = plan(1000, 512, 4, 8000, config="rows:16")
    assert (p.kernel, p.w) == (ROWSPLIT, 16)
    p = plan(1000, 512, 4096, 8000, config="nz:4:global")
    assert (p.kernel, p.nt, p.log_s, p.staged) == (NZSPLIT, 16, 2, False)
    for bad in ("nz:3", "rows:4", "tiles", "nz:4:fast"):
        with pytest.raises(ValueError, match="SPARSEKERN_CSR_MM_CONFIG"):
            plan(1000, 512, 4, 8000, config=bad)
    with pytest.raises(ValueError, match="shared-memory budget"):
        plan(1000, 1 << 20, 4, 8000, config="nz:4:staged")
    with pytest.raises(ValueError, match="_csr_mm_plan: elt"):
        plan(1000, 512, 4, 8000, elt=3)
