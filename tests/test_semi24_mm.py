"""Semi24Matrix (2:4) and semi24_mm / semi24_linear: the format and its mma.sp metadata layout, an emulation of
how the CUDA kernel feeds mma.sp from it, bad input, and the CUDA kernels' particular paths (marked, skipped without
a GPU). The checks every op shares (float64 reference over tests/samples.py, opcheck, compile, backward) are in
tests/test_ops.py."""

import pytest
import torch
from conftest import DTYPES, assert_close, poison_cuda, requires_cuda  # noqa: F401

import sparsekern as sk
from sparsekern.formats import semi24_mma as emu
from sparsekern.formats.semi24 import EMPTY_NIBBLE, VALID_NIBBLES, pack_metadata, unpack_metadata

FILLS = ["partial", "full", "zero"]


def random_24(M, K, dtype=torch.float32, fill="partial", device="cpu"):
    """(M, K) 2:4 along K: "full" = exactly 2 nonzeros per group, "partial" = 0-2, "zero" = none."""
    G = -(-K // 4)
    keep = torch.rand(M, G, 4).argsort(-1)[..., :2]
    mask = torch.zeros(M, G, 4, dtype=torch.bool).scatter_(-1, keep, True)
    if fill == "partial":
        mask &= torch.rand(M, G, 4) > 0.3
    elif fill == "zero":
        mask[:] = False
    W = torch.randn(M, G * 4) * mask.view(M, G * 4)
    return W[:, :K].to(dtype).contiguous().to(device)


def reference_mm(W, B):
    return W.double() @ B.double()


# ---------------------------------------------------------------------------------------------- format


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K", [(1, 1), (7, 33), (33, 7), (32, 64), (70, 130), (100, 6)])
@pytest.mark.parametrize("fill", FILLS)
def test_round_trip(dtype, M, K, fill):
    W = random_24(M, K, dtype, fill)
    A = sk.Semi24Matrix.from_dense(W)
    Kp = -(-K // 64) * 64
    assert A.shape == (M, K) and A.dtype == dtype and A.device == W.device
    assert A.values.shape == (M, Kp // 2) and A.values.dtype == dtype
    assert A.metadata.shape == (-(-M // 32), Kp // 32, 32) and A.metadata.dtype == torch.int32
    assert A.nnz == M * -(-K // 4) * 2
    torch.testing.assert_close(A.to_dense(), W, rtol=0, atol=0)
    nib = unpack_metadata(A.metadata, M)
    assert bool(torch.isin(nib, torch.tensor(VALID_NIBBLES)).all())
    # Rows past M in the last 32-row block are encoded as empty groups.
    full = unpack_metadata(A.metadata, A.metadata.shape[0] * 32)
    assert bool((full[M:] == EMPTY_NIBBLE).all())
    sk.Semi24Matrix(A.values, A.metadata, A.shape)  # the validating constructor accepts what from_dense makes


def test_metadata_pack_unpack_round_trip():
    nib = torch.tensor(VALID_NIBBLES)[torch.randint(0, 6, (77, 48))]
    packed = pack_metadata(nib)
    assert packed.shape == (3, 6, 32)
    torch.testing.assert_close(unpack_metadata(packed, 77), nib, rtol=0, atol=0)


def test_layout_worked_example():
    """One nibble placed by hand from the module docstring's table: row 41 = block 1, tile 0, row g = 1 + 8
    (high half-word); group 13 = k32 step 1, half 1 (K 16-31), nibble 1 -> lane 4*1 + 0 + 1 = 5, bits 23..20."""
    W = torch.zeros(64, 64)
    W[41, 4 * 13 + 1] = 2.0
    W[41, 4 * 13 + 3] = -3.0  # indices (1, 3) -> 0b1101
    W[18, 4 * 2 + 0] = 1.0  # row 18: tile 1, g = 2, low; group 2: step 0, half 0 -> lane 4*2 + 2 = 10, bits 11..8
    A = sk.Semi24Matrix.from_dense(W)
    word = int(A.metadata[1, 1, 5]) & 0xFFFFFFFF
    assert (word >> 20) & 0xF == 0b1101
    assert (int(A.metadata[0, 0, 10]) >> 8) & 0xF == 0b1000  # idx (0, 2): the missing slot filled with column 2
    assert A.values[41, 26].item() == 2.0 and A.values[41, 27].item() == -3.0
    assert A.values[18, 4].item() == 1.0 and A.values[18, 5].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_matches_pytorch_cutlass_layout(dtype):
    """Same words as PyTorch's CUTLASS compressor, whose layout production sparse GEMMs feed to mma.sp: ours is
    (32-row block, k32 step, lane), CUTLASS's (k32 step, 32-row block, lane)."""
    conv = pytest.importorskip("torch.sparse._semi_structured_conversions")
    M, K = 96, 128
    W = random_24(M, K, dtype, "partial")
    sparse, meta = conv.sparse_semi_structured_from_dense_cutlass(W)
    A = sk.Semi24Matrix.from_dense(W)
    torch.testing.assert_close(A.values, sparse, rtol=0, atol=0)
    words = meta.reshape(-1).contiguous().view(torch.int32).view(K // 32, M // 32, 32).transpose(0, 1)
    assert torch.equal(A.metadata, words)


def test_from_dense_rejects_non_24():
    W = random_24(10, 20, fill="full")
    W[5, 8:11] = 1.0  # 3 nonzeros in group 2 of row 5
    W[7, 0:4] = 1.0
    with pytest.raises(ValueError, match=r"Semi24Matrix.from_dense: .*row 5, group 2 \(columns 8..11\) holds 3"):
        sk.Semi24Matrix.from_dense(W)
    W = torch.zeros(3, 7)
    W[2, 4:7] = 1.0  # ragged last group: columns 4..6
    with pytest.raises(ValueError, match=r"row 2, group 1 \(columns 4..6\) holds 3"):
        sk.Semi24Matrix.from_dense(W)
    with pytest.raises(ValueError, match="W must be 2-D"):
        sk.Semi24Matrix.from_dense(torch.zeros(4))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        sk.Semi24Matrix.from_dense(torch.zeros(4, 4, dtype=torch.float64))


def _good():
    A = sk.Semi24Matrix.from_dense(random_24(40, 70))
    return A.values.clone(), A.metadata.clone(), A.shape


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda v, m: (v, m.long()), TypeError, "metadata must be int32"),
        (lambda v, m: (v.double(), m), TypeError, "float32, float16 or bfloat16"),
        (lambda v, m: (v[:, :-1], m), ValueError, r"values must have padded K / 2 = 64 columns for K = 70"),
        (lambda v, m: (v, m[:1]), ValueError, "metadata must have shape"),
        (lambda v, m: (v, m.index_fill(2, torch.tensor([9]), 0)), ValueError, r"metadata of row \d+, group \d+ is 0b0000"),
        (lambda v, m: (v.index_fill(1, torch.tensor([63]), 1.0), m), ValueError, "padding columns"),
    ],
)
def test_constructor_rejects(mutate, exc, match):
    v, m, shape = _good()
    v, m = mutate(v, m)
    with pytest.raises(exc, match=f"Semi24Matrix: .*{match}"):
        sk.Semi24Matrix(v, m, shape)


def test_constructor_rejects_undefined_padding_rows():
    """Rows past M in the last 32-row block reach mma.sp too (the CUDA kernels load whole blocks): zero-padded
    metadata there (0b0000, undefined for the instruction) is refused, not only inside the shape."""
    v, m, shape = _good()  # M = 40: rows 40..63 of block 1 are padding
    nib = unpack_metadata(m, 64)
    nib[45, 3] = 0
    with pytest.raises(ValueError, match=r"Semi24Matrix: metadata of row 45 \(a padding row past M = 40.*0b0000"):
        sk.Semi24Matrix(v, pack_metadata(nib), shape)


def test_to_and_zero_sized():
    W = random_24(9, 12)
    A = sk.Semi24Matrix.from_dense(W).to(dtype=torch.bfloat16)
    assert A.dtype == torch.bfloat16 and A.metadata.dtype == torch.int32
    torch.testing.assert_close(A.to_dense().float(), W.bfloat16().float())
    for shape in [(0, 5), (5, 0), (0, 0)]:
        Z = sk.Semi24Matrix.from_dense(torch.zeros(shape))
        assert Z.to_dense().shape == shape and Z.nnz == 0


# ---------------------------------------------------------------------------------------------- emulation


def _fragments(A: sk.Semi24Matrix, B: torch.Tensor, mb: int, kb: int, tile: int, n0: int):
    """Registers of one m16n8k32 step assembled straight from the PTX fragment tables (not the kernel's path)."""
    v = A.values.double()
    row0 = 32 * mb + 16 * tile
    a = torch.zeros(32, 4, 2, dtype=torch.float64)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for reg in range(4):
            row = row0 + g + 8 * (reg & 1)
            group = t + 4 * (reg >> 1)  # dense columns 4*group.. of the step: compressed 2*group, +1
            a[lane, reg] = v[row, 16 * kb + 2 * group : 16 * kb + 2 * group + 2]
    b = torch.zeros(32, 4, 2, dtype=torch.float64)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for reg in range(4):
            b[lane, reg] = B[32 * kb + 8 * reg + 2 * t : 32 * kb + 8 * reg + 2 * t + 2, n0 + g]
    e = A.metadata[mb, kb].long() & 0xFFFFFFFF
    return a, b, e


@pytest.mark.parametrize("fill", ["partial", "full"])
def test_mma_model_consumes_layout(fill):
    """Every (32-row block, k32 step, tile = selector) of a matrix through the instruction model equals the dense
    product of the same 16x32 tile: the packed metadata and the derived lane facts agree with to_dense()."""
    M, K = 64, 96
    A = sk.Semi24Matrix.from_dense(random_24(M, K, fill=fill))
    Wd = A.to_dense().double()
    B = torch.randn(A.padded_k, 16, dtype=torch.float64)
    for mb in range(2):
        for kb in range(A.padded_k // 32):
            for tile in range(2):
                for n0 in (0, 8):
                    a, b, e = _fragments(A, B, mb, kb, tile, n0)
                    c = torch.randn(32, 4, dtype=torch.float64)
                    d = emu.mma_sp_m16n8k32(a, b, c, e, tile)
                    rows = slice(32 * mb + 16 * tile, 32 * mb + 16 * tile + 16)
                    Wt = torch.zeros(16, 32, dtype=torch.float64)
                    Wt[:, : max(0, min(32, K - 32 * kb))] = Wd[rows, 32 * kb : 32 * kb + 32]
                    ref = Wt @ B[32 * kb : 32 * kb + 32, n0 : n0 + 8]
                    expect = ref[emu.G[:, None] + 8 * (torch.arange(4) >> 1), 2 * emu.T[:, None] + (torch.arange(4) & 1)]
                    torch.testing.assert_close(d, expect + c)


def test_mma_model_rejects_undefined_metadata():
    A = sk.Semi24Matrix.from_dense(random_24(32, 32))
    a, b, e = _fragments(A, torch.randn(32, 8, dtype=torch.float64), 0, 0, 0, 0)
    e = e.clone()
    e[5] &= ~0xF  # lane 5 supplies for selector 0: nibble 0b0000
    with pytest.raises(ValueError, match="undefined metadata"):
        emu.mma_sp_m16n8k32(a, b, torch.zeros(32, 4, dtype=torch.float64), e, 0)
    emu.mma_sp_m16n8k32(a, b, torch.zeros(32, 4, dtype=torch.float64), e, 1)  # selector 1 ignores lane 5


def test_ldmatrix_model():
    smem = torch.arange(4 * 64, dtype=torch.float64)  # matrix i = rows 8i..8i+7 of a 32 x 8 array
    rows = 8 * emu.LANES
    r = emu.ldmatrix_x4(smem, rows)
    assert r[13, 2].tolist() == [8 * (16 + 3) + 2, 8 * (16 + 3) + 3]  # lane 13: row 3, elements 2, 3 of matrix 2
    rt = emu.ldmatrix_x4(smem, rows, trans=True)
    assert rt[13, 2].tolist() == [8 * (16 + 2) + 3, 8 * (16 + 3) + 3]  # column 3, rows 2 and 3


def test_swizzles_are_bijective_and_conflict_free():
    TC, DEC = emu.TC, emu.DEC
    r, c = torch.meshgrid(torch.arange(TC.BM), torch.arange(4), indexing="ij")
    assert TC.a_off(r, c).unique().numel() == TC.BM * 4
    k, c = torch.meshgrid(torch.arange(TC.BK), torch.arange(16), indexing="ij")
    assert TC.bk_off(k, c).unique().numel() == TC.BK * 16
    n, c = torch.meshgrid(torch.arange(TC.BN), torch.arange(8), indexing="ij")
    assert TC.bn_off(n, c).unique().numel() == TC.BN * 8
    r, c = torch.meshgrid(torch.arange(32), torch.arange(2), indexing="ij")
    assert DEC.a_off(r, c).unique().numel() == 64

    def conflict_free(rows):
        return all(emu.bank_groups(rows[8 * i : 8 * i + 8]).unique().numel() == 8 for i in range(4))

    for w in range(8):
        wm0, wn0 = (w // TC.WARPS_N) * TC.WM, (w % TC.WARPS_N) * TC.WN
        for ks in range(2):
            assert all(conflict_free(TC.a_rows(wm0, i, ks)) for i in range(TC.MT))
            for b_nmajor in (False, True):
                assert all(conflict_free(TC.b_rows(wn0, j, ks, b_nmajor)) for j in range(TC.NT))
    assert all(conflict_free(DEC.a_rows(i)) for i in range(2))


@pytest.mark.parametrize("b_nmajor", [False, True])
def test_tc_kernel_emulation(b_nmajor):
    """The tc kernel's cp.async chunk map, swizzles, ldmatrix addresses, E offsets, selector choice and epilogue,
    run through the models for every block of a ragged problem (partial 32-row block, skipped 32-row blocks,
    N and K not multiples of the tiles)."""
    M, N, K = 150, 136, 70
    A = sk.Semi24Matrix.from_dense(random_24(M, K, fill="partial"))
    W = A.to_dense().double()
    B = torch.randn(K, N, dtype=torch.float64)
    Bop = B.t().contiguous() if b_nmajor else B
    b_contig = -(-K // 8) * 8 if b_nmajor else -(-N // 8) * 8
    Bop = torch.nn.functional.pad(Bop, (0, b_contig - Bop.shape[1]))  # the launcher's vector_ready copy
    out = {}
    for m0 in range(0, M, emu.TC.BM):
        for n0 in range(0, N, emu.TC.BN):
            out.update(emu.tc_block(A.values.double(), A.metadata, Bop, b_nmajor, M, N, K, b_contig, m0, n0))
    assert len(out) == M * N
    got = torch.zeros(M, N, dtype=torch.float64)
    for (m, n), val in out.items():
        got[m, n] = val
    torch.testing.assert_close(got, W @ B)


@pytest.mark.parametrize("N", [1, 8, 13])
def test_decode_kernel_emulation(N):
    M, K = 40, 300  # 10 k32 steps over 8 warps: warps 0 and 1 take two
    A = sk.Semi24Matrix.from_dense(random_24(M, K, fill="partial"))
    W = A.to_dense().double()
    x = torch.randn(N, K, dtype=torch.float64)  # the (N, K) operand, K even: used as is
    out = {}
    for mb in range(-(-M // 32)):
        out.update(emu.decode_block(A.values.double(), A.metadata, x, M, N, K, mb, 1 if N <= 8 else 2))
    assert len(out) == M * N
    got = torch.zeros(M, N, dtype=torch.float64)
    for (m, n), val in out.items():
        got[m, n] = val
    torch.testing.assert_close(got, W @ x.t())


def test_simt_kernel_emulation():
    """The fp32 CUDA kernel's metadata decoding (word 4g + 2*tile + half, half-word hi, nibble j) for every output
    of a problem with a partial last 32-row block and a K tail inside the last k32 step."""
    M, K, N = 40, 130, 3
    A = sk.Semi24Matrix.from_dense(random_24(M, K, fill="partial"))
    B = torch.randn(K, N, dtype=torch.float64)
    v = A.values.double()
    got = [[emu.simt_output(v, A.metadata, B, K, m, n) for n in range(N)] for m in range(M)]
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), A.to_dense().double() @ B)


# ---------------------------------------------------------------------------------------------- CPU kernel


@pytest.mark.parametrize("N", [16, 48, 64, 100, 144])
def test_semi24_mm_column_panels(N):
    """B is staged as panels of the register tile's width (16, 32 or 64 columns by ISA), the last one narrower
    where N is not a multiple of it: every panel lands in its own output columns, over several 128-row K blocks
    and a K tail."""
    W = random_24(37, 301)
    A = sk.Semi24Matrix.from_dense(W)
    B = torch.randn(301, N)
    assert_close(sk.ops.semi24_mm(A, B), reference_mm(W, B), torch.float32, k=301)
    x = torch.randn(N, 301)
    assert_close(sk.ops.sparse_linear(x, A), x.double() @ W.double().T, torch.float32, k=301)


def test_semi24_mm_noncontiguous_operands():
    W = random_24(45, 64)
    A = sk.Semi24Matrix.from_dense(W)
    B = torch.randn(30, 64).t()  # (64, 30), column-major
    assert_close(sk.ops.semi24_mm(A, B), reference_mm(W, B), torch.float32, k=64)
    x = torch.randn(64, 7).t()  # (7, 64) view
    assert_close(sk.ops.sparse_linear(x, A), x.double() @ W.double().T, torch.float32, k=64)


# ---------------------------------------------------------------------------------------------- bad input


def _components():
    A = sk.Semi24Matrix.from_dense(random_24(6, 10))
    return A.values.clone(), A.metadata.clone(), torch.randn(10, 4)


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda v, m, B: (v, m, B.half()), TypeError, "same dtype"),
        (lambda v, m, B: (v.double(), m, B.double()), TypeError, "float32, float16 or bfloat16"),
        (lambda v, m, B: (v, m, B[None]), ValueError, "B must be 2-D"),
        (lambda v, m, B: (v.view(-1), m, B), ValueError, "values must be 2-D"),
        (lambda v, m, B: (v, m.long(), B), TypeError, "metadata must be int32"),
        (lambda v, m, B: (v, m[..., :16], B), ValueError, r"metadata must have shape \(1, 2, 32\)"),
        (lambda v, m, B: (v[:, :16], m, B), ValueError, "values must have padded K / 2 = 32 columns for K = 10"),
        (lambda v, m, B: (v, m, torch.randn(70, 4)), ValueError, "padded K / 2 = 64 columns for K = 70"),
    ],
)
def test_semi24_mm_op_rejects(mutate, exc, match):
    v, m, B = mutate(*_components())
    with pytest.raises(exc, match=f"sparsekern.semi24_mm: .*{match}"):
        torch.ops.sparsekern.semi24_mm(v, m, B)


def test_semi24_linear_op_rejects():
    v, m, _ = _components()
    with pytest.raises(ValueError, match="sparsekern.semi24_linear: bias must have M = 6"):
        torch.ops.sparsekern.semi24_linear(torch.randn(2, 10), v, m, torch.randn(4))
    with pytest.raises(TypeError, match="sparsekern.semi24_linear: values and bias must have the same dtype"):
        torch.ops.sparsekern.semi24_linear(torch.randn(2, 10), v, m, torch.randn(6).half())
    with pytest.raises(ValueError, match="sparsekern.semi24_linear: x must be 2-D"):
        torch.ops.sparsekern.semi24_linear(torch.randn(10), v, m, None)


def test_entry_points_validate():
    v, m, B = _components()
    bad = sk.Semi24Matrix(v, m.index_fill(2, torch.tensor([0]), 0x55555555), (6, 10), validate=False)
    with pytest.raises(ValueError, match="sparsekern.semi24_mm: metadata of row .* not an ordered index pair"):
        sk.ops.semi24_mm(bad, B, validate=True)
    with pytest.raises(ValueError, match="sparsekern.sparse_linear: metadata of row"):
        sk.ops.sparse_linear(torch.randn(2, 10), bad, validate=True)


def test_gpu_backend_is_declared():
    from sparsekern.ops._registry import GPU_BACKEND

    assert GPU_BACKEND["semi24_mm"] in ("cuda", "none")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("sparsekern::semi24_mm", "CUDA")
    if GPU_BACKEND["semi24_mm"] == "none":
        v, m, B = _components()
        with pytest.raises(RuntimeError, match="sparsekern.semi24_mm: this build of sparsekern has no CUDA kernels"):
            torch.ops.sparsekern.semi24_mm.default.redispatch(torch._C.DispatchKeySet("CUDA"), v, m, B)


# ---------------------------------------------------------------------------------------------- CUDA


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N", [1, 8, 16, 17, 64])
def test_semi24_decode_and_tc_paths_cuda(dtype, N, poison_cuda):
    """Decode (N <= 16) and tensor-core tile paths at a layer-like shape, against the CPU kernel too."""
    M, K = 1024, 4096
    W = random_24(M, K, dtype, "full", "cuda")
    A = sk.Semi24Matrix.from_dense(W)
    B = torch.randn(K, N, device="cuda").to(dtype)
    out = sk.ops.semi24_mm(A, B)
    assert_close(out, reference_mm(W, B), dtype, k=K)
    cpu = sk.ops.semi24_mm(A.to("cpu"), B.cpu())
    assert_close(out.cpu(), cpu.double(), dtype, k=K)
    x = torch.randn(N, K, device="cuda").to(dtype)
    assert_close(sk.ops.sparse_linear(x, A), x.double() @ W.double().T, dtype, k=K)


@requires_cuda
@pytest.mark.cuda
def test_semi24_cuda_unaligned_operands(poison_cuda):
    """Operands the kernels cannot read with vector loads as they are (odd N, odd K, views at odd offsets)."""
    W = random_24(70, 45, torch.float16, "partial", "cuda")
    A = sk.Semi24Matrix.from_dense(W)
    for N in (3, 21):
        Bbig = torch.randn(46, N + 1, device="cuda").half()
        B = Bbig[1:, 1:]
        assert_close(sk.ops.semi24_mm(A, B), reference_mm(W, B), torch.float16, k=45)
        x = torch.randn(N, 46, device="cuda").half()[:, 1:]
        assert_close(sk.ops.sparse_linear(x, A), x.double() @ W.double().T, torch.float16, k=45)


