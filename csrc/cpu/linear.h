// The nn.Linear orientation on an mm kernel, shared by the CPU *_linear ops: y (T, M) = x (T, K) @ A^T + bias is
// y^T (M, T) = A @ x^T, which the kernel writes through y's transposed view while reading x through x.t(), so
// neither A nor x is copied.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace sparsekern::cpu {

// mm_into(xt, yt) runs the kernel: xt = x^T (K, T), yt = y^T (M, T), both strided views.
template <typename MmInto>
at::Tensor linear_via_mm(const at::Tensor& x, int64_t M, const MmInto& mm_into) {
  at::Tensor y = at::empty({x.size(0), M}, x.options());
  at::Tensor yt = y.t();
  mm_into(x.t(), yt);
  return y;
}

}  // namespace sparsekern::cpu
