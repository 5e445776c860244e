// Implicit-GEMM CSR convolution inner loop, compiled once per instruction set by isa_variants.h (no include
// guard on purpose).
//
// The input is staged as a "phase plane" buffer (see csr_conv2d.cpp): for every input channel and every
// (row phase, column phase) of the stride, a zero-padded (Hq, Wq) plane. Output position (h, w) of tap (i, j)
// then reads plane element (h + a, w + b) for fixed (a, b), so over the flattened output grid t = h * Wq + w
// every stored weight reads the contiguous run buf[off + t] (off = its plane's start + a * Wq + b). A stored
// weight is one broadcast and NT/VL (load, FMA) pairs per tile, exactly the work of CSR SpMM with B rows that
// are overlapping windows of the input: no unfold copy, kh*kw times less input traffic. Columns w >= Wo of the
// grid (Wq - Wo per row) are computed and dropped.
//
// Vector extensions rather than plain float loops: the accumulator must stay in registers (NT = 64 fp32 is 8 ymm
// on AVX2, 4 zmm on AVX-512), and the explicit vectors make that independent of the loop vectoriser.

namespace sparsekern::cpu::SK_ISA_NS {

#if SK_ISA_AVX512
constexpr int kConvVL = 16;
#else
constexpr int kConvVL = 8;
#endif
// aligned(4): the shifted windows start at any element, so every load is unaligned.
typedef float conv_vec __attribute__((vector_size(kConvVL * 4), aligned(4), may_alias));

// One (row, tile) of NT grid columns starting at t0: acc = bias + sum_e val[e] * buf[off[e] + t0 .. + NT).
// fp-contract=fast per function: the multiply-add must become one FMA in the AVX2/AVX-512 variants even where
// the build's ISO -std turns contraction off.
template <int NT>
__attribute__((optimize("fp-contract=fast"))) inline void conv_tile(const int32_t* __restrict off,
                                                                   const float* __restrict val, int64_t e0,
                                                                   int64_t e1, const float* __restrict buf,
                                                                   float init, float* __restrict acc_out) {
  constexpr int NV = NT / kConvVL;
  conv_vec acc[NV];
  for (int i = 0; i < NV; ++i) acc[i] = conv_vec{} + init;
  for (int64_t e = e0; e < e1; ++e) {
    const conv_vec v = conv_vec{} + val[e];
    const conv_vec* __restrict b = reinterpret_cast<const conv_vec*>(buf + off[e]);
    for (int i = 0; i < NV; ++i) acc[i] += v * b[i];
  }
  conv_vec* o = reinterpret_cast<conv_vec*>(acc_out);
  for (int i = 0; i < NV; ++i) o[i] = acc[i];
}

// Rows [m0, m1) over grid columns [t0, t1) of one image; t1 - t0 a multiple of 8 (the buffer holds slack for
// the columns past the grid). Writes out[m * osc + h * osh + w * osw] for grid columns with w < Wo and t < T.
template <typename index_t, typename out_t>
void conv_rows(const index_t* crow, const int32_t* off, const float* val, const float* buf, const float* bias,
               int64_t m0, int64_t m1, int64_t t0, int64_t t1, int64_t T, int64_t Wq, int64_t Wo, out_t* out,
               int64_t osc, int64_t osh, int64_t osw) {
  alignas(64) float acc[64];
  for (int64_t m = m0; m < m1; ++m) {
    const int64_t e0 = crow[m], e1 = crow[m + 1];
    const float init = bias ? bias[m] : 0.f;
    out_t* orow = out + m * osc;
    for (int64_t t = t0; t < t1;) {
      const int64_t left = t1 - t;
      int width;
      if (left >= 64) {
        conv_tile<64>(off, val, e0, e1, buf + t, init, acc);
        width = 64;
      } else if (left >= 32) {
        conv_tile<32>(off, val, e0, e1, buf + t, init, acc);
        width = 32;
      } else if (left >= 16) {
        conv_tile<16>(off, val, e0, e1, buf + t, init, acc);
        width = 16;
      } else {
        // kConvVL == 16 cannot make an 8-wide tile: run 16 and use 8 (the buffer's slack covers the reads).
        conv_tile<(kConvVL > 8 ? 16 : 8)>(off, val, e0, e1, buf + t, init, acc);
        width = 8;
      }
      const int64_t stop = std::min<int64_t>(width, T - t);
      int64_t h = t / Wq, w = t - h * Wq;
      for (int64_t i = 0; i < stop; ++i) {
        if (w < Wo) orow[h * osh + w * osw] = static_cast<out_t>(acc[i]);
        if (++w == Wq) {
          w = 0;
          ++h;
        }
      }
      t += width;
    }
  }
}

}  // namespace sparsekern::cpu::SK_ISA_NS
