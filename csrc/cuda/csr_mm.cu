// CUDA kernels of csr_mm and csr_linear: Sputnik-class CSR SpMM on CUDA cores, fp32 accumulation.
// sparsekern-arch: sm_90a
//
// Two kernels, chosen by the width N of the dense operand (choose_plan below; every threshold is a first guess
// to be tuned on an H100, see bench/gpu_check.sh and SPARSEKERN_CSR_MM_CONFIG):
//
// * nzsplit (N <= 16, LLM decode): a pure bandwidth problem. Each stored value and index must be read exactly
//   once, so a subwarp of S lanes shares one row and splits its *nonzeros*: lane l takes chunks of 8 stored
//   entries (16 B of fp16 values + 16 B of uint16 indices, one vector load each, streamed evict-first), with
//   the next chunk's loads issued before this chunk's math. Each lane keeps NT = next_pow2(N) fp32 accumulators
//   (one per output column) and gathers NT-wide rows of B; a butterfly over the subwarp finishes the row.
//   B's rows come from one of three sources (a template parameter, so each variant keeps only its own
//   registers): kVector, one NT-wide vector load per entry (rows contiguous and aligned); kScalar, NT strided
//   loads; kShared, the block first copies B (K, NT) into shared memory (through any strides, so the Linear
//   orientation stages x's rows directly) and blocks are persistent, so staging is paid once per block. kShared
//   is the default only where the rows would otherwise be scalar loads and the staging traffic is small.
// * rowsplit (N > 16, prefill): Sputnik's 1-D tiling. A subwarp of W lanes owns one row and X = W * VEC
//   output columns, each lane VEC columns (one 16-byte vector: 8 fp16 / 4 fp32). All W lanes load the same
//   8-entry chunk of the row (one broadcast transaction), then each lane gathers a 16-byte vector of B per
//   entry: per 8 entries, 2-3 chunk loads, 8 gathers and 8 * VEC FMAs per lane. TRANS_OUT stages the (Y rows x X
//   columns) output tile in shared memory and writes it transposed, so that the Linear orientation's
//   (T, M) output is written coalesced along M (this needs the block's Y rows consecutive: no row order).
//
// Both walk rows in `row_order` (rows sorted by length, longest first) when given: heavy rows start first and
// the rows that share a warp have similar lengths, so neither the warp nor the grid's tail waits on one row.
//
// Chunks start at the row start rounded down to 8 entries and mask the entries outside the row (Sputnik's
// trick), so every chunk load is aligned; a chunk that would cross the end of the arrays, or arrays that are
// not 16-byte aligned, fall back to predicated scalar loads. Column indices outside [0, K) (possible only with
// unvalidated input) and a row order entry outside [0, M) are skipped, never read through; crow entries are
// clamped to [0, nnz]. Unvalidated garbage therefore gives wrong numbers but can never fault.
//
// Linear orientation, y (T, M) = x (T, K) @ A^T: B is x^T. For T <= 16 the kernel reads x in place: staged
// (x's rows copied coalesced into shared memory), or for T <= 2 gathered from global memory through strides
// (T scattered loads per entry). Otherwise x^T is written once per call into a (K, T_pad) buffer by a tiled
// transpose (T*K elements; next to the nnz*T FMAs and the nnz*(2+2) weight bytes this is small: at T = 1024,
// K = 4096 it is 16 MB of traffic against >= 430 MB of gathered B rows). Gathering x directly instead would
// cost one 32-byte sector per entry *per token*, T times the traffic of one contiguous row of x^T. A is never
// copied.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "checks.h"
#include "cuda/csr_common.cuh"

namespace sparsekern::cuda {
namespace {

constexpr int kThreads = 256;             // threads per block, both kernels
constexpr int kChunk = 8;                 // stored entries per chunk load
constexpr uint32_t kNoCol = 0xFFFFFFFFu;  // "no column": masked or out-of-range entry (K < 2^32 - 1 checked)
constexpr int kNzSplitMaxN = 16;          // N (or T) up to which nzsplit is used
constexpr int64_t kStageBytes = 32 << 10; // B (K, NT) staged in shared memory up to this size
constexpr int kLinearDirectMaxT = 2;      // Linear orientation, not staged: gather x in place up to this T
constexpr int kStagedBlocksPerSm = 2;     // persistent blocks per SM of the staged nzsplit kernel
// Register caps: 3 blocks of 256 threads per SM leave 80 registers a thread, spill-free for rowsplit and for
// nzsplit up to 16-byte accumulator rows; wider rows get 2 blocks (128 registers), 64-byte rows 1. Without a cap
// ptxas takes 100-190 registers for nzsplit, a quarter of the occupancy that keeps enough loads in flight.
constexpr int kMinBlocks = 3;
template <typename scalar_t>
constexpr int nzsplit_min_blocks(int nt) {
  const int row_bytes = nt * static_cast<int>(sizeof(scalar_t));
  return row_bytes >= 64 ? 1 : row_bytes >= 32 ? 2 : kMinBlocks;
}

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

// Where the nzsplit kernel gathers B's rows from.
enum class BSrc { kShared, kVector, kScalar };

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

// x (T, K) -> a (K, T) view of a fresh (K, ld) buffer, ld = T rounded up to `multiple`, padding zeroed.
at::Tensor transposed_padded(const at::Tensor& x, int64_t multiple) {
  const int64_t T = x.size(0), K = x.size(1), ld = (T + multiple - 1) / multiple * multiple;
  at::Tensor xt = at::empty({K, ld}, x.options());
  if (K == 0) return xt.narrow(1, 0, T);
  const dim3 block(32, 8),
      grid(static_cast<unsigned>((K + 31) / 32), static_cast<unsigned>(std::min<int64_t>((ld + 31) / 32, 65535)));
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    transpose_pad_kernel<scalar_t><<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), xt.data_ptr<scalar_t>(), T, K, x.stride(0), x.stride(1), ld);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return xt.narrow(1, 0, T);
}

// ------------------------------------------------------------------------------------------------ host

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

int pow2_ceil(int64_t v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

int log2_ceil(int64_t v) {
  int l = 0;
  while ((int64_t{1} << l) < v) ++l;
  return l;
}

struct DeviceInfo {
  int sms = 0, smem_per_sm = 0;
};

const DeviceInfo& device_info() {
  static DeviceInfo infos[64];
  const int dev = c10::cuda::current_device();
  TORCH_CHECK(dev < 64, "sparsekern: device index ", dev, " out of range");
  DeviceInfo& d = infos[dev];
  if (d.sms == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  }
  return d;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether columns [n0, n0 + width) of every row of B load as one aligned vector, for every tile n0 < N: rows
// contiguous and aligned, and the last tile's vector inside B's storage (padding past N may be read, unused).
bool rows_load_as_vectors(const at::Tensor& B, int64_t width) {
  const int64_t K = B.size(0), N = B.size(1), elt = B.element_size();
  if (width == 1) return true;
  if (B.stride(1) != 1 || K == 0) return false;
  const int64_t align = std::min<int64_t>(16, width * elt);
  if ((B.stride(0) * elt) % align != 0 || reinterpret_cast<uintptr_t>(B.data_ptr()) % align != 0) return false;
  const int64_t tiles = (N + width - 1) / width;
  const int64_t last = B.storage_offset() + (K - 1) * B.stride(0) + tiles * width;
  return last * elt <= static_cast<int64_t>(B.storage().nbytes());
}

// Optional override for tuning sweeps without rebuilding, read per call so one process can sweep:
// SPARSEKERN_CSR_MM_CONFIG = "nz:<S>" (nzsplit, subwarp S, staging by the default rule), "nz:<S>:staged",
// "nz:<S>:global", or "rows:<W>" (rowsplit, subwarp W).
void apply_override(Plan& p, int nt, bool stage_fits, bool stage_by_default) {
  const char* env = std::getenv("SPARSEKERN_CSR_MM_CONFIG");
  if (env == nullptr || *env == '\0') return;
  int width = 0;
  char mode[16] = {};
  if (std::sscanf(env, "nz:%d:%15s", &width, mode) >= 1) {
    TORCH_CHECK_VALUE(width >= 1 && width <= 32 && (width & (width - 1)) == 0,
                      "sparsekern: SPARSEKERN_CSR_MM_CONFIG nz:<S> needs S in {1, 2, 4, 8, 16, 32}, got '", env, "'");
    TORCH_CHECK_VALUE(*mode == '\0' || std::strcmp(mode, "staged") == 0 || std::strcmp(mode, "global") == 0,
                      "sparsekern: SPARSEKERN_CSR_MM_CONFIG nz:<S>:<mode> needs mode staged or global, got '", env,
                      "'");
    TORCH_CHECK_VALUE(std::strcmp(mode, "staged") != 0 || stage_fits, "sparsekern: SPARSEKERN_CSR_MM_CONFIG '", env,
                      "': B does not fit the shared-memory budget of ", kStageBytes, " bytes");
    p.kind = Kind::kNzSplit;
    p.nt = nt;
    p.log_s = log2_ceil(width);
    p.staged = *mode == '\0' ? stage_by_default : std::strcmp(mode, "staged") == 0;
  } else if (std::sscanf(env, "rows:%d", &width) == 1) {
    TORCH_CHECK_VALUE(width == 8 || width == 16 || width == 32,
                      "sparsekern: SPARSEKERN_CSR_MM_CONFIG rows:<W> needs W in {8, 16, 32}, got '", env, "'");
    p.kind = Kind::kRowSplit;
    p.w = p.vec > 1 ? width : 32;
  } else {
    TORCH_CHECK_VALUE(false, "sparsekern: SPARSEKERN_CSR_MM_CONFIG must be nz:<S>[:staged|:global] or rows:<W>, got '",
                      env, "'");
  }
}

// The plan for out (M, N) = A @ B. The thresholds are first guesses, to be tuned on the GPU.
Plan choose_plan(const Operands& a, const at::Tensor& B, bool trans_out) {
  Plan p;
  const int64_t elt = B.element_size();
  p.vec = static_cast<int>(16 / elt);
  if (!rows_load_as_vectors(B, p.vec)) p.vec = 1;
  p.w = p.vec > 1 ? std::clamp(pow2_ceil((a.N + p.vec - 1) / p.vec), 8, 32) : 32;
  const int nt = pow2_ceil(std::min<int64_t>(a.N, kNzSplitMaxN));
  const bool stage_fits = a.K * nt * elt <= kStageBytes;
  // Rows of B that load as one vector are cheap to gather from L1; strided or odd-width rows (x read in place in
  // the Linear orientation) cost NT scalar loads per entry, so those are staged when the copies of B that the
  // persistent blocks read from L2 stay under half the matrix bytes streamed from HBM.
  const DeviceInfo& d = device_info();
  const int64_t staging_bytes = static_cast<int64_t>(d.sms) * kStagedBlocksPerSm * a.K * nt * elt;
  const int64_t matrix_bytes = a.nnz * (elt + a.col_bytes);
  const bool stage_by_default = stage_fits && !rows_load_as_vectors(B, nt) && 2 * staging_bytes <= matrix_bytes;
  if (a.N <= kNzSplitMaxN) {
    p.kind = Kind::kNzSplit;
    p.nt = nt;
    // Lanes per row so that each lane loads about two chunks: more lanes = more loads in flight.
    const int64_t avg = a.M > 0 ? a.nnz / a.M : 0;
    p.log_s = std::min(5, log2_ceil(std::max<int64_t>(1, avg / (2 * kChunk))));
    p.staged = stage_by_default;
  } else {
    p.kind = Kind::kRowSplit;
  }
  apply_override(p, nt, stage_fits, stage_by_default);
  p.trans_out = p.kind == Kind::kRowSplit && trans_out && p.vec > 1;
  return p;
}

template <typename scalar_t, int NT, BSrc SRC>
void launch_nzsplit_as(const Operands& a, const Plan& p, cudaStream_t stream) {
  const int rows_per_block = kThreads >> p.log_s;
  int64_t groups = (a.M + rows_per_block - 1) / rows_per_block;
  size_t smem = 0;
  if constexpr (SRC == BSrc::kShared) {
    // Persistent blocks, kStagedBlocksPerSm per SM: few enough that staging B (once per block, from L2) stays
    // small next to the matrix bytes, each walking many row groups.
    smem = static_cast<size_t>(a.K) * NT * sizeof(typename Bits<scalar_t>::type);
    const DeviceInfo& d = device_info();
    const int per_sm = std::max<int>(1, std::min<int>(kStagedBlocksPerSm, d.smem_per_sm / std::max<int>(1, smem)));
    groups = std::min<int64_t>(groups, static_cast<int64_t>(d.sms) * per_sm);
  }
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(groups, INT32_MAX)),
                  static_cast<unsigned>((a.N + NT - 1) / NT));
  csr_mm_nzsplit<scalar_t, NT, SRC><<<grid, kThreads, smem, stream>>>(a, p.log_s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int W, int VEC, bool TRANS_OUT>
void launch_rowsplit_as(const Operands& a, cudaStream_t stream) {
  constexpr int Y = kThreads / W, X = W * VEC;
  const dim3 grid(static_cast<unsigned>((a.M + Y - 1) / Y), static_cast<unsigned>((a.N + X - 1) / X));
  csr_mm_rowsplit<scalar_t, W, VEC, TRANS_OUT><<<grid, kThreads, 0, stream>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// vec_rows: B's rows load as NT-wide vectors (nzsplit's kVector source).
template <typename scalar_t>
void launch(const Operands& a, const Plan& p, bool vec_rows) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (p.kind == Kind::kNzSplit) {
    TORCH_CHECK((a.N + p.nt - 1) / p.nt <= 65535, "sparsekern: N = ", a.N, " is too wide for the nzsplit kernel");
    const auto go = [&](auto nt) {
      constexpr int NT = decltype(nt)::value;
      if (p.staged) launch_nzsplit_as<scalar_t, NT, BSrc::kShared>(a, p, stream);
      else if (NT == 1 || vec_rows) launch_nzsplit_as<scalar_t, NT, BSrc::kVector>(a, p, stream);
      else if constexpr (NT > 1) launch_nzsplit_as<scalar_t, NT, BSrc::kScalar>(a, p, stream);
    };
    switch (p.nt) {
      case 1: go(std::integral_constant<int, 1>{}); break;
      case 2: go(std::integral_constant<int, 2>{}); break;
      case 4: go(std::integral_constant<int, 4>{}); break;
      case 8: go(std::integral_constant<int, 8>{}); break;
      default: go(std::integral_constant<int, 16>{}); break;
    }
    return;
  }
  constexpr int V = 16 / sizeof(typename Bits<scalar_t>::type);
  TORCH_CHECK((a.N + p.w * p.vec - 1) / (p.w * p.vec) <= 65535, "sparsekern: N = ", a.N, " is too wide");
  if (p.vec == 1) return launch_rowsplit_as<scalar_t, 32, 1, false>(a, stream);
  const auto go = [&](auto w) {
    constexpr int Wc = decltype(w)::value;
    if (p.trans_out) launch_rowsplit_as<scalar_t, Wc, V, true>(a, stream);
    else launch_rowsplit_as<scalar_t, Wc, V, false>(a, stream);
  };
  switch (p.w) {
    case 8: go(std::integral_constant<int, 8>{}); break;
    case 16: go(std::integral_constant<int, 16>{}); break;
    default: go(std::integral_constant<int, 32>{}); break;
  }
}

// A's components made contiguous once per call (no-ops for a CSRMatrix), and the bias.
struct Components {
  at::Tensor crow, col, val, order, bias;
  Components(const at::Tensor& crow_, const at::Tensor& col_, const at::Tensor& val_,
             const std::optional<at::Tensor>& order_, const std::optional<at::Tensor>& bias_)
      : crow(crow_.contiguous()), col(col_.contiguous()), val(val_.contiguous()),
        order(order_.has_value() ? order_->contiguous() : at::Tensor()),
        bias(bias_.has_value() ? bias_->contiguous() : at::Tensor()) {}
};

// out (M, N) = A @ B + bias[:, None]; B (K, N) and out may have any strides.
Operands operands(const char* op, const Components& c, const at::Tensor& B, at::Tensor& out) {
  Operands a{};
  a.crow = c.crow.data_ptr();
  a.col = c.col.data_ptr();
  a.order = c.order.defined() ? c.order.data_ptr() : nullptr;
  a.val = c.val.data_ptr();
  a.B = B.data_ptr();
  a.bias = c.bias.defined() ? c.bias.data_ptr() : nullptr;
  a.out = out.data_ptr();
  a.M = out.size(0), a.N = out.size(1), a.K = B.size(0), a.nnz = c.col.numel();
  SK_CHECK_VALUE(a.K < static_cast<int64_t>(kNoCol), op, "K = ", a.K, " is too large for the CUDA kernels");
  a.sbk = B.stride(0), a.sbn = B.stride(1), a.som = out.stride(0), a.son = out.stride(1);
  a.crow_bytes = static_cast<int>(c.crow.element_size());
  a.col_bytes = static_cast<int>(c.col.element_size());
  a.nz_aligned = aligned16(a.val) && aligned16(a.col);
  return a;
}

void execute(const Operands& a, const Plan& p, const at::Tensor& B) {
  if (a.M == 0 || a.N == 0) return;
  const bool vec_rows = p.kind == Kind::kNzSplit && rows_load_as_vectors(B, p.nt);
  dispatch_float(B.scalar_type(), [&](auto tag) { launch<decltype(tag)>(a, p, vec_rows); });
}


at::Tensor csr_mm_cuda(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val, const at::Tensor& B,
                       const std::optional<at::Tensor>& row_order) {
  const char* op = "csr_mm";
  check_csr_components(op, crow, col, val);
  check_row_order(op, row_order, crow);
  check_dense(op, B, "B", val);
  const c10::cuda::CUDAGuard guard(B.device());
  at::Tensor out = at::empty({crow.numel() - 1, B.size(1)}, B.options());
  const Components c(crow, col, val, row_order, std::nullopt);
  const Operands a = operands(op, c, B, out);
  execute(a, choose_plan(a, B, false), B);
  return out;
}

at::Tensor csr_linear_cuda(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                           const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& row_order) {
  const char* op = "csr_linear";
  check_csr_components(op, crow, col, val);
  check_row_order(op, row_order, crow);
  check_dense(op, x, "x", val);
  const int64_t M = crow.numel() - 1, T = x.size(0);
  check_linear_bias(op, bias, val, M);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({T, M}, x.options());
  at::Tensor out = y.t();
  if (M == 0 || T == 0) return y;
  const Components c(crow, col, val, row_order, bias);
  if (T > kNzSplitMaxN) {
    // Prefill: x^T once, padded so that its rows load as 16-byte vectors; the output tile written transposed.
    const at::Tensor xt = transposed_padded(x, 16 / x.element_size());
    const Operands a = operands(op, c, xt, out);
    execute(a, choose_plan(a, xt, true), xt);
    return y;
  }
  // Decode: x read in place (staged into shared memory, or gathered through strides while T is tiny), else a
  // (K, NT) x^T so that each stored entry gathers one contiguous NT-wide row.
  const at::Tensor xv = x.t();
  const Operands a = operands(op, c, xv, out);
  const Plan p = choose_plan(a, xv, false);
  if (p.kind == Kind::kNzSplit && !p.staged && T > kLinearDirectMaxT && !rows_load_as_vectors(xv, p.nt)) {
    const at::Tensor xt = transposed_padded(x, p.nt);
    execute(operands(op, c, xt, out), p, xt);
  } else {
    execute(a, p, xv);
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CUDA, m) {
  m.impl("csr_mm", &csr_mm_cuda);
  m.impl("csr_linear", &csr_linear_cuda);
}

}  // namespace sparsekern::cuda
