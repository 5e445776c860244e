// The csr_mm kernels' operands and their shared loads: 8-entry chunks of a CSR row (values and columns, masked
// to the row), the row walk, the bias and the output store. Both kernels (nzsplit.cuh, rowsplit.cuh) build on these.
#pragma once

#include <cstdint>

#include "cuda/csr_common.cuh"
#include "cuda/csr_mm/config.h"
#include "cuda/ptx.cuh"

namespace sparsekern::cuda::csr_mm {

// One launch's operands. Index arrays are untyped: their widths are runtime (csr_common.cuh).
struct Operands {
  const void* crow;
  const void* col;
  const void* order;  // null: rows in storage order
  const void* val;
  const void* B;
  const void* bias;  // null: no bias
  void* out;
  int64_t M, N, K, nnz;
  int64_t sbk, sbn, som, son;  // element strides of B (K, N) and out (M, N)
  int crow_bytes, col_bytes;
  bool nz_aligned;  // val and col 16-byte aligned: chunks load as vectors
};

// ------------------------------------------------------------------------------------------------ chunk loads

// Entries [p, p + 8) of the row [s, e): fp32 values and columns, with v = 0 and c = kNoCol for entries outside
// the row or with a column outside [0, K).
template <typename scalar_t, Ld LD>
__device__ __forceinline__ void load_chunk(const Operands& a, int64_t p, int64_t s, int64_t e, float (&v)[kChunk],
                                           uint32_t (&c)[kChunk]) {
  using E = typename Bits<scalar_t>::type;
  const E* val = static_cast<const E*>(a.val);
  const uint64_t K = static_cast<uint64_t>(a.K);
  if (p >= e) {
#pragma unroll
    for (int i = 0; i < kChunk; ++i) v[i] = 0.f, c[i] = kNoCol;
    return;
  }
  if (a.nz_aligned && p + kChunk <= a.nnz) {
    alignas(16) E vb[kChunk];
    load_vec<kChunk, LD>(val + p, vb);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) v[i] = bits_to_float<scalar_t>(vb[i]);
    if (a.col_bytes == 2) {
      alignas(16) uint16_t cb[kChunk];
      load_vec<kChunk, LD>(static_cast<const uint16_t*>(a.col) + p, cb);
#pragma unroll
      for (int i = 0; i < kChunk; ++i) c[i] = cb[i] < K ? cb[i] : kNoCol;
    } else if (a.col_bytes == 4) {
      alignas(16) int32_t cb[kChunk];
      load_vec<kChunk, LD>(static_cast<const int32_t*>(a.col) + p, cb);
#pragma unroll
      for (int i = 0; i < kChunk; ++i)
        c[i] = static_cast<uint64_t>(static_cast<int64_t>(cb[i])) < K ? static_cast<uint32_t>(cb[i]) : kNoCol;
    } else {
      alignas(16) int64_t cb[kChunk];
      load_vec<kChunk, LD>(static_cast<const int64_t*>(a.col) + p, cb);
#pragma unroll
      for (int i = 0; i < kChunk; ++i) c[i] = static_cast<uint64_t>(cb[i]) < K ? static_cast<uint32_t>(cb[i]) : kNoCol;
    }
#pragma unroll
    for (int i = 0; i < kChunk; ++i) {
      if (p + i < s || p + i >= e || c[i] == kNoCol) v[i] = 0.f, c[i] = kNoCol;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kChunk; ++i) {
      const int64_t j = p + i;
      v[i] = 0.f;
      c[i] = kNoCol;
      if (j >= s && j < e) {
        const int64_t raw = load_index(a.col, j, a.col_bytes);
        if (static_cast<uint64_t>(raw) < K) {
          c[i] = static_cast<uint32_t>(raw);
          v[i] = bits_to_float<scalar_t>(__ldg(val + j));
        }
      }
    }
  }
}

// Row `i` of the walk: its index and its entry range [s, e), or false when the order entry is out of range.
__device__ __forceinline__ bool row_range(const Operands& a, int64_t i, bool use_order, int64_t& row, int64_t& s,
                                          int64_t& e) {
  row = use_order && a.order ? load_index(a.order, i, a.crow_bytes) : i;
  if (static_cast<uint64_t>(row) >= static_cast<uint64_t>(a.M)) return false;
  s = min(max(load_index(a.crow, row, a.crow_bytes), int64_t{0}), a.nnz);
  e = min(max(load_index(a.crow, row + 1, a.crow_bytes), s), a.nnz);
  return true;
}

template <typename scalar_t>
__device__ __forceinline__ float bias_of(const Operands& a, int64_t row) {
  using E = typename Bits<scalar_t>::type;
  return a.bias ? bits_to_float<scalar_t>(__ldg(static_cast<const E*>(a.bias) + row)) : 0.f;
}

template <typename scalar_t>
__device__ __forceinline__ void store(const Operands& a, int64_t m, int64_t n, float x) {
  static_cast<scalar_t*>(a.out)[m * a.som + n * a.son] = static_cast<scalar_t>(x);
}

}  // namespace sparsekern::cuda::csr_mm
