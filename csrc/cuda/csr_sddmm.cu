// CUDA kernel of csr_sddmm (gradient of CSR values): out[j] = dot(G[row(j), :], B[col(j), :]).
// One warp per stored entry: lanes stride over N and reduce with shuffles; G and B go through strides so the
// csr_linear backward can pass transposed views. Out-of-range columns (unvalidated input) give 0, never a read.
// Columns may be int32, int64 or compact int16 (read as uint16), a runtime width (csr_common.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "checks.h"
#include "cuda/csr_common.cuh"

namespace sparsekern::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;

template <typename index_t>
__device__ int64_t row_of(const index_t* crow, int64_t M, int64_t j) {
  // Last row m with crow[m] <= j (rows may be empty, so the first such m from the right).
  int64_t lo = 0, hi = M;
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (static_cast<int64_t>(crow[mid]) <= j) lo = mid; else hi = mid;
  }
  return lo;
}

template <typename scalar_t, typename index_t>
__global__ void csr_sddmm_kernel(const index_t* __restrict__ crow, const void* __restrict__ col, int col_bytes,
                                 const scalar_t* __restrict__ G, const scalar_t* __restrict__ B,
                                 scalar_t* __restrict__ out, int64_t M, int64_t nnz, int64_t N, int64_t K,
                                 int64_t sgm, int64_t sgn, int64_t sbk, int64_t sbn) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (j >= nnz) return;
  const int64_t m = row_of(crow, M, j);
  const int64_t c = load_index(col, j, col_bytes);
  float acc = 0.f;
  if (c >= 0 && c < K) {
    for (int64_t n = threadIdx.x; n < N; n += kWarp)
      acc += static_cast<float>(G[m * sgm + n * sgn]) * static_cast<float>(B[c * sbk + n * sbn]);
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) acc += __shfl_down_sync(0xffffffffu, acc, offset);
  if (threadIdx.x == 0) out[j] = static_cast<scalar_t>(acc);
}

at::Tensor csr_sddmm_cuda(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& G, const at::Tensor& B) {
  const char* op = "csr_sddmm";
  check_sddmm_args(op, crow, col, G, B);
  const int64_t M = crow.numel() - 1, K = B.size(0), N = G.size(1), nnz = col.numel();
  at::Tensor out = at::empty({nnz}, G.options());
  if (nnz == 0) return out;
  // Stored entries without rows (crow = [0], unvalidated) have no G row to read: row_of would give row 0 of an
  // empty G. They get 0, like out-of-range columns.
  if (M == 0) return out.zero_();
  const c10::cuda::CUDAGuard guard(G.device());
  const at::Tensor crow_c = crow.contiguous(), col_c = col.contiguous();
  const dim3 block(kWarp, kWarpsPerBlock);
  const dim3 grid(static_cast<unsigned>((nnz + kWarpsPerBlock - 1) / kWarpsPerBlock));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_INDEX_TYPES(crow_c.scalar_type(), "sparsekern_csr_sddmm_cuda", [&] {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, G.scalar_type(), "sparsekern_csr_sddmm_cuda", [&] {
      csr_sddmm_kernel<scalar_t, index_t><<<grid, block, 0, stream>>>(
          crow_c.data_ptr<index_t>(), col_c.data_ptr(), static_cast<int>(col_c.element_size()),
          G.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>(), M, nnz, N, K, G.stride(0), G.stride(1), B.stride(0), B.stride(1));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CUDA, m) { m.impl("csr_sddmm", &csr_sddmm_cuda); }

}  // namespace sparsekern::cuda
