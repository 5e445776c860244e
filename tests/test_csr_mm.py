"""csr_mm / csr_linear / csr_sddmm: every backend against a float64 dense reference, autograd, opcheck,
torch.compile, and the errors bad input must raise."""

import pytest
import torch
from conftest import (  # noqa: F401
    DTYPES,
    assert_close,
    assert_compile_matches_eager,
    poison_cuda,
    random_sparse,
    requires_cuda,
)

import sparsekern as sk

SHAPES = [(1, 1, 1), (7, 33, 1), (33, 7, 257), (257, 1000, 33), (1000, 257, 7), (1000, 1000, 65)]
SPARSITIES = [0.0, 0.5, 0.9, 0.99, 1.0]


def reference_mm(W, B):
    return W.double() @ B.double()


# ---------------------------------------------------------------------------------------------- CPU kernel


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_csr_mm_cpu(dtype, M, K, N, sparsity):
    W = random_sparse(M, K, sparsity, dtype)
    B = torch.randn(K, N).to(dtype)
    out = sk.ops.csr_mm(sk.CSRMatrix.from_dense(W), B)
    assert out.dtype == dtype and out.shape == (M, N)
    assert_close(out, reference_mm(W, B), dtype, k=K)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [(5,), (2, 3), (1,)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_sparse_linear_cpu(dtype, batch, with_bias):
    M, K = 67, 130
    W = random_sparse(M, K, 0.8, dtype)
    x = torch.randn(*batch, K).to(dtype)
    bias = torch.randn(M).to(dtype) if with_bias else None
    y = sk.ops.sparse_linear(x, sk.CSRMatrix.from_dense(W), bias)
    ref = x.double() @ W.double().T + (bias.double() if with_bias else 0)
    assert y.shape == (*batch, M) and y.dtype == dtype
    assert_close(y, ref, dtype, k=K)


def test_csr_mm_empty_rows_and_columns():
    W = random_sparse(64, 48, 0.5)
    W[::3] = 0  # empty rows
    W[:, 5:20] = 0  # columns never referenced
    B = torch.randn(48, 70)
    assert_close(sk.ops.csr_mm(sk.CSRMatrix.from_dense(W), B), reference_mm(W, B), torch.float32, k=48)


def test_csr_mm_one_long_row():
    """All entries in one row: the nnz-balanced partition must still cover every row."""
    W = torch.zeros(300, 500)
    W[7] = torch.randn(500)
    W[299, 3] = 1.0
    B = torch.randn(500, 9)
    assert_close(sk.ops.csr_mm(sk.CSRMatrix.from_dense(W), B), reference_mm(W, B), torch.float32, k=500)


def test_csr_mm_int64_indices_and_noncontiguous_B():
    W = random_sparse(40, 50, 0.7)
    A = sk.CSRMatrix.from_dense(W, index_dtype=torch.int64)
    B = torch.randn(30, 50).t()  # (50, 30), column-major
    assert_close(sk.ops.csr_mm(A, B), reference_mm(W, B), torch.float32, k=50)


def test_csr_mm_duplicate_entries_are_summed():
    crow = torch.tensor([0, 3, 3], dtype=torch.int32)
    col = torch.tensor([1, 1, 0], dtype=torch.int32)
    val = torch.tensor([1.0, 2.0, 4.0])
    A = sk.CSRMatrix(crow, col, val, (2, 2))
    B = torch.tensor([[1.0, 10.0], [100.0, 1000.0]])
    assert sk.ops.csr_mm(A, B).tolist() == [[304.0, 3040.0], [0.0, 0.0]]


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


@pytest.mark.parametrize("M,K,N", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_csr_mm_zero_sized(M, K, N):
    A = sk.CSRMatrix.from_dense(torch.zeros(M, K))
    out = sk.ops.csr_mm(A, torch.randn(K, N))
    assert out.shape == (M, N) and bool((out == 0).all())
    y = sk.ops.sparse_linear(torch.randn(N, K), A)
    assert y.shape == (N, M) and bool((y == 0).all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_csr_sddmm_cpu(dtype):
    M, K, N = 45, 37, 70
    W = random_sparse(M, K, 0.7, dtype)
    A = sk.CSRMatrix.from_dense(W)
    G, B = torch.randn(M, N).to(dtype), torch.randn(K, N).to(dtype)
    out = torch.ops.sparsekern.csr_sddmm(A.crow_indices, A.col_indices, G, B)
    assert_close(out, (G.double() @ B.double().T)[W != 0], dtype, k=N)


# ---------------------------------------------------------------------------------------------- autograd


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_csr_mm_backward_matches_dense(dtype):
    M, K, N = 33, 47, 19
    W = random_sparse(M, K, 0.6, dtype)
    A = sk.CSRMatrix.from_dense(W)
    A.values.requires_grad_(True)
    B = torch.randn(K, N).to(dtype).requires_grad_(True)
    R = torch.randn(M, N).to(dtype)
    (sk.ops.csr_mm(A, B) * R).sum().backward()

    Wd = W.double().requires_grad_(True)
    Bd = B.detach().double().requires_grad_(True)
    (Wd @ Bd * R.double()).sum().backward()
    assert_close(B.grad, Bd.grad, dtype, k=M)
    assert_close(A.values.grad, Wd.grad[W != 0], dtype, k=N)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sparse_linear_backward_matches_dense(dtype):
    M, K = 29, 41
    W = random_sparse(M, K, 0.75, dtype)
    A = sk.CSRMatrix.from_dense(W)
    A.values.requires_grad_(True)
    x = torch.randn(2, 5, K).to(dtype).requires_grad_(True)
    bias = torch.randn(M).to(dtype).requires_grad_(True)
    R = torch.randn(2, 5, M).to(dtype)
    (sk.ops.sparse_linear(x, A, bias) * R).sum().backward()

    Wd, xd, bd = (t.detach().double().requires_grad_(True) for t in (W, x, bias))
    ((xd @ Wd.T + bd) * R.double()).sum().backward()
    assert_close(x.grad, xd.grad, dtype, k=M)
    assert_close(A.values.grad, Wd.grad[W != 0], dtype, k=10)
    assert_close(bias.grad, bd.grad, dtype, k=10)


# ---------------------------------------------------------------------------------------------- opcheck / compile


def _opcheck_cases():
    W = random_sparse(23, 17, 0.6)
    A = sk.CSRMatrix.from_dense(W)
    C = sk.CSRMatrix.from_dense(W, col_dtype=torch.int16)
    B = torch.randn(17, 5, requires_grad=True)
    val = A.values.clone().requires_grad_(True)
    x = torch.randn(6, 17, requires_grad=True)
    bias = torch.randn(23, requires_grad=True)
    G = torch.randn(23, 5)
    return [
        (torch.ops.sparsekern.csr_mm.default, (A.crow_indices, A.col_indices, A.values, B)),
        (torch.ops.sparsekern.csr_mm.default, (A.crow_indices, A.col_indices, val, B.detach())),
        (torch.ops.sparsekern.csr_mm.default, (C.crow_indices, C.col_indices, val, B, C.row_order)),
        (torch.ops.sparsekern.csr_linear.default, (x, A.crow_indices, A.col_indices, val, bias)),
        (torch.ops.sparsekern.csr_linear.default, (x.detach(), A.crow_indices, A.col_indices, A.values, None)),
        (torch.ops.sparsekern.csr_linear.default, (x, C.crow_indices, C.col_indices, val, bias, C.row_order)),
        (torch.ops.sparsekern.csr_sddmm.default, (A.crow_indices, A.col_indices, G, B.detach())),
        (torch.ops.sparsekern.csr_sddmm.default, (C.crow_indices, C.col_indices, G, B.detach())),
    ]


@pytest.mark.parametrize("case", range(8))
def test_opcheck(case):
    op, args = _opcheck_cases()[case]
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph():
    A = sk.CSRMatrix.from_dense(random_sparse(31, 24, 0.8))
    assert_compile_matches_eager(sk.ops.csr_mm, A, 24, 31)


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


def test_entry_points_reject():
    crow, col, val, B = _good()
    A = sk.CSRMatrix(crow, col, val, (6, 5))
    with pytest.raises(ValueError, match="sparsekern.csr_mm: A is \\(6, 5\\) but B has 4 rows"):
        sk.ops.csr_mm(A, torch.randn(4, 3))
    with pytest.raises(TypeError, match="sparsekern.csr_mm: A must be a CSRMatrix"):
        sk.ops.csr_mm(A.to_dense(), B)
    with pytest.raises(ValueError, match="sparsekern.csr_mm: B and A.values must be on the same device"):
        sk.ops.csr_mm(A, B.to("meta"))
    with pytest.raises(ValueError, match="sparsekern.sparse_linear: A is \\(6, 5\\) but x has shape"):
        sk.ops.sparse_linear(torch.randn(3, 4), A)
    with pytest.raises(TypeError, match="sparsekern.sparse_linear: x and A.values must have the same dtype"):
        sk.ops.sparse_linear(torch.randn(3, 5, dtype=torch.float16), A)
    with pytest.raises(ValueError, match="sparsekern.sparse_linear: bias must have shape \\(6,\\)"):
        sk.ops.sparse_linear(torch.randn(3, 5), A, torch.randn(5))
    with pytest.raises(TypeError, match="sparsekern.sparse_linear: A must be one of"):
        sk.ops.sparse_linear(torch.randn(3, 5), A.to_dense())
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


# ---------------------------------------------------------------------------------------------- CUDA


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.9, 1.0])
def test_csr_mm_cuda(dtype, M, K, N, sparsity, poison_cuda):
    W = random_sparse(M, K, sparsity, dtype, "cuda")
    A = sk.CSRMatrix.from_dense(W)
    B = torch.randn(K, N, device="cuda").to(dtype)
    assert_close(sk.ops.csr_mm(A, B), reference_mm(W, B), dtype, k=K)
    x = torch.randn(3, N, K, device="cuda").to(dtype)
    bias = torch.randn(M, device="cuda").to(dtype)
    assert_close(sk.ops.sparse_linear(x, A, bias), x.double() @ W.double().T + bias.double(), dtype, k=K)
    G = torch.randn(M, N, device="cuda").to(dtype)
    out = torch.ops.sparsekern.csr_sddmm(A.crow_indices, A.col_indices, G, B)
    assert_close(out, (G.double() @ B.double().T)[W != 0], dtype, k=N)


@requires_cuda
@pytest.mark.cuda
def test_cuda_backward_and_opcheck():
    W = random_sparse(40, 30, 0.7, device="cuda")
    A = sk.CSRMatrix.from_dense(W)
    A.values.requires_grad_(True)
    x = torch.randn(5, 30, device="cuda", requires_grad=True)
    sk.ops.sparse_linear(x, A).sum().backward()
    Wd = W.double().requires_grad_(True)
    xd = x.detach().double().requires_grad_(True)
    (xd @ Wd.T).sum().backward()
    assert_close(x.grad, xd.grad, torch.float32, k=40)
    assert_close(A.values.grad, Wd.grad[W != 0], torch.float32, k=5)
    torch.library.opcheck(torch.ops.sparsekern.csr_mm.default, (A.crow_indices, A.col_indices, A.values.detach(), x.detach().t()))
