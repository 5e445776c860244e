"""SparseConv2d and the csr_conv2d op: every format x convolution configuration x dtype against F.conv2d in
float64 on the masked weight; gradients; state_dict; torch.compile; opcheck; bad input."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import DTYPES, assert_close
from torch import nn

import sparsekern as sk
from sparsekern.nn import SparseConv2d

FORMATS = ["csr", "bsr", "2:4", "dense"]

# (in, out, kernel, stride, padding, dilation, groups, H, W)
CONFIGS = [
    (8, 16, 1, 1, 0, 1, 1, 5, 7),  # 1x1: a GEMM on the activations
    (8, 12, 1, 2, 0, 1, 1, 7, 7),  # strided 1x1 (ResNet's downsample shortcut)
    (4, 8, 3, 1, 1, 1, 1, 7, 7),
    (4, 8, 3, 2, 1, 1, 1, 9, 8),
    (4, 8, (3, 2), (2, 1), (0, 1), (2, 1), 1, 9, 7),
    (4, 8, 4, 1, "same", 1, 1, 6, 5),  # even kernel: "same" pads one more on the bottom/right
    (4, 8, 3, 1, "valid", 1, 1, 5, 5),
    (8, 8, 3, 1, 1, 1, 8, 7, 7),  # depthwise
    (8, 12, 3, 2, 2, 2, 4, 7, 9),  # grouped, dilated, strided
    (8, 16, 3, 1, 1, 1, 1, 1, 1),  # 1x1 image
    (4, 8, 7, 2, 3, 1, 1, 11, 11),  # 7x7 stem-like
]


def sparse_conv(cfg, dtype=torch.float32, sparsity=0.7, bias=True):
    ci, co, k, s, p, d, g, H, W = cfg
    conv = nn.Conv2d(ci, co, k, s, p, d, g, bias=bias)
    with torch.no_grad():
        w = conv.weight
        w.mul_(torch.rand_like(w) >= sparsity)
        if bias:
            conv.bias.normal_()
    return conv.to(dtype), torch.randn(2, ci, H, W).to(dtype)


def fmt_kwargs(fmt):
    return {"blocksize": (4, 4)} if fmt == "bsr" else {}


def make_24(conv):
    """Prunes conv's weight to 2:4 along in/groups*kh*kw (a ragged last group keeps at most 2 too)."""
    W = conv.weight.detach().reshape(conv.out_channels, -1)
    K = W.shape[1]
    Wp = F.pad(W, (0, (-K) % 4)).view(W.shape[0], -1, 4)
    keep = torch.zeros_like(Wp, dtype=torch.bool).scatter_(-1, Wp.abs().topk(2, dim=-1).indices, True)
    with torch.no_grad():
        conv.weight.copy_((Wp * keep).view(W.shape[0], -1)[:, :K].view_as(conv.weight))


def reference(conv, x):
    return F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double(),
                    conv.stride, conv.padding, conv.dilation, conv.groups)


# Every format x configuration in fp32; fp16 / bf16 (staged to fp32 inside the kernels) on a spread of them, which
# keeps the file at a few seconds.
CASES = [(c, f, torch.float32) for c in CONFIGS for f in FORMATS] + [
    (c, f, d) for c in (CONFIGS[1], CONFIGS[5], CONFIGS[8], CONFIGS[9]) for f in FORMATS for d in DTYPES[1:]]


@pytest.mark.parametrize("cfg,fmt,dtype", CASES, ids=str)
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_matches_masked_dense(cfg, fmt, dtype):
    conv, x = sparse_conv(cfg, dtype)
    if fmt == "2:4":
        make_24(conv)
    m = SparseConv2d.from_dense(conv, fmt, **fmt_kwargs(fmt))
    k = conv.weight[0].numel()
    with torch.no_grad():
        y = m(x)
        assert y.dtype == dtype
        assert_close(y, reference(conv, x), dtype, k=k)
        # channels_last in -> channels_last out (nn.Conv2d's rule), same values
        xc = x.contiguous(memory_format=torch.channels_last)
        yc = m(xc)
        if yc.shape[-1] * yc.shape[-2] > 1:
            assert yc.is_contiguous(memory_format=torch.channels_last)
        assert_close(yc, reference(conv, x), dtype, k=k)
        # unbatched (C, H, W)
        assert_close(m(x[1]), reference(conv, x)[1], dtype, k=k)


@pytest.mark.parametrize("fmt", ["csr", "bsr", "2:4"])
@pytest.mark.parametrize("cfg", [CONFIGS[1], CONFIGS[4], CONFIGS[8]], ids=str)
def test_gradients(cfg, fmt):
    conv, x = sparse_conv(cfg)
    if fmt == "2:4":
        make_24(conv)
    dtype = conv.weight.dtype
    m = SparseConv2d.from_dense(conv, fmt, **fmt_kwargs(fmt)).train()
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(reference(conv, x)).to(dtype)
    (m(x1) * g).sum().backward()
    (F.conv2d(x2, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups) * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m.bias.grad, conv.bias.grad, rtol=1e-4, atol=1e-4)
    # The stored values' gradient is the dense weight gradient at the kept positions; pruned ones get none.
    dense_grad = m.dense_weight_2d().new_zeros(m._shape)
    if fmt == "csr":
        A = m.matrix()
        rows = torch.repeat_interleave(torch.arange(m._shape[0]), A.crow_indices.diff())
        dense_grad[rows, A.col_indices.long()] = m.weight_values.grad
        kept = conv.weight.reshape(m._shape) != 0
        expected = conv.weight.grad.reshape(m._shape) * kept
        torch.testing.assert_close(dense_grad, expected, rtol=1e-4, atol=1e-4)
    else:
        assert m.weight_values.grad is not None and m.weight_values.grad.abs().sum() > 0


def test_csr_conv2d_op_matches_reference_float64():
    # The op's own grid, beyond the module: int16 (compact) columns and no bias.
    conv, x = sparse_conv((5, 6, 3, 2, 1, 1, 1, 13, 10), torch.float32, bias=False)
    A = sk.CSRMatrix.from_dense(conv.weight.detach().reshape(6, -1), col_dtype=torch.int16)
    y = sk.ops.csr_conv2d(x, A, kernel_size=3, stride=2, padding=1)
    assert_close(y, reference(conv, x), torch.float32, k=45)


@pytest.mark.parametrize("W", [1, 5, 9, 17, 23, 33, 41, 50, 62, 70, 198], ids=lambda w: f"W{w}")
def test_csr_conv2d_every_tile_width(W):
    # A 3x3 convolution on one image row computes W + 2 grid columns: widths 8 to 64 take one tile of 1 to 8
    # vectors (with 8 to 1 accumulator sets); 72 and 200 are cut into equal blocks (2 x 40, 4 x 56). Grouped 1x1
    # convolutions on the same rows run the kernel too (only groups == 1 goes to csr_mm).
    for cfg in [(6, 10, 3, 1, 1, 1, 1, 1, W), (6, 10, 1, 1, 0, 1, 2, 1, W)]:
        conv, x = sparse_conv(cfg, torch.float32, sparsity=0.6)
        A = sk.CSRMatrix.from_dense(conv.weight.detach().reshape(10, -1))
        y = sk.ops.csr_conv2d(x, A, conv.bias.detach(), kernel_size=conv.kernel_size, padding=conv.padding,
                              groups=conv.groups)
        assert_close(y, reference(conv, x), torch.float32, k=conv.weight[0].numel())


def test_state_dict_round_trip_between_patterns():
    cfg = CONFIGS[3]
    a, x = sparse_conv(cfg, sparsity=0.8)
    b, _ = sparse_conv(cfg, sparsity=0.3)
    ma, mb = SparseConv2d.from_dense(a, "csr"), SparseConv2d.from_dense(b, "csr")
    assert ma.nnz != mb.nnz
    mb.load_state_dict(ma.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(mb(x), ma(x))
    assert mb.weight.shape == a.weight.shape
    # across formats, and through deepcopy / .to(dtype)
    mc = SparseConv2d.from_dense(b, "dense")
    mc.load_state_dict(ma.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(mc(x), ma(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(copy.deepcopy(ma)(x), ma(x))
        assert_close(ma.to(torch.bfloat16)(x.bfloat16()), reference(a, x), torch.bfloat16, k=36)
    assert "format='csr'" in repr(ma) and "sparsity=" in repr(ma)
    torch.testing.assert_close(ma.to_dense_module().weight, a.weight.to(torch.bfloat16))


def test_compile_fullgraph():
    conv, x = sparse_conv(CONFIGS[8])
    m = SparseConv2d.from_dense(conv, "csr")
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.testing.assert_close(compiled(x1), m(x2))
    compiled(x1).sum().backward()
    m(x2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_opcheck():
    conv, x = sparse_conv(CONFIGS[8])
    A = sk.CSRMatrix.from_dense(conv.weight.detach().reshape(conv.out_channels, -1))
    for xx, cl in [(x, False), (x.contiguous(memory_format=torch.channels_last), True)]:
        args = (xx.requires_grad_(), A.crow_indices, A.col_indices, A.values.clone().requires_grad_(),
                conv.bias.detach().clone().requires_grad_(), [3, 3], [2, 2], [2, 2, 2, 2], [2, 2], 4, cl)
        torch.library.opcheck(torch.ops.sparsekern.csr_conv2d, args)


def test_bad_input():
    conv, x = sparse_conv(CONFIGS[2], sparsity=0.2)
    with pytest.raises(ValueError, match="SparseConv2d.*2:4"):
        SparseConv2d.from_dense(conv, "2:4")
    with pytest.raises(ValueError, match="SparseConv2d.*format"):
        SparseConv2d.from_dense(conv, "coo")
    with pytest.raises(ValueError, match="SparseConv2d.*2-D"):
        SparseConv2d(conv.weight.detach(), None, 4, 3)
    with pytest.raises(TypeError, match="SparseConv2d"):
        SparseConv2d.from_dense(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="SparseConv2d.*mask"):
        SparseConv2d.from_dense(conv, "csr", mask=torch.ones(3, 3, dtype=torch.bool))
    m = SparseConv2d.from_dense(conv, "csr")
    with pytest.raises(ValueError, match="SparseConv2d.*input"):
        m(torch.randn(2, 5, 7, 7))
    A = m.matrix()
    with pytest.raises(ValueError, match="sparsekern.csr_conv2d"):  # a 4x4 image cannot hold a dilated 3x3 kernel
        torch.ops.sparsekern.csr_conv2d(x[:, :, :4, :4], A.crow_indices, A.col_indices, A.values, None, [3, 3],
                                        [1, 1], [0, 0, 0, 0], [3, 3], 1, False)
    bad_col = A.col_indices.clone()
    bad_col[0] = 30000  # > K, and representable in the compact int16 columns
    with pytest.raises(IndexError, match="sparsekern.csr_conv2d.*out of range"):
        torch.ops.sparsekern.csr_conv2d(x, A.crow_indices, bad_col, A.values, None, [3, 3], [1, 1], [1, 1, 1, 1],
                                        [1, 1], 1, False)
