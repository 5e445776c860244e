// CPU kernels of semi24_mm and semi24_linear: one loop nest (semi24_mm_kernel.h) over the Semi24Matrix layout
// itself, so the weight is used as stored (no dense copy, no second index array) and half the multiply-adds of
// the dense product are done. fp16/bf16 operands are widened to fp32 once per call (the weight's values too: M*K/2
// conversions against M*K/2*N multiply-adds). semi24_linear computes (A @ x.T).T through one transposed copy of x
// (T*K elements); A is never transposed.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu/csr_common.h"
#include "cpu/isa.h"
#include "cpu/linear.h"
#include "semi24_checks.h"

#define SK_KERNEL_HEADER "cpu/semi24_mm_kernel.h"
#include "cpu/isa_variants.h"

namespace sparsekern::cpu {
namespace {

// out (M, N), any dtype and strides: out = A @ B + bias[:, None], with B (K, N).
void semi24_mm_into(const at::Tensor& values, const at::Tensor& metadata, const at::Tensor& B,
                    const std::optional<at::Tensor>& bias, at::Tensor& out) {
  const int64_t M = values.size(0), K = B.size(0), N = B.size(1);
  if (M == 0 || N == 0) return;
  // The kernel wants N == 1 or a multiple of 16: other widths get zero columns (a K x 16 copy at most).
  const int64_t Np = N == 1 ? 1 : (N + 15) / 16 * 16;
  at::Tensor B_f = as_float_contiguous(B);
  if (Np != N) B_f = at::constant_pad_nd(B_f, {0, Np - N});
  // The blocked kernel's B panels (semi24_mm_kernel.h): one copy of B when it is wider than a panel.
  const int64_t pw = SK_ISA_DISPATCH(semi24_panel_cols);
  at::Tensor panels = B_f;
  if (Np > pw) {
    panels = at::empty({K * Np}, B_f.options());
    for (int64_t n0 = 0; n0 < Np; n0 += pw) {
      const int64_t w = std::min(pw, Np - n0);
      panels.narrow(0, K * n0, K * w).view({K, w}).copy_(B_f.slice(1, n0, n0 + w));
    }
  }
  const at::Tensor v = as_float_contiguous(values), meta = metadata.contiguous();
  const at::Tensor bias_f = bias.has_value() ? as_float_contiguous(*bias) : at::Tensor();
  // The kernel accumulates in place across K blocks, so it writes a dense fp32 (M, Np) buffer: `out` itself when
  // it is one, else a temporary copied out once at the end.
  const bool direct = Np == N && out.scalar_type() == at::kFloat && out.stride(1) == 1 && (out.stride(0) == N || M == 1);
  at::Tensor acc = direct ? out : at::empty({M, Np}, out.options().dtype(at::kFloat));
  const float* v_p = v.data_ptr<float>();
  const int32_t* meta_p = meta.data_ptr<int32_t>();
  const float* B_p = B_f.data_ptr<float>();
  const float* panels_p = panels.data_ptr<float>();
  const float* bias_p = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
  float* acc_p = acc.data_ptr<float>();
  const int64_t ldv = v.size(1), KB = meta.size(1);
  // Every row costs the same (2 slots per group): equal contiguous row ranges, one per thread.
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t grain = std::max<int64_t>(4, (M + threads - 1) / threads);
  at::parallel_for(0, M, grain, [&](int64_t r0, int64_t r1) {
    SK_ISA_DISPATCH(semi24_mm_rows, v_p, ldv, meta_p, KB, B_p, Np, panels_p, K, Np, bias_p, acc_p, Np, r0, r1);
  });
  if (!direct) out.copy_(Np == N ? acc : acc.narrow(1, 0, N));
}

at::Tensor semi24_mm_cpu(const at::Tensor& values, const at::Tensor& metadata, const at::Tensor& B) {
  check_semi24_mm(values, metadata, B);
  at::Tensor out = at::empty({values.size(0), B.size(1)}, B.options());
  semi24_mm_into(values, metadata, B, std::nullopt, out);
  return out;
}

at::Tensor semi24_linear_cpu(const at::Tensor& x, const at::Tensor& values, const at::Tensor& metadata,
                             const std::optional<at::Tensor>& bias) {
  check_semi24_linear(x, values, metadata, bias);
  return linear_via_mm(x, values.size(0), [&](const at::Tensor& xt, at::Tensor& yt) {
    semi24_mm_into(values, metadata, xt, bias, yt);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CPU, m) {
  m.impl("semi24_mm", &semi24_mm_cpu).impl("semi24_linear", &semi24_linear_cpu);
}

}  // namespace sparsekern::cpu
