// CPU kernels of bsr_mm and bsr_linear: dense block micro-GEMMs over the stored blocks (bsr_mm_kernel.h),
// parallel over block rows balanced by their number of stored blocks. Two loop nests: for N > kDotN the dense
// operand is staged once per call as fp32 column panels padded to a multiple of 16 columns (no copy for an fp32
// B of <= 64 columns that already is one) and register tiles run along N; for N <= kDotN (decode) the vectors
// run along k over B transposed. bsr_linear stages x.T as the dense operand (T*K elements, small next to the
// nblocks*bm*bk*T multiply-adds; for decode x itself is B transposed) and writes the (M, T) result through
// strides into the (T, M) output, so A is never transposed or copied. fp16/bf16 values are widened to fp32 once
// per call (as in csr_mm); accumulation is fp32.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "checks.h"
#include "cpu/csr_common.h"
#include "cpu/isa.h"
#include "cpu/linear.h"

#define SK_KERNEL_HEADER "cpu/bsr_mm_kernel.h"
#include "cpu/isa_variants.h"

namespace sparsekern::cpu {
namespace {

constexpr int64_t kColumnPad = 16;  // a multiple of every vector width (16 fp32 = one AVX-512 register)
constexpr int64_t kPanel = 64;      // B panel width: the AVX-512 register tile's 4 x 16 columns
// Up to this N, the decode kernel. Measured (4096 x 4096, 32 x 32 blocks, 2 threads): at N = 1 it halves the time
// of the panel kernel (which computes 16 columns for each real one), at N = 8 they are even, at 12-16 it loses
// at 90% block sparsity.
constexpr int64_t kDotN = 8;

// Cheap checks of the components (no reads of index contents) against the logical M.
void check_bsr_components(const char* op, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                          int64_t M) {
  check_index_components(op, crow, col);
  SK_CHECK_TYPE(col.scalar_type() == crow.scalar_type(), op, "col_indices must have the dtype of crow_indices (",
                dtype_name(crow.scalar_type()), "), got ", dtype_name(col.scalar_type()));
  check_dim(op, val, "values", 3);
  check_float(op, val, "values");
  check_same_device(op, crow, "crow_indices", val, "values");
  const int64_t bm = val.size(1), bk = val.size(2);
  SK_CHECK_VALUE(bm >= 1 && bk >= 1, op, "values must be (nblocks, bm, bk) with bm, bk >= 1, got shape ",
                 val.sizes());
  SK_CHECK_VALUE(M >= 0, op, "M must be >= 0, got ", M);
  const int64_t MB = (M + bm - 1) / bm;
  SK_CHECK_VALUE(crow.numel() == MB + 1, op, "crow_indices must have ceil(M / bm) + 1 = ", MB + 1,
                 " entries for M = ", M, ", bm = ", bm, ", got ", crow.numel());
  SK_CHECK_VALUE(col.numel() == val.size(0), op, "col_indices and values must have the same number of blocks, got ",
                 col.numel(), " and ", val.size(0));
}

template <typename index_t>
[[noreturn]] void throw_bad_block_column(const char* op, const at::Tensor& col, int64_t K, int64_t bk) {
  const index_t* c = col.data_ptr<index_t>();
  const int64_t KB = (K + bk - 1) / bk;
  for (int64_t j = 0; j < col.numel(); ++j) {
    if (c[j] < 0 || c[j] >= KB) {
      SK_CHECK_INDEX(false, op, "col_indices[", j, "] = ", c[j], " is out of range for ceil(K / bk) = ", KB,
                     " block columns (K = ", K, ", bk = ", bk, ")");
    }
  }
  TORCH_INTERNAL_ASSERT(false, "sparsekern.", op, ": a block column was out of range but none was found");
}

// Runs fn(i0, i1) over block-row ranges holding about equal numbers of stored blocks. Threads pull ranges from a
// shared counter instead of owning a fixed share: on a busy machine a thread that is scheduled late leaves its
// ranges to the others rather than stalling the whole call. Returns false if any call did.
template <typename index_t, typename Fn>
bool parallel_over_block_rows(const index_t* crow, int64_t MB, const Fn& fn) {
  if (MB == 0) return true;
  const int64_t threads = at::get_num_threads();
  const auto splits = balanced_row_splits(crow, MB, std::min<int64_t>(MB, threads * 16));
  const int64_t parts = static_cast<int64_t>(splits.size()) - 1;
  std::atomic<int64_t> next{0};
  std::atomic<bool> ok{true};
  at::parallel_for(0, std::min(threads, parts), 1, [&](int64_t, int64_t) {
    for (int64_t p = next.fetch_add(1); p < parts; p = next.fetch_add(1)) {
      if (!fn(splits[p], splits[p + 1])) ok.store(false, std::memory_order_relaxed);
    }
  });
  return ok.load();
}

// B staged for the micro-kernel: `count` column panels of `width` fp32 columns (a multiple of 16, zeros past
// N), panel p at data + p * panel_stride with row stride ldb.
struct Panels {
  at::Tensor data;
  int64_t panel_stride, ldb, width, count;
};

// Up to kPanel columns: one panel of N rounded up to 16 columns; B itself when it already is one (fp32, N a
// multiple of 16, unit column stride). Wider B: (count, K, kPanel) panels. A block's B rows then are one
// contiguous run of bk * 256 bytes whatever N is; read straight from a (K, N) B with N a power of two they would
// stride by N*4 bytes onto a few cache sets (at N = 1024 the kernel ran 1.5x slower, at 4096 2.3x, per column).
// The copy costs K*N elements against nblocks*bm*bk*N multiply-adds; a plain loop, because for the small B of
// the decode regime TensorIterator's fixed cost would exceed the kernel's.
Panels stage_panels(const at::Tensor& B) {
  const int64_t K = B.size(0), N = B.size(1);
  const int64_t Np = (N + kColumnPad - 1) / kColumnPad * kColumnPad;
  if (Np == N && N <= kPanel && B.scalar_type() == at::kFloat && B.stride(1) == 1 && (K <= 1 || B.stride(0) >= N))
    return {B, 0, B.stride(0), Np, 1};
  const int64_t width = std::min(Np, kPanel), count = (Np + width - 1) / width;
  at::Tensor P = at::empty({count, K, width}, B.options().dtype(at::kFloat));
  float* dst = P.data_ptr<float>();
  const int64_t sk = B.stride(0), sn = B.stride(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, B.scalar_type(), "sparsekern_bsr_stage", [&] {
    const scalar_t* src = B.data_ptr<scalar_t>();
    at::parallel_for(0, K, std::max<int64_t>(1, (1 << 15) / Np), [&](int64_t k0, int64_t k1) {
      for (int64_t p = 0; p < count; ++p) {
        const int64_t n0 = p * width, w = std::min(width, N - n0);
        for (int64_t k = k0; k < k1; ++k) {
          float* d = dst + (p * K + k) * width;
          const scalar_t* s = src + k * sk + n0 * sn;
          for (int64_t n = 0; n < w; ++n) d[n] = static_cast<float>(s[n * sn]);
          for (int64_t n = w; n < width; ++n) d[n] = 0.f;
        }
      }
    });
  });
  return {P, K * width, width, width, count};
}

// out (M, N), any strides: out = A @ B + bias[:, None], with B (K, N) and A given by its components.
void bsr_mm_into(const char* op, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val, int64_t M,
                 const at::Tensor& B, const std::optional<at::Tensor>& bias, at::Tensor& out) {
  const int64_t K = B.size(0), N = B.size(1), bm = val.size(1), bk = val.size(2);
  const int64_t MB = crow.numel() - 1;
  const at::Tensor crow_c = crow.contiguous(), col_c = col.contiguous();
  AT_DISPATCH_INDEX_TYPES(crow_c.scalar_type(), "sparsekern_bsr_mm", [&] {
    const index_t* crow_p = crow_c.data_ptr<index_t>();
    check_crow(op, crow_p, MB, col_c.numel());
    if (N == 0 || M == 0) {
      // No loop below reads the block columns; check them anyway so validity never depends on N.
      const index_t* c = col_c.data_ptr<index_t>();
      const int64_t KB = (K + bk - 1) / bk;
      for (int64_t j = 0; j < col_c.numel(); ++j)
        if (c[j] < 0 || c[j] >= KB) throw_bad_block_column<index_t>(op, col_c, K, bk);
      return;
    }
    const at::Tensor val_f = as_float_contiguous(val);
    // The decode kernel reads B transposed, (N, K): x itself for bsr_linear.
    const bool dot = N <= kDotN;
    const Panels panels = dot ? Panels{} : stage_panels(B);
    const at::Tensor Bt = dot ? as_float_contiguous(B.t()) : at::Tensor();
    const at::Tensor bias_f = bias.has_value() ? as_float_contiguous(*bias) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "sparsekern_bsr_mm", [&] {
      const index_t* col_p = col_c.data_ptr<index_t>();
      const float* val_p = val_f.data_ptr<float>();
      const float* B_p = dot ? Bt.data_ptr<float>() : panels.data.data_ptr<float>();
      const float* bias_p = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
      scalar_t* out_p = out.data_ptr<scalar_t>();
      const int64_t osm = out.stride(0), osn = out.stride(1);
      const bool ok = parallel_over_block_rows(crow_p, MB, [&](int64_t i0, int64_t i1) {
        if (dot)
          return SK_ISA_DISPATCH(bsr_mm_block_rows_dot, crow_p, col_p, val_p, bm, bk, B_p, K, K, N, bias_p, out_p,
                                 osm, osn, M, i0, i1);
        return SK_ISA_DISPATCH(bsr_mm_block_rows, crow_p, col_p, val_p, bm, bk, B_p, panels.panel_stride,
                               panels.ldb, panels.width, panels.count, K, N, bias_p, out_p, osm, osn, M, i0, i1);
      });
      if (!ok) throw_bad_block_column<index_t>(op, col_c, K, bk);
    });
  });
}


at::Tensor bsr_mm_cpu(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val, int64_t M,
                      const at::Tensor& B) {
  const char* op = "bsr_mm";
  check_dense(op, B, "B", val);
  check_bsr_components(op, crow, col, val, M);
  at::Tensor out = at::empty({M, B.size(1)}, B.options());
  bsr_mm_into(op, crow, col, val, M, B, std::nullopt, out);
  return out;
}

at::Tensor bsr_linear_cpu(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                          int64_t M, const std::optional<at::Tensor>& bias) {
  const char* op = "bsr_linear";
  check_dense(op, x, "x", val);
  check_bsr_components(op, crow, col, val, M);
  check_linear_bias(op, bias, val, M);
  return linear_via_mm(x, M, [&](const at::Tensor& xt, at::Tensor& yt) {
    bsr_mm_into(op, crow, col, val, M, xt, bias, yt);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CPU, m) { m.impl("bsr_mm", &bsr_mm_cpu).impl("bsr_linear", &bsr_linear_cpu); }

}  // namespace sparsekern::cpu
