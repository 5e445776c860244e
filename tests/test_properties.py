"""Property tests (hypothesis): format round trips, and every op and kernel variant against a float64 reference on
drawn shapes (zero sizes, empty rows, all-zero and dense), sparsities, dtypes and Inf/NaN placements. Profiles
"ci" / "dev" are registered in conftest.py; shapes stay tiny so the Triton interpreter can run them."""

import os

import pytest
import torch
from conftest import DTYPES, assert_close
from hypothesis import given
from hypothesis import strategies as st

import sparsekern as sk
from sparsekern.formats.csr import bitmap_of

dims = st.integers(0, 9)
wide = st.integers(0, 70)  # K past two 32-bit bitmap words and one 64-wide 2:4 tile
densities = st.sampled_from([0.0, 0.3, 0.7, 1.0])
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**31 - 1)


def weight(M, K, density, dtype, seed, empty_rows=True):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=g)
    W[torch.rand(M, K, generator=g) >= density] = 0
    if empty_rows and M > 2:
        W[M // 2] = 0
    return W.to(dtype)


def dense(shape, dtype, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)


def sparse_reference(A: sk.CSRMatrix, B: torch.Tensor) -> torch.Tensor:
    """A @ B in float64 over the stored entries only: an unstored entry never meets B (so Inf/NaN in B reaches an
    output row only through a stored entry of that row)."""
    M, _ = A.shape
    rows = torch.repeat_interleave(torch.arange(M), A.crow_indices.diff().long())
    out = torch.zeros(M, B.shape[1], dtype=torch.float64)
    return out.index_add_(0, rows, A.values.double()[:, None] * B.double()[A.col_indices.long()])


# ------------------------------------------------------------------------------------------ round trips


@given(M=dims, K=wide, density=densities, dtype=dtypes, seed=seeds, compact=st.booleans())
def test_csr_round_trips(M, K, density, dtype, seed, compact):
    W = weight(M, K, density, dtype, seed)
    A = sk.CSRMatrix.from_dense(W, col_dtype=torch.int16 if compact else None, bitmap=True)
    assert torch.equal(A.to_dense(), W) and A.nnz == int((W != 0).sum())
    assert torch.equal(A.bitmap, bitmap_of("t", A.crow_indices, A.col_indices, K))
    assert torch.equal(sk.CSRMatrix.from_torch(A.to_torch()).to_dense(), W)
    assert torch.equal(A.t().to_dense(), W.t())
    mask = W != 0
    Z = sk.CSRMatrix.from_dense(torch.zeros_like(W), mask=mask)  # the pattern of W, every value an explicit zero
    assert Z.nnz == A.nnz and torch.equal(Z.col_indices.long(), A.col_indices.long() & 0xFFFF)


@given(M=dims, K=dims, density=densities, dtype=dtypes, seed=seeds, bm=st.integers(1, 5), bk=st.integers(1, 5))
def test_bsr_round_trips(M, K, density, dtype, seed, bm, bk):
    W = weight(M, K, density, dtype, seed)
    A = sk.BSRMatrix.from_dense(W, blocksize=(bm, bk))
    assert torch.equal(A.to_dense(), W)
    assert torch.equal(sk.BSRMatrix.from_torch(A.to_torch(padded=True), shape=A.shape).to_dense(), W)
    assert torch.equal(A.t().to_dense(), W.t())


@given(M=dims, K=wide, density=densities, dtype=dtypes, seed=seeds)
def test_semi24_round_trips(M, K, density, dtype, seed):
    W = weight(M, K, density, dtype, seed)
    W = W * sk.pruning.nm_mask(W, 2, 4) if W.numel() else W
    assert torch.equal(sk.Semi24Matrix.from_dense(W).to_dense(), W)


# ------------------------------------------------------------------------------ ops vs float64 (CPU)


@given(M=dims, K=wide, N=dims, density=densities, dtype=dtypes, seed=seeds)
def test_csr_ops_match_float64(M, K, N, density, dtype, seed):
    W = weight(M, K, density, dtype, seed)
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    B, x, bias = dense((K, N), dtype, seed), dense((N, K), dtype, seed + 7), dense((M,), dtype, seed + 9)
    ref = W.double() @ B.double()
    assert_close(sk.ops.csr_mm(A, B), ref, dtype, k=K)
    assert_close(torch.ops.sparsekern.csr_mm(A.crow_indices, A.col_indices, A.values, B), ref, dtype, k=K)
    assert_close(torch.ops.sparsekern.csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, A.bitmap, B), ref, dtype,
                 k=K)
    lin = x.double() @ W.double().T + bias.double()
    assert_close(sk.ops.sparse_linear(x, A, bias), lin, dtype, k=K)
    assert_close(torch.ops.sparsekern.csr_bitmap_linear(x, A.crow_indices, A.col_indices, A.values, A.bitmap, bias),
                 lin, dtype, k=K)
    G = dense((M, N), dtype, seed + 3)
    assert_close(torch.ops.sparsekern.csr_sddmm(A.crow_indices, A.col_indices, G, B),
                 (G.double() @ B.double().T)[W != 0], dtype, k=N)


@given(M=dims, K=dims, N=dims, density=densities, dtype=dtypes, seed=seeds, bm=st.integers(1, 5),
       bk=st.integers(1, 5))
def test_bsr_ops_match_float64(M, K, N, density, dtype, seed, bm, bk):
    W = weight(M, K, density, dtype, seed)
    A = sk.BSRMatrix.from_dense(W, blocksize=(bm, bk))
    B, x, bias = dense((K, N), dtype, seed), dense((N, K), dtype, seed + 7), dense((M,), dtype, seed + 9)
    assert_close(sk.ops.bsr_mm(A, B), W.double() @ B.double(), dtype, k=K)
    assert_close(sk.ops.sparse_linear(x, A, bias), x.double() @ W.double().T + bias.double(), dtype, k=K)


@given(M=dims, K=wide, N=dims, density=densities, dtype=dtypes, seed=seeds)
def test_semi24_ops_match_float64(M, K, N, density, dtype, seed):
    W = weight(M, K, density, dtype, seed)
    W = W * sk.pruning.nm_mask(W, 2, 4) if W.numel() else W
    A = sk.Semi24Matrix.from_dense(W)
    B, x, bias = dense((K, N), dtype, seed), dense((N, K), dtype, seed + 7), dense((M,), dtype, seed + 9)
    assert_close(sk.ops.semi24_mm(A, B), W.double() @ B.double(), dtype, k=K)
    assert_close(sk.ops.sparse_linear(x, A, bias), x.double() @ W.double().T + bias.double(), dtype, k=K)


# ---------------------------------------------------------------------------------- Inf / NaN placement

specials = st.lists(st.tuples(st.integers(0, 69), st.integers(0, 8), st.sampled_from([float("nan"), float("inf"),
                                                                                       float("-inf")])),
                    min_size=1, max_size=4)


def _poison(B, where):
    B = B.clone()
    for k, n, v in where:
        if k < B.shape[0] and n < B.shape[1]:
            B[k, n] = v
    return B


@given(M=dims, K=wide, N=st.integers(1, 9), density=densities, seed=seeds, where=specials)
def test_csr_unstored_entries_never_touch_B(M, K, N, density, seed, where):
    """Inf/NaN in B reach exactly the output entries whose row stores that column (CPU CSR kernel, mm and
    linear)."""
    A = sk.CSRMatrix.from_dense(weight(M, K, density, torch.float32, seed))
    B = _poison(dense((K, N), torch.float32, seed), where)
    ref = sparse_reference(A, B)
    torch.testing.assert_close(sk.ops.csr_mm(A, B).double(), ref, rtol=1e-5, atol=1e-5, equal_nan=True)
    torch.testing.assert_close(sk.ops.sparse_linear(B.t().contiguous(), A).double(), ref.t(), rtol=1e-5, atol=1e-5,
                               equal_nan=True)


def test_csr_bitmap_unstored_entries_never_touch_B():
    W = torch.zeros(2, 40)
    W[0, 0], W[1, 39] = 1.0, 2.0
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    for N in (1, 4):
        B = torch.ones(40, N)
        B[1, 0], B[38, N - 1] = float("nan"), float("inf")  # in the words of stored columns, not stored
        out = torch.ops.sparsekern.csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, A.bitmap, B)
        torch.testing.assert_close(out.double(), sparse_reference(A, B), equal_nan=True)


# ------------------------------------------------------------------------- Triton, under the interpreter

triton_dims = st.integers(0, 5)


@pytest.mark.triton
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                    reason="Triton needs a GPU or TRITON_INTERPRET=1")
@given(M=triton_dims, K=st.integers(0, 40), N=triton_dims, density=densities, dtype=dtypes, seed=seeds,
       where=specials)
def test_triton_csr_kernels_match_float64(M, K, N, density, dtype, seed, where):
    """csr_mm (rows and decode kernels), csr_linear and csr_sddmm; Inf/NaN in B stay in the rows storing their
    column."""
    pytest.importorskip("triton")
    from sparsekern._triton.csr_mm import csr_linear, csr_mm
    from sparsekern._triton.csr_sddmm import csr_sddmm

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    W = weight(M, K, density, dtype, seed)
    A = sk.CSRMatrix.from_dense(W).to(dev)
    B = dense((K, N), dtype, seed).to(dev)
    c, i, v = A.crow_indices, A.col_indices, A.values
    assert_close(csr_mm(c, i, v, B, A.row_order).cpu(), W.double() @ B.double().cpu(), dtype, k=K)
    x, bias = dense((N, K), dtype, seed + 7).to(dev), dense((M,), dtype, seed + 9).to(dev)
    assert_close(csr_linear(x, c, i, v, bias).cpu(), x.double().cpu() @ W.double().T + bias.double().cpu(), dtype, k=K)
    G = dense((M, N), dtype, seed + 3).to(dev)
    assert_close(csr_sddmm(c, i, G, B).cpu(), (G.double() @ B.double().T).cpu()[W != 0], dtype, k=N)
    if dtype == torch.float32 and N > 0:
        Bp = _poison(B.cpu(), where)
        torch.testing.assert_close(csr_mm(c, i, v, Bp.to(dev)).cpu().double(), sparse_reference(A.to("cpu"), Bp),
                                   rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.triton
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                    reason="Triton needs a GPU or TRITON_INTERPRET=1")
@given(M=triton_dims, K=st.integers(0, 40), N=triton_dims, density=densities, dtype=dtypes, seed=seeds,
       bm=st.sampled_from([16, 32]))
def test_triton_bitmap_and_bsr_kernels_match_float64(M, K, N, density, dtype, seed, bm):
    pytest.importorskip("triton")
    from sparsekern._triton.bsr_mm import bsr_mm
    from sparsekern._triton.csr_bitmap_mm import csr_bitmap_mm

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    W = weight(M, K, density, dtype, seed)
    B = dense((K, N), dtype, seed).to(dev)
    ref = W.double() @ B.double().cpu()
    rtol, atol = (3e-3, 3e-3 * max(1, K) ** 0.5) if dtype == torch.float32 else (2e-2, 2e-2 * max(1, K) ** 0.5)
    A = sk.CSRMatrix.from_dense(W, bitmap=True).to(dev)
    out = csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, A.bitmap, B)
    torch.testing.assert_close(out.cpu().double(), ref, rtol=rtol, atol=atol)  # fp32 runs as TF32
    Ab = sk.BSRMatrix.from_dense(W, blocksize=(bm, 16)).to(dev)
    out = bsr_mm(Ab.crow_indices, Ab.col_indices, Ab.values, M, B)
    torch.testing.assert_close(out.cpu().double(), ref, rtol=rtol, atol=atol)
