// Constants shared with Python, defined once in sparsekern/_constants.py: setup.py (and the nvcc compile test)
// pass each as -DSPARSEKERN_<NAME>; this header gives them C++ names and types. A missing define is an error,
// never a silent default that could drift from the Python side.
#pragma once

#ifndef SPARSEKERN_DECODE_MAX_N
#error "SPARSEKERN_DECODE_MAX_N is not defined: build through setup.py, which reads sparsekern/_constants.py"
#endif

namespace sparsekern {

// N (or tokens T) up to which the kernels take their decode path.
inline constexpr int kDecodeMaxN = SPARSEKERN_DECODE_MAX_N;

}  // namespace sparsekern
