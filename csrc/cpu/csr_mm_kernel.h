// CSR SpMM inner loops, compiled once per instruction set by isa_variants.h (no include guard on purpose).
//
// acc[m, 0:NT] += sum_j val[j] * B[col[j], 0:NT] over row m's entries (B points at the panel's columns). NT is a
// compile-time width, so the output tile lives in vector registers across the row's entries: each stored entry
// costs one broadcast, NT/W loads of a gathered B row and NT/W FMAs. A panel is walked in widths 64, 32, ..., 2
// (and the single-column gather for 1), so any width is covered without a scalar remainder loop.
//
// Register budget (objdump of the compiled loops decides): the tile must hold NT/W accumulators times the number
// of independent accumulator sets, plus the B operands, in 16 ymm (AVX2) or 32 zmm (AVX-512) registers. An FMA
// has ~4 cycles of latency and two issue ports, so ~8 independent accumulators keep the FMA units busy. At NT = 64
// that is one set of 8 ymm on AVX2 (two sets there, 16 ymm, spilled every accumulator to the stack on every entry:
// 2.3x slower at 64 tokens on a Zen 3 EPYC) and two sets of 4 zmm on AVX-512; narrower tiles take more sets.
//
// K blocking: for each output row the kernel gathers B rows picked by the row's columns, which touch a whole
// (K x NT) panel: 1 MiB at K = 4096, NT = 64, twice a Zen 3 core's 512 KiB L2. The K range is therefore cut into
// blocks whose panel slice fits in L2 (kCsrKBlockBytes); a thread sweeps all its rows over one block before the
// next, carrying each row's position in a cursor and its partial sums in an fp32 scratch tile (rows x width, in
// L2 too). A row's entries in a block are those before its first column >= the block's end: with sorted columns
// exactly the block's entries; unsorted rows are still summed exactly once (an entry is taken by the first block
// whose end exceeds its column), only less cache-friendly. Columns outside [0, K) are never below a block end
// (negative ones compare as huge unsigned), so they leave the cursor short of the row's end, which is the check.

namespace sparsekern::cpu::SK_ISA_NS {

constexpr int kCsrVecFloats = (Isa::SK_ISA_NS == Isa::avx512) ? 16 : (Isa::SK_ISA_NS == Isa::avx2) ? 8 : 4;
// Widest tile: 8 vector registers of accumulators for AVX2 / AVX-512 (64 fp32), 8 xmm for the SSE baseline.
constexpr int kCsrMaxNT = (Isa::SK_ISA_NS == Isa::base) ? 32 : 64;
// B bytes per K block: half of the smallest L2 the kernels target (Zen 3, 512 KiB), the rest for the scratch
// tile and the streamed values and columns.
constexpr int64_t kCsrKBlockBytes = int64_t{256} << 10;

// Rows [r0, r1) of the scratch tile acc (row stride lda, columns [0, NT)) += their entries with columns below k1,
// starting at cur[m - r0] and advancing it.
template <int NT, typename index_t, typename col_t>
inline void csr_mm_tile(const index_t* __restrict crow, const col_t* __restrict col, const float* __restrict val,
                        const float* __restrict B, int64_t ldb, uint64_t k1, int64_t* __restrict cur,
                        float* __restrict acc_io, int64_t lda, int64_t r0, int64_t r1) {
  // Tiles narrower than a register use a vector of the tile's width.
  constexpr int W = NT < kCsrVecFloats ? NT : kCsrVecFloats, NV = NT / W;
  typedef float csr_vec __attribute__((vector_size(W * sizeof(float))));
  // Independent accumulator sets, consecutive entries alternating between them (see the register budget above).
  constexpr int SETS = NV >= 8 ? 1 : NV >= 4 ? 2 : 4;
  for (int64_t m = r0; m < r1; ++m) {
    float* __restrict a = acc_io + (m - r0) * lda;
    csr_vec acc[SETS][NV];
    // Unaligned vector loads and stores by memcpy.
    for (int v = 0; v < NV; ++v) __builtin_memcpy(&acc[0][v], a + v * W, sizeof(csr_vec));
    for (int s = 1; s < SETS; ++s)
      for (int v = 0; v < NV; ++v) acc[s][v] = csr_vec{};
    const int64_t end = crow[m + 1];
    int64_t j = cur[m - r0];
    bool more = true;
    while (more) {
#pragma GCC unroll 4
      for (int s = 0; s < SETS; ++s) {
        if (j == end || static_cast<uint64_t>(col[j]) >= k1) {
          more = false;
          break;
        }
        const float* __restrict b = B + static_cast<int64_t>(col[j]) * ldb;
        const csr_vec v = val[j] - csr_vec{};  // broadcast (x - 0 == x for every x, unlike x + 0)
        for (int c = 0; c < NV; ++c) {
          csr_vec bv;
          __builtin_memcpy(&bv, b + c * W, sizeof(bv));
          acc[s][c] += v * bv;
        }
        ++j;
      }
    }
    cur[m - r0] = j;
    for (int s = 1; s < SETS; ++s)
      for (int v = 0; v < NV; ++v) acc[0][v] += acc[s][v];
    for (int v = 0; v < NV; ++v) __builtin_memcpy(a + v * W, &acc[0][v], sizeof(csr_vec));
  }
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

// Columns [done, done + NT) of the scratch tile (row stride tiled) over every K block. False on a column outside
// [0, K) (the row's cursor stops short of its end).
template <int NT, typename index_t, typename col_t>
bool csr_mm_width(const index_t* crow, const col_t* col, const float* val, const float* panel, int64_t width,
                  int64_t K, int64_t kblock, float* scratch, int64_t tiled, int64_t done, int64_t* cur, int64_t r0,
                  int64_t r1) {
  for (int64_t m = r0; m < r1; ++m) cur[m - r0] = crow[m];
  for (int64_t k0 = 0; k0 < K; k0 += kblock) {
    const uint64_t k1 = static_cast<uint64_t>(std::min(K, k0 + kblock));
    csr_mm_tile<NT>(crow, col, val, panel + done, width, k1, cur, scratch + done, tiled, r0, r1);
  }
  for (int64_t m = r0; m < r1; ++m)
    if (cur[m - r0] != static_cast<int64_t>(crow[m + 1])) return false;
  return true;
}

// col_t is index_t, or uint16_t for compact (int16) columns.
// Rows [r0, r1) times one column panel of B: `panel` is (K, width) contiguous, width <= kPanel, covering
// output columns [n0, n0 + width). bias (per row, may be null) seeds the sums. `scratch` holds
// (r1 - r0) * width floats and `cur` r1 - r0 cursors. Returns false on a column index outside [0, K).
template <typename index_t, typename col_t, typename out_t>
bool csr_mm_panel(const index_t* crow, const col_t* col, const float* val, const float* panel, int64_t width,
                  int64_t K, const float* bias, int64_t n0, out_t* out, int64_t osm, int64_t osn, int64_t r0,
                  int64_t r1, float* scratch, int64_t* cur) {
  // The last column of an odd width is the gather (no tile to fill); the rest go through the scratch tile.
  const int64_t tiled = width - (width & 1);
  if (tiled > 0) {
    for (int64_t m = r0; m < r1; ++m) {
      const float init = bias ? bias[m] : 0.f;
      for (int64_t i = 0; i < tiled; ++i) scratch[(m - r0) * tiled + i] = init;
    }
    // Gathered rows occupy whole 64-byte lines, however narrow.
    const int64_t kblock = std::max<int64_t>(64, kCsrKBlockBytes / std::max<int64_t>(64, 4 * width));
    int64_t done = 0;
    bool ok = true;
#define SK_CSR_MM_WIDTH(NT)                                                                                  \
  while (ok && tiled - done >= NT) {                                                                         \
    ok = csr_mm_width<NT>(crow, col, val, panel, width, K, kblock, scratch, tiled, done, cur, r0, r1);       \
    done += NT;                                                                                              \
  }
    if constexpr (kCsrMaxNT >= 64) SK_CSR_MM_WIDTH(64)
    SK_CSR_MM_WIDTH(32)
    SK_CSR_MM_WIDTH(16)
    SK_CSR_MM_WIDTH(8)
    SK_CSR_MM_WIDTH(4)
    SK_CSR_MM_WIDTH(2)
#undef SK_CSR_MM_WIDTH
    if (!ok) return false;
    // Written in the output's contiguous direction: along n for csr_mm, along m for the Linear orientation.
    if (osn == 1) {
      for (int64_t m = r0; m < r1; ++m)
        for (int64_t i = 0; i < tiled; ++i) out[m * osm + n0 + i] = static_cast<out_t>(scratch[(m - r0) * tiled + i]);
    } else {
      for (int64_t i = 0; i < tiled; ++i)
        for (int64_t m = r0; m < r1; ++m)
          out[m * osm + (n0 + i) * osn] = static_cast<out_t>(scratch[(m - r0) * tiled + i]);
    }
  }
  if (tiled < width)
    return csr_mv_tile(crow, col, val, panel + tiled, width, K, bias, n0 + tiled, out, osm, osn, r0, r1);
  return true;
}

}  // namespace sparsekern::cpu::SK_ISA_NS
