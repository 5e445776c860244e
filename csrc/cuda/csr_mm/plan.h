// The host plan of the csr_mm CUDA kernels: which kernel runs a problem and with which tile parameters. Plain C++
// (no CUDA): plain values in, a Plan out, so the CPU extension compiles it too and exposes it as the internal op
// sparsekern._csr_mm_plan, which tests/test_csr_mm_plan.py checks on a machine without a GPU.
//
// The rules (every threshold a first guess, to be tuned on an H100: bench/gpu_check.sh, SPARSEKERN_CSR_MM_CONFIG):
// * kernel: nzsplit for N <= kDecodeMaxN (decode), rowsplit above it (prefill).
// * nzsplit: NT = the smallest power of 2 >= min(N, kDecodeMaxN) accumulators per lane; S = 2^log_s lanes per row
//   with log_s = min(5, ceil(log2(max(1, (nnz / M) / (2 * kChunk))))), so each lane loads about two chunks.
//   B is staged in shared memory when (K, NT) fits kStageBytes, B's rows do not load as NT-wide vectors, and the
//   staged copies (sms * kStagedBlocksPerSm * K * NT * elt bytes, read from L2) are at most half the matrix bytes
//   (nnz * (elt + col_bytes), streamed from HBM).
// * rowsplit: VEC = 16 / elt elements per lane (one 16-byte vector) when B's rows load as such vectors, else 1;
//   W = clamp(next_pow2(ceil(N / VEC)), 8, 32) lanes per row when VEC > 1, else 32; the output tile is written
//   transposed when the caller asks for it (Linear orientation) and VEC > 1.
// * config (the environment's SPARSEKERN_CSR_MM_CONFIG, read per call so one process can sweep) overrides the kernel:
//   "nz:<S>" (nzsplit, subwarp S, staging by the rule above), "nz:<S>:staged", "nz:<S>:global", or "rows:<W>".
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "constants.h"
#include "cuda/csr_mm/config.h"

namespace sparsekern::cuda::csr_mm {

enum class Kind { kNzSplit, kRowSplit };

struct Plan {
  Kind kind = Kind::kNzSplit;
  int nt = 1;           // nzsplit: accumulator width (power of 2, <= 16)
  int log_s = 5;        // nzsplit: log2 of the subwarp width S
  bool staged = false;  // nzsplit: B in shared memory
  int w = 32;           // rowsplit: subwarp width
  int vec = 1;          // rowsplit: elements per lane vector (1 = scalar path)
  bool trans_out = false;
};

// What the plan is chosen from: out (M, N) = A (M, K, nnz stored) @ B (K, N), and what the host measured of the
// operands and the device (csr_mm.cu, plan_inputs).
struct PlanInputs {
  int64_t M = 0, N = 0, K = 0, nnz = 0;
  int elt = 2;               // bytes per element of B (and of A's values)
  int col_bytes = 2;         // bytes per stored column index
  bool rows_vec = false;     // B's rows load as 16-byte vectors (rows_load_as_vectors(B, 16 / elt))
  bool rows_vec_nt = false;  // B's rows load as NT-wide vectors (rows_load_as_vectors(B, nzsplit_width(N)))
  int sms = 1;               // streaming multiprocessors of the device
  bool trans_out = false;    // the caller would like rowsplit's output tile written transposed
};

inline int pow2_ceil(int64_t v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

inline int log2_ceil(int64_t v) {
  int l = 0;
  while ((int64_t{1} << l) < v) ++l;
  return l;
}

// NT, the nzsplit kernel's accumulator width for N columns.
inline int nzsplit_width(int64_t N) { return pow2_ceil(std::min<int64_t>(N, kDecodeMaxN)); }

// Applies the override `config` (SPARSEKERN_CSR_MM_CONFIG; null or empty: none) to p.
inline void apply_override(Plan& p, const char* config, int nt, bool stage_fits, bool stage_by_default) {
  if (config == nullptr || *config == '\0') return;
  int width = 0;
  char mode[16] = {};
  if (std::sscanf(config, "nz:%d:%15s", &width, mode) >= 1) {
    TORCH_CHECK_VALUE(width >= 1 && width <= 32 && (width & (width - 1)) == 0,
                      "sparsekern: SPARSEKERN_CSR_MM_CONFIG nz:<S> needs S in {1, 2, 4, 8, 16, 32}, got '", config,
                      "'");
    TORCH_CHECK_VALUE(*mode == '\0' || std::strcmp(mode, "staged") == 0 || std::strcmp(mode, "global") == 0,
                      "sparsekern: SPARSEKERN_CSR_MM_CONFIG nz:<S>:<mode> needs mode staged or global, got '", config,
                      "'");
    TORCH_CHECK_VALUE(std::strcmp(mode, "staged") != 0 || stage_fits, "sparsekern: SPARSEKERN_CSR_MM_CONFIG '",
                      config, "': B does not fit the shared-memory budget of ", kStageBytes, " bytes");
    p.kind = Kind::kNzSplit;
    p.nt = nt;
    p.log_s = log2_ceil(width);
    p.staged = *mode == '\0' ? stage_by_default : std::strcmp(mode, "staged") == 0;
  } else if (std::sscanf(config, "rows:%d", &width) == 1) {
    TORCH_CHECK_VALUE(width == 8 || width == 16 || width == 32,
                      "sparsekern: SPARSEKERN_CSR_MM_CONFIG rows:<W> needs W in {8, 16, 32}, got '", config, "'");
    p.kind = Kind::kRowSplit;
    p.w = p.vec > 1 ? width : 32;
  } else {
    TORCH_CHECK_VALUE(false, "sparsekern: SPARSEKERN_CSR_MM_CONFIG must be nz:<S>[:staged|:global] or rows:<W>, got '",
                      config, "'");
  }
}

// The plan for out (M, N) = A @ B, by the rules at the top of this file.
inline Plan choose_plan(const PlanInputs& in, const char* config) {
  Plan p;
  const int64_t elt = in.elt;
  p.vec = static_cast<int>(16 / elt);
  if (!in.rows_vec) p.vec = 1;
  p.w = p.vec > 1 ? std::clamp(pow2_ceil((in.N + p.vec - 1) / p.vec), 8, 32) : 32;
  const int nt = nzsplit_width(in.N);
  const bool stage_fits = in.K * nt * elt <= kStageBytes;
  // Rows of B that load as one vector are cheap to gather from L1; strided or odd-width rows (x read in place in
  // the Linear orientation) cost NT scalar loads per entry, so those are staged when the copies of B that the
  // persistent blocks read from L2 stay under half the matrix bytes streamed from HBM.
  const int64_t staging_bytes = static_cast<int64_t>(in.sms) * kStagedBlocksPerSm * in.K * nt * elt;
  const int64_t matrix_bytes = in.nnz * (elt + in.col_bytes);
  const bool stage_by_default = stage_fits && !in.rows_vec_nt && 2 * staging_bytes <= matrix_bytes;
  if (in.N <= kDecodeMaxN) {
    p.kind = Kind::kNzSplit;
    p.nt = nt;
    // Lanes per row so that each lane loads about two chunks: more lanes = more loads in flight.
    const int64_t avg = in.M > 0 ? in.nnz / in.M : 0;
    p.log_s = std::min(5, log2_ceil(std::max<int64_t>(1, avg / (2 * kChunk))));
    p.staged = stage_by_default;
  } else {
    p.kind = Kind::kRowSplit;
  }
  apply_override(p, config, nt, stage_fits, stage_by_default);
  p.trans_out = p.kind == Kind::kRowSplit && in.trans_out && p.vec > 1;
  return p;
}

}  // namespace sparsekern::cuda::csr_mm
