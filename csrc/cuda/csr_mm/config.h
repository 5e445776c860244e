// Compile-time shape of the csr_mm CUDA kernels, shared by the device code and the host plan (plan.h). Plain
// C++: the CPU extension compiles it too (through plan.h, for the sparsekern._csr_mm_plan op).
#pragma once

#include <cstdint>

#include "constants.h"

namespace sparsekern::cuda::csr_mm {

constexpr int kThreads = 256;             // threads per block, both kernels
constexpr int kChunk = 8;                 // stored entries per chunk load
constexpr uint32_t kNoCol = 0xFFFFFFFFu;  // "no column": masked or out-of-range entry (K < 2^32 - 1 checked)
constexpr int64_t kStageBytes = 32 << 10; // B (K, NT) staged in shared memory up to this size
constexpr int kLinearDirectMaxT = 2;      // Linear orientation, not staged: gather x in place up to this T
constexpr int kStagedBlocksPerSm = 2;     // persistent blocks per SM of the staged nzsplit kernel
// Register caps: 3 blocks of 256 threads per SM leave 80 registers a thread, spill-free for rowsplit and for
// nzsplit up to 16-byte accumulator rows; wider rows get 2 blocks (128 registers), 64-byte rows 1. Without a cap
// ptxas takes 100-190 registers for nzsplit, a quarter of the occupancy that keeps enough loads in flight.
constexpr int kMinBlocks = 3;

// nzsplit (N <= kDecodeMaxN) instantiates accumulator widths NT = 1, 2, 4, 8, 16 (csr_mm.cu, launch).
static_assert(kDecodeMaxN >= 1 && kDecodeMaxN <= 16, "csr_mm: nzsplit has accumulator widths up to 16");

}  // namespace sparsekern::cuda::csr_mm
