// Implicit-GEMM CSR convolution inner loops, compiled once per instruction set by isa_variants.h (no include
// guard on purpose).
//
// The input is staged as "phase planes" (see csr_conv2d.cpp): for every input channel and every (row phase,
// column phase) of the stride, a zero-padded (Hq, Wq) plane. Output position (h, w) of tap (i, j) then reads plane
// element (h + a, w + b) for fixed (a, b), so over the flattened output grid t = h * Wq + w every stored weight
// reads the contiguous run buf[off + t] (off = its plane's start + a * Wq + b). A stored weight is one broadcast
// and NT/8 (load, FMA) pairs per tile: CSR SpMM whose B rows are overlapping windows of the input, with no unfold
// copy and kh*kw times less input traffic. Grid columns w >= Wo (Wq - Wo per row) are computed and dropped.
//
// GCC vector extensions rather than plain float loops: the 8 accumulators of a 64-wide tile must stay in ymm
// registers (8 independent FMA chains cover the FMA latency at 2 FMAs a cycle), and explicit vectors make that
// independent of the loop vectoriser. 8-lane vectors in every variant, so a tile of 8 reads exactly 8 floats
// and 1x1 convolutions can read the caller's input in place without over-reading its end.

namespace sparsekern::cpu::SK_ISA_NS {

// aligned(4): the shifted windows start at any element, so every load is unaligned.
typedef float conv_vec __attribute__((vector_size(32), aligned(4), may_alias));

// dst[0:NT) = init + sum_e val[e] * buf[col_off[col[e]] + 0 .. NT) over entries [e0, e1): col_off maps a weight
// column (channel, tap) to its window's offset, a K-entry table that stays in L1. fp-contract=fast: the
// multiply-add must be one FMA even where the build's ISO -std turns contraction off.
//
// An FMA has ~4 cycles of latency and two issue ports, so ~8 independent accumulator chains keep it busy: a tile
// of NV < 7 vectors alternates consecutive entries between SETS accumulator sets. Before, a 7x7 image's 56 columns
// ran as tiles of 32 + 16 + 8 with 4, 2 and 1 chains, and ResNet-50's 7x7 1x1 layers ran at 0.88-1.06x dense on a
// Zen 3 EPYC; with the sets (and one 7-vector tile) 1.05-1.25x.
template <int NT, typename col_t>
__attribute__((optimize("fp-contract=fast"), always_inline)) inline void conv_tile(
    const col_t* __restrict col, const int32_t* __restrict col_off, const float* __restrict val, int64_t e0, int64_t e1,
    const float* __restrict buf, float init, float* __restrict dst) {
  constexpr int NV = NT / 8;
  constexpr int SETS = NV >= 7 ? 1 : (8 + NV - 1) / NV;
  conv_vec acc[SETS][NV];
  for (int i = 0; i < NV; ++i) acc[0][i] = conv_vec{} + init;
  for (int s = 1; s < SETS; ++s)
    for (int i = 0; i < NV; ++i) acc[s][i] = conv_vec{};
  int64_t e = e0;
  for (; e + SETS <= e1; e += SETS) {
    for (int s = 0; s < SETS; ++s) {
      const conv_vec v = conv_vec{} + val[e + s];
      const conv_vec* __restrict b = reinterpret_cast<const conv_vec*>(buf + col_off[col[e + s]]);
      for (int i = 0; i < NV; ++i) acc[s][i] += v * b[i];
    }
  }
  for (; e < e1; ++e) {
    const conv_vec v = conv_vec{} + val[e];
    const conv_vec* __restrict b = reinterpret_cast<const conv_vec*>(buf + col_off[col[e]]);
    for (int i = 0; i < NV; ++i) acc[0][i] += v * b[i];
  }
  for (int s = 1; s < SETS; ++s)
    for (int i = 0; i < NV; ++i) acc[0][i] += acc[s][i];
  conv_vec* o = reinterpret_cast<conv_vec*>(dst);
  for (int i = 0; i < NV; ++i) o[i] = acc[0][i];
}

// Rows [m0, m1) over grid columns [t0, t1) of one image; t1 - t0 <= 64 and a multiple of 8 (columns past
// the grid read the staging buffer's slack and are dropped). Writes out[m * osc + h * osh + w * osw]
// for the grid's columns with h < Ho, w < Wo. `direct`: fp32 output laid out as the grid (Wq == Wo, osw == 1,
// osh == Wo, grid a multiple of 8 columns), written straight from the accumulators. Row m convolves group
// m / group_rows, whose channels start group_offset floats into buf. Columns are in [0, K) (the caller checks).
template <typename index_t, typename col_t, typename out_t>
void conv_rows(const index_t* crow, const col_t* col, const int32_t* col_off, int64_t group_rows,
               int64_t group_offset, const float* val, const float* buf, const float* bias,
               int64_t m0, int64_t m1, int64_t t0, int64_t t1, int64_t Wq, int64_t Ho, int64_t Wo, out_t* out,
               int64_t osc, int64_t osh, int64_t osw, bool direct) {
  alignas(64) float tmp[64];
  const float* b = buf + t0;
  const int64_t width = t1 - t0;
  for (int64_t m = m0; m < m1; ++m) {
    const int64_t e0 = crow[m], e1 = crow[m + 1];
    const float init = bias ? bias[m] : 0.f;
    float* dst = direct ? reinterpret_cast<float*>(out + m * osc) + t0 : tmp;
    // One tile per row: the caller cuts the grid into blocks of at most 64 columns.
    switch (width / 8) {
#define SK_CONV_WIDTH(NV) \
  case NV:                \
    conv_tile<8 * NV>(col, col_off, val, e0, e1, b + (m / group_rows) * group_offset, init, dst); \
    break;
      SK_CONV_WIDTH(1)
      SK_CONV_WIDTH(2)
      SK_CONV_WIDTH(3)
      SK_CONV_WIDTH(4)
      SK_CONV_WIDTH(5)
      SK_CONV_WIDTH(6)
      SK_CONV_WIDTH(7)
      SK_CONV_WIDTH(8)
#undef SK_CONV_WIDTH
    }
    if (direct) continue;
    // Scatter the tile's grid columns into the output, one run of valid columns per grid row.
    out_t* orow = out + m * osc;
    int64_t h = t0 / Wq, w = t0 - h * Wq;
    for (int64_t i = 0; i < width && h < Ho;) {
      const int64_t run = std::min<int64_t>(width - i, Wq - w);
      const int64_t valid = std::min<int64_t>(run, std::max<int64_t>(Wo - w, 0));
      out_t* o = orow + h * osh + w * osw;
      for (int64_t r = 0; r < valid; ++r) o[r * osw] = static_cast<out_t>(tmp[i + r]);
      i += run;
      w = 0;
      ++h;
    }
  }
}

}  // namespace sparsekern::cpu::SK_ISA_NS
