// CPU kernels of csr_mm and csr_linear: one loop nest (csr_mm_kernel.h) serves both. csr_linear computes
// (A @ x.T).T by reading x.T as the dense operand (one transposed copy of x, T*K elements, which is small
// next to the nnz*T multiply-adds) and writing the (M, T) result through strides straight into the (T, M)
// output, so A itself is never transposed or copied.
//
// B is staged as column panels of kPanel = 64 columns, each (K, 64) contiguous. Gathering rows of a (K, N)
// row-major B with N a power of two (256, 1024, ...) strides by N*4 bytes, which maps every gathered row onto
// a few cache sets: at N = 256 the effective L2 shrinks 4x and the kernel ran 3.5x slower per column than at
// N = 64. Panels make each gathered row one contiguous 256-byte run and a panel (1 MiB at K = 4096) stays in L2
// while a thread sweeps its rows.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "cpu/checked_patterns.h"
#include "cpu/csr_common.h"
#include "cpu/csr_mm.h"
#include "cpu/isa.h"
#include "cpu/linear.h"

#define SK_KERNEL_HEADER "cpu/csr_mm_kernel.h"
#include "cpu/isa_variants.h"

namespace sparsekern::cpu {
namespace {

constexpr int64_t kPanel = 64;

// A panel narrower than kPanel is zero-padded to the next power of two (1 stays the single-column gather), so one
// register tile covers it in one pass over A. The walk through narrower tiles (csr_mm_kernel.h) read A's entries
// once per tile width, and the per-entry work, not the FMAs, dominates a narrow tile: on the Zen 3 EPYC (4096^2 at
// 10%, int16 columns, 2 threads, 2026-12-07) N = 3 took 2.54 ms against 1.42 at N = 4, N = 17 3.07 against 2.81 at
// N = 32, N = 63 10.9 against 4.9 at N = 64, and N = 2 1.59 against 1.42 at N = 4.
int64_t padded_panel_width(int64_t w) {
  if (w <= 1) return w;
  int64_t p = 4;
  while (p < w) p *= 2;
  return p;
}

// Rows of a K strip (csr_mm_kernel.h). A 64-column panel is cut into 32 KiB slices (128 rows: the L1d of a Zen 3
// core, two thirds of a Sapphire Rapids one), doubled until a row holds ~24 entries per strip on average: each
// (row, strip) pair costs a loop exit, a step of the split and a load and store of the row's partial sums. On the
// Zen 3 EPYC (4 x 4096^2, 2 threads, the settings alternating call by call in one process, 2026-12-07):
// - 24 against 48 entries ran 14.7 against 16.4 ms at 90% / 64 tokens and 54 against 60 ms at 90% / 256 tokens,
//   and tied at 95% (48 had won before the split was vectorised and the next row's entries prefetched); 16 or 12
//   tied at 90% and lost 5% at 95%.
// - 32 KiB slices against 64 KiB (the start before): 1.07x at 80% / 64 tokens, 1.17-1.28x at 50-70% / 64 tokens,
//   1.3-1.4x at 50-70% / 256 tokens; 90-95% keep their 256-512 rows. 16 KiB lost 1.1x at 50% / 64 tokens.
// A narrower panel (N < 64: one K x N panel) and its scratch fit L2 at 256 KiB; 128-row strips there lost 1.2x at
// 80% / 16 tokens.
int64_t csr_mm_strip_rows(int64_t M, int64_t K, int64_t N, int64_t nnz) {
  const int64_t w0 = padded_panel_width(std::min(N, kPanel));
  // Gathered rows occupy whole 64-byte lines, however narrow the panel.
  const int64_t row_bytes = std::max<int64_t>(64, 4 * w0);
  int64_t rows = std::max<int64_t>(64, (w0 == kPanel ? int64_t{32} << 10 : int64_t{256} << 10) / row_bytes);
  // Entries per row and strip: nnz / M * rows / K.
  while (rows < K && static_cast<double>(nnz) * rows < 24.0 * static_cast<double>(M) * static_cast<double>(K))
    rows *= 2;
  return rows;
}

template <typename col_t>
[[noreturn]] void throw_bad_column(const char* op, const col_t* c, int64_t nnz, int64_t K) {
  for (int64_t j = 0; j < nnz; ++j) {
    if (c[j] < 0 || c[j] >= K) {
      SK_CHECK_INDEX(false, op, "col_indices[", j, "] = ", static_cast<int64_t>(c[j]), " is out of range for K = ", K);
    }
  }
  TORCH_INTERNAL_ASSERT(false, "sparsekern.", op, ": a column index was out of range but none was found");
}

}  // namespace

// out (M, N), any strides: out = A @ B + bias[:, None], with B (K, N) and A given by its components. The CPU
// kernel ignores the row order: its nnz-balanced contiguous row ranges already balance the threads, and walking
// rows in storage order keeps the output writes sequential.
void csr_mm_into(const char* op, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                 const at::Tensor& B, const std::optional<at::Tensor>& bias, at::Tensor& out) {
  const int64_t M = crow.numel() - 1, K = B.size(0), N = B.size(1);
  const at::Tensor crow_c = crow.contiguous(), col_c = col.contiguous();
  const at::Tensor val_f = as_float_contiguous(val);
  std::vector<at::Tensor> panels;
  for (int64_t n0 = 0; n0 < N; n0 += kPanel) {
    const at::Tensor cols = B.slice(1, n0, std::min(N, n0 + kPanel));
    const int64_t width = padded_panel_width(cols.size(1));
    if (width == cols.size(1)) {
      panels.push_back(as_float_contiguous(cols));
    } else {
      panels.push_back(at::zeros({K, width}, B.options().dtype(at::kFloat)));
      panels.back().narrow(1, 0, cols.size(1)).copy_(cols);
    }
  }
  const at::Tensor bias_f = bias.has_value() ? as_float_contiguous(*bias) : at::Tensor();
  const int64_t nnz = col_c.numel();
  AT_DISPATCH_INDEX_TYPES(crow_c.scalar_type(), "sparsekern_csr_mm", [&] {
    const index_t* crow_p = crow_c.data_ptr<index_t>();
    check_crow(op, crow_p, M, nnz);
    with_col_ptr<index_t>(col_c, [&](const auto* col_p) {
      if (N == 0 || M == 0) {
        // No loop below reads the columns; check them anyway so validity never depends on N.
        for (int64_t j = 0; j < nnz; ++j)
          if (col_p[j] < 0 || col_p[j] >= K) throw_bad_column(op, col_p, nnz, K);
        return;
      }
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "sparsekern_csr_mm", [&] {
        const float* val_p = val_f.data_ptr<float>();
        const float* bias_p = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
        scalar_t* out_p = out.data_ptr<scalar_t>();
        const int64_t osm = out.stride(0), osn = out.stride(1);
        // Tasks are (panel, row part) pairs in panel-major order, and each thread takes a contiguous run of them,
        // so a thread reads each panel from memory once rather than once per row part: with few rows and many
        // panels (a convolution's W (64, 576) @ X (576, 3136)) the part-major order re-streamed the 7 MB of
        // panels once per part and ran 2x slower than dense.
        const int64_t P = static_cast<int64_t>(panels.size());
        const auto splits = balanced_row_splits(crow_p, M, std::min<int64_t>(M, at::get_num_threads() * 8));
        const int64_t R = static_cast<int64_t>(splits.size()) - 1;
        // No column to read in a one-strip check (csr_mm_tile needs kw >= 1).
        if (K == 0 && nnz > 0) throw_bad_column(op, col_p, nnz, K);
        const int64_t kstrip = csr_mm_strip_rows(M, K, N, nnz);
        const int64_t nstrips = std::max<int64_t>(1, (K + kstrip - 1) / kstrip);
        std::atomic<bool> ok{true};
        // Each row part's split into strips (csr_mm_kernel.h) is computed once for all panels, part r's at
        // splits[r] * (nstrips + 1), and kept per weight (checked_patterns.h): it depends only on the pattern, K,
        // the strip height and the row partition. perf put it at 13% of the kernel's time at one panel on the Zen 3
        // EPYC and 22% on the Sapphire Rapids Xeon (4096^2 at 90%, 64 columns). Kept, 4 x 4096^2 csr_linear at 2
        // threads on the Xeon (2026-12-08, against a split recomputed on every call, alternating in one process)
        // ran 1.11-1.23x faster at 64 tokens and 1.05-1.07x at 256 over 80-95% sparsity; 16 tokens take one strip.
        // The entry costs M * (nstrips + 1) offsets, 0.6 MB for 4096^2 at 90% (6% of its CSR arrays). The
        // columns' range check still runs on every call (a flat max): a write that bypasses the version counter
        // can then give a wrong sum but never a read outside B. A last panel narrower than kPanel (N > 64 not a
        // multiple of 64) takes the strips of its own width, split in its task: the wide panels' strips cost it a
        // (row, strip) step per ~24 entries of a narrow tile (N = 67, a 4-column last panel, ran 1.5x N = 65).
        const int64_t kstrip_last = csr_mm_strip_rows(M, K, panels.back().size(1), nnz);
        const int64_t nstrips_last = std::max<int64_t>(1, (K + kstrip_last - 1) / kstrip_last);
        const bool shared_split = nstrips > 1;
        static CheckedPatterns split_cache;
        CheckedPatterns::Payload split_all;
        if (shared_split) {
          std::optional<CheckedPatterns::Key> key = CheckedPatterns::key({crow, col}, {K, kstrip, nstrips, R});
          if (key) split_all = split_cache.find(*key);
          // Kept: only the per-call range check. Not kept: split (and check) into a new entry.
          const bool kept = split_all != nullptr;
          std::shared_ptr<std::vector<int64_t>> computed;
          if (!kept) computed = std::make_shared<std::vector<int64_t>>(M * (nstrips + 1));
          at::parallel_for(0, R, 1, [&](int64_t q0, int64_t q1) {
            for (int64_t q = q0; q < q1; ++q) {
              const bool good =
                  kept ? SK_ISA_DISPATCH(csr_mm_cols_in_range, crow_p, col_p, K, splits[q], splits[q + 1])
                       : SK_ISA_DISPATCH(csr_mm_segments, crow_p, col_p, K, kstrip, nstrips, splits[q],
                                         splits[q + 1], computed->data() + splits[q] * (nstrips + 1));
              if (!good) ok.store(false, std::memory_order_relaxed);
            }
          });
          if (!ok) throw_bad_column(op, col_p, nnz, K);
          if (!kept) {
            if (key) split_cache.insert(std::move(*key), computed);
            split_all = std::move(computed);
          }
        }
        // Each thread takes a contiguous run of tasks of equal estimated cost, not of equal count: a narrow last
        // panel (N = 65: 64 + 1 columns) then no longer leaves one thread all the wide panel's work (N = 65 ran
        // 1.7x N = 64 on 2 threads, where the extra column costs ~0.15x). Cost per stored entry of a panel, fitted
        // to one 4096^2 layer at 10% on the Zen 3 EPYC: 21 + width for a tile, 12 for the single-column gather.
        const int64_t T = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), P * R));
        std::vector<double> cost(P * R + 1, 0.0);
        for (int64_t t = 0; t < P * R; ++t) {
          const int64_t w = panels[t / R].size(1), r = t % R;
          cost[t + 1] = cost[t] + static_cast<double>(crow_p[splits[r + 1]] - crow_p[splits[r]]) *
                                      (w == 1 ? 12.0 : 21.0 + static_cast<double>(w));
        }
        std::vector<int64_t> cut(T + 1, P * R);
        for (int64_t h = 0; h < T; ++h)
          cut[h] = std::lower_bound(cost.begin(), cost.end() - 1, cost[P * R] * h / T) - cost.begin();
        at::parallel_for(0, T, 1, [&](int64_t h0, int64_t h1) {
          // The rows' fp32 partial sums across K strips, and their split where it is not shared.
          std::vector<float> scratch;
          std::vector<int64_t> seg;
          for (int64_t t = cut[h0]; t < cut[h1] && ok.load(std::memory_order_relaxed); ++t) {
            const int64_t p = t / R, r0 = splits[t % R], r1 = splits[t % R + 1];
            if (r0 == r1) continue;
            const bool own = p == P - 1 && kstrip_last != kstrip, split_done = shared_split && !own;
            const int64_t ks = own ? kstrip_last : kstrip, ns = own ? nstrips_last : nstrips;
            scratch.resize((r1 - r0) * kPanel);
            if (!split_done) seg.resize((r1 - r0) * (ns + 1));
            const int64_t* split = split_done ? split_all->data() + r0 * (nstrips + 1) : nullptr;
            const float* panel = panels[p].data_ptr<float>();
            const int64_t n0 = p * kPanel, width = panels[p].size(1), cols = std::min(kPanel, N - n0);
            if (!SK_ISA_DISPATCH(csr_mm_panel, crow_p, col_p, val_p, panel, width, cols, K, ks, ns, bias_p, n0, out_p,
                                 osm, osn, r0, r1, scratch.data(), split, seg.data()))
              ok.store(false, std::memory_order_relaxed);
          }
        });
        if (!ok) throw_bad_column(op, col_p, nnz, K);
      });
    });
  });
}

namespace {

at::Tensor csr_mm_cpu(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val, const at::Tensor& B,
                      const std::optional<at::Tensor>& row_order) {
  const char* op = "csr_mm";
  check_csr_mm_args(op, crow, col, val, row_order, B, "B");
  at::Tensor out = at::empty({crow.numel() - 1, B.size(1)}, B.options());
  csr_mm_into(op, crow, col, val, B, std::nullopt, out);
  return out;
}

at::Tensor csr_linear_cpu(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                          const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& row_order) {
  const char* op = "csr_linear";
  check_csr_mm_args(op, crow, col, val, row_order, x, "x");
  const int64_t M = crow.numel() - 1;
  check_linear_bias(op, bias, val, M);
  return linear_via_mm(x, M, [&](const at::Tensor& xt, at::Tensor& yt) {
    csr_mm_into(op, crow, col, val, xt, bias, yt);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CPU, m) { m.impl("csr_mm", &csr_mm_cpu).impl("csr_linear", &csr_linear_cpu); }

}  // namespace sparsekern::cpu
