// Bitmap CSR times a few dense columns (N <= 4, decode) on an AVX-512 CPU, included once per instruction set by
// isa_variants.h (no include guard on purpose); only the AVX-512 variant has a body (see below).
//
// The dot-product form: each 16-column half of a row's 32-bit bitmap word becomes a dense 16-lane vector of
// the row's weights (zeros where no bit is set) and is multiplied with the matching 16 entries of each dense
// column, read contiguously from xt (N, Kp), zero-padded to Kp = 32 * words. Per element this reads 1 bit plus
// the value where one is stored, instead of CSR's column index per stored value and a gathered load of the
// dense operand per stored value: at 50% density an fp32 decode moves ~2.1 bytes per element where dense moves
// 4 and CSR with int32 columns 4.
//
// AVX-512 only: an expand-load (vexpandps from memory) reads the next popcount(half) values into the set bits'
// lanes and touches no memory past them. Without it the expansion cost one store per stored value through a stack
// tile: on the 2-core Zen 3 EPYC (AVX2, 2 threads, 2026-12-07) that kernel ran 10-90x slower than the CSR one at
// 5-35% density for N = 1-4 (4096^2 and 2048^2), so the other variants leave this header empty and the ops run
// the CSR loop nest there.
//
// Unstored entries never touch the dense operand (torch.sparse's semantics, shared by every sparsekern kernel):
// the dense values are read under the word's bits, so an Inf or NaN in a column that a row does not store leaves
// that row's result finite.

#if SK_ISA_AVX512
namespace sparsekern::cpu::SK_ISA_NS {

// Returns the first row in [r0, r1) whose words hold a different number of bits than its row pointers say
// (that row is not computed), or r1.
template <int NN, typename index_t, typename out_t>
inline int64_t csr_bitmap_rows(const index_t* __restrict crow, const uint32_t* __restrict bitmap, int64_t words,
                               const float* __restrict val, const float* __restrict xt, int64_t ldx,
                               const float* __restrict bias, out_t* __restrict out, int64_t osm, int64_t osn,
                               int64_t r0, int64_t r1) {
  for (int64_t m = r0; m < r1; ++m) {
    const uint32_t* __restrict wr = bitmap + m * words;
    int64_t bits = 0;
    for (int64_t w = 0; w < words; ++w) bits += __builtin_popcount(wr[w]);
    if (bits != static_cast<int64_t>(crow[m + 1]) - static_cast<int64_t>(crow[m])) return m;
    const float* __restrict v = val + crow[m];
    float sum[NN];
    // Four accumulators per column (low and high half of even and odd words) so that an FMA never waits on the
    // previous one's latency. The expand masks are loaded from the bitmap straight into mask registers (a load
    // port) rather than moved from general registers (port 5, which the expands need).
    const __mmask16* __restrict halves = reinterpret_cast<const __mmask16*>(wr);
    __m512 acc[NN][4];
    for (int n = 0; n < NN; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = _mm512_setzero_ps();
    const auto step = [&](int64_t w, int set) {
      const uint32_t word = wr[w];
      const __mmask16 k0 = _load_mask16(const_cast<__mmask16*>(halves + 2 * w));
      const __mmask16 k1 = _load_mask16(const_cast<__mmask16*>(halves + 2 * w + 1));
      const __m512 a0 = _mm512_maskz_expandloadu_ps(k0, v);
      const __m512 a1 = _mm512_maskz_expandloadu_ps(k1, v + __builtin_popcount(word & 0xFFFFu));
      v += __builtin_popcount(word);
      // x under the same masks: an unstored lane multiplies 0 by 0, never by an Inf or NaN of x.
      for (int n = 0; n < NN; ++n) {
        const float* x = xt + n * ldx + w * 32;
        acc[n][set] = _mm512_fmadd_ps(a0, _mm512_maskz_loadu_ps(k0, x), acc[n][set]);
        acc[n][set + 1] = _mm512_fmadd_ps(a1, _mm512_maskz_loadu_ps(k1, x + 16), acc[n][set + 1]);
      }
    };
    int64_t w = 0;
    for (; w + 1 < words; w += 2) {
      step(w, 0);
      step(w + 1, 2);
    }
    if (w < words) step(w, 0);
    for (int n = 0; n < NN; ++n) {
      const __m512 even = _mm512_add_ps(acc[n][0], acc[n][1]), odd = _mm512_add_ps(acc[n][2], acc[n][3]);
      sum[n] = _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
    }
    const float b = bias ? bias[m] : 0.f;
    for (int n = 0; n < NN; ++n) out[m * osm + n * osn] = static_cast<out_t>(sum[n] + b);
  }
  return r1;
}

// N in [1, 4] as a compile-time width, so each column's accumulators stay in registers.
template <typename index_t, typename out_t>
int64_t csr_bitmap_mm_rows(int64_t N, const index_t* crow, const uint32_t* bitmap, int64_t words, const float* val,
                           const float* xt, int64_t ldx, const float* bias, out_t* out, int64_t osm, int64_t osn,
                           int64_t r0, int64_t r1) {
  switch (N) {
    case 1: return csr_bitmap_rows<1>(crow, bitmap, words, val, xt, ldx, bias, out, osm, osn, r0, r1);
    case 2: return csr_bitmap_rows<2>(crow, bitmap, words, val, xt, ldx, bias, out, osm, osn, r0, r1);
    case 3: return csr_bitmap_rows<3>(crow, bitmap, words, val, xt, ldx, bias, out, osm, osn, r0, r1);
    default: return csr_bitmap_rows<4>(crow, bitmap, words, val, xt, ldx, bias, out, osm, osn, r0, r1);
  }
}

}  // namespace sparsekern::cpu::SK_ISA_NS
#endif
