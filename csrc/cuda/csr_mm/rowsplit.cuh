// csr_mm's prefill kernel (N > kDecodeMaxN): Sputnik's 1-D tiling, a subwarp owns one row and X output columns
// (csr_mm.cu, top).
#pragma once

#include <cstdint>

#include "cuda/csr_mm/tiles.cuh"

namespace sparsekern::cuda::csr_mm {

// ------------------------------------------------------------------------------------------------ rowsplit

// grid (ceil(M / Y), ceil(N / X)); subwarp `sub` of W lanes owns one row, lane `lane` columns [nb, nb + VEC).
template <typename scalar_t, int W, int VEC, bool TRANS_OUT>
__global__ void __launch_bounds__(kThreads, kMinBlocks) csr_mm_rowsplit(const Operands a) {
  using E = typename Bits<scalar_t>::type;
  constexpr int Y = kThreads / W, X = W * VEC;
  const int sub = threadIdx.x / W, lane = threadIdx.x % W;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * Y + sub;
  const int64_t nb = static_cast<int64_t>(blockIdx.y) * X + static_cast<int64_t>(lane) * VEC;
  const bool full = nb + VEC <= a.N, any = nb < a.N;
  int64_t row = -1, s = 0, e = 0;
  if (i < a.M && !row_range(a, i, !TRANS_OUT, row, s, e)) row = -1;
  float acc[VEC];
#pragma unroll
  for (int n = 0; n < VEC; ++n) acc[n] = 0.f;
  if (row >= 0 && any) {
    const E* B = static_cast<const E*>(a.B);
    float v[kChunk];
    uint32_t c[kChunk];
    int64_t q = s & ~static_cast<int64_t>(kChunk - 1);
    load_chunk<scalar_t, Ld::kReadOnly>(a, q, s, e, v, c);
    for (; q < e; q += kChunk) {
      float vn[kChunk];
      uint32_t cn[kChunk];
      load_chunk<scalar_t, Ld::kReadOnly>(a, q + kChunk, s, e, vn, cn);
#pragma unroll
      for (int k = 0; k < kChunk; ++k) {
        if (c[k] == kNoCol) continue;
        const E* src = B + static_cast<int64_t>(c[k]) * a.sbk;
        alignas(16) E raw[VEC];
        if (VEC > 1 && full) {
          load_vec<VEC, Ld::kReadOnly>(src + nb, raw);
        } else {
#pragma unroll
          for (int n = 0; n < VEC; ++n) raw[n] = nb + n < a.N ? __ldg(src + (nb + n) * a.sbn) : E(0);
        }
#pragma unroll
        for (int n = 0; n < VEC; ++n) acc[n] = fmaf(v[k], bits_to_float<scalar_t>(raw[n]), acc[n]);
      }
#pragma unroll
      for (int k = 0; k < kChunk; ++k) v[k] = vn[k], c[k] = cn[k];
    }
  }
  const float b0 = row >= 0 ? bias_of<scalar_t>(a, row) : 0.f;
  if constexpr (TRANS_OUT) {
    __shared__ float tile[X][Y + 1];
#pragma unroll
    for (int n = 0; n < VEC; ++n) tile[lane * VEC + n][sub] = acc[n] + b0;
    __syncthreads();
    const int64_t m0 = static_cast<int64_t>(blockIdx.x) * Y, c0 = static_cast<int64_t>(blockIdx.y) * X;
    for (int idx = threadIdx.x; idx < X * Y; idx += kThreads) {
      const int r = idx % Y, n = idx / Y;
      if (m0 + r < a.M && c0 + n < a.N) store<scalar_t>(a, m0 + r, c0 + n, tile[n][r]);
    }
  } else if (row >= 0) {
#pragma unroll
    for (int n = 0; n < VEC; ++n) {
      if (nb + n < a.N) store<scalar_t>(a, row, nb + n, acc[n] + b0);
    }
  }
}

}  // namespace sparsekern::cuda::csr_mm
