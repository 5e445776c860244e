"""csr_mm / csr_linear / csr_sddmm: what is particular to the CSR kernels (long rows, compact columns past
32767, duplicate entries, row order), the errors bad input must raise, the Triton launchers and CUDA. The checks
every op shares (float64 reference over tests/samples.py, opcheck, compile, backward) are in tests/test_ops.py."""

import pytest
import torch
from conftest import DTYPES, assert_close, random_sparse

import sparsekern as sk


def reference_mm(W, B):
    return W.double() @ B.double()


# ---------------------------------------------------------------------------------------------- CPU kernel


def test_csr_mm_one_long_row():
    """All entries in one row: the nnz-balanced partition must still cover every row."""
    W = torch.zeros(300, 500)
    W[7] = torch.randn(500)
    W[299, 3] = 1.0
    B = torch.randn(500, 9)
    assert_close(sk.ops.csr_mm(sk.CSRMatrix.from_dense(W), B), reference_mm(W, B), torch.float32, k=500)


def test_csr_mm_duplicate_entries_are_summed():
    crow = torch.tensor([0, 3, 3], dtype=torch.int32)
    col = torch.tensor([1, 1, 0], dtype=torch.int32)
    val = torch.tensor([1.0, 2.0, 4.0])
    A = sk.CSRMatrix(crow, col, val, (2, 2))
    B = torch.tensor([[1.0, 10.0], [100.0, 1000.0]])
    assert sk.ops.csr_mm(A, B).tolist() == [[304.0, 3040.0], [0.0, 0.0]]


@pytest.mark.parametrize("N", [2, 7, 33, 64, 67, 100, 130])
@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("sparsity", [0.7, 0.9])
def test_csr_mm_across_k_strips(N, compact, sparsity):
    """K = 4100: split into K strips of 128 rows at 70% sparsity and 256 at 90% for 64-column panels (a 32 KiB slice
    of the panel, doubled until a row holds ~24 entries per strip), 4096-row strips for narrower ones (a gathered row
    is one 64-byte line). Panels are zero-padded to a power of two (7 -> 8, 33 -> 64, 100 = 64 + 36 -> 64 + 64), and
    a narrow last panel (67 = 64 + 3, 130 = 64 + 64 + 2) takes its own strips. With an empty row, a row whose entries
    all sit in the last strip and entries on either side of strip boundaries."""
    W = random_sparse(37, 4100, sparsity)
    W[3] = 0
    W[5, :4096] = 0
    W[9, [0, 127, 128, 255, 256, 511, 512, 4095, 4096, 4099]] = torch.arange(1.0, 11.0)
    A = sk.CSRMatrix.from_dense(W)
    col = A.col_indices.to(torch.int16) if compact else A.col_indices
    B = torch.randn(4100, N)
    out = torch.ops.sparsekern.csr_mm(A.crow_indices, col, A.values, B)
    assert_close(out, reference_mm(W, B), torch.float32, k=4100)


@pytest.mark.parametrize("N", [2, 64, 130])
def test_csr_mm_unsorted_rows_across_k_strips(N):
    """Rows with their columns in reverse and shuffled order: the split into K strips is by position, so each
    segment reads outside its strip; the result must not change."""
    W = random_sparse(20, 3000, 0.8)
    A = sk.CSRMatrix.from_dense(W)
    col, val = A.col_indices.clone(), A.values.clone()
    crow = A.crow_indices.tolist()
    for m in range(20):
        perm = torch.randperm(crow[m + 1] - crow[m]) if m % 2 else torch.arange(crow[m + 1] - crow[m] - 1, -1, -1)
        col[crow[m]:crow[m + 1]] = col[crow[m]:crow[m + 1]][perm]
        val[crow[m]:crow[m + 1]] = val[crow[m]:crow[m + 1]][perm]
    B = torch.randn(3000, N)
    out = torch.ops.sparsekern.csr_mm(A.crow_indices, col, val, B)
    assert_close(out, reference_mm(W, B), torch.float32, k=3000)


@pytest.mark.parametrize("N", [2, 64, 65])
@pytest.mark.parametrize("bad", [3000, -1, 70000])
def test_bad_column_caught_in_a_late_k_strip(N, bad):
    """A column outside [0, K) after entries of several strips: rejected, named, whatever the strip split."""
    A = sk.CSRMatrix.from_dense(random_sparse(4, 3000, 0.5))
    col = A.col_indices.to(torch.int64)
    j = int(A.crow_indices[2]) - 1
    col[j] = bad
    with pytest.raises(IndexError, match=f"sparsekern.csr_mm: col_indices\\[{j}\\] = {bad} is out of range"):
        torch.ops.sparsekern.csr_mm(A.crow_indices.to(torch.int64), col, A.values, torch.randn(3000, N))


@pytest.mark.parametrize("N", [64, 130])
def test_csr_mm_cached_split_follows_in_place_writes(N):
    """The rows' split into K strips is kept per weight (csrc/cpu/csr_mm.cpp): rows moved by an in-place write to
    crow_indices bump its version, so the next call splits again (a stale split would sum entries into the rows they
    left); a column out of range written past the version counter (through .data) is still caught, because the range
    check runs on every call; inference tensors are split on every call."""
    W = random_sparse(9, 3000, 0.5)
    A = sk.CSRMatrix.from_dense(W)
    crow, col, val = A.crow_indices.clone(), A.col_indices.clone(), A.values.clone()
    B = torch.randn(3000, N)
    for _ in range(2):
        assert_close(torch.ops.sparsekern.csr_mm(crow, col, val, B), reference_mm(W, B), torch.float32, k=3000)
    with torch.no_grad():
        crow[4] += 5  # row 4's first 5 entries become the end of row 3
    moved = torch.sparse_csr_tensor(crow, col, val, (9, 3000)).to_dense()
    assert not torch.equal(moved, W)
    assert_close(torch.ops.sparsekern.csr_mm(crow, col, val, B), reference_mm(moved, B), torch.float32, k=3000)
    j = int(crow[7]) - 1
    col.data[j] = 3000
    with pytest.raises(IndexError, match=f"sparsekern.csr_mm: col_indices\\[{j}\\] = 3000 is out of range"):
        torch.ops.sparsekern.csr_mm(crow, col, val, B)
    with torch.inference_mode():
        crow_i, col_i = A.crow_indices.clone(), A.col_indices.clone()
        assert_close(torch.ops.sparsekern.csr_mm(crow_i, col_i, val, B), reference_mm(W, B), torch.float32, k=3000)
        crow_i[4] += 5
        assert_close(torch.ops.sparsekern.csr_mm(crow_i, col_i, val, B), reference_mm(moved, B), torch.float32,
                     k=3000)


def _compact_case(dtype=torch.float32, index_dtype=None):
    """A (6, 40000) matrix with compact (int16) columns, several of them >= 32768 (negative as int16)."""
    W = random_sparse(6, 40000, 0.999, dtype)
    W[1, [0, 32767, 32768, 39999]] = torch.tensor([1.0, 2.0, 3.0, 4.0]).to(dtype)
    A = sk.CSRMatrix.from_dense(W, index_dtype=index_dtype, col_dtype=torch.int16)
    assert int(A.col_indices.min()) < 0
    return W, A


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_csr_ops_cpu_compact_columns(dtype, index_dtype):
    W, A = _compact_case(dtype, index_dtype)
    B = torch.randn(40000, 9).to(dtype)
    assert_close(sk.ops.csr_mm(A, B), reference_mm(W, B), dtype, k=64)
    x = torch.randn(3, 40000).to(dtype)
    assert_close(sk.ops.sparse_linear(x, A), x.double() @ W.double().T, dtype, k=64)
    G = torch.randn(6, 9).to(dtype)
    out = torch.ops.sparsekern.csr_sddmm(A.crow_indices, A.col_indices, G, B)
    assert_close(out, (G.double() @ B.double().T)[W != 0], dtype, k=9)


def test_csr_mm_cpu_compact_backward():
    W, A = _compact_case()
    A.values.requires_grad_(True)
    B = torch.randn(40000, 4, requires_grad=True)
    sk.ops.csr_mm(A, B).square().sum().backward()
    Wd = W.double().requires_grad_(True)
    Bd = B.detach().double().requires_grad_(True)
    (Wd @ Bd).square().sum().backward()
    assert_close(B.grad, Bd.grad, torch.float32, k=6)
    assert_close(A.values.grad, Wd.grad[W != 0], torch.float32, k=4)


def test_csr_mm_row_order_does_not_change_results():
    W = random_sparse(37, 29, 0.7)
    A = sk.CSRMatrix.from_dense(W)
    B = torch.randn(29, 11)
    ref = sk.ops.csr_mm(A, B)
    for order in (None, A.row_order, torch.randperm(37).int()):
        out = torch.ops.sparsekern.csr_mm(A.crow_indices, A.col_indices, A.values, B, order)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- bad input


def _good():
    A = sk.CSRMatrix.from_dense(random_sparse(6, 5, 0.5))
    return A.crow_indices.clone(), A.col_indices.clone(), A.values.clone(), torch.randn(5, 4)


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda c, i, v, B: (c, i, v, B.half()), TypeError, "same dtype"),
        (lambda c, i, v, B: (c, i, v.double(), B.double()), TypeError, "float32, float16 or bfloat16"),
        (lambda c, i, v, B: (c, i, v, B[None]), ValueError, "B must be 2-D"),
        (lambda c, i, v, B: (c, i, v.view(1, -1), B), ValueError, "values must be 1-D"),
        (lambda c, i, v, B: (c.float(), i, v, B), TypeError, "int32 or int64"),
        (lambda c, i, v, B: (c.short(), i.short(), v, B), TypeError, "int32 or int64"),
        (lambda c, i, v, B: (c, i.long(), v, B), TypeError, "dtype of crow_indices"),
        (lambda c, i, v, B: (c, i[:-1], v, B), ValueError, "same length"),
        (lambda c, i, v, B: (c.flip(0), i, v, B), ValueError, r"crow_indices\[0\] must be 0"),
        (lambda c, i, v, B: (torch.cat([c[:1], c[2:3], c[1:2], c[3:]]), i, v, B), ValueError, "non-decreasing"),
        (lambda c, i, v, B: (c[:-1], i, v, B), ValueError, r"crow_indices\[-1\] must equal nnz"),
        (lambda c, i, v, B: (c, i + 5, v, B), IndexError, "out of range for K = 5"),
        (lambda c, i, v, B: (c, i - 9, v, B), IndexError, "out of range"),
        (lambda c, i, v, B: (c, i, v, B[:3]), IndexError, "out of range for K = 3"),
        (lambda c, i, v, B: (c, i.to(torch.int8), v, B), TypeError, "dtype of crow_indices .* or be int16"),
    ],
)
def test_csr_mm_op_rejects(mutate, exc, match):
    crow, col, val, B = mutate(*_good())
    with pytest.raises(exc, match=f"sparsekern.csr_mm: .*{match}"):
        torch.ops.sparsekern.csr_mm(crow, col, val, B)


@pytest.mark.parametrize(
    "order, exc, match",
    [
        (torch.arange(6), TypeError, "row_order must have the dtype of crow_indices"),
        (torch.arange(5, dtype=torch.int32), ValueError, "row_order must have M = 6 entries"),
        (torch.arange(6, dtype=torch.int32)[None], ValueError, "row_order must be 1-D"),
    ],
)
def test_csr_ops_reject_bad_row_order(order, exc, match):
    crow, col, val, B = _good()
    with pytest.raises(exc, match=f"sparsekern.csr_mm: {match}"):
        torch.ops.sparsekern.csr_mm(crow, col, val, B, order)
    with pytest.raises(exc, match=f"sparsekern.csr_linear: {match}"):
        torch.ops.sparsekern.csr_linear(B.t().contiguous(), crow, col, val, None, order)


def test_bad_column_caught_even_when_N_is_zero():
    crow, col, val, B = _good()
    with pytest.raises(IndexError, match="sparsekern.csr_mm: .*out of range"):
        torch.ops.sparsekern.csr_mm(crow, col + 5, val, B[:, :0])


@pytest.mark.parametrize("N", [1, 2, 5])
@pytest.mark.parametrize("bad_at", [0, 3, 6, 9])
def test_bad_column_caught_in_any_position(N, bad_at):
    """One bad column among a row's unrolled groups of entries (the N = 1 path reads four at a time)."""
    A = sk.CSRMatrix.from_dense(torch.randn(3, 10))
    col = A.col_indices.clone()
    col[10 + bad_at] = 10
    with pytest.raises(IndexError, match=f"sparsekern.csr_mm: col_indices\\[{10 + bad_at}\\] = 10 is out of range"):
        torch.ops.sparsekern.csr_mm(A.crow_indices, col, A.values, torch.randn(10, N))


def test_entry_points_validate():
    crow, col, val, B = _good()
    bad = sk.CSRMatrix(crow, col + 5, val, (6, 5), validate=False)
    with pytest.raises(IndexError, match="sparsekern.csr_mm: col_indices.* out of range"):
        sk.ops.csr_mm(bad, B, validate=True)
    with pytest.raises(IndexError, match="sparsekern.sparse_linear: col_indices.* out of range"):
        sk.ops.sparse_linear(torch.randn(2, 5), bad, validate=True)


def test_linear_and_sddmm_ops_reject():
    crow, col, val, B = _good()
    with pytest.raises(ValueError, match="sparsekern.csr_linear: bias must have M = 6"):
        torch.ops.sparsekern.csr_linear(torch.randn(2, 5), crow, col, val, torch.randn(4))
    with pytest.raises(IndexError, match="sparsekern.csr_linear: .*out of range for K = 3"):
        torch.ops.sparsekern.csr_linear(torch.randn(2, 3), crow, col, val, None)
    with pytest.raises(ValueError, match="sparsekern.csr_sddmm: G must have M = 6"):
        torch.ops.sparsekern.csr_sddmm(crow, col, torch.randn(5, 4), B)
    with pytest.raises(IndexError, match="sparsekern.csr_sddmm: .*out of range"):
        torch.ops.sparsekern.csr_sddmm(crow, col + 5, torch.randn(6, 4), B)


# ---------------------------------------------------------------------------------------------- Triton


@pytest.mark.triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 33, 5), (33, 20, 40)])
@pytest.mark.parametrize("sparsity", [0.0, 0.9, 1.0])
def test_triton_csr_mm_and_linear(dtype, M, K, N, sparsity):
    from sparsekern._triton.csr_mm import csr_linear, csr_mm

    device = "cuda" if torch.cuda.is_available() else "cpu"
    W = random_sparse(M, K, sparsity, dtype, device)
    A = sk.CSRMatrix.from_dense(W)
    B = torch.randn(K, N).to(dtype).to(device)
    assert_close(csr_mm(A.crow_indices, A.col_indices, A.values, B), reference_mm(W, B), dtype, k=K)
    x = torch.randn(N, K).to(dtype).to(device)
    bias = torch.randn(M).to(dtype).to(device)
    y = csr_linear(x, A.crow_indices, A.col_indices, A.values, bias)
    assert_close(y, x.double() @ W.double().T + bias.double(), dtype, k=K)


@pytest.mark.triton
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_csr_sddmm(dtype):
    from sparsekern._triton.csr_sddmm import csr_sddmm

    device = "cuda" if torch.cuda.is_available() else "cpu"
    M, K, N = 21, 30, 37
    W = random_sparse(M, K, 0.6, dtype, device)
    A = sk.CSRMatrix.from_dense(W)
    G = torch.randn(N, M).to(dtype).to(device).t()  # transposed view, as the csr_linear backward passes
    B = torch.randn(K, N).to(dtype).to(device)
    out = csr_sddmm(A.crow_indices, A.col_indices, G, B)
    assert_close(out, (G.double() @ B.double().T)[W != 0], dtype, k=N)


@pytest.mark.triton
def test_triton_launchers_reject():
    from sparsekern._triton.csr_mm import csr_mm

    crow, col, val, B = _good()
    with pytest.raises(TypeError, match="sparsekern.csr_mm: values and B must have the same dtype"):
        csr_mm(crow, col, val, B.half())
    with pytest.raises(ValueError, match="sparsekern.csr_mm: B must be 2-D"):
        csr_mm(crow, col, val, B[0])
