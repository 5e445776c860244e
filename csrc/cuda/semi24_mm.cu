// sparsekern-arch: sm_90a
//
// CUDA kernels of semi24_mm (A @ B) and semi24_linear (x @ A.T + bias), A 2:4-sparse in the Semi24Matrix layout
// (sparsekern/formats/semi24.py: values (M, Kp/2) row-major, metadata words already in mma.sp register order).
//
// fp16/bf16 run on the sparse tensor cores, mma.sp::ordered_metadata m16n8k32 with fp32 accumulation:
//  * tc kernel (N > 16): 128x128 output tile per 256-thread block, 8 warps as 2 (M) x 4 (N), each warp 64x32 =
//    4 m16 tiles x 4 n8 tiles; K step 64 (2 mma k32 steps) through a 3-stage cp.async pipeline. Per stage the
//    block stages A values (128 x 32 halves), B (64 k x 128 n) and the 1 KB of E words; ldmatrix.x4 feeds A
//    (the compressed 16x16 tile has the dense m16n8k16 A-fragment layout), ldmatrix.x4(.trans) feeds B: .trans for
//    B (K, N) row-major (semi24_mm), plain for x (T, K) row-major (semi24_linear reads x as the column-major B
//    operand, so neither A nor x is transposed). Each E word serves two m16 tiles (selector 0, then 1).
//  * decode kernel (N <= 16): the problem is reading A once at full bandwidth. One block per 32-row metadata
//    block; its 8 warps split K (warp w takes k32 steps w, w+8, ...) through private 6-stage cp.async rings,
//    then reduce through shared memory. B is read straight from global as 32-bit pairs of x (N, K) rows and
//    lanes past N feed zeros, so N is never padded to 32 in memory: N <= 8 uses one n8 mma per tile.
// fp32 runs a plain SIMT kernel that decodes the same metadata (correct, not tuned: tensor cores have no 2:4
// fp32 path that keeps fp32 accuracy).
//
// Shared-memory tiles are XOR-swizzled in 16-byte chunks so that every ldmatrix phase (8 rows x 16 B) hits
// 8 distinct bank groups; sparsekern/formats/semi24_mma.py mirrors these offsets and the tests check them.
// Ragged M and N are predicated (cp.async zero-fill on loads, guarded stores); K is padded by the format, and
// B rows past K are zero-filled, so padding slots (zero values) multiply zeros.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "constants.h"
#include "cuda/ptx.cuh"
#include "semi24_checks.h"

namespace sparsekern::cuda {
namespace {

static_assert(kSemi24KTile == 64, "the tc kernel's K step is the format's K tile");
static_assert(kDecodeMaxN <= 16, "the decode kernel holds at most two n8 tiles");

template <typename T>
struct Params {
  const T* values;        // (M, Kp/2)
  const int32_t* meta;    // (ceil(M/32), Kp/32, 32)
  const T* B;             // semi24_mm: (K, N) row-major; semi24_linear and decode: (N, K) row-major
  const T* bias;          // (M,) or null
  T* out;                 // element (m, n) at out[m * som + n * son]
  int M, N, K, Kp;
  int64_t ldb;            // B's row stride
  int b_contig;           // valid extent of B's contiguous dimension (>= N resp. K, chunk-aligned)
  int64_t som, son;
};

// Stores accumulator register r of an m16n8 tile whose top-left is (m_base, n_base): the mma C layout puts
// c0, c1 at row g, columns 2t, 2t+1 and c2, c3 at row g + 8.
template <typename T>
__device__ __forceinline__ void store_acc(const Params<T>& p, int m_base, int n_base, int lane, int r, float v) {
  const int m = m_base + (lane >> 2) + (r >> 1) * 8;
  const int n = n_base + (lane & 3) * 2 + (r & 1);
  if (m < p.M && n < p.N) {
    if (p.bias) v += static_cast<float>(p.bias[m]);
    p.out[m * p.som + n * p.son] = static_cast<T>(v);
  }
}

// ----------------------------------------------------------------------------------------------- tc kernel

namespace tc {
constexpr int BM = 128, BN = 128, BK = 64, STAGES = 3, THREADS = 256;
constexpr int WARPS_N = 4, WM = 64, WN = 32, MT = WM / 16, NT = WN / 8;
constexpr int A_HALVES = BM * BK / 2;                      // 128 rows x 32 compressed halves (4 chunks)
constexpr int B_HALVES = BK * BN;                          // 64 x 128 either way round
constexpr int E_WORDS = (BM / 32) * (BK / 32) * 32;        // 4 row blocks x 2 k32 steps x 32 lanes
constexpr int STAGE_BYTES = 2 * (A_HALVES + B_HALVES) + 4 * E_WORDS;
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;

// Offsets in halves of 16-byte chunk c of tile row r. A rows are 64 B: rows 2i and 2i+1 share a 128-byte line,
// so chunk ^= (r/2)%4 spreads 8 consecutive rows over 8 chunk slots. B rows are 256 B (k-major) or 128 B
// (n-major): chunk ^= r%8.
__device__ __forceinline__ int a_off(int r, int c) { return r * 32 + ((c ^ ((r >> 1) & 3)) << 3); }
__device__ __forceinline__ int bk_off(int k, int c) { return k * BN + ((c ^ (k & 7)) << 3); }
__device__ __forceinline__ int bn_off(int n, int c) { return n * BK + ((c ^ (n & 7)) << 3); }

template <typename T, bool B_NMAJOR>
__device__ __forceinline__ void load_stage(const Params<T>& p, char* stage, int m0, int n0, int k0, int tid) {
  T* As = reinterpret_cast<T*>(stage);
  T* Bs = As + A_HALVES;
  int32_t* Es = reinterpret_cast<int32_t*>(Bs + B_HALVES);
  const int64_t ldv = p.Kp / 2;
#pragma unroll
  for (int i = 0; i < A_HALVES / 8 / THREADS; ++i) {
    const int id = tid + i * THREADS, r = id >> 2, c = id & 3;
    const bool ok = m0 + r < p.M;
    cp_async16(As + a_off(r, c), ok ? p.values + (m0 + r) * ldv + k0 / 2 + c * 8 : p.values, ok);
  }
#pragma unroll
  for (int i = 0; i < B_HALVES / 8 / THREADS; ++i) {
    const int id = tid + i * THREADS;
    if constexpr (!B_NMAJOR) {
      const int r = id >> 4, c = id & 15, k = k0 + r, n = n0 + c * 8;
      const bool ok = k < p.K && n < p.b_contig;
      cp_async16(Bs + bk_off(r, c), ok ? p.B + k * p.ldb + n : p.B, ok);
    } else {
      const int r = id >> 3, c = id & 7, n = n0 + r, k = k0 + c * 8;
      const bool ok = n < p.N && k < p.b_contig;
      cp_async16(Bs + bn_off(r, c), ok ? p.B + n * p.ldb + k : p.B, ok);
    }
  }
  if (tid < E_WORDS / 4) {
    // Per 32-row block, the E words of both k32 steps are 256 contiguous bytes.
    const int blk = tid >> 4, c = tid & 15, mb = m0 / 32 + blk;
    const bool ok = mb * 32 < p.M;
    cp_async16(Es + blk * 64 + c * 4, ok ? p.meta + (static_cast<int64_t>(mb) * (p.Kp / 32) + k0 / 32) * 32 + c * 4 : p.meta,
               ok);
  }
}

template <typename T, bool B_NMAJOR>
__global__ void __launch_bounds__(THREADS) semi24_mm_tc_kernel(const Params<T> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ __align__(128) char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm0 = (warp / WARPS_N) * WM, wn0 = (warp % WARPS_N) * WN;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int KT = p.Kp / BK;
  // A warp skips the mma of a 32-row block that has no metadata (past ceil(M/32)*32): its E words are zero-filled,
  // and 0b0000 is not a valid index pair. Warp-uniform, so mma.sync stays converged.
  bool blk_ok[MT / 2];
#pragma unroll
  for (int i = 0; i < MT / 2; ++i) blk_ok[i] = m0 + wm0 + i * 32 < p.M;

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load_stage<T, B_NMAJOR>(p, smem + s * STAGE_BYTES, m0, n0, s * BK, tid);
    cp_async_commit();
  }

  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile kt visible to all; everyone is done with the stage the next load overwrites
    const int pre = kt + STAGES - 1;
    if (pre < KT) load_stage<T, B_NMAJOR>(p, smem + (pre % STAGES) * STAGE_BYTES, m0, n0, pre * BK, tid);
    cp_async_commit();

    const char* stage = smem + (kt % STAGES) * STAGE_BYTES;
    const T* As = reinterpret_cast<const T*>(stage);
    const T* Bs = As + A_HALVES;
    const uint32_t* Es = reinterpret_cast<const uint32_t*>(Bs + B_HALVES);
#pragma unroll
    for (int ks = 0; ks < BK / 32; ++ks) {
      uint32_t a[MT][4], b[NT][4], e[MT / 2];
#pragma unroll
      for (int i = 0; i < MT; ++i)  // lanes 0-7: rows 0-7, 8-15: rows 8-15, 16-31: the next 8 halves
        ldmatrix_x4(a[i], As + a_off(wm0 + i * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, ks * 2 + (lane >> 4)));
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        if constexpr (!B_NMAJOR)  // lane l: k row l of the step; matrix q = k rows 8q..8q+7 = b register q
          ldmatrix_x4_trans(b[j], Bs + bk_off(ks * 32 + lane, (wn0 + j * 8) >> 3));
        else  // lane l: n row l%8, k chunk l/8 of the step
          ldmatrix_x4(b[j], Bs + bn_off(wn0 + j * 8 + (lane & 7), ks * 4 + (lane >> 3)));
      }
#pragma unroll
      for (int i = 0; i < MT / 2; ++i) e[i] = Es[((wm0 / 32) + i) * 64 + ks * 32 + lane];
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        if (!blk_ok[i / 2]) continue;
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          if (i & 1)
            mma_sp<T, 1>(acc[i][j], a[i], b[j], e[i / 2]);
          else
            mma_sp<T, 0>(acc[i][j], a[i], b[j], e[i / 2]);
        }
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) store_acc(p, m0 + wm0 + i * 16, n0 + wn0 + j * 8, lane, r, acc[i][j][r]);
#else
  __trap();
#endif
}
}  // namespace tc

// ----------------------------------------------------------------------------------------------- decode kernel

namespace dec {
constexpr int WARPS = 8, STAGES = 6, THREADS = WARPS * 32;
constexpr int A_HALVES = 32 * 16;  // 32 rows x one k32 step (16 compressed halves = 2 chunks per row)
constexpr int WARP_STAGE_BYTES = 2 * A_HALVES + 4 * 32;
constexpr int SMEM_BYTES = WARPS * STAGES * WARP_STAGE_BYTES;

// Rows are 32 B, so rows r and r+4 share bank groups: chunk ^= (r/4)%2.
__device__ __forceinline__ int a_off(int r, int c) { return r * 16 + ((c ^ ((r >> 2) & 1)) << 3); }

template <typename T>
__device__ __forceinline__ void load_step(const Params<T>& p, char* stage, int m0, int mb, int s, int lane) {
  T* As = reinterpret_cast<T*>(stage);
  int32_t* Es = reinterpret_cast<int32_t*>(As + A_HALVES);
  const int64_t ldv = p.Kp / 2;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int id = lane + i * 32, r = id >> 1, c = id & 1;
    const bool ok = m0 + r < p.M;
    cp_async16(As + a_off(r, c), ok ? p.values + (m0 + r) * ldv + s * 16 + c * 8 : p.values, ok);
  }
  if (lane < 8) cp_async16(Es + lane * 4, p.meta + (static_cast<int64_t>(mb) * (p.Kp / 32) + s) * 32 + lane * 4, true);
}

// NT8 n8 tiles (1: N <= 8, 2: N <= 16). B is (N, K) row-major with an even row stride.
template <typename T, int NT8>
__global__ void __launch_bounds__(THREADS) semi24_mm_decode_kernel(const Params<T> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ __align__(128) char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int mb = blockIdx.x, m0 = mb * 32;
  const int KS = p.Kp / 32;
  const int nsteps = warp < KS ? (KS - warp + WARPS - 1) / WARPS : 0;
  char* ring = smem + warp * STAGES * WARP_STAGE_BYTES;

  float acc[2][NT8][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < NT8; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nsteps) load_step(p, ring + s * WARP_STAGE_BYTES, m0, mb, warp + s * WARPS, lane);
    cp_async_commit();
  }
  for (int it = 0; it < nsteps; ++it) {
    cp_async_wait<STAGES - 2>();
    __syncwarp();  // the ring is private to the warp
    const int pre = it + STAGES - 1;
    if (pre < nsteps) load_step(p, ring + (pre % STAGES) * WARP_STAGE_BYTES, m0, mb, warp + pre * WARPS, lane);
    cp_async_commit();

    const int s = warp + it * WARPS;
    // B fragment straight from global: register q = K rows 8q+2t, 8q+2t+1 of column g, one 32-bit load.
    uint32_t b[NT8][4];
#pragma unroll
    for (int j = 0; j < NT8; ++j) {
      const int n = j * 8 + g;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int k = s * 32 + q * 8 + t * 2;
        b[j][q] = (n < p.N && k < p.b_contig) ? __ldg(reinterpret_cast<const uint32_t*>(p.B + n * p.ldb + k)) : 0u;
      }
    }
    const char* stage = ring + (it % STAGES) * WARP_STAGE_BYTES;
    const T* As = reinterpret_cast<const T*>(stage);
    const uint32_t e = reinterpret_cast<const uint32_t*>(As + A_HALVES)[lane];
    uint32_t a[2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i) ldmatrix_x4(a[i], As + a_off(i * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, lane >> 4));
#pragma unroll
    for (int j = 0; j < NT8; ++j) {
      mma_sp<T, 0>(acc[0][j], a[0], b[j], e);
      mma_sp<T, 1>(acc[1][j], a[1], b[j], e);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // Split-K reduction over the 8 warps: red[warp][v][lane], so writes and reads are bank-conflict free.
  constexpr int V = 2 * NT8 * 4;
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < NT8; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) red[(warp * V + (i * NT8 + j) * 4 + r) * 32 + lane] = acc[i][j][r];
  __syncthreads();
  for (int idx = tid; idx < V * 32; idx += THREADS) {
    const int l = idx & 31, v = idx >> 5;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) sum += red[(w * V + v) * 32 + l];
    const int i = v / (NT8 * 4), j = (v / 4) % NT8, r = v & 3;
    store_acc(p, m0 + i * 16, j * 8, l, r, sum);
  }
#else
  __trap();
#endif
}
}  // namespace dec

// ----------------------------------------------------------------------------------------------- fp32 SIMT

// Output (m, n) by one thread; decodes row m's nibbles from the mma-ordered words (lanes 4g + 2*tile and
// 4g + 2*tile + 1 of each k32 step hold its K 0-15 and 16-31 halves).
template <typename T>
__device__ void semi24_simt_output(const Params<T>& p, int64_t sbk, int64_t sbn, int m, int n) {
  const int r = m & 31, g = r & 7, hi = (r >> 3) & 1, tile = r >> 4;
  const int KB = p.Kp / 32;
  const T* v = p.values + static_cast<int64_t>(m) * (p.Kp / 2);
  const int32_t* words = p.meta + static_cast<int64_t>(m >> 5) * KB * 32 + 4 * g + 2 * tile;
  float acc = 0.f;
  for (int kb = 0; kb < KB; ++kb) {
    for (int half = 0; half < 2; ++half) {
      const uint32_t bits = static_cast<uint32_t>(words[kb * 32 + half]) >> (16 * hi);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int q = kb * 8 + half * 4 + j;
        const uint32_t nib = (bits >> (4 * j)) & 0xF;
        const int k0 = 4 * q + (nib & 3), k1 = 4 * q + (nib >> 2);
        if (k0 < p.K) acc += static_cast<float>(v[2 * q]) * static_cast<float>(p.B[k0 * sbk + n * sbn]);
        if (k1 < p.K) acc += static_cast<float>(v[2 * q + 1]) * static_cast<float>(p.B[k1 * sbk + n * sbn]);
      }
    }
  }
  if (p.bias) acc += static_cast<float>(p.bias[m]);
  p.out[m * p.som + n * p.son] = static_cast<T>(acc);
}

template <typename T>
__global__ void semi24_mm_simt_kernel(const Params<T> p, int64_t sbk, int64_t sbn) {
  const int n = blockIdx.x * 32 + threadIdx.x;
  if (n >= p.N) return;
  for (int m = blockIdx.y * 8 + threadIdx.y; m < p.M; m += gridDim.y * 8) semi24_simt_output(p, sbk, sbn, m, n);
}

// ----------------------------------------------------------------------------------------------- launchers

bool aligned(const at::Tensor& t, int64_t elems) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % (elems * t.element_size()) == 0;
}

// cp.async reads values and metadata in 16-byte chunks: a view at an odd offset is copied (never the case for
// a Semi24Matrix built by from_dense).
at::Tensor aligned_contiguous(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return aligned(c, 16 / c.element_size()) ? c : c.clone();
}

// The dense operand with unit stride along its last dim, and a row stride, extent and base aligned to `vec`
// elements: the tensor itself when it already is, else a zero-padded copy (O(K*N), small next to the GEMM).
at::Tensor vector_ready(const at::Tensor& t, int64_t vec) {
  const int64_t cols = t.size(1);
  if ((t.stride(1) == 1 || cols == 1) && (t.stride(0) % vec == 0 || t.size(0) == 1) && cols % vec == 0 &&
      aligned(t, vec))
    return t;
  const int64_t padded = (cols + vec - 1) / vec * vec;
  at::Tensor out = at::zeros({t.size(0), padded}, t.options());
  out.narrow(1, 0, cols).copy_(t);
  return out;
}

// Launches a kernel needing more than 48 KB of dynamic shared memory; the opt-in is set once per device.
template <auto kernel, typename P>
void launch_with_smem(dim3 grid, int threads, int smem, cudaStream_t stream, const P& p) {
  static std::atomic<uint64_t> configured{0};
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t bit = uint64_t{1} << (device & 63);
  if (!(configured.load(std::memory_order_relaxed) & bit)) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    configured.fetch_or(bit, std::memory_order_relaxed);
  }
  kernel<<<grid, threads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Tensor-core path for T in {Half, BFloat16}. Bop is B (K, N) when !b_nmajor, x (N, K) when b_nmajor.
template <typename T>
void launch_tc(Params<T> p, const at::Tensor& Bop, bool b_nmajor, cudaStream_t stream) {
  if (p.N <= kDecodeMaxN) {
    // Decode reads B as (N, K) rows in 32-bit pairs: an even row stride and extent, a 4-byte aligned base.
    const at::Tensor Bt = vector_ready(b_nmajor ? Bop : Bop.t(), 2);
    p.B = Bt.data_ptr<T>();
    p.ldb = Bt.size(0) == 1 ? 0 : Bt.stride(0);
    p.b_contig = static_cast<int>(Bt.size(1));
    const dim3 grid(static_cast<unsigned>((p.M + 31) / 32));
    if (p.N <= 8)
      launch_with_smem<dec::semi24_mm_decode_kernel<T, 1>>(grid, dec::THREADS, dec::SMEM_BYTES, stream, p);
    else
      launch_with_smem<dec::semi24_mm_decode_kernel<T, 2>>(grid, dec::THREADS, dec::SMEM_BYTES, stream, p);
    return;
  }
  const at::Tensor Bv = vector_ready(Bop, 8);  // 16-byte cp.async chunks
  p.B = Bv.data_ptr<T>();
  p.ldb = Bv.size(0) == 1 ? 0 : Bv.stride(0);
  p.b_contig = static_cast<int>(Bv.size(1));
  // M tiles on x (up to 2^31 blocks), N tiles on y (65535 x 128 = 8.4M columns, checked by the caller).
  const dim3 grid(static_cast<unsigned>((p.M + tc::BM - 1) / tc::BM), static_cast<unsigned>((p.N + tc::BN - 1) / tc::BN));
  if (b_nmajor)
    launch_with_smem<tc::semi24_mm_tc_kernel<T, true>>(grid, tc::THREADS, tc::SMEM_BYTES, stream, p);
  else
    launch_with_smem<tc::semi24_mm_tc_kernel<T, false>>(grid, tc::THREADS, tc::SMEM_BYTES, stream, p);
}

template <typename T>
Params<T> make_params(const at::Tensor& v, const at::Tensor& meta, const at::Tensor& Bop, const at::Tensor& bias,
                      at::Tensor& out, int64_t N, int64_t K, int64_t som, int64_t son) {
  return Params<T>{v.data_ptr<T>(), meta.data_ptr<int32_t>(), Bop.data_ptr<T>(),
                   bias.defined() ? bias.data_ptr<T>() : nullptr, out.data_ptr<T>(), static_cast<int>(v.size(0)),
                   static_cast<int>(N), static_cast<int>(K), static_cast<int>(v.size(1) * 2), 0, 0, som, son};
}

// out (M, N) as seen through (som, son) = A @ B (+ bias per row). Bop: B (K, N), or x (N, K) when b_nmajor.
void launch(const char* op, const at::Tensor& values, const at::Tensor& metadata, const at::Tensor& Bop,
            bool b_nmajor, const std::optional<at::Tensor>& bias, at::Tensor& out, int64_t som, int64_t son) {
  const int64_t M = values.size(0), Kp = values.size(1) * 2;
  const int64_t N = b_nmajor ? Bop.size(0) : Bop.size(1), K = b_nmajor ? Bop.size(1) : Bop.size(0);
  if (M == 0 || N == 0) return;
  SK_CHECK_VALUE(M < (int64_t{1} << 30) && N <= int64_t{65535} * tc::BN && Kp < (int64_t{1} << 30), op,
                 "M and K must be below 2^30 and N at most ", int64_t{65535} * tc::BN, ", got M = ", M, ", N = ", N,
                 ", K = ", K);
  const c10::cuda::CUDAGuard guard(values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor v = aligned_contiguous(values), meta = aligned_contiguous(metadata);
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();

  switch (values.scalar_type()) {
    case at::kFloat: {
      const Params<float> p = make_params<float>(v, meta, Bop, bias_c, out, N, K, som, son);
      const int64_t sbk = b_nmajor ? Bop.stride(1) : Bop.stride(0), sbn = b_nmajor ? Bop.stride(0) : Bop.stride(1);
      const dim3 grid(static_cast<unsigned>((N + 31) / 32), static_cast<unsigned>(std::min<int64_t>((M + 7) / 8, 65535)));
      semi24_mm_simt_kernel<float><<<grid, dim3(32, 8), 0, stream>>>(p, sbk, sbn);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    case at::kHalf:
    case at::kBFloat16: {
      int major = 0;
      C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, values.device().index()));
      SK_CHECK_VALUE(major >= 8, op, "float16/bfloat16 need sparse tensor cores (compute capability >= 8.0), ",
                     "this GPU has ", major, ".x; use float32");
      if (values.scalar_type() == at::kHalf)
        launch_tc(make_params<at::Half>(v, meta, Bop, bias_c, out, N, K, som, son), Bop, b_nmajor, stream);
      else
        launch_tc(make_params<at::BFloat16>(v, meta, Bop, bias_c, out, N, K, som, son), Bop, b_nmajor, stream);
      return;
    }
    default:
      TORCH_INTERNAL_ASSERT(false, "sparsekern.", op, ": unchecked dtype ", values.scalar_type());
  }
}

at::Tensor semi24_mm_cuda(const at::Tensor& values, const at::Tensor& metadata, const at::Tensor& B) {
  check_semi24_mm(values, metadata, B);
  at::Tensor out = at::empty({values.size(0), B.size(1)}, B.options());
  launch("semi24_mm", values, metadata, B, false, std::nullopt, out, B.size(1), 1);
  return out;
}

at::Tensor semi24_linear_cuda(const at::Tensor& x, const at::Tensor& values, const at::Tensor& metadata,
                              const std::optional<at::Tensor>& bias) {
  check_semi24_linear(x, values, metadata, bias);
  const int64_t M = values.size(0);
  at::Tensor out = at::empty({x.size(0), M}, x.options());
  launch("semi24_linear", values, metadata, x, true, bias, out, 1, M);  // out (T, M): element (m, n) at n * M + m
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CUDA, m) {
  m.impl("semi24_mm", &semi24_mm_cuda).impl("semi24_linear", &semi24_linear_cuda);
}

}  // namespace sparsekern::cuda
