import pytest
import torch
from conftest import DTYPES, random_sparse

import sparsekern as sk
from sparsekern._checks import index_dtype_for


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (33, 7), (257, 100)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.99, 1.0])
def test_csr_round_trip(dtype, shape, sparsity):
    W = random_sparse(*shape, sparsity, dtype)
    A = sk.CSRMatrix.from_dense(W)
    assert A.shape == shape and A.dtype == dtype and A.nnz == int((W != 0).sum())
    assert A.crow_indices.dtype == torch.int32 and A.col_indices.dtype == torch.int32
    torch.testing.assert_close(A.to_dense(), W, rtol=0, atol=0)
    T = A.to_torch()
    assert T.layout == torch.sparse_csr
    torch.testing.assert_close(T.to_dense(), W, rtol=0, atol=0)
    B = sk.CSRMatrix.from_torch(W.to_sparse_csr())
    torch.testing.assert_close(B.to_dense(), W, rtol=0, atol=0)
    torch.testing.assert_close(A.t().to_dense(), W.t(), rtol=0, atol=0)


def test_csr_mask_keeps_explicit_zeros():
    W = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 4.0]])
    mask = torch.tensor([[True, False, False], [True, True, False]])
    A = sk.CSRMatrix.from_dense(W, mask=mask)
    assert A.nnz == 3
    assert A.crow_indices.tolist() == [0, 1, 3]
    assert A.col_indices.tolist() == [0, 0, 1]
    torch.testing.assert_close(A.to_dense(), W * mask)


def test_csr_empty_rows_and_to():
    W = torch.zeros(5, 4)
    W[1, 3] = 1.0
    W[4, 0] = -2.0
    A = sk.CSRMatrix.from_dense(W)
    assert A.crow_indices.tolist() == [0, 0, 1, 1, 1, 2]
    H = A.to(dtype=torch.float16)
    assert H.dtype == torch.float16 and H.crow_indices is not None
    torch.testing.assert_close(H.to_dense().float(), W)


def test_csr_int64_indices():
    W = random_sparse(9, 11, 0.5)
    A = sk.CSRMatrix.from_dense(W, index_dtype=torch.int64)
    assert A.crow_indices.dtype == torch.int64
    torch.testing.assert_close(A.to_dense(), W)
    assert index_dtype_for(2**31 - 1) == torch.int32
    assert index_dtype_for(10, 2**31) == torch.int64


def test_csr_zero_sized():
    for shape in [(0, 5), (5, 0), (0, 0)]:
        A = sk.CSRMatrix.from_dense(torch.zeros(shape))
        assert A.nnz == 0 and A.to_dense().shape == shape


def _components():
    A = sk.CSRMatrix.from_dense(torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
    return A.crow_indices.clone(), A.col_indices.clone(), A.values.clone()


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda c, i, v: (c.flip(0), i, v), ValueError, "crow_indices"),
        (lambda c, i, v: (torch.tensor([0, 2, 1], dtype=c.dtype), i, v), ValueError, "non-decreasing|nnz"),
        (lambda c, i, v: (c, torch.tensor([0, 3, 1], dtype=i.dtype), v), IndexError, "out of range"),
        (lambda c, i, v: (c, torch.tensor([0, -1, 1], dtype=i.dtype), v), IndexError, "out of range"),
        (lambda c, i, v: (c.float(), i, v), TypeError, "int32 or int64"),
        (lambda c, i, v: (c, i.long(), v), TypeError, "dtype of crow_indices"),
        (lambda c, i, v: (c, i, v.double()), TypeError, "float32, float16 or bfloat16"),
        (lambda c, i, v: (c, i, v[:2]), ValueError, "must have the same length"),
        (lambda c, i, v: (c[:2], i, v), ValueError, "M \\+ 1"),
        (lambda c, i, v: (c.view(1, -1), i, v), ValueError, "1-D"),
    ],
)
def test_csr_constructor_rejects(mutate, exc, match):
    crow, col, val = mutate(*_components())
    with pytest.raises(exc, match=f"CSRMatrix: .*({match})"):
        sk.CSRMatrix(crow, col, val, (2, 3))


def test_from_dense_rejects():
    with pytest.raises(ValueError, match="2-D"):
        sk.CSRMatrix.from_dense(torch.zeros(3))
    with pytest.raises(TypeError, match="float32"):
        sk.CSRMatrix.from_dense(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="mask shape"):
        sk.CSRMatrix.from_dense(torch.zeros(3, 3), mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="sparse_csr"):
        sk.CSRMatrix.from_torch(torch.zeros(3, 3))


# ---------------------------------------------------------------------------------------------- compact columns


def test_csr_compact_columns_round_trip():
    """int16 columns hold indices up to 65535 as their 16-bit pattern (negative int16 past 32767)."""
    W = torch.zeros(4, 65536)
    cols = torch.tensor([0, 1, 32767, 32768, 40000, 65535])
    W[0, cols] = torch.arange(1.0, 7.0)
    W[2, 65535] = -3.0
    A = sk.CSRMatrix.from_dense(W, col_dtype=torch.int16)
    assert A.col_indices.dtype == torch.int16 and A.crow_indices.dtype == torch.int32
    assert int(A.col_indices.min()) < 0  # columns >= 32768 wrap, on purpose
    torch.testing.assert_close(A.to_dense(), W, rtol=0, atol=0)
    T = A.to_torch()
    assert T.col_indices().dtype == torch.int32
    torch.testing.assert_close(T.to_dense(), W, rtol=0, atol=0)
    B = sk.CSRMatrix.from_torch(W.to_sparse_csr(), col_dtype=torch.int16)
    assert B.col_indices.dtype == torch.int16 and torch.equal(B.col_indices, A.col_indices)
    torch.testing.assert_close(A.t().to_dense(), W.t(), rtol=0, atol=0)
    sk.CSRMatrix(A.crow_indices, A.col_indices, A.values, A.shape)  # validates: every column in range


def test_csr_compact_columns_rejected_where_they_cannot_fit():
    with pytest.raises(ValueError, match="CSRMatrix.from_dense: col_dtype=torch.int16 needs K <= 65536"):
        sk.CSRMatrix.from_dense(torch.zeros(2, 65537), col_dtype=torch.int16)
    with pytest.raises(TypeError, match="col_dtype must be None, torch.int16"):
        sk.CSRMatrix.from_dense(torch.zeros(2, 3), col_dtype=torch.int8)
    A = sk.CSRMatrix.from_dense(torch.eye(3), col_dtype=torch.int16)
    with pytest.raises(ValueError, match="CSRMatrix: int16 \\(compact\\) col_indices need K <= 65536"):
        sk.CSRMatrix(A.crow_indices, A.col_indices, A.values, (3, 70000))
    with pytest.raises(IndexError, match="CSRMatrix: col_indices\\[2\\] = 2 is out of range for K = 2"):
        sk.CSRMatrix(A.crow_indices, A.col_indices, A.values, (3, 2))


# ---------------------------------------------------------------------------------------------- row order


def test_csr_row_order_is_longest_first_and_travels():
    W = torch.zeros(5, 6)
    W[1, :4] = 1.0  # 4 entries
    W[3, :2] = 1.0  # 2
    W[4, :4] = 2.0  # 4 (ties keep storage order)
    W[0, 5] = 1.0  # 1
    A = sk.CSRMatrix.from_dense(W)
    assert A.row_order.tolist() == [1, 4, 3, 0, 2] and A.row_order.dtype == A.crow_indices.dtype
    assert torch.equal(A.to(dtype=torch.float16).row_order, A.row_order)
    assert sk.CSRMatrix.from_dense(W, index_dtype=torch.int64).row_order.dtype == torch.int64
    assert sk.CSRMatrix.from_dense(torch.zeros(0, 3)).row_order.shape == (0,)
    given = torch.tensor([4, 3, 2, 1, 0], dtype=torch.int32)
    assert sk.CSRMatrix(A.crow_indices, A.col_indices, A.values, A.shape, row_order=given).row_order is given


@pytest.mark.parametrize(
    "order, exc, match",
    [
        (torch.tensor([0, 1, 2, 3, 3], dtype=torch.int32), ValueError, "permutation"),
        (torch.tensor([0, 1, 2, 3, 5], dtype=torch.int32), ValueError, "permutation"),
        (torch.tensor([0, 1, 2, 3], dtype=torch.int32), ValueError, "M = 5 entries"),
        (torch.arange(5), TypeError, "dtype of crow_indices"),
    ],
)
def test_csr_row_order_rejects(order, exc, match):
    A = sk.CSRMatrix.from_dense(torch.eye(5))
    with pytest.raises(exc, match=f"CSRMatrix: row_order .*{match}|CSRMatrix: .*{match}"):
        sk.CSRMatrix(A.crow_indices, A.col_indices, A.values, A.shape, row_order=order)
