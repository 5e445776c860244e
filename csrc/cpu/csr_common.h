// CPU helpers shared by the CSR kernels: validation of the row pointers, nnz-balanced row partitions, and
// the fp32 staging of fp16/bf16 operands.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "checks.h"

namespace sparsekern::cpu {

// crow must start at 0, never decrease, and end at nnz. O(M), so it is always on for CPU inputs; the column
// range check is fused into the kernels' loops, where it costs one predictable branch per stored entry.
template <typename index_t>
void check_crow(const char* op, const index_t* crow, int64_t M, int64_t nnz) {
  SK_CHECK_VALUE(crow[0] == 0, op, "crow_indices[0] must be 0, got ", crow[0]);
  SK_CHECK_VALUE(static_cast<int64_t>(crow[M]) == nnz, op, "crow_indices[-1] must equal nnz = ", nnz, ", got ",
                 crow[M]);
  for (int64_t i = 0; i < M; ++i) {
    SK_CHECK_VALUE(crow[i] <= crow[i + 1], op, "crow_indices must be non-decreasing, but crow_indices[", i,
                   "] = ", crow[i], " > crow_indices[", i + 1, "] = ", crow[i + 1]);
  }
}

// Row boundaries of `parts` contiguous row ranges holding about equal numbers of stored entries, so that a
// few long rows do not leave the other threads idle.
template <typename index_t>
std::vector<int64_t> balanced_row_splits(const index_t* crow, int64_t M, int64_t parts) {
  const int64_t nnz = crow[M];
  parts = std::max<int64_t>(1, std::min(parts, M));
  std::vector<int64_t> splits(parts + 1, 0);
  splits[parts] = M;
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t target = nnz * p / parts;
    const int64_t by_nnz = std::lower_bound(crow, crow + M + 1, static_cast<index_t>(target)) - crow;
    // Clamped to stay monotone; a part is empty where one row holds more than a part's share.
    splits[p] = std::clamp<int64_t>(by_nnz, splits[p - 1], M);
  }
  return splits;
}

// Runs fn(row_begin, row_end) over nnz-balanced row ranges in parallel; returns false if any call did.
template <typename index_t, typename Fn>
bool parallel_over_rows(const index_t* crow, int64_t M, const Fn& fn) {
  if (M == 0) return true;
  const int64_t parts = std::min<int64_t>(M, static_cast<int64_t>(at::get_num_threads()) * 8);
  const auto splits = balanced_row_splits(crow, M, parts);
  std::atomic<bool> ok{true};
  at::parallel_for(0, static_cast<int64_t>(splits.size()) - 1, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      if (!fn(splits[p], splits[p + 1])) ok.store(false, std::memory_order_relaxed);
    }
  });
  return ok.load();
}

// Calls fn(col_p) with col's data as `const index_t*`, or as `const uint16_t*` for int16 (compact) columns, which
// hold the 16-bit pattern of an index in [0, 65535]. Kernels template on the pointer type, so reading compact
// columns costs nothing extra in the inner loops.
template <typename index_t, typename Fn>
auto with_col_ptr(const at::Tensor& col, const Fn& fn) {
  if (col.scalar_type() == at::kShort) return fn(reinterpret_cast<const uint16_t*>(col.const_data_ptr<int16_t>()));
  return fn(col.const_data_ptr<index_t>());
}

// fp16/bf16 operands are widened to fp32 once per call: each dense row is read by ~nnz/K stored entries, so
// widening it once is cheaper than converting at every use, and the inner loops stay pure fp32 FMAs.
inline at::Tensor as_float_contiguous(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat ? t.contiguous() : t.to(at::kFloat).contiguous();
}

}  // namespace sparsekern::cpu
