"""BSRMatrix: construction, round trips (dense and torch.sparse_bsr), ragged shapes, validation."""

import pytest
import torch
from conftest import DTYPES

import sparsekern as sk

BLOCKS = [(16, 16), (32, 32), (64, 64), (128, 128), (16, 64), (128, 32)]


def random_block_sparse(M, K, blocksize, density, dtype=torch.float32, device="cpu"):
    """Dense (M, K) whose (bm, bk) blocks (edge blocks cut at M, K) are nonzero with exactly round(density * nb)
    of them kept; kept blocks hold random normals, so every kept block has a nonzero element."""
    bm, bk = blocksize
    MB, KB = -(-M // bm), -(-K // bk)
    keep = torch.zeros(MB * KB, dtype=torch.bool)
    keep[torch.randperm(MB * KB)[: round(density * MB * KB)]] = True
    mask = keep.view(MB, KB).repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
    return (torch.randn(M, K) * mask).to(dtype).to(device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize", BLOCKS)
@pytest.mark.parametrize("shape", [(1, 1), (33, 70), (128, 256), (257, 130)])
@pytest.mark.parametrize("density", [0.0, 0.5, 1.0])
def test_bsr_round_trip(dtype, blocksize, shape, density):
    W = random_block_sparse(*shape, blocksize, density, dtype)
    A = sk.BSRMatrix.from_dense(W, blocksize)
    bm, bk = blocksize
    MB, KB = -(-shape[0] // bm), -(-shape[1] // bk)
    assert A.shape == shape and A.dtype == dtype and A.blocksize == blocksize and A.block_shape == (MB, KB)
    assert A.nblocks == round(density * MB * KB) and A.nnz == A.nblocks * bm * bk
    assert A.values.shape == (A.nblocks, bm, bk) and A.crow_indices.shape == (MB + 1,)
    assert A.crow_indices.dtype == torch.int32 and A.col_indices.dtype == torch.int32
    torch.testing.assert_close(A.to_dense(), W, rtol=0, atol=0)
    torch.testing.assert_close(A.t().to_dense(), W.t(), rtol=0, atol=0)
    T = A.to_torch(padded=True)
    assert T.layout == torch.sparse_bsr and tuple(T.shape) == A.padded_shape
    torch.testing.assert_close(T.to_dense()[: shape[0], : shape[1]], W, rtol=0, atol=0)
    torch.testing.assert_close(sk.BSRMatrix.from_torch(T, shape=shape).to_dense(), W, rtol=0, atol=0)


def test_bsr_torch_interop_divisible():
    W = torch.randn(64, 96)
    W[:32, 32:64] = 0
    A = sk.BSRMatrix.from_dense(W, (32, 32))
    T = A.to_torch()
    assert tuple(T.shape) == (64, 96) and T.values().shape == (5, 32, 32)
    torch.testing.assert_close(T.to_dense(), W, rtol=0, atol=0)
    # From torch's own conversion (it keeps all-zero blocks as stored blocks).
    B = sk.BSRMatrix.from_torch(W.to_sparse_bsr((16, 32)))
    assert B.blocksize == (16, 32) and B.shape == (64, 96)
    torch.testing.assert_close(B.to_dense(), W, rtol=0, atol=0)


def test_bsr_to_torch_refuses_ragged_without_padded():
    A = sk.BSRMatrix.from_dense(torch.randn(33, 40), (16, 16))
    with pytest.raises(ValueError, match=r"BSRMatrix.to_torch: shape \(33, 40\) is not a multiple.*padded=True"):
        A.to_torch()
    assert tuple(A.to_torch(padded=True).shape) == (48, 48)


def test_bsr_from_torch_rejects():
    with pytest.raises(TypeError, match="BSRMatrix.from_torch: expected a torch.sparse_bsr tensor"):
        sk.BSRMatrix.from_torch(torch.randn(4, 4).to_sparse_csr())
    T = torch.randn(32, 32).to_sparse_bsr((16, 16))
    with pytest.raises(ValueError, match="does not pad to the tensor's shape"):
        sk.BSRMatrix.from_torch(T, shape=(16, 32))  # a whole block row of padding
    with pytest.raises(ValueError, match="does not pad to the tensor's shape"):
        sk.BSRMatrix.from_torch(T, shape=(32, 33))


def test_bsr_mask_keeps_blocks_and_zeroes_unkept_elements():
    W = torch.arange(1.0, 17.0).view(4, 4)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = True  # keeps block (0, 0) only
    A = sk.BSRMatrix.from_dense(W, (2, 2), mask=mask)
    assert A.nblocks == 1 and A.crow_indices.tolist() == [0, 1, 1] and A.col_indices.tolist() == [0]
    assert A.values.tolist() == [[[0.0, 2.0], [0.0, 0.0]]]
    torch.testing.assert_close(A.to_dense(), W * mask)
    # An explicitly kept zero still keeps its block.
    Z = torch.zeros(4, 4)
    assert sk.BSRMatrix.from_dense(Z, (2, 2), mask=mask).nblocks == 1


def test_bsr_empty_block_rows_to_and_indices():
    W = torch.zeros(70, 50)
    W[40:50, 3] = 1.0  # block row 2 of 16-row blocks only
    A = sk.BSRMatrix.from_dense(W, (16, 16))
    assert A.crow_indices.tolist() == [0, 0, 0, 1, 2, 2]
    H = A.to(dtype=torch.float16)
    assert H.dtype == torch.float16 and H.blocksize == (16, 16)
    torch.testing.assert_close(H.to_dense().float(), W)
    L = sk.BSRMatrix.from_dense(W, (16, 16), index_dtype=torch.int64)
    assert L.crow_indices.dtype == torch.int64 and L.col_indices.dtype == torch.int64
    assert "BSRMatrix(shape=(70, 50), blocksize=(16, 16), nblocks=2" in repr(A)


@pytest.mark.parametrize("blocksize", [(1, 1), (3, 5), (24, 40)])
def test_bsr_any_blocksize(blocksize):
    W = random_block_sparse(50, 47, blocksize, 0.4)
    A = sk.BSRMatrix.from_dense(W, blocksize)
    torch.testing.assert_close(A.to_dense(), W, rtol=0, atol=0)


def test_bsr_zero_sized():
    for M, K in [(0, 5), (5, 0), (0, 0)]:
        A = sk.BSRMatrix.from_dense(torch.zeros(M, K), (16, 16))
        assert A.shape == (M, K) and A.nblocks == 0 and A.to_dense().shape == (M, K)


def _parts():
    A = sk.BSRMatrix.from_dense(torch.randn(40, 33), (16, 16))  # 3 x 3 blocks, all kept
    return A.crow_indices.clone(), A.col_indices.clone(), A.values.clone()


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda c, i, v: (c, i, v[:, :, 0]), ValueError, "values must be 3-D"),
        (lambda c, i, v: (c.float(), i, v), TypeError, "int32 or int64"),
        (lambda c, i, v: (c, i.long(), v), TypeError, "dtype of crow_indices"),
        (lambda c, i, v: (c, i, v.double()), TypeError, "float32, float16 or bfloat16"),
        (lambda c, i, v: (c[:-1], i, v), ValueError, r"ceil\(M / bm\) \+ 1 = 4 entries"),
        (lambda c, i, v: (c, i[:-1], v), ValueError, "must have the same number of blocks"),
        (lambda c, i, v: (c + 1, i, v), ValueError, r"crow_indices\[0\] must be 0"),
        (lambda c, i, v: (torch.tensor([0, 5, 3, 9], dtype=c.dtype), i, v), ValueError, "non-decreasing"),
        (lambda c, i, v: (torch.tensor([0, 3, 6, 8], dtype=c.dtype), i, v), ValueError, r"crow_indices\[-1\] must equal"),
        (lambda c, i, v: (c, i + 1, v), IndexError, r"out of range for ceil\(K / bk\) = 3"),
        (lambda c, i, v: (c, i - 1, v), IndexError, "out of range"),
    ],
)
def test_bsr_constructor_rejects(mutate, exc, match):
    crow, col, val = mutate(*_parts())
    with pytest.raises(exc, match=f"BSRMatrix: .*{match}"):
        sk.BSRMatrix(crow, col, val, (40, 33))


def test_bsr_from_dense_rejects():
    with pytest.raises(ValueError, match="BSRMatrix.from_dense: blocksize must be a pair"):
        sk.BSRMatrix.from_dense(torch.randn(4, 4), (0, 2))
    with pytest.raises(TypeError, match="BSRMatrix.from_dense: blocksize must be a pair"):
        sk.BSRMatrix.from_dense(torch.randn(4, 4), 16)
    with pytest.raises(ValueError, match="BSRMatrix.from_dense: W must be 2-D"):
        sk.BSRMatrix.from_dense(torch.randn(4), (2, 2))
    with pytest.raises(TypeError, match="BSRMatrix.from_dense: W must be float32"):
        sk.BSRMatrix.from_dense(torch.ones(4, 4, dtype=torch.int32), (2, 2))
    with pytest.raises(ValueError, match="BSRMatrix.from_dense: mask shape"):
        sk.BSRMatrix.from_dense(torch.randn(4, 4), (2, 2), mask=torch.ones(4, 3, dtype=torch.bool))
