"""bsr_mm / bsr_linear: what is particular to the BSR kernels (any block size, block padding, wide-N panels,
the values gradient's chunks), the errors bad input must raise, and the Triton kernel (interpreter without a GPU)
against a float64 dense reference. The checks every op shares (float64 reference over tests/samples.py, opcheck,
compile, backward) are in tests/test_ops.py."""

import ast
import importlib
import os

import pytest
import torch
from conftest import DTYPES, assert_close, poison_cuda, requires_cuda  # noqa: F401
from test_formats_bsr import random_block_sparse

import sparsekern as sk
from sparsekern._constants import DECODE_MAX_N


def reference_mm(W, B):
    return W.double() @ B.double()


def _padding_poisoned(W, blocksize):
    """The BSR form of W with NaN in the padding of the edge blocks, which no kernel may read as data."""
    A = sk.BSRMatrix.from_dense(W, blocksize)
    bm, bk = blocksize
    M, K = W.shape
    rows = torch.repeat_interleave(torch.arange(A.block_shape[0]), A.crow_indices.diff())
    val = A.values.clone()
    for j in range(A.nblocks):
        val[j, max(0, M - int(rows[j]) * bm) :, :] = float("nan")
        val[j, :, max(0, K - int(A.col_indices[j]) * bk) :] = float("nan")
    return sk.BSRMatrix(A.crow_indices, A.col_indices, val, A.shape)


# ---------------------------------------------------------------------------------------------- CPU kernel


@pytest.mark.parametrize("blocksize", [(1, 1), (3, 5), (24, 40), (7, 128)])
@pytest.mark.parametrize("N", [1, 17, 100])
def test_bsr_mm_cpu_any_blocksize(blocksize, N):
    W = random_block_sparse(61, 83, blocksize, 0.6)
    B = torch.randn(83, N)
    assert_close(sk.ops.bsr_mm(sk.BSRMatrix.from_dense(W, blocksize), B), reference_mm(W, B), torch.float32, k=83)


# The CPU kernel has two loop nests: N <= 8 (decode: vectors along k) and wider N (register tiles over N).
@pytest.mark.parametrize("N", [2, 40])
def test_bsr_mm_empty_block_rows_and_columns(N):
    W = random_block_sparse(100, 90, (16, 16), 0.7)
    W[16:48] = 0  # two empty block rows
    W[:, 32:64] = 0  # block columns never referenced
    A = sk.BSRMatrix.from_dense(W, (16, 16))
    assert (A.crow_indices.diff()[1:3] == 0).all()
    B = torch.randn(90, N)
    out = sk.ops.bsr_mm(A, B)
    assert bool((out[16:48] == 0).all())
    assert_close(out, reference_mm(W, B), torch.float32, k=90)


@pytest.mark.parametrize("N", [3, 20])
def test_bsr_mm_padding_is_never_read(N):
    W = random_block_sparse(37, 50, (16, 32), 1.0)
    A = _padding_poisoned(W, (16, 32))
    B = torch.randn(50, N)
    assert_close(sk.ops.bsr_mm(A, B), reference_mm(W, B), torch.float32, k=50)
    x = torch.randn(N, 50)
    assert_close(sk.ops.sparse_linear(x, A), x.double() @ W.double().T, torch.float32, k=50)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("transposed", [False, True])
def test_bsr_mm_wide_N_panels(dtype, transposed):
    """N > 64: B is staged in 64-column panels (the last one partly padding), from any strides and dtype."""
    W = random_block_sparse(40, 263, (16, 16), 0.8, dtype)
    B = torch.randn(600, 263).to(dtype).t() if transposed else torch.randn(263, 600).to(dtype)
    A = sk.BSRMatrix.from_dense(W, (16, 16))
    assert_close(sk.ops.bsr_mm(A, B), reference_mm(W, B), dtype, k=263)
    x = B.t()  # (600, 263): the Linear orientation stages x.T the same way
    assert_close(sk.ops.sparse_linear(x, A), x.double() @ W.double().T, dtype, k=263)


def test_bsr_mm_int64_indices_noncontiguous_operands():
    W = random_block_sparse(70, 50, (32, 16), 0.6)
    A = sk.BSRMatrix.from_dense(W, (32, 16), index_dtype=torch.int64)
    # Values as a transposed view (each block stored column-major), B column-major.
    A = sk.BSRMatrix(A.crow_indices, A.col_indices, A.values.transpose(1, 2).contiguous().transpose(1, 2), A.shape)
    B = torch.randn(30, 50).t()
    assert_close(sk.ops.bsr_mm(A, B), reference_mm(W, B), torch.float32, k=50)


def test_bsr_mm_duplicate_blocks_are_summed():
    crow = torch.tensor([0, 2], dtype=torch.int32)
    col = torch.tensor([0, 0], dtype=torch.int32)
    val = torch.stack([torch.eye(16), 2 * torch.eye(16)])
    A = sk.BSRMatrix(crow, col, val, (16, 16))
    B = torch.randn(16, 3)
    torch.testing.assert_close(sk.ops.bsr_mm(A, B), 3 * B)


# ---------------------------------------------------------------------------------------------- autograd


def test_bsr_values_gradient_in_chunks(monkeypatch):
    """The values gradient gathers blocks in bounded chunks; the result must not depend on the chunk size."""
    mod = importlib.import_module("sparsekern.ops.bsr_mm")  # the module; sk.ops.bsr_mm is the function

    W = random_block_sparse(64, 64, (16, 16), 0.8)
    A = sk.BSRMatrix.from_dense(W, (16, 16))
    G, B = torch.randn(64, 9), torch.randn(64, 9)
    whole = mod._bsr_values_grad(A.crow_indices, A.col_indices, G, B, (16, 16))
    monkeypatch.setattr(mod, "_SDDMM_CHUNK_ELEMENTS", 3 * 32 * 9)  # 3 blocks a chunk
    torch.testing.assert_close(mod._bsr_values_grad(A.crow_indices, A.col_indices, G, B, (16, 16)), whole)
    dense = G.double() @ B.double().T
    blocks = dense.view(4, 16, 4, 16).transpose(1, 2)[A.to_dense().view(4, 16, 4, 16).transpose(1, 2).abs().sum((2, 3)) != 0]
    assert_close(whole, blocks, torch.float32, k=9)


# ---------------------------------------------------------------------------------------------- bad input


def _good():
    A = sk.BSRMatrix.from_dense(torch.randn(40, 33), (16, 16))  # 3 x 3 blocks, all kept
    return A.crow_indices.clone(), A.col_indices.clone(), A.values.clone(), 40, torch.randn(33, 4)


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda c, i, v, M, B: (c, i, v, M, B.half()), TypeError, "same dtype"),
        (lambda c, i, v, M, B: (c, i, v.double(), M, B.double()), TypeError, "float32, float16 or bfloat16"),
        (lambda c, i, v, M, B: (c, i, v, M, B[None]), ValueError, "B must be 2-D"),
        (lambda c, i, v, M, B: (c, i, v[:, 0], M, B), ValueError, "values must be 3-D"),
        (lambda c, i, v, M, B: (c, i, v[:, :0], M, B), ValueError, "bm, bk >= 1"),
        (lambda c, i, v, M, B: (c.float(), i, v, M, B), TypeError, "int32 or int64"),
        (lambda c, i, v, M, B: (c, i.long(), v, M, B), TypeError, "dtype of crow_indices"),
        (lambda c, i, v, M, B: (c, i[:-1], v, M, B), ValueError, "same number of blocks"),
        (lambda c, i, v, M, B: (c, i, v, 60, B), ValueError, r"ceil\(M / bm\) \+ 1 = 5 entries for M = 60"),
        (lambda c, i, v, M, B: (c, i, v, -1, B), ValueError, "M must be >= 0"),
        (lambda c, i, v, M, B: (c + 1, i, v, M, B), ValueError, r"crow_indices\[0\] must be 0"),
        (lambda c, i, v, M, B: (torch.tensor([0, 5, 3, 9], dtype=c.dtype), i, v, M, B), ValueError, "non-decreasing"),
        (lambda c, i, v, M, B: (torch.tensor([0, 3, 6, 8], dtype=c.dtype), i, v, M, B), ValueError, r"crow_indices\[-1\] must equal nnz"),
        (lambda c, i, v, M, B: (c, i + 1, v, M, B), IndexError, r"col_indices\[2\] = 3 is out of range for ceil\(K / bk\) = 3"),
        (lambda c, i, v, M, B: (c, i - 1, v, M, B), IndexError, "out of range"),
        (lambda c, i, v, M, B: (c, i, v, M, B[:32]), IndexError, r"out of range for ceil\(K / bk\) = 2 block columns \(K = 32"),
        (lambda c, i, v, M, B: (c, i + 1, v, M, B[:, :0]), IndexError, "out of range"),
    ],
)
def test_bsr_mm_op_rejects(mutate, exc, match):
    args = mutate(*_good())
    with pytest.raises(exc, match=f"sparsekern.bsr_mm: .*{match}"):
        torch.ops.sparsekern.bsr_mm(*args)


def test_bsr_linear_op_rejects():
    crow, col, val, M, _ = _good()
    with pytest.raises(ValueError, match="sparsekern.bsr_linear: bias must have M = 40"):
        torch.ops.sparsekern.bsr_linear(torch.randn(2, 33), crow, col, val, M, torch.randn(4))
    with pytest.raises(IndexError, match=r"sparsekern.bsr_linear: .*out of range for ceil\(K / bk\) = 1"):
        torch.ops.sparsekern.bsr_linear(torch.randn(2, 16), crow, col, val, M, None)
    with pytest.raises(TypeError, match="sparsekern.bsr_linear: .*same dtype"):
        torch.ops.sparsekern.bsr_linear(torch.randn(2, 33), crow, col, val, M, torch.randn(40).half())


def test_bsr_entry_points_validate():
    crow, col, val, M, B = _good()
    bad = sk.BSRMatrix(crow, col + 5, val, (40, 33), validate=False)
    with pytest.raises(IndexError, match="sparsekern.bsr_mm: col_indices.* out of range"):
        sk.ops.bsr_mm(bad, B, validate=True)
    with pytest.raises(IndexError, match="sparsekern.sparse_linear: col_indices.* out of range"):
        sk.ops.sparse_linear(torch.randn(2, 33), bad, validate=True)


# ---------------------------------------------------------------------------------------------- Triton

_TRITON_SHAPES = [(1, 1, 1), (33, 70, 5), (130, 100, 40)]


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def default_configs(monkeypatch):
    """The launcher's default configs on a GPU too: autotuning every shape of a test grid would take minutes
    (the autotuner is tested on its own below)."""
    from sparsekern._triton import configs

    monkeypatch.setattr(configs, "AUTOTUNE", False)


def _tol_dtype(dtype):
    # On a GPU fp32 runs as TF32 (10-bit mantissa): compare like fp16. The interpreter computes in fp32.
    return torch.float16 if dtype == torch.float32 and torch.cuda.is_available() else dtype


@pytest.mark.triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize", [(16, 16), (32, 32), (64, 64), (128, 128), (16, 64)])
@pytest.mark.parametrize("M,K,N", _TRITON_SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.5, 1.0])
def test_triton_bsr_mm(dtype, blocksize, M, K, N, density, default_configs):
    from sparsekern._triton.bsr_mm import bsr_mm

    W = random_block_sparse(M, K, blocksize, density, dtype, _device())
    A = sk.BSRMatrix.from_dense(W, blocksize)
    B = torch.randn(K, N).to(dtype).to(_device())
    out = bsr_mm(A.crow_indices, A.col_indices, A.values, M, B)
    assert out.shape == (M, N) and out.dtype == dtype
    assert_close(out, reference_mm(W, B), _tol_dtype(dtype), k=K)


@pytest.mark.triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize", [(32, 32), (24, 40), (3, 5)])
def test_triton_bsr_linear_and_padding(dtype, blocksize, default_configs):
    """Non-power-of-two blocks are padded in registers; NaN in the format's padding must not leak."""
    from sparsekern._triton.bsr_mm import bsr_linear

    M, K, T = 45, 71, 6
    W = random_block_sparse(M, K, blocksize, 0.7, dtype)
    A = _padding_poisoned(W, blocksize).to(_device())
    x = torch.randn(T, K).to(dtype).to(_device())
    bias = torch.randn(M).to(dtype).to(_device())
    y = bsr_linear(x, A.crow_indices, A.col_indices, A.values, M, bias)
    assert y.shape == (T, M)
    assert_close(y, x.double() @ W.double().T.to(_device()) + bias.double(), _tol_dtype(dtype), k=K)


@pytest.mark.triton
@pytest.mark.parametrize("blocksize", [(256, 256), (160, 48), (32, 200)])
def test_triton_bsr_blocks_over_128(blocksize, default_configs):
    """A block side over 128 is covered by several 128-wide tiles (rows: programs; columns: a loop), padding
    poisoned as above: one whole 256 x 256 tile would not fit an H100's shared memory (see _GPU_CONFIGS)."""
    from sparsekern._triton.bsr_mm import bsr_linear, bsr_mm

    M, K = 300, 290
    W = random_block_sparse(M, K, blocksize, 0.7, torch.float16)
    A = _padding_poisoned(W, blocksize).to(_device())
    B = torch.randn(K, 40, dtype=torch.float16)
    out = bsr_mm(A.crow_indices, A.col_indices, A.values, M, B.to(_device()))
    assert_close(out.cpu(), reference_mm(W, B), torch.float16, k=K)
    x = torch.randn(3, K, dtype=torch.float16)
    y = bsr_linear(x.to(_device()), A.crow_indices, A.col_indices, A.values, M, None)
    assert_close(y.cpu(), x.double() @ W.double().T, torch.float16, k=K)


@pytest.mark.triton
@pytest.mark.parametrize("N", [3, 40])
def test_triton_bsr_bad_row_pointers_and_strided_components(N, default_configs):
    """Unvalidated row pointers outside [0, nblocks] are clamped to it (nothing outside the components is read:
    here that leaves the valid matrix's product), and strided index and bias views are read correctly."""
    from sparsekern._triton.bsr_mm import bsr_linear, bsr_mm

    M, K = 40, 70
    W = random_block_sparse(M, K, (16, 16), 0.5, device=_device())
    A = sk.BSRMatrix.from_dense(W, (16, 16))
    crow = A.crow_indices.clone()
    crow[0], crow[-1] = -7, A.nblocks + 50
    B = torch.randn(K, N, device=_device())
    assert_close(bsr_mm(crow, A.col_indices, A.values, M, B), reference_mm(W, B), _tol_dtype(torch.float32), k=K)
    col = torch.stack([A.col_indices, A.col_indices + 9], 1)[:, 0]
    bias = torch.randn(M, 2, device=_device())[:, 1]
    y = bsr_linear(B.t(), A.crow_indices, col, A.values, M, bias)
    assert_close(y, (reference_mm(W, B) + bias.double()[:, None]).t(), _tol_dtype(torch.float32), k=K)


@pytest.mark.triton
@pytest.mark.parametrize("split", [2, 4])
@pytest.mark.parametrize("with_bias", [False, True])
def test_triton_bsr_split_k(monkeypatch, split, with_bias):
    """The decode path: a block row's blocks shared by SPLIT_K programs, fp32 partials summed after."""
    from sparsekern._triton import bsr_mm as mod
    from sparsekern._triton import configs

    monkeypatch.setattr(configs, "bsr_mm_default", lambda N, bm, fp32: {"BLOCK_N": 16, "SPLIT_K": split, "num_warps": 4, "num_stages": 2})
    monkeypatch.setattr(configs, "AUTOTUNE", False)
    monkeypatch.setattr(configs, "BSR_MM_TUNED", {})
    M, K, N = 50, 150, 3
    W = random_block_sparse(M, K, (16, 16), 0.6, torch.float16, _device())
    A = sk.BSRMatrix.from_dense(W, (16, 16))
    B = torch.randn(K, N, dtype=torch.float16, device=_device())
    assert_close(mod.bsr_mm(A.crow_indices, A.col_indices, A.values, M, B), reference_mm(W, B), torch.float16, k=K)
    x = B.t().contiguous()
    bias = torch.randn(M, dtype=torch.float16, device=_device()) if with_bias else None
    ref = x.double() @ W.double().T + (bias.double() if with_bias else 0)
    assert_close(mod.bsr_linear(x, A.crow_indices, A.col_indices, A.values, M, bias), ref, torch.float16, k=K)


@pytest.mark.triton
@pytest.mark.parametrize("N", [3, 40])
def test_triton_bsr_mm_autotune_path(monkeypatch, N):
    """The launcher's autotuning branch (GPU only in real use) with every candidate run once (under the
    interpreter without a GPU) and timed alike, so the first candidate wins: the workspace, split-K sum and the
    record of the choice must work for whichever config wins."""
    from sparsekern._triton import bsr_mm as mod
    from sparsekern._triton import configs

    try:
        tuner = mod._autotuner(N <= DECODE_MAX_N)
    except RuntimeError as e:  # Triton 3.2 looks up the GPU driver when an autotuner is defined
        import triton

        pytest.skip(f"Triton {triton.__version__} cannot define an autotuner without a GPU: {e}")
    ran = []
    # The instance attribute shadows the (lazily created, GPU-driver) benchmarker.
    monkeypatch.setitem(vars(tuner), "do_bench", lambda fn, quantiles: (fn(), ran.append(1), [1.0, 1.0, 1.0])[2])
    monkeypatch.setattr(tuner, "configs", tuner.configs[::-1])  # decode: the largest split first
    monkeypatch.setattr(tuner, "cache", {})
    M, K = 40, 70
    W = random_block_sparse(M, K, (16, 32), 0.6, torch.float16, _device())
    A = sk.BSRMatrix.from_dense(W, (16, 32))
    x = torch.randn(N, K, dtype=torch.float16, device=_device())
    bias = torch.randn(M, dtype=torch.float16, device=_device())
    out = torch.empty(N, M, dtype=torch.float16, device=_device())
    mod._launch(A.crow_indices, A.col_indices, A.values, M, x.t(), bias, out.t(), config=None)
    assert_close(out, x.double() @ W.double().T + bias.double(), torch.float16, k=K)
    assert len(ran) > 1
    entry = mod.tuned_entries()[(M, K, configs.n_bucket(N), 16, 32, "float16")]
    assert entry["SPLIT_K"] == (8 if N <= DECODE_MAX_N else 1)


@pytest.mark.triton
def test_triton_launchers_reject():
    from sparsekern._triton.bsr_mm import bsr_linear, bsr_mm

    crow, col, val, M, B = _good()
    with pytest.raises(TypeError, match="sparsekern.bsr_mm: values and B must have the same dtype"):
        bsr_mm(crow, col, val, M, B.half())
    with pytest.raises(ValueError, match="sparsekern.bsr_mm: B must be 2-D"):
        bsr_mm(crow, col, val, M, B[0])
    with pytest.raises(ValueError, match=r"sparsekern.bsr_mm: crow_indices must have ceil\(M / bm\) \+ 1"):
        bsr_mm(crow, col, val, 70, B)
    with pytest.raises(ValueError, match=r"sparsekern.bsr_linear: bias must have M = 40 entries"):
        bsr_linear(B.t().contiguous(), crow, col, val, M, torch.randn(3))


def test_triton_configs():
    from sparsekern._triton import configs

    assert [configs.n_bucket(n) for n in (1, 16, 17, 4096)] == [1, 16, 32, 4096]
    decode = configs.bsr_mm_candidates(decode=True)
    assert {c.kwargs["BLOCK_N"] for c in decode} == {16} and {c.kwargs["SPLIT_K"] for c in decode} == {1, 2, 4, 8}
    wide = configs.bsr_mm_candidates(decode=False)
    half, single = torch.empty(0, dtype=torch.float16), torch.empty(0, dtype=torch.float32)
    kept = configs.bsr_mm_prune(wide, {"N": 40, "val_ptr": half}, BM_P2=128, BK_P2=128)
    assert kept and all(c.kwargs["BLOCK_N"] <= 64 for c in kept)
    assert all(c.num_warps == 8 for c in kept if c.kwargs["BLOCK_N"] == 128)
    # fp32 128 x 128 blocks: a 128-wide tile with 4 buffers would need 4 * 128 KiB of shared memory.
    kept = configs.bsr_mm_prune(wide, {"N": 4096, "val_ptr": single}, BM_P2=128, BK_P2=128)
    assert kept and all(max(1, c.num_stages - 1) * (128 * 128 + 128 * c.kwargs["BLOCK_N"]) * 4 <= 163 * 1024 for c in kept)
    assert len(kept) < len(wide)
    entry = {"BLOCK_N": 64, "SPLIT_K": 1, "num_warps": 8, "num_stages": 4}
    table = {"GPU X": {(4096, 4096, 32, 64, 64, "float16"): entry}}
    orig, configs.BSR_MM_TUNED = configs.BSR_MM_TUNED, table
    try:
        assert configs.bsr_mm_tuned("GPU X", 4096, 4096, 20, 64, 64, "float16") == entry  # N=20 -> bucket 32
        assert configs.bsr_mm_tuned("GPU X", 4096, 4096, 64, 64, 64, "float16") is None
        assert configs.bsr_mm_tuned("GPU Y", 4096, 4096, 20, 64, 64, "float16") is None
    finally:
        configs.BSR_MM_TUNED = orig


def test_tuned_table_file(tmp_path, monkeypatch):
    """The file `bsr_mm_tune --out` writes loads into the tuned table (SPARSEKERN_BSR_MM_TUNED does this at import)."""
    from sparsekern._triton import bsr_mm_tune, configs

    monkeypatch.setattr(configs, "BSR_MM_TUNED", {"GPU X": {(8, 8, 16, 16, 16, "float16"): {}}})
    entry = {"BLOCK_N": 16, "SPLIT_K": 4, "num_warps": 2, "num_stages": 5}
    path = tmp_path / "tuned.py"
    bsr_mm_tune.write_table(str(path), "GPU X", {(4096, 11008, 1, 64, 64, "bfloat16"): entry}, "test")
    configs.load_bsr_mm_tuned(path)
    assert configs.bsr_mm_tuned("GPU X", 4096, 11008, 1, 64, 64, "bfloat16") == entry
    assert configs.bsr_mm_tuned("GPU X", 8, 8, 9, 16, 16, "float16") == {}  # entries already there are kept

    # The environment, read at import: that table, and SPARSEKERN_AUTOTUNE=0 turning the autotuner off.
    import subprocess
    import sys

    code = ("from sparsekern._triton import configs; "
            "print(configs.AUTOTUNE, configs.bsr_mm_tuned('GPU X', 4096, 11008, 1, 64, 64, 'bfloat16'))")
    env = {**os.environ, "SPARSEKERN_BSR_MM_TUNED": str(path), "SPARSEKERN_AUTOTUNE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    autotune, table_entry = out.split(" ", 1)
    assert autotune == "False" and ast.literal_eval(table_entry) == entry


def test_tune_tool_needs_a_gpu(capsys):
    from sparsekern._triton import bsr_mm_tune

    assert bsr_mm_tune._pairs("4096x4096,11008x4096") == [(4096, 4096), (11008, 4096)]
    if not torch.cuda.is_available():
        assert bsr_mm_tune.main(["--ns", "1"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- CUDA


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize", [(16, 16), (32, 32), (64, 64), (128, 128)])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (257, 1000, 7), (1000, 257, 16), (512, 512, 300)])
@pytest.mark.parametrize("density", [0.0, 0.1, 1.0])
def test_bsr_mm_cuda(dtype, blocksize, M, K, N, density, default_configs, poison_cuda):
    W = random_block_sparse(M, K, blocksize, density, dtype, "cuda")
    A = sk.BSRMatrix.from_dense(W, blocksize)
    B = torch.randn(K, N, device="cuda").to(dtype)
    assert_close(sk.ops.bsr_mm(A, B), reference_mm(W, B), _tol_dtype(dtype), k=K)
    x = torch.randn(3, N, K, device="cuda").to(dtype)
    bias = torch.randn(M, device="cuda").to(dtype)
    ref = x.double() @ W.double().T + bias.double()
    assert_close(sk.ops.sparse_linear(x, A, bias), ref, _tol_dtype(dtype), k=K)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("N", [8, 200])
def test_bsr_mm_cuda_every_candidate_config(monkeypatch, N, poison_cuda):
    """Each autotune candidate (the autotuner only times them) gives the right result, split-K included."""
    from sparsekern._triton import bsr_mm as mod
    from sparsekern._triton import configs

    M, K = 300, 500
    W = random_block_sparse(M, K, (64, 64), 0.5, torch.float16, "cuda")
    A = sk.BSRMatrix.from_dense(W, (64, 64))
    B = torch.randn(K, N, device="cuda", dtype=torch.float16)
    ref = reference_mm(W, B)
    for c in configs.bsr_mm_candidates(decode=N <= DECODE_MAX_N):
        cfg = {**c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages}
        monkeypatch.setattr(configs, "bsr_mm_tuned", lambda *args, cfg=cfg: cfg)
        assert_close(mod.bsr_mm(A.crow_indices, A.col_indices, A.values, M, B), ref, torch.float16, k=K)


@requires_cuda
@pytest.mark.cuda
def test_bsr_mm_cuda_autotuned(monkeypatch):
    from sparsekern._triton import bsr_mm as mod
    from sparsekern._triton import configs

    monkeypatch.setattr(configs, "AUTOTUNE", True)
    monkeypatch.setattr(configs, "BSR_MM_TUNED", {})
    M, K = 512, 768
    W = random_block_sparse(M, K, (32, 32), 0.8, torch.bfloat16, "cuda")
    A = sk.BSRMatrix.from_dense(W, (32, 32))
    for N in (4, 100):
        B = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
        assert_close(sk.ops.bsr_mm(A, B), reference_mm(W, B), torch.bfloat16, k=K)
        assert (M, K, configs.n_bucket(N), 32, 32, "bfloat16") in mod.tuned_entries()


# ---------------------------------------------------------------------------------------------- GPU code generation

# (arch, dtype, blocksize, BLOCK_N, SPLIT_K, num_warps, fp32 input precision)
_GPU_CONFIGS = [
    (90, "fp16", (64, 64), 64, 1, 4, None),  # prefill tile: wgmma on Hopper
    (90, "fp16", (64, 64), 16, 4, 4, None),  # decode: split-K
    (90, "bf16", (32, 32), 128, 1, 8, None),
    (90, "fp32", (128, 128), 64, 1, 8, "tf32"),
    (90, "fp16", (24, 40), 32, 1, 4, None),  # non-power-of-two block, padded in registers
    (80, "bf16", (16, 16), 32, 2, 4, None),
    (90, "fp16", (256, 256), 32, 1, 4, None),  # blocks over 128: 128-wide tiles (a whole block: 288 KiB)
    (90, "fp32", (256, 256), 16, 2, 4, "tf32"),
]


def _aot_case(arch, dtype, blocksize, block_n, split, num_warps, precision):
    from triton_aot import launch_case

    from sparsekern._triton.bsr_mm import _bsr_mm_kernel, _tile

    bm, bk = blocksize
    constexprs = dict(
        BM=bm, BK=bk, BM_P2=_tile(bm), BK_P2=_tile(bk), HAS_BIAS=True, PRECISION=precision, UPCAST=False,
        BLOCK_N=block_n, SPLIT_K=split, stride_vk=1, stride_bn=1, stride_on=1,
    )
    pointers = {"crow_ptr": "*i32", "col_ptr": "*i32", "ws_ptr": "*fp32"}
    return launch_case(_bsr_mm_kernel, arch, dtype, constexprs, pointers, num_warps, unaligned=("n_bucket", "nblocks"))


@pytest.fixture(scope="module")
def gpu_code():
    """Every config of _GPU_CONFIGS compiled in one subprocess (see tests/triton_aot.py)."""
    from triton_aot import compile_in_subprocess

    pytest.importorskip("triton.backends.nvidia")
    return compile_in_subprocess("sparsekern._triton.bsr_mm", "_bsr_mm_kernel", [_aot_case(*c) for c in _GPU_CONFIGS])


@pytest.mark.triton
@pytest.mark.parametrize("config", range(len(_GPU_CONFIGS)))
def test_triton_bsr_mm_compiles_for_gpu(gpu_code, config):
    """Without a GPU: the kernel lowers to tensor-core instructions (wgmma for 64-row tiles on Hopper) with
    cp.async-pipelined loads of the blocks and B tiles, and fits an A100/H100's shared memory (227 KiB)."""
    arch, dtype, blocksize, *_ = _GPU_CONFIGS[config]
    result = gpu_code[config]
    if result.get("error", "").startswith("TypeError"):
        pytest.skip(f"this Triton's ahead-of-time compile API differs: {result['error']}")
    assert "error" not in result, result.get("error")
    ptx = result["ptx"]
    assert "wgmma.mma_async" in ptx if arch == 90 and blocksize[0] == 64 else "mma.sync" in ptx or "wgmma" in ptx
    assert "cp.async" in ptx
    assert result["shared"] <= 227 * 1024
