"""A pure-torch emulation of how csrc/cuda/semi24_mm.cu feeds `mma.sp::ordered_metadata ... m16n8k32` from the
Semi24Matrix layout, so the packed layout, the fragment facts and the kernel's shared-memory addressing are
checked on a CPU (tests/test_semi24_mm.py) before any GPU runs them. Three layers:

1. `mma_sp_m16n8k32`: what one warp-wide instruction computes from per-lane registers.
   Sourced (PTX ISA, "Sparse matrix storage" and "Matrix fragments for sparse mma.m16n8k32 with .f16/.bf16"):
   A = 4 x b32 per lane, a_{2i}, a_{2i+1} in register i; registers 0, 2 hold row g, registers 1, 3 row g + 8;
   registers 0, 1 cover dense columns 4t..4t+3, registers 2, 3 columns 16 + 4t..; each register holds the two
   kept values of its 4-wide group. Metadata nibble = two 2-bit indices, low index first; ordered_metadata allows
   only 0b0100, 1000, 1001, 1100, 1101, 1110. Selector f: lane pair t in {2f, 2f+1} of every quad supplies E.
   C/D: as dense m16n8k16 (c0, c1 at row g, columns 2t, 2t+1; c2, c3 at row g + 8).
   Derived (PTX shows these only as figures): B register j = K rows 8j + 2t, 8j + 2t + 1 of column g (two
   stacked m16n8k16 B fragments, as in CuTe's SM80 sparse traits); inside the supplying pair the even lane
   covers K 0-15 and the odd lane K 16-31, the low half-word row g and the high half-word row g + 8, nibble j =
   group j of that half. Cross-check: this puts lane L's E in word L of the layout PyTorch's CUTLASS path
   reorders its metadata into, and CUTLASS loads that layout with ldmatrix, which hands lane L word L of 128
   contiguous bytes; the tests compare the words bit for bit.
2. `ldmatrix_x4`: PTX ISA "ldmatrix": lanes 8i..8i+7 give the row addresses of 8x8 b16 matrix i, which lands in
   register i; lane l receives row l/4, elements 2(l%4), 2(l%4)+1 (with .trans: column l/4, rows 2(l%4), +1).
3. The kernel's addressing, mirrored from semi24_mm.cu (same names): shared-memory swizzles, which thread copies
   which 16-byte chunk, the per-lane ldmatrix row addresses, E-word offsets and the epilogue. `tc_block` and
   `decode_block` run one thread block of each kernel through layers 1 and 2; `simt_output` is the fp32 kernel's
   per-output metadata decoding.

Registers are modelled as (..., 32 lanes, n registers, 2 elements) float64 tensors (element 0 = low half).
"""

from __future__ import annotations

import torch

from .semi24 import VALID_NIBBLES

LANES = torch.arange(32)
G, T = LANES >> 2, LANES & 3

# ----------------------------------------------------------------------------------------------- 1. instruction


def mma_sp_m16n8k32(a, b, c, e, sel: int) -> torch.Tensor:
    """d = A @ B + C for one warp. a, b: (..., 32, 4, 2); c: (..., 32, 4); e: (..., 32) int64 words; sel in {0, 1}.

    Raises ValueError on a nibble ordered_metadata leaves undefined, so an encoder bug cannot pass silently."""
    batch = a.shape[:-3]
    # Metadata: lanes 4g + 2*sel + h (h = 0: K 0-15, h = 1: K 16-31); bits 16*hi + 4j -> row g + 8hi, group 4h + j.
    words = e[..., 4 * torch.arange(8)[:, None] + 2 * sel + torch.arange(2)[None, :]]  # (..., g, h)
    shifts = 16 * torch.arange(2)[:, None] + 4 * torch.arange(4)[None, :]  # (hi, j)
    nib = (words[..., None, None] >> shifts) & 0xF  # (..., g, h, hi, j)
    nib = nib.permute(*range(len(batch)), -2, -4, -3, -1).reshape(*batch, 16, 8)  # (..., row = 8hi + g, q = 4h + j)
    if not bool(torch.isin(nib, torch.tensor(VALID_NIBBLES)).all()):
        raise ValueError("mma.sp::ordered_metadata: undefined metadata nibble")
    # Values of (row, group q): lane 4g + q%4, register 2*(q//4) + hi.
    row = torch.arange(16)[:, None]
    q = torch.arange(8)[None, :]
    lane = 4 * (row % 8) + q % 4
    reg = 2 * (q // 4) + row // 8
    vals = a[..., lane, reg, :]  # (..., 16, 8, 2)
    A = torch.zeros(*batch, 16, 8, 4, dtype=a.dtype)
    idx = torch.stack((nib & 3, nib >> 2), -1)
    A.scatter_(-1, idx, vals)
    A = A.reshape(*batch, 16, 32)
    # B (32 x 8): lane (g, t) register j element x = B[8j + 2t + x, g].
    Bd = torch.zeros(*batch, 32, 8, dtype=b.dtype)
    k = 8 * torch.arange(4)[None, :, None] + 2 * T[:, None, None] + torch.arange(2)[None, None, :]
    Bd[..., k, G[:, None, None].expand_as(k)] = b
    # C/D fragments.
    dr = G[:, None] + 8 * (torch.arange(4)[None, :] >> 1)
    dc = 2 * T[:, None] + (torch.arange(4)[None, :] & 1)
    C = torch.zeros(*batch, 16, 8, dtype=c.dtype)
    C[..., dr, dc] = c
    return (A @ Bd + C)[..., dr, dc]


# ----------------------------------------------------------------------------------------------- 2. ldmatrix


def ldmatrix_x4(smem: torch.Tensor, row_addr: torch.Tensor, trans: bool = False) -> torch.Tensor:
    """smem: flat tensor of 16-bit elements; row_addr (..., 32): element offsets of the 8-element rows.
    Returns (..., 32, 4, 2): register i of lane l from matrix i (rows given by lanes 8i..8i+7)."""
    rows = smem[row_addr[..., :, None] + torch.arange(8)]  # (..., 32, 8): row (lane)
    mats = rows.reshape(*rows.shape[:-2], 4, 8, 8)  # (..., matrix, row, col)
    r, x = G[:, None], 2 * T[:, None] + torch.arange(2)[None, :]  # (32, 1), (32, 2)
    if trans:
        picked = mats[..., x, r]  # (..., 4, 32, 2): column l/4, rows 2(l%4) + x
    else:
        picked = mats[..., r, x]
    return picked.movedim(-3, -2)


def bank_groups(row_addr: torch.Tensor, elem_bytes: int = 2) -> torch.Tensor:
    """The 16-byte bank group (of 8 per 128-byte line) each lane's ldmatrix row reads: an ldmatrix phase is
    conflict-free when the 8 lanes of each matrix hit 8 distinct groups."""
    return (row_addr * elem_bytes // 16) % 8


# ----------------------------------------------------------------------------------------------- 3. kernel mirror


class TC:
    """tc kernel constants and addressing (semi24_mm.cu, namespace tc)."""

    BM, BN, BK, THREADS = 128, 128, 64, 256
    WARPS_N, WM, WN = 4, 64, 32
    MT, NT = WM // 16, WN // 8
    A_HALVES, B_HALVES = BM * BK // 2, BK * BN

    @staticmethod
    def a_off(r, c):
        return r * 32 + ((c ^ ((r >> 1) & 3)) << 3)

    @staticmethod
    def bk_off(k, c):
        return k * TC.BN + ((c ^ (k & 7)) << 3)

    @staticmethod
    def bn_off(n, c):
        return n * TC.BK + ((c ^ (n & 7)) << 3)

    @staticmethod
    def a_rows(wm0: int, i: int, ks: int):
        """Per-lane ldmatrix.x4 row addresses of m16 tile i of a warp at row wm0, k32 step ks."""
        return TC.a_off(wm0 + i * 16 + (LANES & 7) + ((LANES >> 3) & 1) * 8, ks * 2 + (LANES >> 4))

    @staticmethod
    def b_rows(wn0: int, j: int, ks: int, b_nmajor: bool):
        if not b_nmajor:  # ldmatrix .trans
            return TC.bk_off(ks * 32 + LANES, torch.full_like(LANES, (wn0 + j * 8) >> 3))
        return TC.bn_off(wn0 + j * 8 + (LANES & 7), ks * 4 + (LANES >> 3))


def _fill(dst, offsets, src_rows, src_cols, src, ok):
    """cp.async of 16-byte chunks: dst[offsets[i] : +8] = src[src_rows[i], src_cols[i] : +8], zero where not ok."""
    for off, r, c, good in zip(offsets.tolist(), src_rows.tolist(), src_cols.tolist(), ok.tolist()):
        dst[off : off + 8] = src[r, c : c + 8] if good else 0


def tc_stage(values, metadata, Bop, b_nmajor: bool, M: int, N: int, K: int, b_contig: int, m0: int, n0: int, k0: int):
    """One pipeline stage as load_stage fills it: (A tile, B tile, E words) as flat tensors."""
    Kp = values.shape[1] * 2
    As = torch.zeros(TC.A_HALVES, dtype=torch.float64)
    Bs = torch.zeros(TC.B_HALVES, dtype=torch.float64)
    Es = torch.zeros((TC.BM // 32) * (TC.BK // 32) * 32, dtype=torch.int64)
    ids = torch.arange(TC.A_HALVES // 8)
    r, c = ids >> 2, ids & 3
    _fill(As, TC.a_off(r, c), (m0 + r).clamp(max=M - 1), k0 // 2 + c * 8, values, m0 + r < M)
    ids = torch.arange(TC.B_HALVES // 8)
    if not b_nmajor:
        r, c = ids >> 4, ids & 15
        k, n = k0 + r, n0 + c * 8
        ok = (k < K) & (n < b_contig)
        _fill(Bs, TC.bk_off(r, c), k.clamp(max=K - 1), n.clamp(max=max(b_contig - 8, 0)), Bop, ok)
    else:
        r, c = ids >> 3, ids & 7
        n, k = n0 + r, k0 + c * 8
        ok = (n < N) & (k < b_contig)
        _fill(Bs, TC.bn_off(r, c), n.clamp(max=N - 1), k.clamp(max=max(b_contig - 8, 0)), Bop, ok)
    words = metadata.to(torch.int64) & 0xFFFFFFFF
    for tid in range(Es.numel() // 4):
        blk, cc = tid >> 4, tid & 15
        mb = m0 // 32 + blk
        if mb * 32 < M:
            flat = words[mb].reshape(-1)[(k0 // 32) * 32 + cc * 4 : (k0 // 32) * 32 + cc * 4 + 4]
            Es[blk * 64 + cc * 4 : blk * 64 + cc * 4 + 4] = flat
    assert Kp % TC.BK == 0
    return As, Bs, Es


def tc_block(values, metadata, Bop, b_nmajor: bool, M: int, N: int, K: int, b_contig: int, m0: int, n0: int):
    """Accumulators of block (m0, n0) of the tc kernel as {(m, n): value} for its in-range outputs."""
    Kp = values.shape[1] * 2
    warps = torch.arange(TC.THREADS // 32)
    acc = torch.zeros(len(warps), TC.MT, TC.NT, 32, 4, dtype=torch.float64)
    for kt in range(Kp // TC.BK):
        As, Bs, Es = tc_stage(values, metadata, Bop, b_nmajor, M, N, K, b_contig, m0, n0, kt * TC.BK)
        for w in warps.tolist():
            wm0, wn0 = (w // TC.WARPS_N) * TC.WM, (w % TC.WARPS_N) * TC.WN
            for ks in range(TC.BK // 32):
                a = [ldmatrix_x4(As, TC.a_rows(wm0, i, ks)) for i in range(TC.MT)]
                b = [ldmatrix_x4(Bs, TC.b_rows(wn0, j, ks, b_nmajor), trans=not b_nmajor) for j in range(TC.NT)]
                e = [Es[((wm0 // 32) + i) * 64 + ks * 32 + LANES] for i in range(TC.MT // 2)]
                for i in range(TC.MT):
                    if m0 + wm0 + (i // 2) * 32 >= M:  # blk_ok
                        continue
                    for j in range(TC.NT):
                        acc[w, i, j] = mma_sp_m16n8k32(a[i], b[j], acc[w, i, j], e[i // 2], i & 1)
    out = {}
    for w in warps.tolist():
        wm0, wn0 = (w // TC.WARPS_N) * TC.WM, (w % TC.WARPS_N) * TC.WN
        for i in range(TC.MT):
            for j in range(TC.NT):
                out.update(store_acc(acc[w, i, j], m0 + wm0 + i * 16, n0 + wn0 + j * 8, M, N))
    return out


def store_acc(acc, m_base: int, n_base: int, M: int, N: int) -> dict:
    """store_acc over all lanes and registers of one m16n8 accumulator (32, 4)."""
    out = {}
    for lane in range(32):
        for r in range(4):
            m = m_base + (lane >> 2) + (r >> 1) * 8
            n = n_base + (lane & 3) * 2 + (r & 1)
            if m < M and n < N:
                out[(m, n)] = float(acc[lane, r])
    return out


class DEC:
    """decode kernel constants and addressing (semi24_mm.cu, namespace dec)."""

    WARPS = 8
    A_HALVES = 32 * 16

    @staticmethod
    def a_off(r, c):
        return r * 16 + ((c ^ ((r >> 2) & 1)) << 3)

    @staticmethod
    def a_rows(i: int):
        return DEC.a_off(i * 16 + (LANES & 7) + ((LANES >> 3) & 1) * 8, LANES >> 4)


def decode_block(values, metadata, Bt, M: int, N: int, b_contig: int, mb: int, nt8: int):
    """Block mb of the decode kernel (Bt: the (N, K) operand) as {(m, n): value}."""
    Kp = values.shape[1] * 2
    KS, m0 = Kp // 32, mb * 32
    words = metadata.to(torch.int64) & 0xFFFFFFFF
    acc = torch.zeros(DEC.WARPS, 2, nt8, 32, 4, dtype=torch.float64)
    for w in range(DEC.WARPS):
        for s in range(w, KS, DEC.WARPS):
            As = torch.zeros(DEC.A_HALVES, dtype=torch.float64)
            ids = torch.arange(64)  # lane + 32 i
            r, c = ids >> 1, ids & 1
            _fill(As, DEC.a_off(r, c), (m0 + r).clamp(max=M - 1), s * 16 + c * 8, values, m0 + r < M)
            e = words[mb, s, LANES]
            a = [ldmatrix_x4(As, DEC.a_rows(i)) for i in range(2)]
            for j in range(nt8):
                n = j * 8 + G
                k = s * 32 + 8 * torch.arange(4)[None, :, None] + 2 * T[:, None, None] + torch.arange(2)[None, None, :]
                ok = (n[:, None, None] < N) & (k - (k & 1) < b_contig)
                b = torch.where(ok, Bt[n[:, None, None].clamp(max=N - 1), k.clamp(max=Bt.shape[1] - 1)], 0.0)
                acc[w, 0, j] = mma_sp_m16n8k32(a[0], b, acc[w, 0, j], e, 0)
                acc[w, 1, j] = mma_sp_m16n8k32(a[1], b, acc[w, 1, j], e, 1)
    total = acc.sum(0)  # the shared-memory reduction over warps
    out = {}
    for i in range(2):
        for j in range(nt8):
            out.update(store_acc(total[i, j], m0 + i * 16, j * 8, M, N))
    return out


def simt_output(values, metadata, B, K: int, m: int, n: int) -> float:
    """semi24_simt_output (the fp32 CUDA kernel) for output (m, n) of A @ B, B (K, N): same index arithmetic."""
    r = m & 31
    g, hi, tile = r & 7, (r >> 3) & 1, r >> 4
    KB = values.shape[1] * 2 // 32
    words = (metadata.reshape(-1).to(torch.int64) & 0xFFFFFFFF).tolist()
    base = (m >> 5) * KB * 32 + 4 * g + 2 * tile
    v = values[m].tolist()
    acc = 0.0
    for kb in range(KB):
        for half in range(2):
            bits = words[base + kb * 32 + half] >> (16 * hi)
            for j in range(4):
                q = kb * 8 + half * 4 + j
                nib = (bits >> (4 * j)) & 0xF
                k0, k1 = 4 * q + (nib & 3), 4 * q + (nib >> 2)
                if k0 < K:
                    acc += v[2 * q] * float(B[k0, n])
                if k1 < K:
                    acc += v[2 * q + 1] * float(B[k1, n])
    return acc
