// CSR SpMM inner loops, compiled once per instruction set by isa_variants.h (no include guard on purpose).
//
// out[m, n0:n0+NT] = sum_j val[j] * B[col[j], 0:NT] over row m's entries (B points at the panel's columns).
// NT is a compile-time width so the accumulator lives in vector registers (NT=64 fp32 = 4 zmm / 8 ymm) and the
// loop over N vectorises;
// each stored entry then costs one broadcast, NT/16 loads of a B row and NT/16 FMAs. A panel is walked in
// widths 64, 32, ..., 1, so any width is covered without a scalar remainder loop.

namespace sparsekern::cpu::SK_ISA_NS {

template <int NT, typename index_t, typename col_t, typename out_t>
inline bool csr_mm_tile(const index_t* __restrict crow, const col_t* __restrict col,
                        const float* __restrict val, const float* __restrict B, int64_t ldb, int64_t K,
                        const float* __restrict bias, int64_t n0, out_t* __restrict out, int64_t osm,
                        int64_t osn, int64_t r0, int64_t r1) {
  for (int64_t m = r0; m < r1; ++m) {
    // Two accumulator sets (even and odd entries): one set makes every entry wait for the previous FMA's
    // latency (4 cycles); two halve that bound, leaving the gathered loads of B as the limit.
    float acc[NT], acc2[NT];
    const float init = bias ? bias[m] : 0.f;
    for (int i = 0; i < NT; ++i) {
      acc[i] = init;
      acc2[i] = 0.f;
    }
    const int64_t end = crow[m + 1];
    int64_t j = crow[m];
    for (; j + 1 < end; j += 2) {
      const int64_t c = col[j], c2 = col[j + 1];
      if (static_cast<uint64_t>(c) >= static_cast<uint64_t>(K) ||
          static_cast<uint64_t>(c2) >= static_cast<uint64_t>(K))
        return false;
      const float v = val[j], v2 = val[j + 1];
      const float* __restrict b = B + c * ldb;
      const float* __restrict b2 = B + c2 * ldb;
      for (int i = 0; i < NT; ++i) {
        acc[i] += v * b[i];
        acc2[i] += v2 * b2[i];
      }
    }
    if (j < end) {
      const int64_t c = col[j];
      if (static_cast<uint64_t>(c) >= static_cast<uint64_t>(K)) return false;
      const float v = val[j];
      const float* __restrict b = B + c * ldb;
      for (int i = 0; i < NT; ++i) acc[i] += v * b[i];
    }
    for (int i = 0; i < NT; ++i) acc[i] += acc2[i];
    out_t* o = out + m * osm + n0 * osn;
    if (osn == 1) {
      for (int i = 0; i < NT; ++i) o[i] = static_cast<out_t>(acc[i]);
    } else {
      for (int i = 0; i < NT; ++i) o[i * osn] = static_cast<out_t>(acc[i]);
    }
  }
  return true;
}

// A single column (N = 1, decode): one gathered dot product per row. Four independent scalar partial sums:
// the tile loop above would chain every entry on the previous FMA's latency (measured 6.5 ms at 50% density
// for 4096x4096, 3x slower than dense), and compiler-vectorised gathers measured slower still (10.5 ms).
template <typename index_t, typename col_t, typename out_t>
inline bool csr_mv_tile(const index_t* __restrict crow, const col_t* __restrict col, const float* __restrict val,
                        const float* __restrict B, int64_t ldb, int64_t K, const float* __restrict bias, int64_t n0,
                        out_t* __restrict out, int64_t osm, int64_t osn, int64_t r0, int64_t r1) {
  const auto in_range = [K](int64_t c) { return static_cast<uint64_t>(c) < static_cast<uint64_t>(K); };
  for (int64_t m = r0; m < r1; ++m) {
    float s0 = bias ? bias[m] : 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    const int64_t end = crow[m + 1];
    int64_t j = crow[m];
    for (; j + 4 <= end; j += 4) {
      const int64_t c0 = col[j], c1 = col[j + 1], c2 = col[j + 2], c3 = col[j + 3];
      if (!(in_range(c0) && in_range(c1) && in_range(c2) && in_range(c3))) return false;
      s0 += val[j] * B[c0 * ldb];
      s1 += val[j + 1] * B[c1 * ldb];
      s2 += val[j + 2] * B[c2 * ldb];
      s3 += val[j + 3] * B[c3 * ldb];
    }
    for (; j < end; ++j) {
      const int64_t c = col[j];
      if (!in_range(c)) return false;
      s0 += val[j] * B[c * ldb];
    }
    out[m * osm + n0 * osn] = static_cast<out_t>((s0 + s1) + (s2 + s3));
  }
  return true;
}

// col_t is index_t, or uint16_t for compact (int16) columns.
// Rows [r0, r1) times one column panel of B: `panel` is (K, width) contiguous, width <= kPanel, covering
// output columns [n0, n0 + width). bias (per row, may be null) seeds the accumulators. Returns false on a
// column index outside [0, K).
template <typename index_t, typename col_t, typename out_t>
bool csr_mm_panel(const index_t* crow, const col_t* col, const float* val, const float* panel, int64_t width,
                  int64_t K, const float* bias, int64_t n0, out_t* out, int64_t osm, int64_t osn, int64_t r0,
                  int64_t r1) {
  int64_t done = 0;
  bool ok = true;
#define SK_CSR_MM_WIDTH(W)                                                                                \
  if (ok && width - done >= W) {                                                                          \
    ok = csr_mm_tile<W>(crow, col, val, panel + done, width, K, bias, n0 + done, out, osm, osn, r0, r1); \
    done += W;                                                                                            \
  }
  SK_CSR_MM_WIDTH(64)
  SK_CSR_MM_WIDTH(32)
  SK_CSR_MM_WIDTH(16)
  SK_CSR_MM_WIDTH(8)
  SK_CSR_MM_WIDTH(4)
  SK_CSR_MM_WIDTH(2)
#undef SK_CSR_MM_WIDTH
  if (ok && width - done == 1)
    ok = csr_mv_tile(crow, col, val, panel + done, width, K, bias, n0 + done, out, osm, osn, r0, r1);
  return ok;
}

}  // namespace sparsekern::cpu::SK_ISA_NS
