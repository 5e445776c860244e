// Constants shared with Python, defined once in sparsekern/_constants.py: setup.py (and the nvcc compile test)
// pass each as -DSPARSEKERN_<NAME>; this header gives them C++ names and types. A missing define is an error,
// never a silent default that could drift from the Python side.
#pragma once

#include <cstdint>

#if !defined(SPARSEKERN_DECODE_MAX_N) || !defined(SPARSEKERN_COMPACT_MAX_K) ||                          \
    !defined(SPARSEKERN_BITMAP_WORD_BITS) || !defined(SPARSEKERN_SEMI24_K_TILE) || !defined(SPARSEKERN_SEMI24_M_BLOCK)
#error "a SPARSEKERN_<NAME> constant is not defined: build through setup.py, which reads sparsekern/_constants.py"
#endif

namespace sparsekern {

// N (or tokens T) up to which the kernels take their decode path.
inline constexpr int kDecodeMaxN = SPARSEKERN_DECODE_MAX_N;
// Largest K that compact (int16, read as uint16) column indices address.
inline constexpr int64_t kCompactMaxK = SPARSEKERN_COMPACT_MAX_K;
// Bits per word of a CSRMatrix bitmap row.
inline constexpr int kBitmapWordBits = SPARSEKERN_BITMAP_WORD_BITS;
// 2:4 layout: K padded to the CUDA kernel's K step; mma.sp metadata in blocks of 32 rows.
inline constexpr int64_t kSemi24KTile = SPARSEKERN_SEMI24_K_TILE;
inline constexpr int64_t kSemi24MBlock = SPARSEKERN_SEMI24_M_BLOCK;

}  // namespace sparsekern
