"""The GPU paths of csr_mm / csr_linear: every Triton kernel variant (under TRITON_INTERPRET=1 without a GPU) and
every CUDA kernel variant (forced one by one through SPARSEKERN_CSR_MM_CONFIG), against a float64 reference.

Variants: row order (given, permuted, absent), compact int16 columns (including columns >= 32768), decode widths
N in {1, 3, 8, 16}, prefill widths, the Linear orientation (x read in place, staged, copied), empty rows, 0% and
100% density, misaligned and strided operands, and unvalidated garbage that must not fault.
"""

import pytest
import torch
from conftest import DTYPES, assert_close, poison_cuda, random_sparse, requires_cuda  # noqa: F401

import sparsekern as sk

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STAGE_BYTES = 32 << 10  # kStageBytes in csrc/cuda/csr_mm.cu


def _matrix(M, K, sparsity, dtype, compact=False, device=DEVICE):
    W = random_sparse(M, K, sparsity, dtype, device)
    if M > 3 and sparsity < 1.0:
        W[M // 3] = 0  # an empty row in every matrix that has rows to spare
    return W, sk.CSRMatrix.from_dense(W, col_dtype=torch.int16 if compact else None)


def _order(A, how):
    if how == "none":
        return None
    if how == "sorted":
        return A.row_order
    return torch.randperm(A.shape[0], device=A.device).to(A.crow_indices.dtype)


# ---------------------------------------------------------------------------------------------- Triton


@pytest.mark.triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 3, 8, 16, 40])
@pytest.mark.parametrize("M,K,sparsity", [(1, 1, 0.0), (7, 33, 1.0), (33, 20, 0.0), (33, 70, 0.9)])
def test_triton_csr_mm_variants(dtype, N, M, K, sparsity):
    from sparsekern._triton.csr_mm import csr_mm

    W, A = _matrix(M, K, sparsity, dtype, compact=N % 2 == 1)
    B = torch.randn(K, N, device=DEVICE).to(dtype)
    for how in ("none", "sorted", "random"):
        out = csr_mm(A.crow_indices, A.col_indices, A.values, B, _order(A, how))
        assert out.shape == (M, N)
        assert_close(out, W.double() @ B.double(), dtype, k=K)


@pytest.mark.triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 5, 16, 20])
def test_triton_csr_linear_variants(dtype, T):
    from sparsekern._triton.csr_mm import csr_linear

    for compact in (False, True):
        W, A = _matrix(19, 37, 0.8, dtype, compact)
        x = torch.randn(T, 37, device=DEVICE).to(dtype)
        bias = torch.randn(19, device=DEVICE).to(dtype)
        y = csr_linear(x, A.crow_indices, A.col_indices, A.values, bias, A.row_order)
        assert_close(y, x.double() @ W.double().T + bias.double(), dtype, k=37)


@pytest.mark.triton
@pytest.mark.parametrize("N", [2, 24])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_triton_compact_columns_past_32767(N, index_dtype):
    from sparsekern._triton.csr_mm import csr_linear, csr_mm
    from sparsekern._triton.csr_sddmm import csr_sddmm

    W = torch.zeros(3, 40000, device=DEVICE)
    W[0, [1, 32767, 32768, 39999]] = torch.tensor([1.0, 2.0, 3.0, 4.0], device=DEVICE)
    W[2, 35000] = -1.0
    A = sk.CSRMatrix.from_dense(W, index_dtype=index_dtype, col_dtype=torch.int16)
    B = torch.randn(40000, N, device=DEVICE)
    out = csr_mm(A.crow_indices, A.col_indices, A.values, B, A.row_order)
    assert_close(out, W.double() @ B.double(), torch.float32)
    y = csr_linear(B.t(), A.crow_indices, A.col_indices, A.values, None, A.row_order)
    assert_close(y, B.double().t() @ W.double().T, torch.float32)
    G = torch.randn(3, N, device=DEVICE)
    assert_close(csr_sddmm(A.crow_indices, A.col_indices, G, B), (G.double() @ B.double().T)[W != 0], torch.float32)


@pytest.mark.triton
@pytest.mark.parametrize("N", [4, 20])
def test_triton_skips_out_of_range_order_entries(N):
    """Unvalidated input: an order entry outside [0, M) is skipped (its program stores nothing), not followed."""
    from sparsekern._triton.csr_mm import csr_mm

    W, A = _matrix(9, 12, 0.5, torch.float32)
    order = A.row_order.clone()
    skipped = int(order[0])
    order[0] = 1000
    B = torch.randn(12, N, device=DEVICE)
    out = csr_mm(A.crow_indices, A.col_indices, A.values, B, order)
    keep = torch.arange(9, device=DEVICE) != skipped
    assert_close(out[keep], (W.double() @ B.double())[keep], torch.float32, k=12)


@pytest.mark.triton
@pytest.mark.parametrize("N", [4, 20])
def test_triton_clamps_row_pointers(N):
    """Unvalidated input: row pointers outside [0, nnz] are clamped to it, so the kernels read (and csr_sddmm
    writes) nothing outside the components; here that gives the product of the valid matrix."""
    from sparsekern._triton.csr_mm import csr_mm
    from sparsekern._triton.csr_sddmm import csr_sddmm

    W, A = _matrix(9, 12, 0.5, torch.float32)
    crow = A.crow_indices.clone()
    crow[0], crow[-1] = -40, A.nnz + 1000
    B = torch.randn(12, N, device=DEVICE)
    for order in (None, A.row_order):
        assert_close(csr_mm(crow, A.col_indices, A.values, B, order), W.double() @ B.double(), torch.float32, k=12)
    G = torch.randn(9, N, device=DEVICE)
    ref = (G.double() @ B.double().T)[W != 0]
    assert_close(csr_sddmm(crow, A.col_indices, G, B), ref, torch.float32, k=N)


@pytest.mark.triton
@pytest.mark.parametrize("T", [3, 20])
def test_triton_strided_components(T):
    """1-D components and bias that are strided views (the kernels index them as contiguous)."""
    from sparsekern._triton.csr_mm import csr_linear

    W, A = _matrix(19, 37, 0.6, torch.float32)
    val = torch.stack([A.values, -A.values], 1)[:, 0]
    bias = torch.randn(19, 2, device=DEVICE)[:, 1]
    x = torch.randn(T, 37, device=DEVICE)
    y = csr_linear(x, A.crow_indices, A.col_indices, val, bias, A.row_order)
    assert_close(y, x.double() @ W.double().T + bias.double(), torch.float32, k=37)


# ---------------------------------------------------------------------------------------------- CUDA

# Every CUDA kernel path: the default plan, then each kernel forced (see apply_override in csr_mm.cu).
CONFIGS = [None, "nz:1", "nz:4", "nz:32:global", "nz:32:staged", "rows:8", "rows:16", "rows:32"]


def _stage_fits(config, K, N, dtype):
    nt = 1
    while nt < min(N, 16):
        nt *= 2
    return config is None or not config.endswith("staged") or K * nt * dtype.itemsize <= STAGE_BYTES


@pytest.fixture
def kernel_config(monkeypatch):
    def use(config):
        if config is None:
            monkeypatch.delenv("SPARSEKERN_CSR_MM_CONFIG", raising=False)
        else:
            monkeypatch.setenv("SPARSEKERN_CSR_MM_CONFIG", config)

    yield use


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 7, 8, 16, 33, 128])
@pytest.mark.parametrize("compact", [False, True])
def test_cuda_csr_mm_paths(config, dtype, N, compact, kernel_config, poison_cuda):
    kernel_config(config)
    for (M, K), sparsity in [((1, 1), 0.0), ((7, 33), 1.0), ((33, 1000), 0.9), ((1000, 257), 0.5)]:
        W, A = _matrix(M, K, sparsity, dtype, compact)
        B = torch.randn(K, N, device="cuda").to(dtype)
        if not _stage_fits(config, K, N, dtype):
            with pytest.raises(ValueError, match="shared-memory budget"):
                sk.ops.csr_mm(A, B)
            continue
        for how in ("sorted", "none", "random"):
            out = torch.ops.sparsekern.csr_mm(A.crow_indices, A.col_indices, A.values, B, _order(A, how))
            assert_close(out, W.double() @ B.double(), dtype, k=K)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("config", [None, "nz:32:staged", "nz:4:global", "rows:16"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 2, 3, 8, 16, 17, 100])
@pytest.mark.parametrize("K", [33, 5000])
def test_cuda_csr_linear_paths(config, dtype, T, K, kernel_config, poison_cuda):
    """Decode: x staged, read in place (T <= 2) or copied; prefill: x^T copied, output written transposed."""
    kernel_config(config)
    W, A = _matrix(300, K, 0.9, dtype, compact=True)
    x = torch.randn(T, K, device="cuda").to(dtype)
    if not _stage_fits(config, K, T, dtype):
        with pytest.raises(ValueError, match="shared-memory budget"):
            sk.ops.sparse_linear(x, A)
        return
    bias = torch.randn(300, device="cuda").to(dtype)
    assert_close(sk.ops.sparse_linear(x, A, bias), x.double() @ W.double().T + bias.double(), dtype, k=K)
    xs = torch.randn(K, T, device="cuda").to(dtype).t()  # a column-major x
    assert_close(sk.ops.sparse_linear(xs, A), xs.double() @ W.double().T, dtype, k=K)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("T", [2, 3, 4])
def test_cuda_linear_default_staging(T, poison_cuda):
    """A matrix large next to x, so that the default plan stages x (read in place) into shared memory."""
    W, A = _matrix(2048, 2048, 0.3, torch.float16, compact=True)
    x = torch.randn(T, 2048, device="cuda").half()
    assert_close(sk.ops.sparse_linear(x, A), x.double() @ W.double().T, torch.float16, k=2048)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("N", [1, 8, 16, 64])
def test_cuda_misaligned_and_strided_operands(N, poison_cuda):
    """Components at odd offsets (scalar chunk loads), B with an odd offset / transposed (scalar B loads)."""
    W, A = _matrix(67, 90, 0.7, torch.float16)
    col = torch.cat([A.col_indices[:1], A.col_indices])[1:]
    val = torch.cat([A.values[:1], A.values])[1:]
    assert col.data_ptr() % 16 and val.data_ptr() % 16
    ref_B = torch.randn(90, N + 1, device="cuda").half()
    for B in (ref_B[:, 1:], ref_B[:, :N].t().contiguous().t(), ref_B[:, :N].contiguous()):
        out = torch.ops.sparsekern.csr_mm(A.crow_indices, col, val, B, A.row_order)
        assert_close(out, W.double() @ B.double(), torch.float16, k=90)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("N", [1, 16, 64])
def test_cuda_index_widths(N, poison_cuda):
    """int64 indices, and compact columns past 32767 (stored negative in int16)."""
    W = random_sparse(64, 40000, 0.995, torch.float16, "cuda")
    W[5, [0, 32767, 32768, 39999]] = 1.0
    B = torch.randn(40000, N, device="cuda").half()
    for A in (sk.CSRMatrix.from_dense(W, index_dtype=torch.int64), sk.CSRMatrix.from_dense(W, col_dtype=torch.int16),
              sk.CSRMatrix.from_dense(W, index_dtype=torch.int64, col_dtype=torch.int16)):
        assert_close(sk.ops.csr_mm(A, B), W.double() @ B.double(), torch.float16, k=200)
        assert_close(sk.ops.sparse_linear(B.t(), A), B.double().t() @ W.double().T, torch.float16, k=200)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("N", [1, 16, 256])
def test_cuda_one_long_row(N, poison_cuda):
    W = torch.zeros(500, 6000, device="cuda")
    W[3] = torch.randn(6000, device="cuda")
    W[499, :7] = 1.0
    A = sk.CSRMatrix.from_dense(W)
    B = torch.randn(6000, N, device="cuda")
    assert_close(sk.ops.csr_mm(A, B), W.double() @ B.double(), torch.float32, k=6000)


@requires_cuda
@pytest.mark.cuda
def test_cuda_unvalidated_garbage_does_not_fault():
    """Out-of-range columns, crow past nnz and order entries past M give wrong rows, never a fault (run this
    under compute-sanitizer to see it)."""
    W, A = _matrix(50, 40, 0.5, torch.float16)
    col = A.col_indices.clone()
    col[::7] = 40 + 3
    crow = A.crow_indices.clone()
    crow[-1] = A.nnz + 100
    order = A.row_order.clone()
    order[:3] = 1000
    for N in (1, 8, 40):
        B = torch.randn(40, N, device="cuda").half()
        torch.ops.sparsekern.csr_mm(crow, col, A.values, B, order)
        torch.ops.sparsekern.csr_linear(B.t(), crow, col, A.values, None, order)
    torch.cuda.synchronize()


@requires_cuda
@pytest.mark.cuda
def test_cuda_sddmm_entries_without_rows_do_not_fault():
    """Unvalidated crow = [0] with stored entries: G has no row to read, so every entry is 0 (not a read of G)."""
    crow = torch.zeros(1, dtype=torch.int32, device="cuda")
    col = torch.tensor([0, 1, 2], dtype=torch.int32, device="cuda")
    out = torch.ops.sparsekern.csr_sddmm(crow, col, torch.empty(0, 4, device="cuda"), torch.randn(3, 4, device="cuda"))
    torch.cuda.synchronize()
    assert out.shape == (3,) and bool((out == 0).all())


@requires_cuda
@pytest.mark.cuda
def test_cuda_linear_prefill_more_tiles_than_grid_y(poison_cuda):
    """T past 65535 * 32 tokens: the x^T copy needs more T tiles than gridDim.y allows, so blocks loop over them
    (T odd: a ragged last tile, zero padding up to the vector width)."""
    T, K = 65535 * 32 + 2881, 8
    W, A = _matrix(5, K, 0.4, torch.float16, compact=True)
    x = torch.randn(T, K, device="cuda").half()
    assert_close(sk.ops.sparse_linear(x, A), x.double() @ W.double().T, torch.float16, k=K)


@requires_cuda
@pytest.mark.cuda
def test_cuda_backward_compact_and_sddmm():
    W, A = _matrix(40, 30, 0.7, torch.float32, compact=True)
    A.values.requires_grad_(True)
    x = torch.randn(5, 30, device="cuda", requires_grad=True)
    sk.ops.sparse_linear(x, A).square().sum().backward()
    Wd = W.double().requires_grad_(True)
    xd = x.detach().double().requires_grad_(True)
    (xd @ Wd.T).square().sum().backward()
    assert_close(x.grad, xd.grad, torch.float32, k=40)
    assert_close(A.values.grad, Wd.grad[W != 0], torch.float32, k=5)


@requires_cuda
@pytest.mark.cuda
def test_cuda_sanitizer_sweep(kernel_config):
    """Every kernel instantiation on small shapes, for `compute-sanitizer --tool memcheck` (bench/gpu_check.sh):
    few launches, each touching its buffers' edges (odd sizes, empty rows, both index widths, ragged tiles)."""
    for config in CONFIGS:
        kernel_config(config)
        for dtype in DTYPES:
            for N in (1, 2, 4, 8, 16, 17, 40):
                W, A = _matrix(13, 29, 0.6, dtype, compact=N % 2 == 0)
                B = torch.randn(29, N, device="cuda").to(dtype)
                assert_close(sk.ops.csr_mm(A, B), W.double() @ B.double(), dtype, k=29)
                if config is None:
                    assert_close(sk.ops.sparse_linear(B.t(), A), B.double().t() @ W.double().T, dtype, k=29)
