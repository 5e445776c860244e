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
        (lambda c, i, v: (c, i, v[:2]), ValueError, "differ in length"),
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
