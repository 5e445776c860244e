// CPU kernels of csr_bitmap_mm and csr_bitmap_linear. For N <= 4 (decode) on AVX-512 they read the bitmap
// (csr_bitmap_mm_kernel.h: one bit per element and dense reads of the dense operand instead of a column index
// and a gathered load per stored value); for wider N, and on CPUs without AVX-512 (where that kernel has no
// expand-load and lost 10-90x), the CSR loop nest (csr_mm.cpp), whose gathered rows of B amortise each index over
// N columns.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#if defined(__x86_64__)
#include <immintrin.h>  // AVX-512 intrinsics of the avx512 variant
#endif

#include "checks.h"
#include "cpu/checked_patterns.h"
#include "cpu/csr_common.h"
#include "cpu/csr_mm.h"
#include "cpu/isa.h"
#include "cpu/linear.h"

#define SK_KERNEL_HEADER "cpu/csr_bitmap_mm_kernel.h"
#include "cpu/isa_variants.h"

namespace sparsekern::cpu {
namespace {

constexpr int64_t kBitmapMaxN = 4;

// The bitmap kernel is compiled with AVX-512 intrinsics only where isa_variants.h compiles that variant with them.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
bool bitmap_kernel_runs(int64_t N) { return N >= 1 && N <= kBitmapMaxN && detect_isa() == Isa::avx512; }

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
        const int64_t stop = avx512::csr_bitmap_mm_rows(N, crow_p, bitmap_p, words, val_f.data_ptr<float>(),
                                                        xt_f.data_ptr<float>(), words * 32, bias_p, out_p,
                                                        out.stride(0), out.stride(1), r0, r1);
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
#else
bool bitmap_kernel_runs(int64_t) { return false; }

void csr_bitmap_into(const char*, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     const std::optional<at::Tensor>&, at::Tensor&) {
  TORCH_INTERNAL_ASSERT(false, "sparsekern: the CPU bitmap kernel is not in this build");
}
#endif

// Whether row m of (crow, col, bitmap) is one pattern: its columns lie in [0, K), increase strictly and are set
// in the bitmap, and the row's words hold no other bit.
template <typename index_t, typename col_t>
bool bitmap_row_matches(const index_t* crow, const col_t* col, const uint32_t* words_p, int64_t words, int64_t K,
                        int64_t m) {
  const uint32_t* w = words_p + m * words;
  int64_t prev = -1;
  for (int64_t j = crow[m]; j < crow[m + 1]; ++j) {
    const int64_t c = static_cast<int64_t>(col[j]);
    if (c <= prev || c >= K || !((w[c >> 5] >> (c & 31)) & 1u)) return false;
    prev = c;
  }
  int64_t bits = 0;
  for (int64_t k = 0; k < words; ++k) bits += __builtin_popcount(w[k]);
  return bits == static_cast<int64_t>(crow[m + 1] - crow[m]);
}

// The bitmap ops read the bitmap for N <= kBitmapMaxN on AVX-512 and col_indices otherwise, so both must describe
// one pattern or the answer would depend on N and the CPU: checked for every N, with the wording of the Python checks
// (sparsekern/formats/csr.py). It reads col (4 bytes, or 2 for compact columns, per stored entry) and the bitmap
// once more, 3-4x the decode kernel's own time, so it runs once per weight, not per call (checked_patterns.h).
template <typename index_t, typename col_t>
void check_bitmap_columns(const char* op, const index_t* crow, const col_t* col, const uint32_t* bitmap_p,
                          int64_t M, int64_t words, int64_t K) {
  std::atomic<int64_t> bad_row{M};
  parallel_over_rows(crow, M, [&](int64_t r0, int64_t r1) {
    for (int64_t m = r0; m < r1; ++m) {
      if (!bitmap_row_matches(crow, col, bitmap_p, words, K, m)) {
        int64_t seen = bad_row.load();
        while (m < seen && !bad_row.compare_exchange_weak(seen, m)) {
        }
        return false;
      }
    }
    return true;
  });
  const int64_t m = bad_row.load();
  if (m == M) return;
  int64_t prev = -1;
  for (int64_t j = crow[m]; j < crow[m + 1]; ++j) {
    const int64_t c = static_cast<int64_t>(col[j]);
    SK_CHECK_INDEX(c >= 0 && c < K, op, "col_indices[", j, "] = ", c, " is out of range for K = ", K);
    SK_CHECK_VALUE(c > prev, op, "a bitmap needs sorted, duplicate-free columns in every row, but col_indices[", j,
                   "] = ", c, " follows ", prev, " in row ", m);
    SK_CHECK_VALUE((bitmap_p[m * words + (c >> 5)] >> (c & 31)) & 1u, op,
                   "bitmap does not match col_indices: col_indices[", j, "] = ", c, " (row ", m,
                   ") is not set in the bitmap");
    prev = c;
  }
  SK_CHECK_VALUE(false, op, "bitmap does not match col_indices: row ", m, "'s bitmap words hold columns that its ",
                 crow[m + 1] - crow[m], " stored entries do not");
}

void check_bitmap_args(const char* op, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                       const at::Tensor& bitmap, const at::Tensor& dense, const char* name, int64_t K) {
  check_csr_components(op, crow, col, val);
  check_dense(op, dense, name, val);
  check_bitmap(op, bitmap, crow, K);
  // The contents check below reads every stored entry once more: it runs once per weight (checked_patterns.h).
  static CheckedPatterns checked;
  std::optional<CheckedPatterns::Key> key = CheckedPatterns::key({crow, col, bitmap}, {K});
  if (key && checked.contains(*key)) return;
  const at::Tensor crow_c = crow.contiguous(), col_c = col.contiguous(), bitmap_c = bitmap.contiguous();
  const int64_t M = crow.numel() - 1;
  AT_DISPATCH_INDEX_TYPES(crow_c.scalar_type(), "sparsekern_csr_bitmap_check", [&] {
    const index_t* crow_p = crow_c.data_ptr<index_t>();
    check_crow(op, crow_p, M, val.numel());
    const auto* bitmap_p = reinterpret_cast<const uint32_t*>(bitmap_c.data_ptr<int32_t>());
    with_col_ptr<index_t>(col_c, [&](const auto* col_p) {
      check_bitmap_columns(op, crow_p, col_p, bitmap_p, M, bitmap.size(1), K);
    });
  });
  if (key) checked.insert(std::move(*key));
}

at::Tensor csr_bitmap_mm_cpu(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                             const at::Tensor& bitmap, const at::Tensor& B) {
  const char* op = "csr_bitmap_mm";
  check_bitmap_args(op, crow, col, val, bitmap, B, "B", B.size(0));
  at::Tensor out = at::empty({crow.numel() - 1, B.size(1)}, B.options());
  if (bitmap_kernel_runs(B.size(1))) {
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
  return linear_via_mm(x, M, [&](const at::Tensor& xt, at::Tensor& yt) {
    if (bitmap_kernel_runs(x.size(0))) {
      csr_bitmap_into(op, crow, val, bitmap, x, bias, yt);
    } else {
      csr_mm_into(op, crow, col, val, xt, bias, yt);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CPU, m) {
  m.impl("csr_bitmap_mm", &csr_bitmap_mm_cpu).impl("csr_bitmap_linear", &csr_bitmap_linear_cpu);
}

}  // namespace sparsekern::cpu
