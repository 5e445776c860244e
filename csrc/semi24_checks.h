// Input checks of the 2:4 ops (semi24_mm, semi24_linear), shared by the CPU and CUDA kernels. Cheap checks
// only (shapes, dtypes, devices); the metadata contents are checked by the Semi24Matrix constructor.
#pragma once

#include <ATen/core/Tensor.h>

#include "checks.h"
#include "constants.h"

namespace sparsekern {

inline int64_t semi24_padded_k(int64_t K) { return (K + kSemi24KTile - 1) / kSemi24KTile * kSemi24KTile; }

// values (M, Kp/2) float, metadata (ceil(M/32), Kp/32, 32) int32, with Kp = K rounded up to the K tile.
inline void check_semi24_components(const char* op, const at::Tensor& values, const at::Tensor& metadata,
                                    int64_t K) {
  check_dim(op, values, "values", 2);
  check_float(op, values, "values");
  SK_CHECK_TYPE(metadata.scalar_type() == at::kInt, op, "metadata must be int32, got ",
                dtype_name(metadata.scalar_type()));
  check_same_device(op, values, "values", metadata, "metadata");
  const int64_t M = values.size(0), Kp = semi24_padded_k(K);
  SK_CHECK_VALUE(values.size(1) * 2 == Kp, op, "values must have padded K / 2 = ", Kp / 2,
                 " columns for K = ", K, ", got shape ", values.sizes());
  const int64_t MB = (M + kSemi24MBlock - 1) / kSemi24MBlock;
  SK_CHECK_VALUE(metadata.dim() == 3 && metadata.size(0) == MB && metadata.size(1) == Kp / 32 &&
                     metadata.size(2) == 32,
                 op, "metadata must have shape (", MB, ", ", Kp / 32, ", 32), got ", metadata.sizes());
}

inline void check_semi24_dense(const char* op, const at::Tensor& t, const char* name, const at::Tensor& values) {
  check_dim(op, t, name, 2);
  check_float(op, t, name);
  check_same_dtype(op, values, "values", t, name);
  check_same_device(op, values, "values", t, name);
}

// semi24_mm(values, metadata, B): B (K, N).
inline void check_semi24_mm(const at::Tensor& values, const at::Tensor& metadata, const at::Tensor& B) {
  check_semi24_dense("semi24_mm", B, "B", values);
  check_semi24_components("semi24_mm", values, metadata, B.size(0));
}

// semi24_linear(x, values, metadata, bias): x (T, K), bias (M,) or none.
inline void check_semi24_linear(const at::Tensor& x, const at::Tensor& values, const at::Tensor& metadata,
                                const std::optional<at::Tensor>& bias) {
  const char* op = "semi24_linear";
  check_semi24_dense(op, x, "x", values);
  check_semi24_components(op, values, metadata, x.size(1));
  if (!bias.has_value()) return;
  check_dim(op, *bias, "bias", 1);
  check_same_dtype(op, values, "values", *bias, "bias");
  check_same_device(op, values, "values", *bias, "bias");
  SK_CHECK_VALUE(bias->size(0) == values.size(0), op, "bias must have M = ", values.size(0), " entries, got ",
                 bias->size(0));
}

}  // namespace sparsekern
