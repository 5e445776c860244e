"""Every op on every device present, from one sample list per op (tests/samples.py): the result against a float64
dense reference, torch.library.opcheck, torch.compile of the typed entry points, and the rule that a bad input
reads the same whichever path refuses it (C++ kernel, fake kernel, Triton launcher)."""

import importlib

import pytest
import torch
from conftest import DTYPES, assert_close, assert_compile_matches_eager, random_sparse
from samples import OPS, opcheck_inputs, sample_inputs, small_inputs
from test_formats_bsr import random_block_sparse
from test_semi24_mm import random_24

import sparsekern as sk


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
        request.getfixturevalue("poison_cuda")  # outputs a kernel leaves unwritten read as NaN
    return request.param


def _op(op):
    return getattr(torch.ops.sparsekern, op)


@pytest.mark.parametrize("op", OPS)
def test_matches_float64_reference(op, device):
    for s in sample_inputs(op, device):
        out = _op(op)(*s.args)
        expected = s.expected()
        assert out.dtype == s.dtype and out.shape == expected.shape, s.name
        assert_close(out, expected, s.tol, k=s.k)


@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, device):
    for args in opcheck_inputs(op, device):
        torch.library.opcheck(_op(op).default, args)


def _matrix(fmt, M, K, dtype=torch.float32, device="cpu"):
    if fmt == "csr":
        return sk.CSRMatrix.from_dense(random_sparse(M, K, 0.8, dtype, device))
    if fmt == "csr+bitmap":
        return sk.CSRMatrix.from_dense(random_sparse(M, K, 0.8, dtype, device), bitmap=True)
    if fmt == "bsr":
        return sk.BSRMatrix.from_dense(random_block_sparse(M, K, (16, 16), 0.7, dtype, device), (16, 16))
    return sk.Semi24Matrix.from_dense(random_24(M, K, dtype, device=device))


_MM = {"csr": sk.ops.csr_mm, "csr+bitmap": sk.ops.csr_mm, "bsr": sk.ops.bsr_mm, "2:4": sk.ops.semi24_mm}


@pytest.mark.parametrize("fmt", list(_MM))
def test_torch_compile_fullgraph(fmt, device):
    A = _matrix(fmt, 31, 40, device=device)
    assert_compile_matches_eager(_MM[fmt], A, 40, 31, grad_values=fmt == "bsr")


@pytest.mark.parametrize("fmt", ["csr", "bsr", "2:4"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_linear_batched(fmt, dtype, device):
    """sk.ops.sparse_linear flattens any leading batch shape and adds the bias, for each format."""
    M, K = 67, 130
    A = _matrix(fmt, M, K, dtype, device)
    W = A.to_dense().double()
    for batch in [(5,), (2, 3), (1,)]:
        for bias in (None, torch.randn(M).to(dtype).to(device)):
            x = torch.randn(*batch, K).to(dtype).to(device)
            y = sk.ops.sparse_linear(x, A, bias)
            assert y.shape == (*batch, M) and y.dtype == dtype
            assert_close(y, x.double() @ W.T + (0 if bias is None else bias.double()), dtype, k=K)


@pytest.mark.parametrize("fmt", ["csr", "bsr", "2:4"])
@pytest.mark.parametrize("linear, dtype", [(False, torch.float32), (False, torch.bfloat16), (True, torch.float32),
                                           (True, torch.float16)])
def test_backward_matches_dense(fmt, linear, dtype, device):
    """Gradients of the dense operand, the bias and the stored values against float64 dense autograd. The values
    get the dense gradient at the stored nonzeros and nothing elsewhere, so pruned weights stay pruned (2:4 fillers
    and BSR block padding included)."""
    M, K, N = 33, 47, 19
    A = _matrix(fmt, M, K, dtype, device)
    W = A.to_dense()
    A.values.requires_grad_(True)
    bias = torch.randn(M).to(dtype).to(device).requires_grad_(True)
    if linear:
        x = torch.randn(2, 5, K).to(dtype).to(device).requires_grad_(True)
        R = torch.randn(2, 5, M).to(dtype).to(device)
        (sk.ops.sparse_linear(x, A, bias) * R).sum().backward()
    else:
        x = torch.randn(K, N).to(dtype).to(device).requires_grad_(True)
        R = torch.randn(M, N).to(dtype).to(device)
        (_MM[fmt](A, x) * R).sum().backward()
    if fmt == "bsr" and device == "cuda" and dtype == torch.float32:
        dtype = torch.float16  # TF32 products: fp16's tolerance
    Wd, xd, bd = (t.detach().double().requires_grad_(True) for t in (W, x, bias))
    (((xd @ Wd.T + bd) if linear else Wd @ xd) * R.double()).sum().backward()
    assert_close(x.grad, xd.grad, dtype, k=M)
    if linear:
        assert_close(bias.grad, bd.grad, dtype, k=10)
    grad_values = A.values.grad
    if fmt == "2:4":
        Wg = sk.Semi24Matrix(grad_values, A.metadata, A.shape, validate=False).to_dense()
    else:
        Wg = type(A)(A.crow_indices, A.col_indices, grad_values, A.shape, validate=False).to_dense()
    assert_close(Wg, Wd.grad * (W != 0), dtype, k=10 if linear else N)
    if fmt == "bsr":  # the edge blocks' padding (K = 47 cuts the last block column) gets zero
        assert bool((grad_values[:, :, K % 16:][A.col_indices == K // 16] == 0).all())


@pytest.mark.parametrize("fmt", ["csr", "bsr", "2:4"])
def test_entry_points_reject(fmt):
    """The typed entry points name themselves and the problem before any op runs."""
    A = _matrix(fmt, 6, 10)
    mm, name = _MM[fmt], _MM[fmt].__name__
    B = torch.randn(10, 4)
    with pytest.raises(ValueError, match=rf"sparsekern.{name}: A is \(6, 10\) but B has 4 rows"):
        mm(A, torch.randn(4, 3))
    with pytest.raises(TypeError, match=f"sparsekern.{name}: A must be a {type(A).__name__}"):
        mm(A.to_dense(), B)
    with pytest.raises(ValueError, match=f"sparsekern.{name}: B and A.values must be on the same device"):
        mm(A, B.to("meta"))
    with pytest.raises(ValueError, match=r"sparsekern.sparse_linear: A is \(6, 10\) but x has shape"):
        sk.ops.sparse_linear(torch.randn(3, 4), A)
    with pytest.raises(TypeError, match="sparsekern.sparse_linear: x and A.values must have the same dtype"):
        sk.ops.sparse_linear(torch.randn(3, 10, dtype=torch.float16), A)
    with pytest.raises(ValueError, match=r"sparsekern.sparse_linear: bias must have shape \(6,\)"):
        sk.ops.sparse_linear(torch.randn(3, 10), A, torch.randn(5))
    with pytest.raises(TypeError, match="sparsekern.sparse_linear: A must be one of"):
        sk.ops.sparse_linear(torch.randn(3, 10), A.to_dense())


def test_explain_reports_the_registered_backend(monkeypatch):
    """sk.explain names the GPU backend each op registered (ops/_registry.GPU_BACKEND) and the regime from the
    shared DECODE_MAX_N, rather than deriving either itself."""
    from sparsekern._constants import DECODE_MAX_N
    from sparsekern.ops._registry import GPU_BACKEND

    explain = importlib.import_module("sparsekern.explain")
    cuda = torch.device("cuda")
    assert set(OPS) <= set(GPU_BACKEND)
    monkeypatch.setitem(GPU_BACKEND, "bsr_linear", "triton")
    assert explain._backend("bsr_linear", cuda, DECODE_MAX_N) == f"Triton kernel, decode regime (N <= {DECODE_MAX_N})"
    monkeypatch.setitem(GPU_BACKEND, "bsr_linear", "cuda")
    assert explain._backend("bsr_linear", cuda, DECODE_MAX_N + 1).startswith("CUDA C++ kernel, prefill regime")
    monkeypatch.setitem(GPU_BACKEND, "bsr_linear", "none")
    assert explain._backend("bsr_linear", cuda, 1) == "no GPU kernel"


# ---------------------------------------------------------------------------------------------- one message

# Bad inputs every op refuses before reading an index: (the arguments it needs, a mutation of a good sample's
# arguments by name). `dense` names the dense operand (B or x), `vals` the stored values (val, values; G for
# csr_sddmm, which stores none).
_BAD = {
    "dense dtype": ((), lambda a, dense, vals: a.update({dense: a[dense].half()})),
    "float dtype": ((), lambda a, dense, vals: a.update({dense: a[dense].double(), vals: a[vals].double()})),
    "dense dim": ((), lambda a, dense, vals: a.update({dense: a[dense][None]})),
    "values dim": (("val",), lambda a, dense, vals: a.update({vals: a[vals][None]})),
    "crow dtype": (("crow",), lambda a, dense, vals: a.update({"crow": a["crow"].float()})),
    "col length": (("col", "val"), lambda a, dense, vals: a.update({"col": a["col"][:-1]})),
    "metadata dtype": (("metadata",), lambda a, dense, vals: a.update({"metadata": a["metadata"].long()})),
    "metadata shape": (("metadata",), lambda a, dense, vals: a.update({"metadata": a["metadata"][..., :16]})),
    "bias length": (("bias",), lambda a, dense, vals: a.update({"bias": torch.randn(999)})),
    "bias dtype": (("bias",), lambda a, dense, vals: a.update({"bias": torch.randn(999).half()})),
    "row_order length": (("row_order",), lambda a, dense, vals: a.update({"row_order": a["crow"][:1]})),
    "G rows": (("G",), lambda a, dense, vals: a.update({"G": a["G"][:-1]})),
}
_TRITON_MODULE = {"csr_mm": "csr_mm", "csr_linear": "csr_mm", "csr_sddmm": "csr_sddmm", "csr_bitmap_mm": "csr_bitmap_mm",
                  "csr_bitmap_linear": "csr_bitmap_mm", "bsr_mm": "bsr_mm", "bsr_linear": "bsr_mm"}


def _message(fn, args):
    with pytest.raises((TypeError, ValueError, IndexError)) as info:
        fn(*args)
    return info.type, str(info.value).splitlines()[0]


@pytest.mark.parametrize("op", OPS)
def test_bad_input_reads_the_same_on_every_path(op):
    """C++ (eager), the fake kernel (meta tensors, as under torch.compile) and the Triton launcher refuse each bad
    input with the same exception and the same words."""
    names = [a.name for a in _op(op).default._schema.arguments]
    dense = "x" if "x" in names else "B"
    good = dict(zip(names, small_inputs(op)[1]))
    vals = "values" if "values" in good else "val" if "val" in good else "G"
    launcher = None
    if op in _TRITON_MODULE and importlib.util.find_spec("triton") is not None:
        launcher = getattr(importlib.import_module(f"sparsekern._triton.{_TRITON_MODULE[op]}"), op)
    checked = 0
    for what, (needs, mutate) in _BAD.items():
        args = dict(good)
        if any(n not in args and not (n == "val" and vals == "values") for n in needs):
            continue
        if what == "row_order length" and args["row_order"] is None:
            continue
        mutate(args, dense, vals)
        bad = tuple(args.values())
        eager = _message(_op(op), bad)
        assert eager[1].startswith(f"sparsekern.{op}: "), (what, eager)
        meta = tuple(t.to("meta") if isinstance(t, torch.Tensor) else t for t in bad)
        assert _message(_op(op), meta) == eager, what
        if launcher is not None:
            assert _message(launcher, bad) == eager, what
        checked += 1
    assert checked >= 5


def test_csr_conv2d_bad_input_reads_the_same():
    A = sk.CSRMatrix.from_dense(random_sparse(8, 4 * 9, 0.5))
    x = torch.randn(2, 4, 7, 7)
    good = dict(x=x, crow=A.crow_indices, col=A.col_indices, val=A.values, bias=torch.randn(8), kernel_size=[3, 3],
                stride=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1, channels_last=False)
    for change in ({"x": x.half()}, {"x": x[0]}, {"col": A.col_indices[:-1]}, {"stride": [0, 1]},
                   {"padding": [0, 0, -1, 0]}, {"groups": 3}, {"x": x[:, :, :2, :2], "padding": [0, 0, 0, 0]},
                   {"bias": torch.randn(5)}):
        bad = tuple({**good, **change}.values())
        eager = _message(_op("csr_conv2d"), bad)
        assert eager[1].startswith("sparsekern.csr_conv2d: "), (change, eager)
        meta = tuple(t.to("meta") if isinstance(t, torch.Tensor) else t for t in bad)
        assert _message(_op("csr_conv2d"), meta) == eager, change
