// CSR SpMM inner loops, compiled once per instruction set by isa_variants.h (no include guard on purpose).
//
// out[m, n0:n0+NT] = sum_j val[j] * B[col[j], n0:n0+NT] over row m's entries. NT is a compile-time width so
// the accumulator lives in vector registers (NT=64 fp32 = 4 zmm / 8 ymm) and the loop over N vectorises;
// each stored entry then costs one broadcast, NT/16 loads of a B row and NT/16 FMAs. The caller walks N in
// widths 64, 32, ..., 1, so any N is covered without a scalar remainder loop over all columns.

namespace sparsekern::cpu::SK_ISA_NS {

template <int NT, typename index_t, typename out_t>
inline bool csr_mm_tile(const index_t* __restrict crow, const index_t* __restrict col,
                        const float* __restrict val, const float* __restrict B, int64_t ldb, int64_t K,
                        const float* __restrict bias, int64_t n0, out_t* __restrict out, int64_t osm,
                        int64_t osn, int64_t r0, int64_t r1) {
  for (int64_t m = r0; m < r1; ++m) {
    float acc[NT];
    const float init = bias ? bias[m] : 0.f;
    for (int i = 0; i < NT; ++i) acc[i] = init;
    for (int64_t j = crow[m]; j < crow[m + 1]; ++j) {
      const int64_t c = col[j];
      if (static_cast<uint64_t>(c) >= static_cast<uint64_t>(K)) return false;
      const float v = val[j];
      const float* __restrict b = B + c * ldb + n0;
      for (int i = 0; i < NT; ++i) acc[i] += v * b[i];
    }
    out_t* o = out + m * osm + n0 * osn;
    if (osn == 1) {
      for (int i = 0; i < NT; ++i) o[i] = static_cast<out_t>(acc[i]);
    } else {
      for (int i = 0; i < NT; ++i) o[i * osn] = static_cast<out_t>(acc[i]);
    }
  }
  return true;
}

// Rows [r0, r1), all N columns; bias (per row, may be null) seeds the accumulators. Returns false on a
// column index outside [0, K).
template <typename index_t, typename out_t>
bool csr_mm_rows(const index_t* crow, const index_t* col, const float* val, const float* B, int64_t ldb,
                 int64_t K, const float* bias, int64_t N, out_t* out, int64_t osm, int64_t osn, int64_t r0,
                 int64_t r1) {
  int64_t n0 = 0;
  bool ok = true;
  for (; ok && N - n0 >= 64; n0 += 64)
    ok = csr_mm_tile<64>(crow, col, val, B, ldb, K, bias, n0, out, osm, osn, r0, r1);
#define SK_CSR_MM_REMAINDER(W)                                                          \
  if (ok && N - n0 >= W) {                                                              \
    ok = csr_mm_tile<W>(crow, col, val, B, ldb, K, bias, n0, out, osm, osn, r0, r1);          \
    n0 += W;                                                                            \
  }
  SK_CSR_MM_REMAINDER(32)
  SK_CSR_MM_REMAINDER(16)
  SK_CSR_MM_REMAINDER(8)
  SK_CSR_MM_REMAINDER(4)
  SK_CSR_MM_REMAINDER(2)
  SK_CSR_MM_REMAINDER(1)
#undef SK_CSR_MM_REMAINDER
  return ok;
}

}  // namespace sparsekern::cpu::SK_ISA_NS
