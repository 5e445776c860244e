// BSR GEMM inner loops, compiled once per instruction set by isa_variants.h (no include guard on purpose).
//
// out[rows of block row i, :] = sum over i's stored blocks j of V_j (bm x bk) @ B[bk rows of block column c_j, :].
// Two loop nests: register tiles along N (below), and along k for the decode regime (bsr_mm_block_rows_dot).
// A register tile of MR output rows x NV vectors of columns stays in registers across all stored blocks of the
// block row: per k, NV vector loads of one B row feed MR*NV FMAs, each with a broadcast of one block element.
// B comes in column panels (see bsr_mm.cpp): the rows of one panel that a block row touches (nblocks_in_row *
// bk rows, 256 bytes each) stay in L2 while its bm/MR row groups re-read them. Rows past M (padding of the last
// block row) are never computed; block columns past K are cut at K, so padding is never read as data.
//
// GCC vector extensions give portable vector code; the width and tile shape follow the namespace's instruction
// set (C++ macros are not updated by `#pragma GCC target`, hence the token paste on SK_ISA_NS).

#ifndef SK_BSR_MM_ISA_PARAMS
#define SK_BSR_MM_ISA_PARAMS
#define SK_BSR_CAT_(a, b) a##b
#define SK_BSR_CAT(a, b) SK_BSR_CAT_(a, b)
// Vector bytes, main tile rows MR, main tile vectors NV per instruction set. AVX-512 has 32 vector registers:
// 6 x 4 accumulators + 4 B vectors + broadcasts (on a Sapphire Rapids-class Xeon 6 x 4 beat 4 x 4, 8 x 2 and
// 8 x 3 for 16, 32 and 64 blocks at N = 64); AVX2/SSE have 16: 4 x 3 accumulators + 3 B vectors.
#define SK_BSR_VEC_avx512 64
#define SK_BSR_MR_avx512 6
#define SK_BSR_NV_avx512 4
#define SK_BSR_VEC_avx2 32
#define SK_BSR_MR_avx2 4
#define SK_BSR_NV_avx2 3
#define SK_BSR_VEC_base 16
#define SK_BSR_MR_base 4
#define SK_BSR_NV_base 3
#endif

namespace sparsekern::cpu::SK_ISA_NS {

constexpr int kBsrVec = SK_BSR_CAT(SK_BSR_VEC_, SK_ISA_NS) / 4;  // floats per vector
constexpr int kBsrMR = SK_BSR_CAT(SK_BSR_MR_, SK_ISA_NS);
constexpr int kBsrNV = SK_BSR_CAT(SK_BSR_NV_, SK_ISA_NS);
typedef float bsr_vec __attribute__((vector_size(kBsrVec * 4)));
// Same vector, alignment 4: loads and stores through it may be unaligned.
typedef float bsr_vec_u __attribute__((vector_size(kBsrVec * 4), aligned(4)));

// acc[r][v] += sum over stored blocks j in [j0, j1) of V_j[r0 + r, :] . B[c_j * bk + :, n0 + v*kBsrVec ...].
// Returns false on a block column outside [0, KB).
template <int MR, int NV, typename index_t>
inline bool bsr_tile(const index_t* __restrict col, int64_t j0, int64_t j1, const float* __restrict val,
                     int64_t bm, int64_t bk, int64_t r0, const float* __restrict B, int64_t ldb, int64_t K,
                     int64_t KB, int64_t n0, bsr_vec (&acc)[MR][NV]) {
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t c = col[j];
    if (static_cast<uint64_t>(c) >= static_cast<uint64_t>(KB)) return false;
    const int64_t kend = std::min(bk, K - c * bk);
    const float* __restrict a = val + (j * bm + r0) * bk;
    const float* __restrict b = B + c * bk * ldb + n0;
    for (int64_t k = 0; k < kend; ++k) {
      bsr_vec bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = *reinterpret_cast<const bsr_vec_u*>(b + k * ldb + v * kBsrVec);
      for (int r = 0; r < MR; ++r) {
        const float s = a[r * bk + k];
        for (int v = 0; v < NV; ++v) acc[r][v] += s * bv[v];
      }
    }
  }
  return true;
}

// One MR x (NV * kBsrVec) output tile: seeded with the bias, accumulated over the block row, stored with the
// columns cut at N (B's columns are padded to a multiple of the vector width, the output's are not).
template <int MR, int NV, typename index_t, typename out_t>
inline bool bsr_tile_store(const index_t* col, int64_t j0, int64_t j1, const float* val, int64_t bm, int64_t bk,
                           int64_t r0, const float* B, int64_t ldb, int64_t K, int64_t KB, int64_t n0, int64_t N,
                           const float* bias, int64_t m0, out_t* __restrict out, int64_t osm, int64_t osn) {
  bsr_vec acc[MR][NV];
  for (int r = 0; r < MR; ++r) {
    const float init = bias ? bias[m0 + r] : 0.f;
    for (int v = 0; v < NV; ++v) acc[r][v] = bsr_vec{} + init;
  }
  if (!bsr_tile<MR, NV>(col, j0, j1, val, bm, bk, r0, B, ldb, K, KB, n0, acc)) return false;
  const int64_t ncols = std::min<int64_t>(NV * kBsrVec, N - n0);
  for (int r = 0; r < MR; ++r) {
    out_t* o = out + (m0 + r) * osm + n0 * osn;
    if constexpr (std::is_same_v<out_t, float>) {
      if (osn == 1 && ncols == NV * kBsrVec) {
        for (int v = 0; v < NV; ++v) *reinterpret_cast<bsr_vec_u*>(o + v * kBsrVec) = acc[r][v];
        continue;
      }
    }
    float tmp[NV * kBsrVec];
    for (int v = 0; v < NV; ++v) *reinterpret_cast<bsr_vec_u*>(tmp + v * kBsrVec) = acc[r][v];
    for (int64_t n = 0; n < ncols; ++n) o[n * osn] = static_cast<out_t>(tmp[n]);
  }
  return true;
}

// One row group (MR rows from r0 of one block row) across a panel's columns [0, n_end): tiles of kBsrNV vectors,
// then narrower ones. Output columns past N (the panel's zero padding) are computed but not stored.
template <int MR, typename index_t, typename out_t>
inline bool bsr_row_group(const index_t* col, int64_t j0, int64_t j1, const float* val, int64_t bm, int64_t bk,
                          int64_t r0, const float* B, int64_t ldb, int64_t K, int64_t KB, int64_t n_end, int64_t N,
                          const float* bias, int64_t m0, out_t* out, int64_t osm, int64_t osn) {
  int64_t n0 = 0;
  bool ok = true;
  for (; ok && n_end - n0 >= kBsrNV * kBsrVec; n0 += kBsrNV * kBsrVec)
    ok = bsr_tile_store<MR, kBsrNV>(col, j0, j1, val, bm, bk, r0, B, ldb, K, KB, n0, N, bias, m0, out, osm, osn);
  for (; ok && n_end - n0 >= 2 * kBsrVec; n0 += 2 * kBsrVec)
    ok = bsr_tile_store<MR, 2>(col, j0, j1, val, bm, bk, r0, B, ldb, K, KB, n0, N, bias, m0, out, osm, osn);
  for (; ok && n0 < n_end; n0 += kBsrVec)
    ok = bsr_tile_store<MR, 1>(col, j0, j1, val, bm, bk, r0, B, ldb, K, KB, n0, N, bias, m0, out, osm, osn);
  return ok;
}

// Block rows [i0, i1). B is staged as npanels column panels, panel p holding columns [p*P, p*P + P) as a (K, P)
// fp32 matrix with row stride ldb at B + p * panel_stride; P is a multiple of 16 floats (so of every vector
// width) and columns past N are zeros. Panel by panel, so the panel rows the block rows touch are re-read from
// L2 while the block rows' values (a few hundred KiB: the caller hands out small ranges) stay there too. val is
// (nblocks, bm, bk) fp32; bias (per row, may be null) seeds the accumulators; out (M, N) may have any strides.
// Returns false on a block column outside [0, ceil(K / bk)).
template <typename index_t, typename out_t>
bool bsr_mm_block_rows(const index_t* crow, const index_t* col, const float* val, int64_t bm, int64_t bk,
                       const float* B, int64_t panel_stride, int64_t ldb, int64_t P, int64_t npanels, int64_t K,
                       int64_t N, const float* bias, out_t* out, int64_t osm, int64_t osn, int64_t M, int64_t i0,
                       int64_t i1) {
  const int64_t KB = (K + bk - 1) / bk;
  for (int64_t p = 0; p < npanels; ++p) {
    const float* panel = B + p * panel_stride;
    out_t* o = out + p * P * osn;
    const int64_t n_left = N - p * P, n_end = std::min(P, (n_left + 15) / 16 * 16);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t j0 = crow[i], j1 = crow[i + 1];
      const int64_t m0 = i * bm, rows = std::min(bm, M - m0);
      // The next block row's values, prefetched into L2 a slice per row group: the row groups read MR rows of
      // each block, blocks bm*bk*4 bytes apart, a pattern the hardware prefetchers do not follow from memory
      // (measured: ~10% of the 4096 x 4096, 90%, 32 x 32, N = 64 call when weights come from memory).
      const char* pf = reinterpret_cast<const char*>(val + j1 * bm * bk);
      const char* pf_end = p == 0 && i + 1 < i1 ? reinterpret_cast<const char*>(val + crow[i + 2] * bm * bk) : pf;
      const int64_t pf_step = ((pf_end - pf) / ((rows + kBsrMR - 1) / kBsrMR) + 63) / 64 * 64;
      int64_t r0 = 0;
      bool ok = true;
      for (; ok && rows - r0 >= kBsrMR; r0 += kBsrMR) {
        for (const char* e = std::min(pf + pf_step, pf_end); pf < e; pf += 64) __builtin_prefetch(pf, 0, 2);
        ok = bsr_row_group<kBsrMR>(col, j0, j1, val, bm, bk, r0, panel, ldb, K, KB, n_end, n_left, bias, m0 + r0,
                                   o, osm, osn);
      }
      for (; pf < pf_end; pf += 64) __builtin_prefetch(pf, 0, 2);
      if (ok && rows - r0 >= 4) {
        ok = bsr_row_group<4>(col, j0, j1, val, bm, bk, r0, panel, ldb, K, KB, n_end, n_left, bias, m0 + r0, o, osm,
                              osn);
        r0 += 4;
      }
      if (ok && rows - r0 >= 2) {
        ok = bsr_row_group<2>(col, j0, j1, val, bm, bk, r0, panel, ldb, K, KB, n_end, n_left, bias, m0 + r0, o, osm,
                              osn);
        r0 += 2;
      }
      if (ok && rows - r0 >= 1)
        ok = bsr_row_group<1>(col, j0, j1, val, bm, bk, r0, panel, ldb, K, KB, n_end, n_left, bias, m0 + r0, o, osm,
                              osn);
      if (!ok) return false;
    }
  }
  return true;
}

// The decode regime (N <= kDotN in bsr_mm.cpp): a few dense columns cannot fill a vector, so the vectors run along k instead:
// R rows x NN columns of dot products, each a vector of partial sums over k, reduced once per block row. Every
// value is then read by a vector load (the column-vector tiles above spend a broadcast per value and compute
// 16 columns for each real one). Bt is B transposed, (N, K) with row stride ldbt. The block's columns past K
// (ragged last block column) are cut at kend, as in the wide kernel.
template <int R, int NN, typename index_t, typename out_t>
inline bool bsr_dot_tile(const index_t* __restrict col, int64_t j0, int64_t j1, const float* __restrict val,
                         int64_t bm, int64_t bk, int64_t r0, const float* __restrict Bt, int64_t ldbt, int64_t K,
                         int64_t KB, int64_t n0, const float* bias, int64_t m0, out_t* __restrict out, int64_t osm,
                         int64_t osn) {
  bsr_vec acc[R][NN] = {};
  float tail[R][NN] = {};
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t c = col[j];
    if (static_cast<uint64_t>(c) >= static_cast<uint64_t>(KB)) return false;
    const int64_t kend = std::min(bk, K - c * bk);
    const float* __restrict a = val + (j * bm + r0) * bk;
    const float* __restrict bt = Bt + n0 * ldbt + c * bk;
    int64_t k = 0;
    for (; k + kBsrVec <= kend; k += kBsrVec) {
      bsr_vec bv[NN];
      for (int n = 0; n < NN; ++n) bv[n] = *reinterpret_cast<const bsr_vec_u*>(bt + n * ldbt + k);
      for (int r = 0; r < R; ++r) {
        const bsr_vec av = *reinterpret_cast<const bsr_vec_u*>(a + r * bk + k);
        for (int n = 0; n < NN; ++n) acc[r][n] += av * bv[n];
      }
    }
    for (; k < kend; ++k)
      for (int r = 0; r < R; ++r)
        for (int n = 0; n < NN; ++n) tail[r][n] += a[r * bk + k] * bt[n * ldbt + k];
  }
  for (int r = 0; r < R; ++r) {
    for (int n = 0; n < NN; ++n) {
      float s = tail[r][n] + (bias ? bias[m0 + r] : 0.f);
      for (int l = 0; l < kBsrVec; ++l) s += acc[r][n][l];
      out[(m0 + r) * osm + (n0 + n) * osn] = static_cast<out_t>(s);
    }
  }
  return true;
}

template <int R, typename index_t, typename out_t>
inline bool bsr_dot_rows(const index_t* col, int64_t j0, int64_t j1, const float* val, int64_t bm, int64_t bk,
                         int64_t r0, const float* Bt, int64_t ldbt, int64_t K, int64_t KB, int64_t N,
                         const float* bias, int64_t m0, out_t* out, int64_t osm, int64_t osn) {
  int64_t n0 = 0;
  bool ok = true;
  for (; ok && N - n0 >= 4; n0 += 4)
    ok = bsr_dot_tile<R, 4>(col, j0, j1, val, bm, bk, r0, Bt, ldbt, K, KB, n0, bias, m0, out, osm, osn);
  if (ok && N - n0 >= 2) {
    ok = bsr_dot_tile<R, 2>(col, j0, j1, val, bm, bk, r0, Bt, ldbt, K, KB, n0, bias, m0, out, osm, osn);
    n0 += 2;
  }
  if (ok && N - n0 >= 1)
    ok = bsr_dot_tile<R, 1>(col, j0, j1, val, bm, bk, r0, Bt, ldbt, K, KB, n0, bias, m0, out, osm, osn);
  return ok;
}

// Block rows [i0, i1) in the decode regime; arguments as bsr_mm_block_rows, with Bt (N, K) instead of panels.
template <typename index_t, typename out_t>
bool bsr_mm_block_rows_dot(const index_t* crow, const index_t* col, const float* val, int64_t bm, int64_t bk,
                           const float* Bt, int64_t ldbt, int64_t K, int64_t N, const float* bias, out_t* out,
                           int64_t osm, int64_t osn, int64_t M, int64_t i0, int64_t i1) {
  const int64_t KB = (K + bk - 1) / bk;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t j0 = crow[i], j1 = crow[i + 1];
    const int64_t m0 = i * bm, rows = std::min(bm, M - m0);
    int64_t r0 = 0;
    bool ok = true;
    for (; ok && rows - r0 >= 4; r0 += 4)
      ok = bsr_dot_rows<4>(col, j0, j1, val, bm, bk, r0, Bt, ldbt, K, KB, N, bias, m0 + r0, out, osm, osn);
    for (; ok && r0 < rows; ++r0)
      ok = bsr_dot_rows<1>(col, j0, j1, val, bm, bk, r0, Bt, ldbt, K, KB, N, bias, m0 + r0, out, osm, osn);
    if (!ok) return false;
  }
  return true;
}

}  // namespace sparsekern::cpu::SK_ISA_NS
