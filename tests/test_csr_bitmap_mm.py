"""csr_bitmap_mm / csr_bitmap_linear (the tensor-core CSR kernel) and the bitmap of CSRMatrix: the bitmap's
encoding, the CPU decode kernel, the Triton kernel, split-K, autograd, the dispatch between the CSR kernels, and
the errors bad input must raise. The checks every op shares (float64 reference over tests/samples.py, opcheck,
compile) are in tests/test_ops.py."""

import pytest
import torch
from conftest import DTYPES, assert_close, poison_cuda, random_sparse, requires_cuda  # noqa: F401

import sparsekern as sk
from sparsekern.dispatch import use_bitmap_kernel


def reference_mm(W, B):
    return W.double() @ B.double()


def decode_bitmap(bitmap, K):
    """(M, K) bool from the words, bit b of word w <-> column 32 w + b, read independently of bitmap_of."""
    words = bitmap.long() & 0xFFFFFFFF
    bits = (words[:, :, None] >> torch.arange(32)) & 1
    return bits.reshape(bitmap.shape[0], -1)[:, :K].bool()


def components(A):
    return A.crow_indices, A.col_indices, A.values, A.bitmap


# ---------------------------------------------------------------------------------------------- the format


@pytest.mark.parametrize("M,K", [(1, 1), (7, 31), (5, 32), (9, 33), (40, 100), (3, 64)])
@pytest.mark.parametrize("col_dtype", [None, torch.int16])
def test_bitmap_marks_exactly_the_stored_columns(M, K, col_dtype):
    W = random_sparse(M, K, 0.6)
    W[:, -1] = 1.0  # bit 31 of full words (the int32 sign bit) and the last, partial word
    W[0] = 0  # an empty row
    A = sk.CSRMatrix.from_dense(W, col_dtype=col_dtype, bitmap=True)
    assert A.bitmap.dtype == torch.int32 and A.bitmap.shape == (M, -(-K // 32))
    assert torch.equal(decode_bitmap(A.bitmap, K), W != 0)
    assert not bool((decode_bitmap(A.bitmap, A.bitmap.shape[1] * 32)[:, K:]).any())  # no bits past K


def test_bitmap_follows_the_matrix():
    A = sk.CSRMatrix.from_dense(random_sparse(20, 45, 0.7))
    assert A.bitmap is None
    B = A.with_bitmap()
    assert B.values is A.values and B.col_indices is A.col_indices and B.with_bitmap() is B
    assert torch.equal(B.to("cpu").bitmap, B.bitmap)
    At = B.t()
    assert torch.equal(decode_bitmap(At.bitmap, 20), A.to_dense().t() != 0)
    assert "bitmap=True" in repr(B)
    T = sk.CSRMatrix.from_torch(A.to_dense().to_sparse_csr(), bitmap=True)
    assert torch.equal(T.bitmap, B.bitmap)


def test_mask_keeps_explicit_zeros_in_the_bitmap():
    W = random_sparse(6, 40, 0.5)
    mask = torch.ones(6, 40, dtype=torch.bool)
    A = sk.CSRMatrix.from_dense(W, mask=mask, bitmap=True)
    assert bool(decode_bitmap(A.bitmap, 40).all())


def test_bitmap_construction_rejects():
    A = sk.CSRMatrix.from_dense(random_sparse(4, 40, 0.5), bitmap=True)
    c, i, v, bm = components(A)
    with pytest.raises(TypeError, match="CSRMatrix: bitmap must be int32"):
        sk.CSRMatrix(c, i, v, A.shape, bitmap=bm.long())
    with pytest.raises(ValueError, match=r"CSRMatrix: bitmap must have shape \(M, ceil\(K / 32\)\) = \(4, 2\)"):
        sk.CSRMatrix(c, i, v, A.shape, bitmap=bm[:, :1])
    flipped = bm.clone()
    flipped[2, 1] ^= 1 << 3
    with pytest.raises(ValueError, match="CSRMatrix: bitmap does not match col_indices"):
        sk.CSRMatrix(c, i, v, A.shape, bitmap=flipped)
    unsorted = sk.CSRMatrix(torch.tensor([0, 2], dtype=torch.int32), torch.tensor([3, 1], dtype=torch.int32),
                            torch.ones(2), (1, 5))
    with pytest.raises(ValueError, match=r"with_bitmap: .*sorted, duplicate-free .* col_indices\[1\] = 1 follows 3"):
        unsorted.with_bitmap()
    duplicate = sk.CSRMatrix(torch.tensor([0, 2], dtype=torch.int32), torch.tensor([1, 1], dtype=torch.int32),
                             torch.ones(2), (1, 5))
    with pytest.raises(ValueError, match="duplicate-free"):
        duplicate.with_bitmap()


# ---------------------------------------------------------------------------------------------- CPU ops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [1, 31, 32, 33, 100, 257])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 1.0])
def test_csr_bitmap_cpu_decode_kernel(dtype, K, sparsity):
    """N <= 4 runs the CPU bitmap kernel on AVX-512 (expanded half words, zero-padded last word); N = 5, and every
    N on other CPUs, the CSR one."""
    M = 37
    W = random_sparse(M, K, sparsity, dtype)
    W[5] = 0
    A = sk.CSRMatrix.from_dense(W, bitmap=True, col_dtype=torch.int16)
    bias = torch.randn(M).to(dtype)
    for N in (1, 2, 3, 4, 5):
        B = torch.randn(N, K).to(dtype).t()  # column-major: the kernel reads it as N contiguous rows
        assert_close(torch.ops.sparsekern.csr_bitmap_mm(*components(A), B), reference_mm(W, B), dtype, k=K)
        x = torch.randn(K, N).to(dtype).t()
        y = torch.ops.sparsekern.csr_bitmap_linear(x, *components(A), bias)
        assert_close(y, x.double() @ W.double().T + bias.double(), dtype, k=K)


def test_csr_bitmap_cpu_rejects_a_bitmap_that_disagrees_with_crow():
    W = random_sparse(9, 70, 0.5)
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    bad = A.bitmap.clone()
    bad[6, 2] ^= 1 << 2  # one bit more or less in row 6
    with pytest.raises(ValueError, match="sparsekern.csr_bitmap_mm: bitmap does not match col_indices: row 6"):
        torch.ops.sparsekern.csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, bad, torch.randn(70, 2))
    with pytest.raises(ValueError, match="sparsekern.csr_bitmap_linear: bitmap does not match col_indices: row 6"):
        torch.ops.sparsekern.csr_bitmap_linear(torch.randn(1, 70), A.crow_indices, A.col_indices, A.values, bad, None)


@pytest.mark.parametrize("part", ["col", "bitmap", "crow"])
def test_csr_bitmap_cpu_rechecks_a_pattern_written_in_place(part):
    # The pattern check runs once per weight (csrc/cpu/checked_patterns.h): an in-place write after a passing call
    # bumps the tensor's version, so the next call checks again. Inference tensors have no version: always checked.
    W = random_sparse(9, 70, 0.5)
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    crow, col, bitmap = A.crow_indices.clone(), A.col_indices.clone(), A.bitmap.clone()
    for N in (2, 9):  # the bitmap kernel and the CSR loop
        B = torch.randn(70, N)
        assert_close(torch.ops.sparsekern.csr_bitmap_mm(crow, col, A.values, bitmap, B), reference_mm(W, B),
                     torch.float32, k=70)
    row = 6
    start, end = int(crow[row]), int(crow[row + 1])
    with torch.no_grad():
        if part == "col":
            col[start + 1] = col[start]  # a duplicate column: its bit count still matches
        elif part == "bitmap":
            first = int(col[start])
            free = min(set(range(70)) - set(col[start:end].tolist()))
            bitmap[row, first >> 5] ^= 1 << (first & 31)  # the row's first bit moves to a column it does not store
            bitmap[row, free >> 5] ^= 1 << (free & 31)
        else:
            crow[row + 1] -= 1  # row 6 one entry shorter, row 7 one longer
    for N in (2, 9):
        with pytest.raises(ValueError, match="sparsekern.csr_bitmap_mm: "):
            torch.ops.sparsekern.csr_bitmap_mm(crow, col, A.values, bitmap, torch.randn(70, N))
    with torch.inference_mode():
        col = A.col_indices.clone()
        x = torch.randn(1, 70)
        torch.ops.sparsekern.csr_bitmap_linear(x, A.crow_indices, col, A.values, A.bitmap, None)
        col[start + 1] = col[start]
        with pytest.raises(ValueError, match="sparsekern.csr_bitmap_linear: "):
            torch.ops.sparsekern.csr_bitmap_linear(x, A.crow_indices, col, A.values, A.bitmap, None)


@pytest.mark.parametrize("linear", [False, True])
def test_csr_bitmap_backward_matches_dense(linear):
    W = random_sparse(30, 50, 0.7)
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    val = A.values.clone().requires_grad_(True)
    B = torch.randn(50, 6, requires_grad=True)
    bias = torch.randn(30, requires_grad=True)
    if linear:
        out = torch.ops.sparsekern.csr_bitmap_linear(B.t(), A.crow_indices, A.col_indices, val, A.bitmap, bias)
    else:
        out = torch.ops.sparsekern.csr_bitmap_mm(A.crow_indices, A.col_indices, val, A.bitmap, B)
    g = torch.randn_like(out)
    out.backward(g)
    Wd = W.double().requires_grad_(True)
    Bd = B.detach().double().requires_grad_(True)
    bd = bias.detach().double().requires_grad_(True)
    ref = Bd.t() @ Wd.t() + bd if linear else Wd @ Bd
    ref.backward(g.double())
    assert_close(B.grad, Bd.grad, torch.float32, k=30)
    assert_close(val.grad, Wd.grad[W != 0], torch.float32, k=6)
    if linear:
        assert_close(bias.grad, bd.grad, torch.float32, k=6)


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda bm: bm.long(), TypeError, "sparsekern.csr_bitmap_mm: bitmap must be int32"),
        (lambda bm: bm[:, :1], ValueError, r"sparsekern.csr_bitmap_mm: bitmap must have shape \(M, ceil\(K / 32\)\)"),
        (lambda bm: bm[:-1], ValueError, r"sparsekern.csr_bitmap_mm: bitmap must have shape"),
        (lambda bm: bm.view(-1), ValueError, r"sparsekern.csr_bitmap_mm: bitmap must have shape"),
    ],
)
def test_csr_bitmap_ops_reject(mutate, exc, match):
    A = sk.CSRMatrix.from_dense(random_sparse(6, 40, 0.5), bitmap=True)
    with pytest.raises(exc, match=match):
        torch.ops.sparsekern.csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, mutate(A.bitmap), torch.randn(40, 3))
    with pytest.raises(exc, match=match.replace("csr_bitmap_mm", "csr_bitmap_linear")):
        torch.ops.sparsekern.csr_bitmap_linear(torch.randn(3, 40), A.crow_indices, A.col_indices, A.values,
                                               mutate(A.bitmap), None)


def test_validate_checks_the_bitmap():
    A = sk.CSRMatrix.from_dense(random_sparse(6, 40, 0.5), bitmap=True)
    bad = A.bitmap.clone()
    bad[0, 0] ^= 1
    A.bitmap = bad
    with pytest.raises(ValueError, match="sparsekern.csr_mm: bitmap does not match"):
        sk.ops.csr_mm(A, torch.randn(40, 2), validate=True)
    with pytest.raises(ValueError, match="sparsekern.sparse_linear: bitmap does not match"):
        sk.ops.sparse_linear(torch.randn(2, 40), A, validate=True)


# ---------------------------------------------------------------------------------------------- dispatch


def test_dispatch_takes_the_bitmap_kernel_only_where_it_can_win(monkeypatch):
    def A(sparsity, bitmap=True, dtype=torch.float16):
        # Only shape, nnz, dtype and the bitmap's presence matter: a stand-in with those fields.
        M = K = 4096
        nnz = round((1 - sparsity) * M * K)
        return type("A", (), dict(shape=(M, K), nnz=nnz, dtype=dtype, bitmap=object() if bitmap else None,
                                  values=torch.empty(0, dtype=dtype)))()

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert use_bitmap_kernel(A(0.5), 128, cuda)  # dense-ish, wide: tensor cores
    assert not use_bitmap_kernel(A(0.95), 1, cuda)  # very sparse decode: CSR reads the fewest bytes
    assert not use_bitmap_kernel(A(0.5, bitmap=False), 128, cuda)
    assert not use_bitmap_kernel(A(0.5, dtype=torch.float32), 128, cuda)  # fp32 stays exact (no TF32)
    # CPU decode: the measured crossovers of the AVX-512 kernel; without AVX-512 always the CSR kernel.
    monkeypatch.setattr(sk.dispatch, "cpu_isa", lambda: "avx512")
    assert use_bitmap_kernel(A(0.5, dtype=torch.float32), 1, cpu)
    assert use_bitmap_kernel(A(0.9, dtype=torch.float32), 2, cpu)
    assert not use_bitmap_kernel(A(0.9, dtype=torch.float32), 1, cpu)
    assert not use_bitmap_kernel(A(0.9, dtype=torch.float32), 4, cpu)
    assert not use_bitmap_kernel(A(0.95, dtype=torch.float32), 1, cpu)
    assert not use_bitmap_kernel(A(0.5, dtype=torch.float32), 5, cpu)  # wider N: the CSR kernel
    for isa in ("avx2", "base"):
        monkeypatch.setattr(sk.dispatch, "cpu_isa", lambda isa=isa: isa)
        assert not use_bitmap_kernel(A(0.5, dtype=torch.float32), 1, cpu)


@pytest.mark.parametrize("N", [1, 2, 4, 9])
def test_entry_points_with_a_bitmap_on_cpu(N):
    """sk.ops.csr_mm / sparse_linear give the same product whichever CPU kernel the dispatch picks."""
    W = random_sparse(20, 70, 0.5)
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    B = torch.randn(70, N)
    assert_close(sk.ops.csr_mm(A, B), reference_mm(W, B), torch.float32, k=70)
    assert_close(sk.ops.sparse_linear(B.t(), A), (W.double() @ B.double()).t(), torch.float32, k=70)


def nonfinite_case(device="cpu"):
    """A half-sparse (6, 70) matrix whose stored columns avoid 3, 40 and 69, a stored explicit zero at (2, 10), and
    B (70, 5) holding Inf, NaN and -Inf in those unstored columns, -Inf in stored column 10 and Inf in column 20,
    which only row 4 stores. The expected product is torch.sparse's: unstored entries never touch B."""
    W = random_sparse(6, 70, 0.5)
    W[:, [3, 40, 69]] = 0
    W[:, [10, 20]] = 0
    W[4, 20] = 1.5
    mask = W != 0
    mask[2, 10] = True  # stored zero: 0 * -Inf is NaN in row 2 only
    A = sk.CSRMatrix.from_dense(W, mask=mask, bitmap=True)
    B = torch.randn(70, 5)
    B[3, :] = float("inf")
    B[40, 1] = float("nan")
    B[69, 4] = float("-inf")
    B[10, 0] = float("-inf")
    B[20, 2] = float("inf")
    expected = (A.to_torch().double() @ B.double()).to(device)
    assert bool(expected[[0, 1, 3, 5]].isfinite().all()) and bool(expected[2, 0].isnan())
    assert expected[4, 2] == float("inf")
    return A.to(device), B.to(device), expected


@pytest.mark.parametrize("N", [1, 4, 5])
def test_unstored_entries_do_not_touch_nonfinite_inputs_cpu(N):
    """Issue 14: the bitmap kernel (N <= 4) once multiplied zero-filled tiles by every element of B, so an Inf or
    NaN at a column no row stores gave NaN where the CSR kernel and torch.sparse give finite values."""
    A, B, expected = nonfinite_case()
    B, expected = B[:, :N].contiguous(), expected[:, :N]
    for out in (torch.ops.sparsekern.csr_bitmap_mm(*components(A), B), sk.ops.csr_mm(A, B),
                torch.ops.sparsekern.csr_bitmap_linear(B.t(), *components(A), None).t(),
                sk.ops.sparse_linear(B.t(), A).t()):
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5, equal_nan=True)


# ---------------------------------------------------------------------------------------------- Triton kernel

# On a GPU the Triton tests run the compiled kernel on CUDA tensors, else the interpreter on CPU tensors.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def triton_tol_dtype(dtype):
    """The dtype whose tolerance applies: on a GPU, fp32 operands of tl.dot are TF32 (10-bit mantissa)."""
    return torch.float16 if dtype == torch.float32 and DEVICE == "cuda" else dtype


# (BLOCK_M, BLOCK_N, SPLIT_K): one tile, a split per word range, more splits than words (empty splits).
CONFIGS = [(16, 16, 1), (32, 32, 3), (16, 16, 8)]


def _config(block_m, block_n, split):
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "SPLIT_K": split, "num_warps": 4, "num_stages": 2}


@pytest.mark.triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 33, 5), (33, 100, 40), (40, 64, 17)])
@pytest.mark.parametrize("sparsity", [0.0, 0.7, 1.0])
def test_triton_csr_bitmap_mm_and_linear(dtype, M, K, N, sparsity):
    from sparsekern._triton.csr_bitmap_mm import csr_bitmap_linear, csr_bitmap_mm

    W = random_sparse(M, K, sparsity, dtype, DEVICE)
    W[M // 2] = 0
    A = sk.CSRMatrix.from_dense(W, bitmap=True, col_dtype=torch.int16)
    B = torch.randn(K, N, device=DEVICE).to(dtype)
    t = triton_tol_dtype(dtype)
    assert_close(csr_bitmap_mm(*components(A), B), reference_mm(W, B), t, k=K)
    x, bias = torch.randn(N, K, device=DEVICE).to(dtype), torch.randn(M, device=DEVICE).to(dtype)
    assert_close(csr_bitmap_linear(x, *components(A), bias), x.double() @ W.double().T + bias.double(), t, k=K)


@pytest.mark.triton
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_triton_csr_bitmap_configs(config, index_dtype):
    """Every split of the words (the popcount of the words before a split finds its start), ragged tiles in M,
    N and K, int64 row pointers, a column-major B, bias added once after the split-K sum."""
    from sparsekern._triton.csr_bitmap_mm import csr_bitmap_linear, csr_bitmap_mm

    M, K, N = 37, 161, 19
    W = random_sparse(M, K, 0.6, device=DEVICE)
    W[3, :] = torch.randn(K, device=DEVICE)  # a full row: every bit of every word, the sign bit included
    A = sk.CSRMatrix.from_dense(W, bitmap=True, index_dtype=index_dtype)
    B = torch.randn(N, K, device=DEVICE).t()
    t = triton_tol_dtype(torch.float32)
    assert_close(csr_bitmap_mm(*components(A), B, config=_config(*config)), reference_mm(W, B), t, k=K)
    x, bias = torch.randn(N, K, device=DEVICE), torch.randn(M, device=DEVICE)
    out = csr_bitmap_linear(x, *components(A), bias, config=_config(*config))
    assert_close(out, x.double() @ W.double().T + bias.double(), t, k=K)


@pytest.mark.triton
@pytest.mark.parametrize("M,K,N", [(0, 5, 3), (4, 0, 3), (4, 0, 1), (4, 5, 0)])
def test_triton_csr_bitmap_zero_sized(M, K, N):
    from sparsekern._triton.csr_bitmap_mm import csr_bitmap_mm

    A = sk.CSRMatrix.from_dense(torch.randn(M, K, device=DEVICE), bitmap=True)
    out = csr_bitmap_mm(*components(A), torch.randn(K, N, device=DEVICE))
    assert out.shape == (M, N) and not bool(out.ne(0).any())


@pytest.mark.triton
def test_triton_csr_bitmap_inconsistent_bitmap_stays_in_bounds():
    """An unvalidated bitmap that claims more entries than the rows hold: a word that would reach past its row's
    values is dropped, so no row reads another row's values (or past the end), whatever it computes."""
    from sparsekern._triton.csr_bitmap_mm import csr_bitmap_mm

    W = torch.zeros(4, 64, device=DEVICE)
    W[1, 5] = 2.0
    W[2, 0] = 3.0
    A = sk.CSRMatrix.from_dense(W)
    bitmap = torch.full((4, 2), -1, dtype=torch.int32, device=DEVICE)  # every bit set
    bitmap[2] = torch.tensor([1, 0], dtype=torch.int32)  # row 2's own, consistent word
    B = torch.ones(64, 16, device=DEVICE)
    for split in (1, 2):
        out = csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, bitmap, B, config=_config(16, 16, split))
        assert torch.equal(out[[0, 1, 3]].cpu(), torch.zeros(3, 16))
        assert torch.equal(out[2].cpu(), torch.full((16,), 3.0))


@pytest.mark.triton
def test_triton_csr_bitmap_strided_components():
    """A bitmap, values and bias that are strided views (the kernel indexes them as contiguous)."""
    from sparsekern._triton.csr_bitmap_mm import csr_bitmap_linear

    W = random_sparse(20, 70, 0.5, device=DEVICE)
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    bitmap = torch.stack([A.bitmap, ~A.bitmap], 1)[:, 0]
    val = torch.stack([A.values, -A.values], 1)[:, 0]
    bias = torch.randn(20, 2, device=DEVICE)[:, 1]
    x = torch.randn(24, 70, device=DEVICE)
    y = csr_bitmap_linear(x, A.crow_indices, A.col_indices, val, bitmap, bias, config=_config(16, 32, 1))
    assert_close(y, x.double() @ W.double().T + bias.double(), triton_tol_dtype(torch.float32), k=70)


@pytest.mark.triton
def test_triton_csr_bitmap_launchers_reject():
    from sparsekern._triton.csr_bitmap_mm import csr_bitmap_linear, csr_bitmap_mm

    A = sk.CSRMatrix.from_dense(random_sparse(6, 40, 0.5), bitmap=True)
    with pytest.raises(ValueError, match=r"sparsekern.csr_bitmap_mm: bitmap must have shape"):
        csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, A.bitmap[:, :1], torch.randn(40, 3))
    with pytest.raises(TypeError, match="sparsekern.csr_bitmap_mm: values and B must have the same dtype"):
        csr_bitmap_mm(*components(A), torch.randn(40, 3).half())
    with pytest.raises(ValueError, match=r"sparsekern.csr_bitmap_linear: bias must have M = 6 entries"):
        csr_bitmap_linear(torch.randn(3, 40), *components(A), torch.randn(5))


# ---------------------------------------------------------------------------------------------- GPU code generation

# (arch, dtype, BLOCK_M, BLOCK_N, SPLIT_K, num_warps)
_GPU_CONFIGS = [
    (90, "fp16", 64, 128, 1, 4),  # prefill
    (90, "bf16", 128, 256, 1, 8),
    (90, "fp16", 32, 16, 4, 4),  # decode: split-K
    (80, "fp16", 64, 64, 1, 4),
    (80, "bf16", 16, 16, 8, 2),
]


def _aot_case(arch, dtype, block_m, block_n, split, num_warps):
    from triton_aot import launch_case

    from sparsekern._triton.csr_bitmap_mm import _csr_bitmap_mm_kernel

    constexprs = dict(HAS_BIAS=True, PRECISION=None, UPCAST=False, BLOCK_M=block_m, BLOCK_N=block_n, SPLIT_K=split,
                      stride_bn=1, stride_on=1)
    pointers = {"crow_ptr": "*i32", "bitmap_ptr": "*i32", "ws_ptr": "*fp32"}
    return launch_case(_csr_bitmap_mm_kernel, arch, dtype, constexprs, pointers, num_warps,
                       unaligned=("n_bucket", "nnz"))


@pytest.fixture(scope="module")
def gpu_code():
    """Every config of _GPU_CONFIGS compiled in one subprocess (see tests/triton_aot.py)."""
    from triton_aot import compile_in_subprocess

    pytest.importorskip("triton.backends.nvidia")
    cases = [_aot_case(*c) for c in _GPU_CONFIGS]
    return compile_in_subprocess("sparsekern._triton.csr_bitmap_mm", "_csr_bitmap_mm_kernel", cases)


@pytest.mark.triton
@pytest.mark.parametrize("config", range(len(_GPU_CONFIGS)))
def test_triton_csr_bitmap_mm_compiles_for_gpu(gpu_code, config):
    """Without a GPU: the gathered tile reaches the tensor cores (mma / wgmma), the bit expansion stays in
    registers (no local-memory spills), and the kernel fits an A100/H100's shared memory."""
    result = gpu_code[config]
    if result.get("error", "").startswith("TypeError"):
        pytest.skip(f"this Triton's ahead-of-time compile API differs: {result['error']}")
    assert "error" not in result, result.get("error")
    ptx = result["ptx"]
    assert "mma.sync" in ptx or "wgmma.mma_async" in ptx
    assert "ld.local" not in ptx and "st.local" not in ptx
    assert result["shared"] <= 227 * 1024


# ---------------------------------------------------------------------------------------------- CUDA


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("N", [1, 64])
def test_csr_bitmap_autotuner_cuda(N, poison_cuda):
    """The autotuner path (config=None), which the grid above skips under SPARSEKERN_AUTOTUNE=0."""
    from sparsekern._triton.csr_bitmap_mm import csr_bitmap_mm

    W = random_sparse(512, 1024, 0.7, torch.float16, "cuda")
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    B = torch.randn(1024, N, device="cuda", dtype=torch.float16)
    assert_close(csr_bitmap_mm(*components(A), B, config=None), reference_mm(W, B), torch.float16, k=1024)


@requires_cuda
@pytest.mark.cuda
def test_csr_bitmap_cuda_backward_and_opcheck():
    W = random_sparse(40, 70, 0.6, torch.float16, "cuda")
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    val = A.values.clone().requires_grad_(True)
    x = torch.randn(5, 70, device="cuda", dtype=torch.float16, requires_grad=True)
    torch.ops.sparsekern.csr_bitmap_linear(x, A.crow_indices, A.col_indices, val, A.bitmap, None).float().sum().backward()
    Wd = W.double().requires_grad_(True)
    xd = x.detach().double().requires_grad_(True)
    (xd @ Wd.T).sum().backward()
    assert_close(x.grad, xd.grad, torch.float16, k=40)
    assert_close(val.grad, Wd.grad[W != 0], torch.float16, k=5)
    torch.library.opcheck(torch.ops.sparsekern.csr_bitmap_mm.default, (*components(A), x.detach().t()))


@pytest.mark.triton
def test_triton_unstored_entries_do_not_touch_nonfinite_inputs():
    from sparsekern._triton.csr_bitmap_mm import csr_bitmap_linear, csr_bitmap_mm

    A, B, expected = nonfinite_case(DEVICE)
    t = triton_tol_dtype(torch.float32)
    rtol, atol = 1e-2 if t == torch.float16 else 1e-5, 1e-2 if t == torch.float16 else 1e-5
    config = _config(16, 16, 1)
    for out in (csr_bitmap_mm(*components(A), B, config=config),
                csr_bitmap_linear(B.t(), *components(A), None, config=config).t()):
        torch.testing.assert_close(out.double(), expected, rtol=rtol, atol=atol, equal_nan=True)
