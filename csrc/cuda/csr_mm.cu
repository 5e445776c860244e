// CUDA kernels of csr_mm and csr_linear: the simple, correct baseline (one thread per output element, a
// 32-wide warp along N so B and out are read and written coalesced in csr_mm's orientation). csr_linear
// reuses the kernel through strides: B = xᵀ, and the (M, T) result is written into the (T, M) output.
//
// Column indices outside [0, K) (possible only with unvalidated input: the CSRMatrix constructor and
// validate=True reject them) are skipped rather than read, so bad input can never fault.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"

namespace sparsekern::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 4;
constexpr int64_t kMaxGridY = 65535;

template <typename scalar_t, typename index_t>
__global__ void csr_mm_kernel(const index_t* __restrict__ crow, const index_t* __restrict__ col,
                              const scalar_t* __restrict__ val, const scalar_t* __restrict__ B,
                              const scalar_t* __restrict__ bias, scalar_t* __restrict__ out, int64_t M, int64_t N,
                              int64_t K, int64_t sbk, int64_t sbn, int64_t som, int64_t son) {
  const int64_t m = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (m >= M) return;
  const int64_t begin = crow[m], end = crow[m + 1];
  const float init = bias ? static_cast<float>(bias[m]) : 0.f;
  for (int64_t n = static_cast<int64_t>(blockIdx.y) * kWarp + threadIdx.x; n < N;
       n += static_cast<int64_t>(gridDim.y) * kWarp) {
    float acc = init;
    for (int64_t j = begin; j < end; ++j) {
      const int64_t c = col[j];
      if (c < 0 || c >= K) continue;
      acc += static_cast<float>(val[j]) * static_cast<float>(B[c * sbk + n * sbn]);
    }
    out[m * som + n * son] = static_cast<scalar_t>(acc);
  }
}

void launch(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val, const at::Tensor& B,
            const std::optional<at::Tensor>& bias, at::Tensor& out) {
  const int64_t M = out.size(0), N = out.size(1), K = B.size(0);
  if (M == 0 || N == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  const dim3 block(kWarp, kRowsPerBlock);
  const dim3 grid(static_cast<unsigned>((M + kRowsPerBlock - 1) / kRowsPerBlock),
                  static_cast<unsigned>(std::min<int64_t>((N + kWarp - 1) / kWarp, kMaxGridY)));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor crow_c = crow.contiguous(), col_c = col.contiguous(), val_c = val.contiguous();
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_INDEX_TYPES(crow_c.scalar_type(), "sparsekern_csr_mm_cuda", [&] {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "sparsekern_csr_mm_cuda", [&] {
      csr_mm_kernel<scalar_t, index_t><<<grid, block, 0, stream>>>(
          crow_c.data_ptr<index_t>(), col_c.data_ptr<index_t>(), val_c.data_ptr<scalar_t>(),
          B.data_ptr<scalar_t>(), bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr,
          out.data_ptr<scalar_t>(), M, N, K, B.stride(0), B.stride(1), out.stride(0), out.stride(1));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void check_dense(const char* op, const at::Tensor& t, const char* name, const at::Tensor& val) {
  check_dim(op, t, name, 2);
  check_float(op, t, name);
  check_same_dtype(op, val, "values", t, name);
  check_same_device(op, val, "values", t, name);
}

at::Tensor csr_mm_cuda(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val, const at::Tensor& B) {
  const char* op = "csr_mm";
  check_csr_components(op, crow, col, val);
  check_dense(op, B, "B", val);
  at::Tensor out = at::empty({crow.numel() - 1, B.size(1)}, B.options());
  launch(crow, col, val, B, std::nullopt, out);
  return out;
}

at::Tensor csr_linear_cuda(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                           const at::Tensor& val, const std::optional<at::Tensor>& bias) {
  const char* op = "csr_linear";
  check_csr_components(op, crow, col, val);
  check_dense(op, x, "x", val);
  const int64_t M = crow.numel() - 1;
  if (bias.has_value()) {
    check_dim(op, *bias, "bias", 1);
    check_same_dtype(op, val, "values", *bias, "bias");
    check_same_device(op, val, "values", *bias, "bias");
    SK_CHECK_VALUE(bias->size(0) == M, op, "bias must have M = ", M, " entries, got ", bias->size(0));
  }
  at::Tensor out = at::empty({x.size(0), M}, x.options());
  at::Tensor out_t = out.t();
  launch(crow, col, val, x.t(), bias, out_t);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CUDA, m) {
  m.impl("csr_mm", &csr_mm_cuda);
  m.impl("csr_linear", &csr_linear_cuda);
}

}  // namespace sparsekern::cuda
