// The x^T copy of csr_linear's prefill path: x (T, K) -> a zero-padded (K, ld) buffer (csr_mm.cu, top: why).
#pragma once

#include <cstdint>

#include "cuda/csr_common.cuh"

namespace sparsekern::cuda::csr_mm {

// ------------------------------------------------------------------------------------------------ x^T copy

// xt[k * ld + t] = x[t, k] for t < T, 0 for T <= t < ld: 32x32 tiles through shared memory, so both the read
// (along K) and the write (along T) are coalesced. Blocks stride over the T tiles: gridDim.y is capped at 65535,
// which one tile per block would exceed from T = 2^21 tokens on.
template <typename scalar_t>
__global__ void transpose_pad_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ xt, int64_t T, int64_t K,
                                     int64_t sxt, int64_t sxk, int64_t ld) {
  using E = typename Bits<scalar_t>::type;
  __shared__ E tile[32][33];
  const E* xs = reinterpret_cast<const E*>(x);
  E* xd = reinterpret_cast<E*>(xt);
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * 32;
  for (int64_t t0 = static_cast<int64_t>(blockIdx.y) * 32; t0 < ld; t0 += static_cast<int64_t>(gridDim.y) * 32) {
    for (int j = threadIdx.y; j < 32; j += blockDim.y) {
      const int64_t t = t0 + j, k = k0 + threadIdx.x;
      tile[j][threadIdx.x] = t < T && k < K ? xs[t * sxt + k * sxk] : E(0);
    }
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += blockDim.y) {
      const int64_t k = k0 + j, t = t0 + threadIdx.x;
      if (k < K && t < ld) xd[k * ld + t] = tile[threadIdx.x][j];
    }
    __syncthreads();  // the tile is refilled by the next T tile
  }
}

}  // namespace sparsekern::cuda::csr_mm
