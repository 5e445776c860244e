// CPU kernel of csr_sddmm: out[j] = dot(G[row(j), :], B[col(j), :]), the gradient of csr_mm with respect to
// the stored values (dL/dA restricted to A's pattern). Same row partitioning and checks as csr_mm.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "checks.h"
#include "cpu/csr_common.h"
#include "cpu/isa.h"

#define SK_KERNEL_HEADER "cpu/csr_sddmm_kernel.h"
#include "cpu/isa_variants.h"

namespace sparsekern::cpu {
namespace {

at::Tensor csr_sddmm_cpu(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& G, const at::Tensor& B) {
  const char* op = "csr_sddmm";
  check_dim(op, crow, "crow_indices", 1);
  check_dim(op, col, "col_indices", 1);
  SK_CHECK_TYPE(crow.scalar_type() == at::kInt || crow.scalar_type() == at::kLong, op,
                "crow_indices must be int32 or int64, got ", crow.scalar_type());
  check_col_dtype(op, crow, col);
  SK_CHECK_VALUE(crow.numel() >= 1, op, "crow_indices must have M + 1 >= 1 entries");
  check_dim(op, G, "G", 2);
  check_dim(op, B, "B", 2);
  check_float(op, G, "G");
  check_same_dtype(op, G, "G", B, "B");
  check_same_device(op, G, "G", B, "B");
  check_same_device(op, crow, "crow_indices", G, "G");
  check_same_device(op, col, "col_indices", G, "G");
  const int64_t M = crow.numel() - 1, K = B.size(0), N = G.size(1);
  SK_CHECK_VALUE(G.size(0) == M, op, "G must have M = ", M, " rows, got ", G.size(0));
  SK_CHECK_VALUE(B.size(1) == N, op, "G and B must have the same number of columns, got ", N, " and ", B.size(1));

  at::Tensor out = at::empty({col.numel()}, G.options());
  const at::Tensor crow_c = crow.contiguous(), col_c = col.contiguous();
  const at::Tensor G_f = as_float_contiguous(G), B_f = as_float_contiguous(B);
  AT_DISPATCH_INDEX_TYPES(crow_c.scalar_type(), "sparsekern_csr_sddmm", [&] {
    const index_t* crow_p = crow_c.data_ptr<index_t>();
    check_crow(op, crow_p, M, col_c.numel());
    with_col_ptr<index_t>(col_c, [&](const auto* col_p) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "sparsekern_csr_sddmm", [&] {
        const float* G_p = G_f.data_ptr<float>();
        const float* B_p = B_f.data_ptr<float>();
        scalar_t* out_p = out.data_ptr<scalar_t>();
        const bool ok = parallel_over_rows(crow_p, M, [&](int64_t r0, int64_t r1) {
          return SK_ISA_DISPATCH(csr_sddmm_rows, crow_p, col_p, G_p, B_p, K, N, out_p, r0, r1);
        });
        SK_CHECK_INDEX(ok, op, "col_indices has an entry out of range for K = ", K);
      });
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CPU, m) { m.impl("csr_sddmm", &csr_sddmm_cpu); }

}  // namespace sparsekern::cpu
