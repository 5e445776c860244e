"""Regression tests for issue 14's findings (each failed before its fix) and the malformed-input table: every
public constructor, op and pruning function turns each bad argument into a named exception."""

import math

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern.formats.csr import bitmap_of

# ---------------------------------------------------------------------------------- 1. double backward (CSR)


def _dense_of(A, values):
    """A's dense form as a differentiable function of `values` (stored entries only)."""
    rows = torch.repeat_interleave(torch.arange(A.shape[0]), A.crow_indices.diff().long())
    return torch.zeros(A.shape, dtype=values.dtype).index_put((rows, A.col_indices.long()), values)


@pytest.mark.parametrize("bitmap", [False, True])
@pytest.mark.parametrize("orientation", ["mm", "linear"])
def test_csr_double_backward_matches_dense(orientation, bitmap):
    W = torch.randn(6, 5)
    W[W.abs() < 0.6] = 0
    A = sk.CSRMatrix.from_dense(W, bitmap=bitmap)
    D = torch.randn(5, 3) if orientation == "mm" else torch.randn(3, 5)

    def run(values, D, sparse: bool):
        if sparse:
            A2 = sk.CSRMatrix(A.crow_indices, A.col_indices, values, A.shape, bitmap=A.bitmap, validate=False)
            out = sk.ops.csr_mm(A2, D) if orientation == "mm" else sk.ops.sparse_linear(D, A2)
        else:
            Wd = _dense_of(A, values)
            out = Wd @ D if orientation == "mm" else D @ Wd.T
        gv, gd = torch.autograd.grad(out.square().sum(), (values, D), create_graph=True)
        (gv.square().sum() + (gd * gd.detach().sign()).sum()).backward()
        return values.grad, D.grad

    got = run(A.values.clone().requires_grad_(), D.clone().requires_grad_(), True)
    want = run(A.values.double().requires_grad_(), D.double().requires_grad_(), False)
    for g, w in zip(got, want):
        assert w.abs().sum() > 0  # the test has something to find
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------ 3. the bitmap ops check the columns


@pytest.mark.parametrize("N", [1, 4, 8])
def test_bitmap_ops_reject_columns_that_disagree_with_the_bitmap(N):
    """The bitmap kernel (N <= 4) reads the bitmap and the CSR loop (N > 4) reads col_indices: where they
    disagree, every N refuses instead of each returning its own answer."""
    W = torch.zeros(4, 40)
    for r in range(4):
        W[r, 0], W[r, 5 + r] = 1.0, 2.0
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    moved = A.col_indices.clone()
    moved[1] = 7  # row 0 stores column 7, its bitmap says 5
    swapped = A.col_indices.clone()
    swapped[0], swapped[1] = 5, 0  # unsorted: no bitmap can describe it
    cases = ((moved, ValueError, "bitmap does not match col_indices"), (swapped, ValueError, "sorted"),
             (A.col_indices + 40, IndexError, r"col_indices\[0\] = 40 is out of range for K = 40"))
    for bad, exc, match in cases:
        with pytest.raises(exc, match=f"sparsekern.csr_bitmap_mm: .*{match}"):
            torch.ops.sparsekern.csr_bitmap_mm(A.crow_indices, bad, A.values, A.bitmap, torch.randn(40, N))
        with pytest.raises(exc, match=f"sparsekern.csr_bitmap_linear: .*{match}"):
            torch.ops.sparsekern.csr_bitmap_linear(torch.randn(N, 40), A.crow_indices, bad, A.values, A.bitmap, None)
    extra = A.bitmap.clone()
    extra[2, 1] |= 1  # a bit (column 32) that row 2 does not store
    with pytest.raises(ValueError, match="sparsekern.csr_bitmap_mm: bitmap does not match col_indices"):
        torch.ops.sparsekern.csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, extra, torch.randn(40, N))


# ------------------------------------------------------------------------------------- 7. 2:4 filler slots


@pytest.mark.parametrize("orientation", ["mm", "linear"])
def test_semi24_training_keeps_pruned_weights_pruned(orientation):
    W = torch.zeros(3, 8)
    W[0, 0] = 1.5  # one nonzero in the group: slot 2 is filler
    W[1, 5] = -2.0
    W[2, 1], W[2, 3] = 0.5, 0.25  # a full group
    A = sk.Semi24Matrix.from_dense(W)
    values = A.values.clone().requires_grad_()
    A2 = sk.Semi24Matrix(values, A.metadata, A.shape, validate=False)
    if orientation == "mm":
        sk.ops.semi24_mm(A2, torch.randn(8, 4)).square().sum().backward()
    else:
        sk.ops.sparse_linear(torch.randn(4, 8), A2).square().sum().backward()
    assert torch.all(values.grad[A.values == 0] == 0)
    assert torch.all(values.grad[A.values != 0] != 0)
    W2 = sk.Semi24Matrix(A.values - values.grad, A.metadata, A.shape).to_dense()
    assert torch.equal(W2 != 0, W != 0)  # a step of gradient descent revives nothing


# ------------------------------------------------------------------------------------ the malformed table


def _csr():
    return sk.CSRMatrix.from_dense(torch.tensor([[1.0, 0, 2], [0, 0, 3]]))


def _bsr():
    return sk.BSRMatrix.from_dense(torch.randn(4, 4), blocksize=(2, 2))


def _s24():
    return sk.Semi24Matrix.from_dense(torch.tensor([[1.0, 0, 0, 2]]))


def _c():
    A = _csr()
    return A.crow_indices, A.col_indices, A.values


def _report_repeats0():
    sk.report(nn.Sequential(nn.Linear(4, 4)), torch.randn(2, 4), latency=True, repeats=0)


W8 = torch.randn(8, 8)
W200 = torch.randn(200, 200)
META = torch.device("meta")

BAD = {
    # constructors: shapes, blocksizes, index dtypes
    "csr negative shape": (lambda: sk.CSRMatrix(*_c(), (-1, 3)), ValueError, "CSRMatrix: shape"),
    "csr 3-element shape": (lambda: sk.CSRMatrix(*_c(), (2, 3, 4)), ValueError, "CSRMatrix: shape"),
    "csr float shape": (lambda: sk.CSRMatrix(*_c(), (2.0, 3.7)), TypeError, "CSRMatrix: shape"),
    "csr shape not a pair": (lambda: sk.CSRMatrix(*_c(), 6), TypeError, "CSRMatrix: shape"),
    "csr bool shape": (lambda: sk.CSRMatrix(*_c(), (True, 3)), TypeError, "CSRMatrix: shape"),
    "csr index int16": (lambda: sk.CSRMatrix.from_dense(W200, index_dtype=torch.int16), TypeError,
                        "CSRMatrix.from_dense: index_dtype"),
    "csr index float": (lambda: sk.CSRMatrix.from_dense(W8, index_dtype=torch.float32), TypeError,
                        "CSRMatrix.from_dense: index_dtype"),
    "csr index uint8": (lambda: sk.CSRMatrix.from_dense(W8, index_dtype=torch.uint8), TypeError,
                        "CSRMatrix.from_dense: index_dtype"),
    "csr index bool": (lambda: sk.CSRMatrix.from_dense(W8, index_dtype=torch.bool), TypeError,
                       "CSRMatrix.from_dense: index_dtype"),
    "csr index not a dtype": (lambda: sk.CSRMatrix.from_dense(W8, index_dtype="int32"), TypeError,
                              "CSRMatrix.from_dense: index_dtype"),
    "csr from_torch index": (lambda: sk.CSRMatrix.from_torch(W8.to_sparse_csr(), index_dtype=torch.int16),
                             TypeError, "CSRMatrix.from_torch: index_dtype"),
    "csr W not a tensor": (lambda: sk.CSRMatrix.from_dense([[1.0]]), TypeError, "CSRMatrix.from_dense: W"),
    "csr W meta": (lambda: sk.CSRMatrix.from_dense(W8.to(META)), ValueError, "CSRMatrix.from_dense: W is on the meta"),
    "csr bitmap flag": (lambda: sk.CSRMatrix.from_dense(W8, bitmap=W8), TypeError, "CSRMatrix.from_dense: bitmap"),
    "csr mask shape": (lambda: sk.CSRMatrix.from_dense(W8, mask=W8[:2]), ValueError, "CSRMatrix.from_dense: mask"),
    "bsr negative shape": (lambda: sk.BSRMatrix(_bsr().crow_indices, _bsr().col_indices, _bsr().values, (-4, 4)),
                           ValueError, "BSRMatrix: shape"),
    "bsr float blocksize": (lambda: sk.BSRMatrix.from_dense(W8, blocksize=(3.7, 4)), TypeError,
                            "BSRMatrix.from_dense: blocksize"),
    "bsr int blocksize": (lambda: sk.BSRMatrix.from_dense(W8, blocksize=4), TypeError,
                          "BSRMatrix.from_dense: blocksize"),
    "bsr zero blocksize": (lambda: sk.BSRMatrix.from_dense(W8, blocksize=(0, 4)), ValueError,
                           "BSRMatrix.from_dense: blocksize"),
    "bsr index int16": (lambda: sk.BSRMatrix.from_dense(W8, index_dtype=torch.int16), TypeError,
                        "BSRMatrix.from_dense: index_dtype"),
    "bsr from_torch shape": (lambda: sk.BSRMatrix.from_torch(W8.to_sparse_bsr((4, 4)), shape=(7.5, 8)),
                             TypeError, "BSRMatrix.from_torch: shape"),
    "s24 negative shape": (lambda: sk.Semi24Matrix(_s24().values, _s24().metadata, (1, -4)), ValueError,
                           "Semi24Matrix: shape"),
    "s24 float shape": (lambda: sk.Semi24Matrix(_s24().values, _s24().metadata, (1, 4.0)), TypeError,
                        "Semi24Matrix: shape"),
    "s24 W not 2-D": (lambda: sk.Semi24Matrix.from_dense(torch.zeros(4)), ValueError,
                      "Semi24Matrix.from_dense: W"),
    # typed entry points
    "csr_mm B None": (lambda: sk.ops.csr_mm(_csr(), None), TypeError, "sparsekern.csr_mm: B"),
    "csr_mm B list": (lambda: sk.ops.csr_mm(_csr(), [[1.0]] * 3), TypeError, "sparsekern.csr_mm: B"),
    "bsr_mm B None": (lambda: sk.ops.bsr_mm(_bsr(), None), TypeError, "sparsekern.bsr_mm: B"),
    "semi24_mm B None": (lambda: sk.ops.semi24_mm(_s24(), None), TypeError, "sparsekern.semi24_mm: B"),
    "csr_mm A dense": (lambda: sk.ops.csr_mm(W8, W8), TypeError, "sparsekern.csr_mm: A"),
    "linear x list": (lambda: sk.ops.sparse_linear([1.0, 2.0, 3.0], _csr()), TypeError,
                      "sparsekern.sparse_linear: x"),
    "linear bias list": (lambda: sk.ops.sparse_linear(torch.randn(2, 3), _csr(), [0.0, 0.0]), TypeError,
                         "sparsekern.sparse_linear: bias"),
    "linear A None": (lambda: sk.ops.sparse_linear(torch.randn(2, 3), None), TypeError,
                      "sparsekern.sparse_linear: A"),
    # raw ops: meta mixed with CPU, float64, zero block height (the fakes used to skip these)
    "raw csr_mm meta B": (lambda: torch.ops.sparsekern.csr_mm(*_c(), torch.randn(3, 2, device=META)), ValueError,
                          "sparsekern.csr_mm: .*same device"),
    "raw csr_mm meta components": (lambda: torch.ops.sparsekern.csr_mm(*(t.to(META) for t in _c()), torch.randn(3, 2)),
                                   ValueError, "sparsekern.csr_mm: .*same device"),
    "raw csr_mm meta float64": (lambda: torch.ops.sparsekern.csr_mm(
        *(t.to(META) for t in _c()[:2]), _c()[2].to(META, torch.float64), torch.randn(3, 2, device=META,
                                                                                       dtype=torch.float64)),
        TypeError, "sparsekern.csr_mm: values must be float32"),
    "raw csr_linear meta x": (lambda: torch.ops.sparsekern.csr_linear(torch.randn(2, 3, device=META), *_c(), None),
                              ValueError, "sparsekern.csr_linear: .*same device"),
    "raw csr_sddmm meta G": (lambda: torch.ops.sparsekern.csr_sddmm(*_c()[:2], torch.randn(2, 2, device=META),
                                                                    torch.randn(3, 2)),
                             ValueError, "sparsekern.csr_sddmm: .*same device"),
    "raw csr_bitmap_mm meta B": (lambda: torch.ops.sparsekern.csr_bitmap_mm(
        *_c(), bitmap_of("t", _c()[0], _c()[1], 3), torch.randn(3, 2, device=META)),
        ValueError, "sparsekern.csr_bitmap_mm: .*same device"),
    "raw bsr_mm zero block height": (lambda: torch.ops.sparsekern.bsr_mm(
        torch.zeros(1, dtype=torch.int32, device=META), torch.zeros(0, dtype=torch.int32, device=META),
        torch.zeros(0, 0, 2, device=META), 4, torch.randn(4, 2, device=META)),
        ValueError, "sparsekern.bsr_mm: values"),
    "raw bsr_mm meta B": (lambda: torch.ops.sparsekern.bsr_mm(
        _bsr().crow_indices, _bsr().col_indices, _bsr().values, 4, torch.randn(4, 2, device=META)),
        ValueError, "sparsekern.bsr_mm: .*same device"),
    "raw bsr_mm meta float64": (lambda: torch.ops.sparsekern.bsr_mm(
        _bsr().crow_indices.to(META), _bsr().col_indices.to(META), _bsr().values.to(META, torch.float64), 4,
        torch.randn(4, 2, device=META, dtype=torch.float64)), TypeError, "sparsekern.bsr_mm: B must be float32"),
    "raw semi24_mm meta B": (lambda: torch.ops.sparsekern.semi24_mm(
        _s24().values, _s24().metadata, torch.randn(4, 2, device=META)), ValueError,
        "sparsekern.semi24_mm: .*same device"),
    "raw semi24_mm meta float64": (lambda: torch.ops.sparsekern.semi24_mm(
        _s24().values.to(META, torch.float64), _s24().metadata.to(META), torch.randn(4, 2, device=META,
                                                                                  dtype=torch.float64)),
        TypeError, "sparsekern.semi24_mm: B must be float32"),
    # pruning arguments
    "magnitude nan": (lambda: sk.pruning.magnitude_mask(W8, math.nan), ValueError, "magnitude_mask: sparsity"),
    "magnitude > 1": (lambda: sk.pruning.magnitude_mask(W8, 1.5), ValueError, "magnitude_mask: sparsity"),
    "magnitude < 0": (lambda: sk.pruning.magnitude_mask(W8, -0.1), ValueError, "magnitude_mask: sparsity"),
    "magnitude str": (lambda: sk.pruning.magnitude_mask(W8, "0.5"), TypeError, "magnitude_mask: sparsity"),
    "magnitude W list": (lambda: sk.pruning.magnitude_mask([[1.0]], 0.5), TypeError, "magnitude_mask: W"),
    "nm m = 0": (lambda: sk.pruning.nm_mask(W8, 2, 0), ValueError, "nm_mask: .*n=2, m=0"),
    "nm n float": (lambda: sk.pruning.nm_mask(W8, 1.5, 4), TypeError, "nm_mask: n"),
    "block int blocksize": (lambda: sk.pruning.block_mask(W8, 0.5, 4), TypeError, "block_mask: blocksize"),
    "block zero blocksize": (lambda: sk.pruning.block_mask(W8, 0.5, (0, 4)), ValueError, "block_mask: blocksize"),
    "block sparsity nan": (lambda: sk.pruning.block_mask(W8, math.nan, (2, 2)), ValueError, "block_mask: sparsity"),
    "weight_mask granularity": (lambda: sk.pruning.weight_mask(W8, 0.5, "rows"), ValueError,
                                "weight_mask: granularity"),
    "iterative > 1": (lambda: sk.pruning.iterative_sparsities(1.5, 3), ValueError, "iterative_sparsities: final"),
    "iterative nan": (lambda: sk.pruning.iterative_sparsities(math.nan, 3), ValueError, "iterative_sparsities"),
    "iterative rounds float": (lambda: sk.pruning.iterative_sparsities(0.5, 2.5), TypeError,
                               "iterative_sparsities: rounds"),
    "polynomial > 1": (lambda: sk.pruning.polynomial_sparsity(5, 1.5, 0, 10), ValueError, "polynomial_sparsity"),
    "prune nan": (lambda: sk.pruning.prune(nn.Linear(8, 8), math.nan), ValueError, "prune: sparsity"),
    "prune str": (lambda: sk.pruning.prune(nn.Linear(8, 8), "0.9"), TypeError, "prune: sparsity"),
    "prune global > 1": (lambda: sk.pruning.prune(nn.Linear(8, 8), 1.5, scope="global"), ValueError,
                         "prune: sparsity"),
    "prune dict value > 1": (lambda: sk.pruning.compute_masks(nn.Sequential(nn.Linear(8, 8)), {"0": 1.5}),
                             ValueError, "compute_masks: sparsity"),
    "prune n:m dict ignored": (lambda: sk.pruning.compute_masks(nn.Sequential(nn.Linear(8, 8)), {"0": 0.9},
                                                                granularity="2:4"),
                               ValueError, "compute_masks: .*fixes the sparsity"),
    "prune n:m m = 0": (lambda: sk.pruning.compute_masks(nn.Linear(8, 8), None, granularity="n:m", n=2, m=0),
                        ValueError, "compute_masks: .*n=2, m=0"),
    "prune block int": (lambda: sk.pruning.compute_masks(nn.Linear(8, 8), 0.5, granularity="block", blocksize=4),
                        TypeError, "compute_masks: blocksize"),
    "write_masks on a ReLU": (lambda: sk.pruning.write_masks(nn.Sequential(nn.ReLU()), {"0": torch.ones(1)}),
                              ValueError, "write_masks: .*'0'.*weight"),
    "write_masks masks list": (lambda: sk.pruning.write_masks(nn.Linear(2, 2), [torch.ones(2, 2)]), TypeError,
                               "write_masks: masks"),
    "magnitude W meta": (lambda: sk.pruning.magnitude_mask(W8.to(META), 0.5), ValueError, "magnitude_mask: W is on"),
    "write_masks mask shape": (lambda: sk.pruning.write_masks(nn.Sequential(nn.Linear(2, 2)), {"0": torch.ones(3)}),
                               ValueError, "write_masks: .*shape"),
    "report repeats 0": (_report_repeats0, ValueError, "report: repeats"),
}


@pytest.mark.parametrize("call, exc, match", list(BAD.values()), ids=list(BAD))
def test_malformed_input_table(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_zero_size_layers_prune_to_empty_masks():
    model = nn.Sequential(nn.Linear(8, 0), nn.Linear(0, 4), nn.Linear(4, 4))
    for granularity in ("element", "2:4", "block", "channel"):
        for scope in ("layer", "global"):
            masks = sk.pruning.compute_masks(model, None if granularity == "2:4" else 0.5, granularity=granularity,
                                             scope=scope)
            assert masks["0"].shape == (0, 8) and masks["1"].shape == (4, 0)
            assert masks["2"].shape == (4, 4) and masks["2"].dtype == torch.bool
