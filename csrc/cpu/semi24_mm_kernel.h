// 2:4 SpMM inner loops, compiled once per instruction set by isa_variants.h (no include guard on purpose).
//
// out[m, n0:n0+NT] += v0 * B[4q + i0, n0:n0+NT] + v1 * B[4q + i1, n0:n0+NT] over row m's groups q: exactly half
// the multiply-adds of the dense product. The indices come straight from the mma-ordered metadata: row m's 8
// nibbles of a k32 step sit in the half-words `hi` of two adjacent words (lanes 4g + 2*tile and 4g + 2*tile + 1,
// see sparsekern/formats/semi24.py), so one step costs two loads and a few shifts per row, no per-call decode.
//
// Blocking: B is staged as contiguous panels of NT columns (semi24_panel_cols), and the K range is cut into
// blocks of kSemi24KBlock rows whose (block x NT) slice of a panel stays in L1 while a thread sweeps a panel of
// rows over it. RB rows x NT columns of accumulators live in vector registers across the block (NT = 4 vectors:
// 16 zmm accumulators with AVX-512). Each stored value then costs one broadcast and NT/W FMAs whose B operand is
// an L1 load: the "gather" is only an address computed from a 2-bit index. The sweep touches each row's block
// segment once, which no hardware prefetcher predicts, hence software prefetch (it was worth 1.6x here).
// Measured on the 2-core AVX-512 machine, 4096^2 @ 4096 x 64 fp32: ~1.5x dense MKL. The panels: read in place
// from a row-major B of N columns, the slice's rows sat 4N bytes apart, on few L1 sets when N is a power of two;
// on the 2-core Zen 3 EPYC (AVX2, 4096^2, old and new builds in alternating processes, 2026-12-07) staging
// them took 64 tokens from 0.88x to 1.07x torch.mm in the same process and 256 tokens from 0.80x to 0.98x.
// N == 1 (decode) takes a gather along K instead (semi24_gemv_rows).

namespace sparsekern::cpu::SK_ISA_NS {

constexpr int kSemi24VecFloats = (Isa::SK_ISA_NS == Isa::avx512) ? 16 : (Isa::SK_ISA_NS == Isa::avx2) ? 8 : 4;
constexpr int kSemi24Rows = (Isa::SK_ISA_NS == Isa::avx512) ? 4 : 3;  // accumulators: 4 x 4 of 32 zmm, 3 x 4 of 16
constexpr int64_t kSemi24KBlock = 128;  // K rows per block: 128 x 64 fp32 = 32 KB of B in L1
constexpr int kSemi24Prefetch = 2;       // row tiles ahead
constexpr bool kSemi24Lut = Isa::SK_ISA_NS == Isa::avx512;  // B row offsets from a table (semi24_tile)

// Columns of a B panel: the register tile's 4 vectors.
inline int64_t semi24_panel_cols() { return 4 * kSemi24VecFloats; }
typedef float semi24_vec __attribute__((vector_size(kSemi24VecFloats * sizeof(float))));
typedef int32_t semi24_ivec __attribute__((vector_size(kSemi24VecFloats * sizeof(int32_t))));

inline semi24_vec semi24_load(const float* p) {
  semi24_vec v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

inline void semi24_store(float* p, const semi24_vec& v) { __builtin_memcpy(p, &v, sizeof(v)); }

// The first of the two words holding row m's metadata for k32 step kb (lane 4g + 2*tile; the next is K 16-31).
inline const uint32_t* semi24_step_word(const uint32_t* meta, int64_t KB, int64_t m, int64_t kb) {
  const int r = static_cast<int>(m & 31);
  return meta + ((m >> 5) * KB + kb) * 32 + 4 * (r & 7) + 2 * (r >> 4);
}

// Nibble j of the result = row m's metadata for group 8*kb + j.
inline uint32_t semi24_step_bits(const uint32_t* __restrict meta, int64_t KB, int64_t m, int64_t kb) {
  const uint32_t* w = semi24_step_word(meta, KB, m, kb);
  const int shift = 16 * ((m >> 3) & 1);  // rows g + 8 of a tile: high half-words
  return ((w[0] >> shift) & 0xFFFFu) | (((w[1] >> shift) & 0xFFFFu) << 16);
}

// Rows [m0, m0 + RB), columns [n0, n0 + NV * W) of the fp32 (M, N) output (row stride ldo), groups [q0, q1); B
// points at those columns' first in their panel (row stride ldb).
// The two kept B rows of a group, relative to its first: {idx0 * ldb, idx1 * ldb}. The AVX-512 variant reads them
// from lut[nib] (an and, a shift and two table loads), sparing the shifts, masks and multiplies on the ALU ports
// that Intel's FMAs share. The other variants compute them: on Zen 3 the integer ALUs are apart from the FP pipes,
// and the loads are the bound (every FMA reads its B operand from L1, two vector loads a cycle), so the table's two
// loads per slot cost time there. On the 2-core Zen 3 EPYC (2026-12-07): the inner loop with B in L1 (standalone,
// 3 x 32 tile) 0.84 -> 0.74 cycles per vector FMA; 4096^2 fp32 @ 4096 x N, 2 threads, the two forms alternating
// call by call in one process, N = 32 7.10 -> 6.31 ms, 64 13.2 -> 12.0, 128 30.4 -> 25.6, 256 48.3 -> 43.1.
template <int NV, int RB>
inline void semi24_tile(const float* __restrict values, int64_t ldv, const uint32_t* __restrict meta, int64_t KB,
                        const float* __restrict B, int64_t ldb, const int64_t (*__restrict lut)[2], int64_t q0,
                        int64_t q1, float* __restrict out, int64_t ldo, int64_t m0, int64_t n0, int64_t prefetch_end) {
  constexpr int W = kSemi24VecFloats;
  semi24_vec acc[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = semi24_load(out + (m0 + r) * ldo + n0 + j * W);

  for (int64_t kb = q0 / 8; kb * 8 < q1; ++kb) {
    // The sweep visits each row's K-block segment once, rows ldv apart: no hardware prefetcher follows that, so
    // the values (one 64-byte line per row and k32 step) and metadata of the rows kSemi24Prefetch tiles ahead are
    // prefetched, one step at a time so the requests spread over the compute.
    for (int r = 0; r < RB; ++r) {
      const int64_t m = m0 + kSemi24Prefetch * RB + r;
      if (m < prefetch_end) {
        __builtin_prefetch(values + m * ldv + 16 * kb);
        __builtin_prefetch(semi24_step_word(meta, KB, m, kb));
      }
    }
    const int64_t qa = std::max(q0, kb * 8), qb = std::min(q1, kb * 8 + 8);
    uint32_t bits[RB];
    for (int r = 0; r < RB; ++r) bits[r] = semi24_step_bits(meta, KB, m0 + r, kb) >> (4 * (qa - kb * 8));
    const float* __restrict Bq = B + 4 * qa * ldb;
#pragma GCC unroll 2
    for (int64_t q = qa; q < qb; ++q, Bq += 4 * ldb) {
      for (int r = 0; r < RB; ++r) {
        const uint32_t nib = bits[r] & 15;
        bits[r] >>= 4;
        const float* __restrict b0 = Bq + (kSemi24Lut ? lut[nib][0] : (nib & 3) * ldb);
        const float* __restrict b1 = Bq + (kSemi24Lut ? lut[nib][1] : ((nib >> 2) & 3) * ldb);
        const float* __restrict v = values + (m0 + r) * ldv + 2 * q;
        // broadcasts (x - 0 == x for every x, unlike x + 0)
        const semi24_vec v0 = v[0] - semi24_vec{}, v1 = v[1] - semi24_vec{};
        for (int c = 0; c < NV; ++c) {
          acc[r][c] += v0 * semi24_load(b0 + c * W);
          acc[r][c] += v1 * semi24_load(b1 + c * W);
        }
      }
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int j = 0; j < NV; ++j) semi24_store(out + (m0 + r) * ldo + n0 + j * W, acc[r][j]);
}

template <int NV>
inline void semi24_rows_width(const float* values, int64_t ldv, const uint32_t* meta, int64_t KB, const float* B,
                              int64_t ldb, const int64_t (*lut)[2], int64_t q0, int64_t q1, float* out, int64_t ldo,
                              int64_t r0, int64_t r1, int64_t n0) {
  int64_t m = r0;
  for (; m + kSemi24Rows <= r1; m += kSemi24Rows)
    semi24_tile<NV, kSemi24Rows>(values, ldv, meta, KB, B, ldb, lut, q0, q1, out, ldo, m, n0, r1);
  for (; m < r1; ++m) semi24_tile<NV, 1>(values, ldv, meta, KB, B, ldb, lut, q0, q1, out, ldo, m, n0, r1);
}

// x[k[i]] for every lane i: one vgatherdps with AVX-512, lane by lane elsewhere. (Templates, so that the
// AVX-512 branch is only instantiated in the AVX-512 variant.)
template <Isa I, typename FV, typename IV>
inline FV semi24_gather(const float* x, const IV& k) {
#if defined(__GNUC__) && defined(__x86_64__)
  if constexpr (I == Isa::avx512) return (FV)_mm512_i32gather_ps((__m512i)k, x, 4);
#endif
  FV r;
  for (int i = 0; i < static_cast<int>(sizeof(FV) / sizeof(float)); ++i) r[i] = x[k[i]];
  return r;
}

// One column (decode, N == 1): the per-slot broadcast-and-row-FMA form would use one lane of each vector, so
// the loop runs along K instead (AVX-512 and AVX2: by permutes of x in registers, see below). The 2-bit index of slot i of a k32 step is bits 2i+1..2i of the step's 32
// nibble bits, so W slots at a time are a variable shift, a mask, a gather from B and one FMA with W
// contiguous values. Full k32 steps only (returns how many groups it covered); the caller does the rest.
inline int64_t semi24_gemv_rows(const float* __restrict values, int64_t ldv, const uint32_t* __restrict meta,
                                int64_t KB, const float* __restrict B, int64_t ldb, int64_t K, float* __restrict out,
                                int64_t ldo, int64_t r0, int64_t r1) {
  constexpr int W = kSemi24VecFloats;
  const int64_t steps = K / 32;
#if SK_ISA_AVX512
  // B contiguous along K (always, for one column): a step's 32 x values fit two registers, and a two-source
  // permute (vpermt2ps) picks each slot's x by its 5-bit position in place of a 16-lane gather from memory
  // (vgatherdps: 16 loads). Two accumulators, alternating steps, so consecutive FMAs do not wait on each other.
  if (ldb == 1) {
    const __m512i slot_shift = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i slot_group = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    const __m512i three = _mm512_set1_epi32(3);
    for (int64_t m = r0; m < r1; ++m) {
      __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int64_t kb = 0; kb < steps; ++kb) {
        const __m512i bits = _mm512_set1_epi32(static_cast<int32_t>(semi24_step_bits(meta, KB, m, kb)));
        const __m512i pos = _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(bits, slot_shift), three), slot_group);
        const __m512 x = _mm512_permutex2var_ps(_mm512_loadu_ps(B + 32 * kb), pos, _mm512_loadu_ps(B + 32 * kb + 16));
        acc[kb & 1] = _mm512_fmadd_ps(_mm512_loadu_ps(values + m * ldv + 16 * kb), x, acc[kb & 1]);
      }
      out[m * ldo] += _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
    }
    return 8 * steps;
  }
#elif SK_ISA_AVX2
  // AVX2 has no two-source permute: each half step's 8 slots pick from 16 x values (two registers) with two
  // one-source permutes (vpermps reads the low 3 bits of the position) and a blend on bit 3 of the position.
  // Measured on a 2-core EPYC (AVX2), fp32, one token, against MKL's dense gemv: 1.27x (4096^2) to 2.05x (2048^2),
  // where the lane-by-lane gather below ran 0.36-0.77x.
  if (ldb == 1) {
    const __m256i slot_shift = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i slot_group = _mm256_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12);
    const __m256i three = _mm256_set1_epi32(3);
    for (int64_t m = r0; m < r1; ++m) {
      __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int64_t kb = 0; kb < steps; ++kb) {
        const uint32_t step = semi24_step_bits(meta, KB, m, kb);
        for (int h = 0; h < 2; ++h) {  // slots 8h..8h+7 cover x[32kb + 16h, +16)
          const __m256i bits = _mm256_set1_epi32(static_cast<int32_t>(step >> (16 * h)));
          const __m256i pos = _mm256_add_epi32(_mm256_and_si256(_mm256_srlv_epi32(bits, slot_shift), three), slot_group);
          const float* x = B + 32 * kb + 16 * h;
          const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x), pos);
          const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + 8), pos);
          const __m256 xs = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(pos, 28)));
          acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(values + m * ldv + 16 * kb + 8 * h), xs, acc[h]);
        }
      }
      const __m256 s = _mm256_add_ps(acc[0], acc[1]);
      __m128 r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
      r = _mm_add_ps(r, _mm_movehl_ps(r, r));
      r = _mm_add_ss(r, _mm_movehdup_ps(r));
      out[m * ldo] += _mm_cvtss_f32(r);
    }
    return 8 * steps;
  }
#endif
  semi24_ivec shift, group;
  for (int i = 0; i < W; ++i) shift[i] = 2 * i, group[i] = 4 * (i / 2);
  for (int64_t m = r0; m < r1; ++m) {
    semi24_vec acc = {};
    for (int64_t kb = 0; kb < steps; ++kb) {
      const uint32_t bits = semi24_step_bits(meta, KB, m, kb);
      for (int h = 0; h < 16; h += W) {  // W = 16: the whole step at once; 8 and 4: in 16 / W parts
        const semi24_ivec b = static_cast<int32_t>(bits >> (2 * h)) - semi24_ivec{};
        const semi24_ivec k = ((b >> shift) & 3) + group + static_cast<int32_t>(32 * kb + 2 * h);
        const semi24_vec v = semi24_load(values + m * ldv + 16 * kb + h);
        acc += v * semi24_gather<Isa::SK_ISA_NS, semi24_vec>(B, k * static_cast<int32_t>(ldb));
      }
    }
    float sum = 0.f;
    for (int i = 0; i < W; ++i) sum += acc[i];
    out[m * ldo] += sum;
  }
  return 8 * steps;
}

// out (M, N) fp32, row stride ldo, rows [r0, r1): out = A @ B + bias[:, None]. values (M, Kp/2) fp32 with row
// stride ldv, B (K, N) fp32 with row stride ldb. N is 1 or a multiple of 16 (the caller pads B's columns:
// one pass over A with a few idle lanes beats one pass per power-of-two remainder width). For N > 1, `panels`
// holds B as (K, w) contiguous panels of w = semi24_panel_cols() columns (the last one N % w if that is not 0),
// the panel of columns [n0, n0 + w) at panels + K * n0.
inline void semi24_mm_rows(const float* values, int64_t ldv, const int32_t* meta_i, int64_t KB, const float* B,
                           int64_t ldb, const float* panels, int64_t K, int64_t N, const float* bias, float* out,
                           int64_t ldo, int64_t r0, int64_t r1) {
  const uint32_t* meta = reinterpret_cast<const uint32_t*>(meta_i);
  for (int64_t m = r0; m < r1; ++m) {
    const float init = bias ? bias[m] : 0.f;
    for (int64_t n = 0; n < N; ++n) out[m * ldo + n] = init;
  }
  constexpr int W = kSemi24VecFloats, PW = 4 * W;
  // One table per panel stride: full panels, and the last one's (read by the AVX-512 variant only).
  int64_t lut[2][16][2];
  for (int t = 0; t < 2; ++t) {
    const int64_t stride = t == 0 ? PW : N % PW;
    for (int nib = 0; nib < 16; ++nib) lut[t][nib][0] = (nib & 3) * stride, lut[t][nib][1] = ((nib >> 2) & 3) * stride;
  }
  // Full k32 steps through the gather (N == 1) or full groups through the blocked kernel; the groups left
  // (a ragged last one included, K % 4) slot by slot below, with their indices range-checked.
  const int64_t full = K / 4;
  const int64_t done = N == 1 ? semi24_gemv_rows(values, ldv, meta, KB, B, ldb, K, out, ldo, r0, r1) : full;
  // Row panels whose (panel x N) fp32 output block stays in L2 (~512 KB) across the K blocks, so wide N does not
  // stream the accumulators through memory once per K block; B is re-read from L2/L3 once per panel.
  const int64_t panel = std::max<int64_t>(kSemi24Rows, (int64_t{1} << 17) / std::max<int64_t>(N, 1));
  for (int64_t p0 = r0; N > 1 && p0 < r1; p0 += panel) {
    const int64_t p1 = std::min(r1, p0 + panel);
    for (int64_t q0 = 0; q0 < full; q0 += kSemi24KBlock / 4) {
      const int64_t q1 = std::min(full, q0 + kSemi24KBlock / 4);
      for (int64_t n0 = 0; n0 < N; n0 += PW) {
        const int64_t w = std::min<int64_t>(PW, N - n0);
        const float* Bp = panels + K * n0;
        const int64_t(*lut_p)[2] = lut[w == PW ? 0 : 1];
        int64_t c = 0;
        if (w == PW) {
          semi24_rows_width<4>(values, ldv, meta, KB, Bp, w, lut_p, q0, q1, out, ldo, p0, p1, n0);
          c = PW;
        }
        if (w - c >= 2 * W) {
          semi24_rows_width<2>(values, ldv, meta, KB, Bp + c, w, lut_p, q0, q1, out, ldo, p0, p1, n0 + c);
          c += 2 * W;
        }
        if (w - c >= W) semi24_rows_width<1>(values, ldv, meta, KB, Bp + c, w, lut_p, q0, q1, out, ldo, p0, p1, n0 + c);
      }
    }
  }
  for (int64_t q = done; 4 * q < K; ++q) {
    for (int64_t m = r0; m < r1; ++m) {
      const uint32_t nib = semi24_step_bits(meta, KB, m, q / 8) >> (4 * (q % 8));
      const int64_t k[2] = {4 * q + (nib & 3), 4 * q + ((nib >> 2) & 3)};
      for (int s = 0; s < 2; ++s) {
        if (k[s] >= K) continue;
        const float v = values[m * ldv + 2 * q + s];
        for (int64_t n = 0; n < N; ++n) out[m * ldo + n] += v * B[k[s] * ldb + n];
      }
    }
  }
}

}  // namespace sparsekern::cpu::SK_ISA_NS
