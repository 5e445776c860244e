// CSR SpMM inner loops, compiled once per instruction set by isa_variants.h (no include guard on purpose).
//
// acc[m, 0:NT] += sum_j val[j] * B[col[j], 0:NT] over row m's entries (B points at the panel's columns). NT is a
// compile-time width, so the output tile lives in vector registers across the row's entries: each stored entry
// costs one broadcast, NT/W loads of a gathered B row and NT/W FMAs. csr_mm.cpp pads a panel to a power of two
// from 4 to 64 columns (or leaves it one column wide: the single-column gather), so one tile width, one pass over
// A, covers it; the baseline's widest tile is 32, so a 64-column panel takes two there.
//
// Register budget (objdump of the compiled loops decides): the tile must hold NT/W accumulators times the number
// of independent accumulator sets, plus the B operands, in 16 ymm (AVX2) or 32 zmm (AVX-512) registers. An FMA
// has ~4 cycles of latency and two issue ports, so ~8 independent accumulators keep the FMA units busy. At NT = 64
// that is one set of 8 ymm on AVX2 (two sets there, 16 ymm, spilled every accumulator to the stack on every entry:
// 2.3x slower at 64 tokens on a Zen 3 EPYC) and two sets of 4 zmm on AVX-512; narrower tiles take more sets.
//
// K strips: for each output row the kernel gathers B rows picked by the row's columns, which touch a whole
// (K x NT) panel: 1 MiB at K = 4096, NT = 64, twice a Zen 3 core's 512 KiB L2. K is therefore cut into strips of
// kstrip rows (csr_mm_strip_rows in csr_mm.cpp), and a thread sweeps all its rows over one strip before the next,
// keeping each row's partial sums in an fp32 scratch tile (rows x width, in L2). Each row's entries are first
// split into one segment per strip (csr_mm_segments, after one flat range check of their columns),
// so the inner loop is a counted loop over a segment with no per-entry test. The earlier kernel carried a cursor
// and ended each block at the first column past its end, a test per entry whose exit waited on the column load:
// in a standalone copy on one Zen 3 core (10% density, 64 columns) counted 256-row strips took 11 cycles per
// entry against 15.6 for the cursor over 256 KiB blocks (min of 7 interleaved runs).

namespace sparsekern::cpu::SK_ISA_NS {

constexpr int kCsrVecFloats = (Isa::SK_ISA_NS == Isa::avx512) ? 16 : (Isa::SK_ISA_NS == Isa::avx2) ? 8 : 4;
// Widest tile: 8 vector registers of accumulators for AVX2 / AVX-512 (64 fp32), 8 xmm for the SSE baseline.
constexpr int kCsrMaxNT = (Isa::SK_ISA_NS == Isa::base) ? 32 : 64;

// Rows [0, rows) of the scratch tile acc (row stride lda, columns [0, NT)) += their entries in [s0[i], s1[i]). With
// CHECK, false if an entry's column is outside [k0, k0 + kw) (kw >= 1); without, the columns were checked by
// csr_mm_segments.
template <int NT, bool CHECK, typename seg_t, typename col_t>
inline bool csr_mm_tile(const seg_t* __restrict s0, const seg_t* __restrict s1, const col_t* __restrict col,
                        const float* __restrict val, const float* __restrict B, int64_t ldb, uint64_t k0, uint64_t kw,
                        float* __restrict acc_io, int64_t lda, int64_t rows) {
  // Tiles narrower than a register use a vector of the tile's width.
  constexpr int W = NT < kCsrVecFloats ? NT : kCsrVecFloats, NV = NT / W;
  typedef float csr_vec __attribute__((vector_size(W * sizeof(float))));
  typedef float csr_uvec __attribute__((vector_size(W * sizeof(float)), aligned(4), may_alias));
  // Independent accumulator sets, consecutive entries alternating between them (see the register budget above).
  constexpr int SETS = NV >= 8 ? 1 : NV >= 4 ? 2 : 4;
  uint64_t bad = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t beg = s0[i], end = s1[i];
    if (beg == end) continue;
    float* __restrict a = acc_io + i * lda;
    // Across K strips (no CHECK) each row's segment starts at a jump in the column and value streams that the
    // hardware prefetcher does not follow; fetching the next row's first lines now hides that miss behind this
    // row's work (standalone, 10% density: 10.5-11.6 -> 9.1-9.3 cycles per entry). One strip reads them in order.
    if constexpr (!CHECK) {
      if (i + 1 < rows) {
        const char* c = reinterpret_cast<const char*>(col + s0[i + 1]);
        const char* v = reinterpret_cast<const char*>(val + s0[i + 1]);
        __builtin_prefetch(c);
        __builtin_prefetch(c + 64);
        for (int q = 0; q < 4; ++q) __builtin_prefetch(v + 64 * q);
      }
    }
    csr_vec acc[SETS][NV];
    // Unaligned vector loads and stores of the partial sums through a 4-byte-aligned vector type: the memcpy form
    // compiled to a copy through the stack (xmm halves stored, a ymm loaded back: a failed store forward), paid
    // once per (row, strip).
    for (int v = 0; v < NV; ++v) acc[0][v] = *reinterpret_cast<const csr_uvec*>(a + v * W);
    for (int s = 1; s < SETS; ++s)
      for (int v = 0; v < NV; ++v) acc[s][v] = csr_vec{};
    // The check is off the FMA and load ports: a subtract, a compare, an or and a min per entry. The min keeps
    // the read inside [k0, k0 + kw) whatever the column; the result is discarded when `bad` is set.
#define SK_CSR_MM_ENTRY(J, S)                                                                       \
  {                                                                                                 \
    int64_t k = col[J];                                                                             \
    if constexpr (CHECK) {                                                                          \
      const uint64_t d = static_cast<uint64_t>(k) - k0;                                             \
      bad |= d >= kw;                                                                               \
      k = static_cast<int64_t>(k0 + std::min(d, kw - 1));                                           \
    }                                                                                               \
    const float* __restrict b = B + k * ldb;                                                        \
    /* b in a register: the loads then take base + offset addresses, which Intel cores keep fused */ \
    /* with their FMAs (indexed ones split in two). 1 thread, 4096^2 at 80-95%, Sapphire Rapids */   \
    /* Xeon, in-process A/B (2026-12-08): 1.02-1.09x on AVX-512, 1.02-1.14x on its AVX2 path. */     \
    __asm__("" : "+r"(b));                                                                          \
    const csr_vec v = val[J] - csr_vec{}; /* broadcast (x - 0 == x for every x, unlike x + 0) */    \
    for (int c = 0; c < NV; ++c) {                                                                  \
      csr_vec bv;                                                                                   \
      __builtin_memcpy(&bv, b + c * W, sizeof(bv));                                                 \
      acc[S][c] += v * bv;                                                                          \
    }                                                                                               \
  }
    int64_t j = beg;
    for (; j + SETS <= end; j += SETS) {
#pragma GCC unroll 4
      for (int s = 0; s < SETS; ++s) SK_CSR_MM_ENTRY(j + s, s)
    }
    for (; j < end; ++j) SK_CSR_MM_ENTRY(j, 0)
#undef SK_CSR_MM_ENTRY
    for (int s = 1; s < SETS; ++s)
      for (int v = 0; v < NV; ++v) acc[0][v] += acc[s][v];
    for (int v = 0; v < NV; ++v) *reinterpret_cast<csr_uvec*>(a + v * W) = acc[0][v];
  }
  return bad == 0;
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

// True if every column of rows [r0, r1) is inside [0, K): one flat pass, a max in the column type's own width (16
// lanes for int16 columns; 64-bit lanes have no AVX2 unsigned compare). It runs on every call, also where the
// rows' split below is cached (csr_mm.cpp), so no write to the columns can make a strip tile read outside B.
template <typename index_t, typename col_t>
bool csr_mm_cols_in_range(const index_t* crow, const col_t* col, int64_t K, int64_t r0, int64_t r1) {
  typedef std::make_unsigned_t<col_t> ucol_t;
  ucol_t top = 0;
  for (int64_t j = crow[r0]; j < static_cast<int64_t>(crow[r1]); ++j) top = std::max(top, static_cast<ucol_t>(col[j]));
  return crow[r1] == crow[r0] || static_cast<uint64_t>(top) < static_cast<uint64_t>(K);
}

// seg[b * rows + i] = first entry of row r0 + i in strip b, for b in [0, nstrips]: the entries before the first
// column >= the strip's end. False if a column of rows [r0, r1) is outside [0, K).
//
// The split steps 16 entries at a time while the 16th is still inside the strip, then counts the 16 holding the
// strip's end: in a standalone copy on one Zen 3 core (10% density, 256-row strips) the entry-at-a-time split with
// its check cost 2.4-2.9 cycles per entry, against ~8.5 for the product itself. An unsorted row is split by
// position (the 16-step sees only the 16th column): still a partition of its entries, so the sum is the same, only
// its reads leave their strips.
template <typename index_t, typename col_t>
bool csr_mm_segments(const index_t* crow, const col_t* col, int64_t K, int64_t kstrip, int64_t nstrips, int64_t r0,
                     int64_t r1, int64_t* seg) {
  if (!csr_mm_cols_in_range(crow, col, K, r0, r1)) return false;
  typedef std::make_unsigned_t<col_t> ucol_t;
  // Strip ends compare in 32-bit lanes unless the columns are 64-bit (a strip end can be 65536 for int16 columns).
  typedef std::conditional_t<sizeof(col_t) <= 4, uint32_t, uint64_t> cmp_t;
  const int64_t rows = r1 - r0;
  for (int64_t i = 0; i < rows; ++i) {
    int64_t j = crow[r0 + i];
    const int64_t end = crow[r0 + i + 1];
    for (int64_t b = 0; b < nstrips; ++b) {
      seg[b * rows + i] = j;
      const cmp_t bound = static_cast<cmp_t>(std::min(K, (b + 1) * kstrip));
      while (j + 16 <= end && static_cast<cmp_t>(static_cast<ucol_t>(col[j + 15])) < bound) j += 16;
      if (j + 16 <= end) {
        // The strip ends inside these 16: count the columns below it (16 compares and adds, no branch per entry).
        int64_t below = 0;
        for (int q = 0; q < 16; ++q) below += static_cast<cmp_t>(static_cast<ucol_t>(col[j + q])) < bound;
        j += below;
      } else {
        while (j < end && static_cast<cmp_t>(static_cast<ucol_t>(col[j])) < bound) ++j;
      }
    }
    seg[nstrips * rows + i] = end;
  }
  return true;
}

// col_t is index_t, or uint16_t for compact (int16) columns.
// Rows [r0, r1) times one column panel of B: `panel` is (K, width) contiguous, width 1 or a power of two from 4 to
// kPanel, covering output columns [n0, n0 + cols), cols <= width (the columns past cols are padding, computed and
// not written), over
// nstrips K strips of kstrip rows (one strip: no split needed).
// bias (per row, may be null) seeds the sums. `scratch` holds (r1 - r0) * width floats. `split` is csr_mm_segments
// of these rows, (r1 - r0) * (nstrips + 1) offsets whose columns the caller checked, or null: then they are
// computed (and checked) into `seg_space`, as large. Returns false on a column outside [0, K).
template <typename index_t, typename col_t, typename out_t>
bool csr_mm_panel(const index_t* crow, const col_t* col, const float* val, const float* panel, int64_t width,
                  int64_t cols, int64_t K, int64_t kstrip, int64_t nstrips, const float* bias, int64_t n0, out_t* out,
                  int64_t osm, int64_t osn, int64_t r0, int64_t r1, float* scratch, const int64_t* split, int64_t* seg_space) {
  if (width == 1) return csr_mv_tile(crow, col, val, panel, 1, K, bias, n0, out, osm, osn, r0, r1);
  const int64_t rows = r1 - r0;
  for (int64_t m = r0; m < r1; ++m) {
    const float init = bias ? bias[m] : 0.f;
    for (int64_t i = 0; i < width; ++i) scratch[(m - r0) * width + i] = init;
  }
  if (nstrips > 1 && split == nullptr) {
    if (!csr_mm_segments(crow, col, K, kstrip, nstrips, r0, r1, seg_space)) return false;
    split = seg_space;
  }
  const int64_t* seg = split;
  bool ok = true;
  // One strip: the segments are the rows themselves, and the kernel checks the columns (no split pass to do it).
#define SK_CSR_MM_WIDTH(NT)                                                                                    \
  if (width == NT || (NT == kCsrMaxNT && width > NT)) {                                                        \
    for (int64_t done = 0; ok && done < width; done += NT) {                                                   \
      if (nstrips == 1) {                                                                                      \
        ok = csr_mm_tile<NT, true>(crow + r0, crow + r0 + 1, col, val, panel + done, width, 0, K, scratch + done, \
                                   width, rows);                                                               \
      } else {                                                                                                 \
        for (int64_t b = 0; b < nstrips; ++b)                                                                  \
          csr_mm_tile<NT, false>(seg + b * rows, seg + (b + 1) * rows, col, val, panel + done, width, 0, 0,    \
                                 scratch + done, width, rows);                                                 \
      }                                                                                                        \
    }                                                                                                          \
  }
  if constexpr (kCsrMaxNT >= 64) SK_CSR_MM_WIDTH(64)
  SK_CSR_MM_WIDTH(32)
  SK_CSR_MM_WIDTH(16)
  SK_CSR_MM_WIDTH(8)
  SK_CSR_MM_WIDTH(4)
#undef SK_CSR_MM_WIDTH
  if (!ok) return false;
  // Written in the output's contiguous direction: along n for csr_mm, along m for the Linear orientation.
  if (osn == 1) {
    for (int64_t m = r0; m < r1; ++m)
      for (int64_t i = 0; i < cols; ++i) out[m * osm + n0 + i] = static_cast<out_t>(scratch[(m - r0) * width + i]);
  } else {
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t m = r0; m < r1; ++m) out[m * osm + (n0 + i) * osn] = static_cast<out_t>(scratch[(m - r0) * width + i]);
  }
  return true;
}

}  // namespace sparsekern::cpu::SK_ISA_NS
