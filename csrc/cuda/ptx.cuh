// The PTX and cache-hinted memory instructions the CUDA kernels use, one thin wrapper each, in one place so that
// every kernel reaches them by the same name. Each wrapper says why the kernels need that instruction rather than
// plain C++. Reference: the PTX ISA sections on cp.async, ldmatrix and mma.sp (sparse matrix fragments).
#pragma once

#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#if (__CUDACC_VER_MAJOR__ > 12) || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ >= 5)
// PTX 8.5: the ordered-metadata form PTX recommends; every nibble the format writes is an ordered pair.
#define SK_MMA_SP "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32."
#else
#define SK_MMA_SP "mma.sp.sync.aligned.m16n8k32.row.col.f32."
#endif

namespace sparsekern::cuda {

// ------------------------------------------------------------------------------------------- global loads

enum class Ld { kReadOnly, kStream, kPlain };

// N consecutive elements (N * sizeof(E) bytes, the address aligned to min(16, that)) in one to four vector
// loads. kStream marks data read once (the sparse values and indices: evict-first, so they do not push the
// reused dense operand out of L1/L2); kPlain is for shared memory.
template <int N, Ld LD, typename E>
__device__ __forceinline__ void load_vec(const E* p, E (&r)[N]) {
  constexpr int bytes = N * static_cast<int>(sizeof(E));
  if constexpr (bytes % 16 == 0) {
#pragma unroll
    for (int i = 0; i < bytes / 16; ++i) {
      const uint4* src = reinterpret_cast<const uint4*>(p) + i;
      uint4 v;
      if constexpr (LD == Ld::kStream) v = __ldcs(src);
      else if constexpr (LD == Ld::kReadOnly) v = __ldg(src);
      else v = *src;
      reinterpret_cast<uint4*>(r)[i] = v;
    }
  } else if constexpr (bytes == 8) {
    const uint2* src = reinterpret_cast<const uint2*>(p);
    reinterpret_cast<uint2*>(r)[0] = LD == Ld::kPlain ? *src : __ldg(src);
  } else if constexpr (bytes == 4) {
    const unsigned* src = reinterpret_cast<const unsigned*>(p);
    reinterpret_cast<unsigned*>(r)[0] = LD == Ld::kPlain ? *src : __ldg(src);
  } else {
    static_assert(bytes == 2, "load_vec: unsupported width");
    const unsigned short* src = reinterpret_cast<const unsigned short*>(p);
    reinterpret_cast<unsigned short*>(r)[0] = LD == Ld::kPlain ? *src : __ldg(src);
  }
}

// ------------------------------------------------------------------------------------------- shared memory

// cp.async and ldmatrix address shared memory by its 32-bit window offset, not by a generic pointer.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; pred false writes 16 zero bytes and reads nothing.
// Asynchronous so the next stages' tiles load while this one's mma run; .cg bypasses L1, since each tile is
// read once per block into shared memory; the zero-fill lets ragged M/N/K edges multiply zeros without branches.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(pred ? 16 : 0));
}

// Closes the copies issued so far into one group (one pipeline stage), so that cp_async_wait can count stages.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most N stages are still in flight: the stage about to be read has landed, later ones stream on.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8x8 b16 matrices from shared memory straight into mma fragment registers: one instruction per 16x16 tile
// instead of four scattered 32-bit shared loads per lane, and the compressed 2:4 A tile has exactly this layout.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// As ldmatrix_x4, transposed in flight: a row-major B (K, N) tile becomes the column-major B fragment mma wants,
// with no transpose pass through shared memory.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// ------------------------------------------------------------------------------------------- tensor cores

// d += A (16x32, 2:4, compressed in a) @ B (32x8); e: this lane's metadata word, SEL: which lane pair reads it.
// The sparse tensor cores skip the pruned half of A: half its bytes and twice the dense mma's math per cycle.
template <typename T, int SEL>
__device__ __forceinline__ void mma_sp(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4], uint32_t e) {
  if constexpr (std::is_same_v<T, c10::Half>) {
    asm volatile(SK_MMA_SP "f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, %13;\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e),
                   "n"(SEL));
  } else {
    asm volatile(SK_MMA_SP "bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, %13;\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e),
                   "n"(SEL));
  }
}

}  // namespace sparsekern::cuda
