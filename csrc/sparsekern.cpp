// Every schema of the sparsekern op library, defined once. Kernels register per backend in cpu/ and cuda/;
// fake (meta) kernels, autograd and the Triton fallbacks are registered from Python (sparsekern/ops/).
#include <Python.h>
#include <torch/library.h>

#include "cpu/isa.h"

extern "C" {
// Importing sparsekern._C runs the static registrations below; the module itself exports nothing.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(sparsekern, m) {
  // CSR (M, K) @ B (K, N) -> (M, N). M = crow.numel() - 1, K = B.size(0). col may be int16 (read as uint16,
  // K <= 65536). row_order: optional permutation of the rows (longest first) that GPU kernels walk rows in.
  m.def("csr_mm(Tensor crow, Tensor col, Tensor val, Tensor B, Tensor? row_order=None) -> Tensor");
  // x (T, K) @ A.T + bias -> (T, M), A in CSR (M, K): the nn.Linear orientation, no transposed copy of A.
  m.def("csr_linear(Tensor x, Tensor crow, Tensor col, Tensor val, Tensor? bias, Tensor? row_order=None) -> Tensor");
  // csr_mm / csr_linear for a CSR matrix that also carries the bitmap of its stored columns (bitmap (M, ceil(K/32))
  // int32, bit b of word w <-> column 32w + b; columns sorted within rows). The GPU kernel reads the bitmap instead
  // of col and runs on tensor cores; the CPU kernel reads col (the bitmap's shape and dtype are still checked).
  m.def("csr_bitmap_mm(Tensor crow, Tensor col, Tensor val, Tensor bitmap, Tensor B) -> Tensor");
  m.def("csr_bitmap_linear(Tensor x, Tensor crow, Tensor col, Tensor val, Tensor bitmap, Tensor? bias) -> Tensor");
  // Gradient of CSR values: out[j] = dot(G[row(j), :], B[col[j], :]) for every stored entry j (SDDMM).
  m.def("csr_sddmm(Tensor crow, Tensor col, Tensor G, Tensor B) -> Tensor");
  // BSR (M, K) @ B (K, N) -> (M, N); val (nblocks, bm, bk), crow ceil(M/bm) + 1 entries, K = B.size(0).
  m.def("bsr_mm(Tensor crow, Tensor col, Tensor val, int M, Tensor B) -> Tensor");
  // x (T, K) @ A.T + bias -> (T, M), A in BSR (M, K): the nn.Linear orientation, no transposed copy of A.
  m.def("bsr_linear(Tensor x, Tensor crow, Tensor col, Tensor val, int M, Tensor? bias) -> Tensor");
  // 2:4 (M, K) @ B (K, N) -> (M, N); values (M, Kp/2) and metadata (ceil(M/32), Kp/32, 32) int32 in the
  // Semi24Matrix layout, K = B.size(0), Kp = K rounded up to 64.
  m.def("semi24_mm(Tensor values, Tensor metadata, Tensor B) -> Tensor");
  // x (T, K) @ A.T + bias -> (T, M), A 2:4 as above: the nn.Linear orientation, neither A nor x transposed.
  m.def("semi24_linear(Tensor x, Tensor values, Tensor metadata, Tensor? bias) -> Tensor");
  // Convolution of x (N, C, H, W) with a CSR weight (out_channels, C / groups * kh * kw) (nn.Conv2d's weight
  // viewed 2-D) + bias -> (N, out_channels, Ho, Wo), as an implicit GEMM (no unfold). padding is (top, bottom,
  // left, right), so "same" with an even kernel fits; channels_last picks the output's memory format.
  m.def("csr_conv2d(Tensor x, Tensor crow, Tensor col, Tensor val, Tensor? bias, int[2] kernel_size, int[2] stride, "
        "int[4] padding, int[2] dilation, int groups, bool channels_last) -> Tensor");
  // The instruction set the CPU kernels run (0 baseline, 1 AVX2, 2 AVX-512), for sk.backends().
  m.def("cpu_isa() -> int", [] { return static_cast<int64_t>(sparsekern::cpu::detect_isa()); });
}
