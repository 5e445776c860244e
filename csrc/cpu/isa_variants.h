// Compiles SK_KERNEL_HEADER once per instruction set (see isa.h). Include after every other header, so that
// only the kernel code (and nothing from torch) is compiled under the target pragmas. A header may use AVX-512
// intrinsics (<immintrin.h> included before) under `#if SK_ISA_AVX512` (and AVX2 ones under `#if SK_ISA_AVX2`),
// which is 1 only in that variant compiled with its target pragma; elsewhere it is undefined (0 in #if).
#ifndef SK_KERNEL_HEADER
#error "define SK_KERNEL_HEADER before including isa_variants.h"
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")
#define SK_ISA_NS avx512
#define SK_ISA_AVX512 1
#include SK_KERNEL_HEADER
#undef SK_ISA_AVX512
#undef SK_ISA_NS
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define SK_ISA_NS avx2
#define SK_ISA_AVX2 1
#include SK_KERNEL_HEADER
#undef SK_ISA_AVX2
#undef SK_ISA_NS
#pragma GCC pop_options
#else
#define SK_ISA_NS avx512
#include SK_KERNEL_HEADER
#undef SK_ISA_NS
#define SK_ISA_NS avx2
#include SK_KERNEL_HEADER
#undef SK_ISA_NS
#endif

#define SK_ISA_NS base
#include SK_KERNEL_HEADER
#undef SK_ISA_NS
#undef SK_KERNEL_HEADER
