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
  check_sddmm_args(op, crow, col, G, B);
  const int64_t M = crow.numel() - 1, K = B.size(0), N = G.size(1);

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
