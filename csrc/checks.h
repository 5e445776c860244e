// Input checks shared by every op. Each message starts with "sparsekern.<op>:" so the user sees which op
// refused the input; the exception type follows Python conventions (TypeError for dtypes, IndexError for
// indices out of range, ValueError for shapes and contents). The Python checks (sparsekern/_checks.py, the
// formats' check functions, the ops' fake kernels) say the same words in the same order, dtypes spelt as Python
// spells them (torch.float32) and shapes as at::IntArrayRef prints them ([2, 3]): tests/test_ops.py compares.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>
#include <string>

namespace sparsekern {

#define SK_CHECK_VALUE(cond, op, ...) TORCH_CHECK_VALUE(cond, "sparsekern.", op, ": ", __VA_ARGS__)
#define SK_CHECK_TYPE(cond, op, ...) TORCH_CHECK_TYPE(cond, "sparsekern.", op, ": ", __VA_ARGS__)
#define SK_CHECK_INDEX(cond, op, ...) TORCH_CHECK_INDEX(cond, "sparsekern.", op, ": ", __VA_ARGS__)

// A dtype as Python spells it (torch.float32, not Float).
inline std::string dtype_name(at::ScalarType t) {
  return "torch." + std::string(c10::getDtypeNames(t).first);
}

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float(const char* op, const at::Tensor& t, const char* name) {
  SK_CHECK_TYPE(is_supported_float(t.scalar_type()), op, name, " must be float32, float16 or bfloat16, got ",
                dtype_name(t.scalar_type()));
}

inline void check_same_dtype(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b,
                             const char* bn) {
  SK_CHECK_TYPE(a.scalar_type() == b.scalar_type(), op, an, " and ", bn, " must have the same dtype, got ",
                dtype_name(a.scalar_type()), " and ", dtype_name(b.scalar_type()));
}

inline void check_same_device(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b,
                              const char* bn) {
  SK_CHECK_VALUE(a.device() == b.device(), op, an, " and ", bn, " must be on the same device, got ", a.device(),
                 " and ", b.device());
}

inline void check_dim(const char* op, const at::Tensor& t, const char* name, int64_t dim) {
  SK_CHECK_VALUE(t.dim() == dim, op, name, " must be ", dim, "-D, got shape ", t.sizes());
}

// col_indices has crow's dtype, or is int16 ("compact" indices for K <= 65536): an int16 column holds the 16-bit
// pattern of an index in [0, 65535], so every kernel reads it as uint16 (col & 0xFFFF).
inline void check_col_dtype(const char* op, const at::Tensor& crow, const at::Tensor& col) {
  SK_CHECK_TYPE(col.scalar_type() == crow.scalar_type() || col.scalar_type() == at::kShort, op,
                "col_indices must have the dtype of crow_indices (", dtype_name(crow.scalar_type()),
                ") or be int16, got ", dtype_name(col.scalar_type()));
}

// The optional row order (a permutation of the M rows, longest first) that the GPU kernels walk rows in: it
// has crow's dtype and M entries. Its contents are checked by the CSRMatrix constructor / validate=True.
// The bitmap of a CSR pattern (csr_bitmap_mm / csr_bitmap_linear): (M, ceil(K / 32)) int32 words on crow's device.
// Its contents are checked against col by the CSRMatrix constructor / validate=True.
inline void check_bitmap(const char* op, const at::Tensor& bitmap, const at::Tensor& crow, int64_t K) {
  SK_CHECK_TYPE(bitmap.scalar_type() == at::kInt, op, "bitmap must be int32, got ",
                dtype_name(bitmap.scalar_type()));
  const int64_t M = crow.numel() - 1, words = (K + 31) / 32;
  SK_CHECK_VALUE(bitmap.dim() == 2 && bitmap.size(0) == M && bitmap.size(1) == words, op,
                 "bitmap must have shape (M, ceil(K / 32)) = (", M, ", ", words, "), got ", bitmap.sizes());
  check_same_device(op, crow, "crow_indices", bitmap, "bitmap");
}

inline void check_row_order(const char* op, const std::optional<at::Tensor>& order, const at::Tensor& crow) {
  if (!order.has_value()) return;
  check_dim(op, *order, "row_order", 1);
  SK_CHECK_TYPE(order->scalar_type() == crow.scalar_type(), op, "row_order must have the dtype of crow_indices (",
                dtype_name(crow.scalar_type()), "), got ", dtype_name(order->scalar_type()));
  SK_CHECK_VALUE(order->numel() == crow.numel() - 1, op, "row_order must have M = ", crow.numel() - 1,
                 " entries, got ", order->numel());
  check_same_device(op, crow, "crow_indices", *order, "row_order");
}

// The index tensors of a compressed-row format (CSR rows, BSR block rows): 1-D, crow int32 or int64, one device.
// The dtype rule for col is the format's.
inline void check_index_components(const char* op, const at::Tensor& crow, const at::Tensor& col) {
  check_dim(op, crow, "crow_indices", 1);
  check_dim(op, col, "col_indices", 1);
  SK_CHECK_TYPE(crow.scalar_type() == at::kInt || crow.scalar_type() == at::kLong, op,
                "crow_indices must be int32 or int64, got ", dtype_name(crow.scalar_type()));
  check_same_device(op, crow, "crow_indices", col, "col_indices");
}

// The component tensors of a CSR matrix: cheap checks only (no reads of index contents).
inline void check_csr_components(const char* op, const at::Tensor& crow, const at::Tensor& col,
                                 const at::Tensor& val) {
  check_index_components(op, crow, col);
  check_dim(op, val, "values", 1);
  check_col_dtype(op, crow, col);
  check_float(op, val, "values");
  SK_CHECK_VALUE(crow.numel() >= 1, op, "crow_indices must have M + 1 >= 1 entries");
  SK_CHECK_VALUE(col.numel() == val.numel(), op, "col_indices and values must have the same length, got ",
                 col.numel(), " and ", val.numel());
  check_same_device(op, crow, "crow_indices", val, "values");
}

// The optional bias of a Linear-orientation op: 1-D with M entries, the values' dtype and device.
inline void check_linear_bias(const char* op, const std::optional<at::Tensor>& bias, const at::Tensor& val,
                              int64_t M) {
  if (!bias.has_value()) return;
  check_dim(op, *bias, "bias", 1);
  check_same_dtype(op, val, "values", *bias, "bias");
  check_same_device(op, val, "values", *bias, "bias");
  SK_CHECK_VALUE(bias->size(0) == M, op, "bias must have M = ", M, " entries, got ", bias->size(0));
}

// A dense operand (B, or x in the Linear orientation): 2-D, the values' dtype and device.
inline void check_dense(const char* op, const at::Tensor& t, const char* name, const at::Tensor& val) {
  check_dim(op, t, name, 2);
  check_float(op, t, name);
  check_same_dtype(op, val, "values", t, name);
  check_same_device(op, val, "values", t, name);
}

// csr_mm / csr_linear on any backend: the CSR components, the optional row order and the dense operand.
inline void check_csr_mm_args(const char* op, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                              const std::optional<at::Tensor>& row_order, const at::Tensor& dense,
                              const char* dense_name) {
  check_csr_components(op, crow, col, val);
  check_row_order(op, row_order, crow);
  check_dense(op, dense, dense_name, val);
}

// csr_sddmm: the CSR pattern's indices, G (M, N) and B (K, N) of one float dtype, all on one device.
inline void check_sddmm_args(const char* op, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& G,
                             const at::Tensor& B) {
  check_index_components(op, crow, col);
  check_col_dtype(op, crow, col);
  SK_CHECK_VALUE(crow.numel() >= 1, op, "crow_indices must have M + 1 >= 1 entries");
  check_dim(op, G, "G", 2);
  check_dim(op, B, "B", 2);
  check_float(op, G, "G");
  check_same_dtype(op, G, "G", B, "B");
  check_same_device(op, G, "G", B, "B");
  check_same_device(op, crow, "crow_indices", G, "G");
  const int64_t M = crow.numel() - 1;
  SK_CHECK_VALUE(G.size(0) == M, op, "G must have M = ", M, " rows, got ", G.size(0));
  SK_CHECK_VALUE(B.size(1) == G.size(1), op, "G and B must have the same number of columns, got ", G.size(1),
                 " and ", B.size(1));
}

}  // namespace sparsekern
