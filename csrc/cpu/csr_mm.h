// The CSR product loop nest of csr_mm / csr_linear, shared with the bitmap ops (csr_bitmap_mm.cpp), which run it
// where the bitmap kernel does not apply.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace sparsekern::cpu {

// out (M, N), any strides: out = A @ B + bias[:, None], with B (K, N) and A given by its CSR components. Checks
// the row pointers and every column index (messages name `op`).
void csr_mm_into(const char* op, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                 const at::Tensor& B, const std::optional<at::Tensor>& bias, at::Tensor& out);

}  // namespace sparsekern::cpu
