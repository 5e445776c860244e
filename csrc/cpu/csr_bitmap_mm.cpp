// CPU kernels of csr_bitmap_mm and csr_bitmap_linear. For N <= 4 (decode) they read the bitmap
// (csr_bitmap_mm_kernel.h: one bit per element and dense reads of the dense operand instead of a column index
// and a gathered load per stored value); for wider N the CSR loop nest (csr_mm.cpp), whose gathered rows of B
// amortise each index over N columns, is the faster one.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#if defined(__x86_64__)
#include <immintrin.h>  // AVX-512 intrinsics of the avx512 variant
#endif

#include "checks.h"
#include "cpu/csr_common.h"
#include "cpu/csr_mm.h"
#include "cpu/isa.h"

#define SK_KERNEL_HEADER "cpu/csr_bitmap_mm_kernel.h"
#include "cpu/isa_variants.h"

namespace sparsekern::cpu {
namespace {

constexpr int64_t kBitmapMaxN = 4;

// out (M, N) = A @ xtᵀ + bias[:, None] for xt (N, K), N <= kBitmapMaxN: the dense operand as N contiguous rows
// (B transposed for csr_bitmap_mm, x itself for csr_bitmap_linear).
void csr_bitmap_into(const char* op, const at::Tensor& crow, const at::Tensor& val, const at::Tensor& bitmap,
                     const at::Tensor& xt, const std::optional<at::Tensor>& bias, at::Tensor& out) {
  const int64_t M = crow.numel() - 1, N = xt.size(0), K = xt.size(1), words = bitmap.size(1);
  const at::Tensor crow_c = crow.contiguous(), bitmap_c = bitmap.contiguous();
  const at::Tensor val_f = as_float_contiguous(val);
  // Zero-padded to whole words, so the last word's 16-lane loads stay inside the buffer and read zeros past K.
  at::Tensor xt_f = at::zeros({N, words * 32}, xt.options().dtype(at::kFloat));
  xt_f.narrow(1, 0, K).copy_(xt);
  const at::Tensor bias_f = bias.has_value() ? as_float_contiguous(*bias) : at::Tensor();
  AT_DISPATCH_INDEX_TYPES(crow_c.scalar_type(), "sparsekern_csr_bitmap_mm", [&] {
    const index_t* crow_p = crow_c.data_ptr<index_t>();
    check_crow(op, crow_p, M, val.numel());
    const auto* bitmap_p = reinterpret_cast<const uint32_t*>(bitmap_c.data_ptr<int32_t>());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "sparsekern_csr_bitmap_mm", [&] {
      scalar_t* out_p = out.data_ptr<scalar_t>();
      const float* bias_p = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
      std::atomic<int64_t> bad_row{M};
      parallel_over_rows(crow_p, M, [&](int64_t r0, int64_t r1) {
        const int64_t stop = SK_ISA_DISPATCH(csr_bitmap_mm_rows, N, crow_p, bitmap_p, words, val_f.data_ptr<float>(),
                                             xt_f.data_ptr<float>(), words * 32, bias_p, out_p, out.stride(0),
                                             out.stride(1), r0, r1);
        if (stop < r1) {
          int64_t seen = bad_row.load();
          while (stop < seen && !bad_row.compare_exchange_weak(seen, stop)) {
          }
        }
        return stop == r1;
      });
      const int64_t m = bad_row.load();
      SK_CHECK_VALUE(m == M, op, "bitmap does not match crow_indices: row ", m, " has ",
                     crow_p[m + 1] - crow_p[m], " stored entries but its bitmap words hold a different count");
    });
  });
}

void check_bitmap_args(const char* op, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                       const at::Tensor& bitmap, const at::Tensor& dense, const char* name, int64_t K) {
  check_csr_components(op, crow, col, val);
  check_dense(op, dense, name, val);
  check_bitmap(op, bitmap, crow, K);
}

at::Tensor csr_bitmap_mm_cpu(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                             const at::Tensor& bitmap, const at::Tensor& B) {
  const char* op = "csr_bitmap_mm";
  check_bitmap_args(op, crow, col, val, bitmap, B, "B", B.size(0));
  at::Tensor out = at::empty({crow.numel() - 1, B.size(1)}, B.options());
  if (B.size(1) >= 1 && B.size(1) <= kBitmapMaxN) {
    csr_bitmap_into(op, crow, val, bitmap, B.t(), std::nullopt, out);
  } else {
    csr_mm_into(op, crow, col, val, B, std::nullopt, out);
  }
  return out;
}

at::Tensor csr_bitmap_linear_cpu(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                                 const at::Tensor& val, const at::Tensor& bitmap,
                                 const std::optional<at::Tensor>& bias) {
  const char* op = "csr_bitmap_linear";
  check_bitmap_args(op, crow, col, val, bitmap, x, "x", x.size(1));
  const int64_t M = crow.numel() - 1;
  check_linear_bias(op, bias, val, M);
  at::Tensor out = at::empty({x.size(0), M}, x.options());
  at::Tensor out_t = out.t();
  if (x.size(0) >= 1 && x.size(0) <= kBitmapMaxN) {
    csr_bitmap_into(op, crow, val, bitmap, x, bias, out_t);
  } else {
    csr_mm_into(op, crow, col, val, x.t(), bias, out_t);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CPU, m) {
  m.impl("csr_bitmap_mm", &csr_bitmap_mm_cpu);
  m.impl("csr_bitmap_linear", &csr_bitmap_linear_cpu);
}

}  // namespace sparsekern::cpu
