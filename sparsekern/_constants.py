"""Numbers the Python side shares with the C++ / CUDA kernels, one definition each. setup.py reads this file by path
and passes each to both compilers as -DSPARSEKERN_<NAME>, which csrc/constants.h types (kDecodeMaxN, ...), so a
kernel and the Python code that sizes, checks or dispatches for it cannot drift. Plain int literals only.

Each says what decided it; changing one changes a kernel's layout or regime, not a tuning knob."""

# Largest N (columns of B; tokens of x in the Linear orientation) that the GPU kernels treat as decode: one
# 16-column tile covers all of N, so the kernels stream A once and spread its rows or blocks over the GPU instead
# of tiling N. 16 is the N of one fp16/bf16 tensor-core tile (mma m16n8k16 / m16n8k32 as two n8 halves), which
# the bitmap and BSR Triton kernels and the 2:4 CUDA decode kernel use, and the widest accumulator the CSR
# nzsplit kernel keeps in registers. dispatch.py's cost model prices the bitmap kernel's decode configs up to it.
DECODE_MAX_N = 16

# Compact CSR columns are int16 holding the 16-bit pattern of a column (read as unsigned): K up to 2**16.
COMPACT_MAX_K = 1 << 16

# The bitmap of a CSRMatrix: one bit per element, rows of int32 words (what the kernels load per step).
BITMAP_WORD_BITS = 32

# 2:4 layout (csrc/constants.h kSemi24KTile, kSemi24MBlock): K is padded to the CUDA kernel's K step, and
# the mma.sp metadata comes in blocks of 32 rows (the rows one warp's E registers cover).
SEMI24_K_TILE = 64
SEMI24_M_BLOCK = 32
