"""Constants that the Python, C++ and CUDA sides must agree on, defined once here.

setup.py reads this file by path (it must not import sparsekern) and passes each constant to both compilers as
-DSPARSEKERN_<NAME>=<value>; csrc/constants.h turns the defines into constexprs. Plain int literals only.
"""

# Widths N of the dense operand (tokens T in the Linear orientation) up to which the kernels run their decode
# configuration: at N <= 16 a GEMM reads each stored weight once for at most 16 FMAs, so it is a bandwidth problem
# (split the nonzeros or K across lanes) rather than a tiling one; 16 is also one mma n-tile pair (2 x n8).
DECODE_MAX_N = 16
