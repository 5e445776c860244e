// csr_mm's decode kernel (N <= kDecodeMaxN): a subwarp shares one row and splits its nonzeros (csr_mm.cu, top).
#pragma once

#include <cstdint>

#include "cuda/csr_mm/tiles.cuh"

namespace sparsekern::cuda::csr_mm {

// nzsplit's register cap (blocks per SM) by the bytes of one accumulator row; config.h (kMinBlocks) says why.
template <typename scalar_t>
constexpr int nzsplit_min_blocks(int nt) {
  const int row_bytes = nt * static_cast<int>(sizeof(scalar_t));
  return row_bytes >= 64 ? 1 : row_bytes >= 32 ? 2 : kMinBlocks;
}

// Where the nzsplit kernel gathers B's rows from.
enum class BSrc { kShared, kVector, kScalar };

// ------------------------------------------------------------------------------------------------ nzsplit

// Columns [n0, n0 + NT) of B's row c, as fp32 (zeros past N, and for c == kNoCol).
template <typename scalar_t, int NT, BSrc SRC>
__device__ __forceinline__ void gather_row(const Operands& a, const typename Bits<scalar_t>::type* sB, uint32_t c,
                                           int64_t n0, float (&b)[NT]) {
  using E = typename Bits<scalar_t>::type;
  alignas(16) E raw[NT];
  if (c == kNoCol) {
#pragma unroll
    for (int n = 0; n < NT; ++n) b[n] = 0.f;
    return;
  }
  if constexpr (SRC == BSrc::kShared) {
    load_vec<NT, Ld::kPlain>(sB + static_cast<int64_t>(c) * NT, raw);
  } else if constexpr (SRC == BSrc::kVector) {
    load_vec<NT, Ld::kReadOnly>(static_cast<const E*>(a.B) + static_cast<int64_t>(c) * a.sbk + n0 * a.sbn, raw);
  } else {
    const E* B = static_cast<const E*>(a.B) + static_cast<int64_t>(c) * a.sbk;
#pragma unroll
    for (int n = 0; n < NT; ++n) raw[n] = n0 + n < a.N ? __ldg(B + (n0 + n) * a.sbn) : E(0);
  }
#pragma unroll
  for (int n = 0; n < NT; ++n) b[n] = bits_to_float<scalar_t>(raw[n]);
}

// Copies columns [n0, n0 + NT) of B (K, N), any strides, into sB (K, NT), zero past N; reads coalesced along
// whichever of B's dimensions is contiguous.
template <typename scalar_t, int NT>
__device__ void stage_B(const Operands& a, typename Bits<scalar_t>::type* sB, int64_t n0) {
  using E = typename Bits<scalar_t>::type;
  const E* B = static_cast<const E*>(a.B);
  const int total = static_cast<int>(a.K) * NT;
  if (a.sbn == 1 || NT == 1) {
    for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
      const int k = idx / NT, n = idx % NT;
      sB[idx] = n0 + n < a.N ? B[k * a.sbk + (n0 + n) * a.sbn] : E(0);
    }
  } else {
    const int K = static_cast<int>(a.K);
    for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
      const int n = idx / K, k = idx - n * K;
      sB[k * NT + n] = n0 + n < a.N ? B[k * a.sbk + (n0 + n) * a.sbn] : E(0);
    }
  }
}

// grid (row groups [persistent when kShared], ceil(N / NT)); a block holds kThreads / S subwarps, one row each.
template <typename scalar_t, int NT, BSrc SRC>
__global__ void __launch_bounds__(kThreads, nzsplit_min_blocks<scalar_t>(NT))
    csr_mm_nzsplit(const Operands a, const int log_s) {
  using E = typename Bits<scalar_t>::type;
  extern __shared__ __align__(16) unsigned char smem[];
  E* sB = reinterpret_cast<E*>(smem);
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * NT;
  if constexpr (SRC == BSrc::kShared) {
    stage_B<scalar_t, NT>(a, sB, n0);
    __syncthreads();
  }
  const int S = 1 << log_s;
  const int sub = threadIdx.x >> log_s, lane = threadIdx.x & (S - 1);
  const int warp_lane = threadIdx.x & 31;
  const unsigned mask = S == 32 ? 0xFFFFFFFFu : ((1u << S) - 1u) << (warp_lane & ~(S - 1));
  const int rows_per_block = kThreads >> log_s;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * rows_per_block + sub; i < a.M;
       i += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    int64_t row, s, e;
    if (!row_range(a, i, true, row, s, e)) continue;
    float acc[NT];
#pragma unroll
    for (int n = 0; n < NT; ++n) acc[n] = 0.f;
    const int64_t step = static_cast<int64_t>(kChunk) * S;
    float v[kChunk];
    uint32_t c[kChunk];
    const int64_t first = (s & ~static_cast<int64_t>(kChunk - 1)) + static_cast<int64_t>(kChunk) * lane;
    load_chunk<scalar_t, Ld::kStream>(a, first, s, e, v, c);
    // The subwarp's trip count is uniform (q walks chunk groups, each lane's chunk is q + 8 * lane), so lanes
    // stay converged and the next group's loads are in flight during this group's gathers and FMAs.
    for (int64_t q = first; q - kChunk * lane < e; q += step) {
      float vn[kChunk];
      uint32_t cn[kChunk];
      load_chunk<scalar_t, Ld::kStream>(a, q + step, s, e, vn, cn);
#pragma unroll
      for (int k = 0; k < kChunk; ++k) {
        float b[NT];
        gather_row<scalar_t, NT, SRC>(a, sB, c[k], n0, b);
#pragma unroll
        for (int n = 0; n < NT; ++n) acc[n] = fmaf(v[k], b[n], acc[n]);
      }
#pragma unroll
      for (int k = 0; k < kChunk; ++k) v[k] = vn[k], c[k] = cn[k];
    }
    for (int off = S >> 1; off > 0; off >>= 1) {
#pragma unroll
      for (int n = 0; n < NT; ++n) acc[n] += __shfl_xor_sync(mask, acc[n], off);
    }
    const float b0 = bias_of<scalar_t>(a, row);
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      if ((n & (S - 1)) == lane && n0 + n < a.N) store<scalar_t>(a, row, n0 + n, acc[n] + b0);
    }
  }
}

}  // namespace sparsekern::cuda::csr_mm
