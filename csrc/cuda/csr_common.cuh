// Device helpers shared by the CSR kernels: index loads whose width is a runtime property of the matrix
// (int32 / int64 / compact uint16 columns), the raw bits of fp16/bf16/fp32 data and their conversion to fp32.
//
// Index widths are runtime arguments rather than template parameters: the branch on them is uniform across
// the grid (free once predicted), and it keeps the number of kernel instantiations, hence compile time, a
// third of what templating on (crow, col) types would cost.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace sparsekern::cuda {

// Raw storage of an element: fp16/bf16 travel as uint16_t bits, so vector loads and shared-memory tiles need
// no constructors, and are converted to fp32 once, at the FMA.
template <typename T>
struct Bits {
  using type = float;
};
template <>
struct Bits<c10::Half> {
  using type = uint16_t;
};
template <>
struct Bits<c10::BFloat16> {
  using type = uint16_t;
};

template <typename T>
__device__ __forceinline__ float bits_to_float(typename Bits<T>::type b) {
  if constexpr (std::is_same_v<T, c10::Half>) {
    return __half2float(__ushort_as_half(b));
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return __bfloat162float(__ushort_as_bfloat16(b));
  } else {
    return b;
  }
}

// Index i of an index array whose elements are `bytes` wide: 8 (int64), 4 (int32) or 2 (compact uint16).
__device__ __forceinline__ int64_t load_index(const void* p, int64_t i, int bytes) {
  if (bytes == 8) return __ldg(static_cast<const long long*>(p) + i);
  if (bytes == 4) return __ldg(static_cast<const int*>(p) + i);
  return __ldg(static_cast<const unsigned short*>(p) + i);
}

// Calls fn(scalar_t{}) for the three float types the ops accept (dtypes are checked before; AT_DISPATCH's
// float group would also instantiate every kernel for double).
template <typename Fn>
void dispatch_float(c10::ScalarType t, const Fn& fn) {
  switch (t) {
    case c10::ScalarType::Float: fn(float{}); break;
    case c10::ScalarType::Half: fn(c10::Half{}); break;
    case c10::ScalarType::BFloat16: fn(c10::BFloat16{}); break;
    default: TORCH_CHECK(false, "sparsekern: unsupported dtype ", t);
  }
}

}  // namespace sparsekern::cuda
