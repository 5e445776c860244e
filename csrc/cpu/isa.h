// Runtime choice of the CPU instruction set for the hot loops. The kernels are written as plain loops over
// compile-time tile widths; the compiler vectorises them. Each kernel header is compiled three times
// (AVX-512, AVX2+FMA, baseline) under `#pragma GCC target`, and the dispatcher picks the best variant the
// running CPU supports, so one binary is both portable and uses the wide registers where they exist.
//
// Usage in an op's .cpp:   #define SK_KERNEL_HEADER "cpu/csr_mm_kernel.h"
//                          #include "cpu/isa_variants.h"
// which defines namespaces sparsekern::cpu::{avx512,avx2,base} holding the header's templates.
#pragma once

#include <cstdlib>
#include <cstring>

namespace sparsekern::cpu {

enum class Isa { base, avx2, avx512 };

// SPARSEKERN_CPU_ISA=avx2 or =base (read once per process) caps the choice below what the CPU supports, so the
// other variants can be tested and timed on a machine that would always take AVX-512.
inline Isa detect_isa() {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  static const Isa isa = [] {
    __builtin_cpu_init();
    Isa best = Isa::base;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
      best = Isa::avx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      best = Isa::avx2;
    const char* cap = std::getenv("SPARSEKERN_CPU_ISA");
    if (cap != nullptr && std::strcmp(cap, "base") == 0) return Isa::base;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && best == Isa::avx512) return Isa::avx2;
    return best;
  }();
  return isa;
#else
  return Isa::base;
#endif
}

}  // namespace sparsekern::cpu

// Calls NS::FN<TARGS>(ARGS...) for the best namespace NS the CPU supports.
#define SK_ISA_DISPATCH(FN, ...)                                                     \
  [&] {                                                                              \
    switch (::sparsekern::cpu::detect_isa()) {                                       \
      case ::sparsekern::cpu::Isa::avx512: return ::sparsekern::cpu::avx512::FN(__VA_ARGS__); \
      case ::sparsekern::cpu::Isa::avx2: return ::sparsekern::cpu::avx2::FN(__VA_ARGS__);     \
      default: return ::sparsekern::cpu::base::FN(__VA_ARGS__);                      \
    }                                                                                \
  }()
