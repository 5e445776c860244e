// Every schema of the sparsekern op library, defined once. Kernels register per backend in cpu/ and cuda/;
// fake (meta) kernels, autograd and the Triton fallbacks are registered from Python (sparsekern/ops/).
#include <Python.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <string_view>
#include <tuple>

#include "checks.h"
#include "cpu/isa.h"
#include "cuda/csr_mm/plan.h"

extern "C" {
// Importing sparsekern._C runs the static registrations below; the module itself exports nothing.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace {

// The csr_mm CUDA kernels' plan (cuda/csr_mm/plan.h) for plain inputs, computed by the code the CUDA op runs, so
// that CPU tests can check its decisions: (kernel: 0 nzsplit, 1 rowsplit; NT; log2 S; staged; W; VEC; transposed).
std::tuple<int64_t, int64_t, int64_t, bool, int64_t, int64_t, bool> csr_mm_plan(
    int64_t M, int64_t K, int64_t N, int64_t nnz, int64_t elt, int64_t col_bytes, bool rows_vec, bool rows_vec_nt,
    int64_t sms, bool trans_out, std::optional<std::string_view> config) {
  const char* op = "_csr_mm_plan";
  SK_CHECK_VALUE(M >= 0 && K >= 0 && N >= 0 && nnz >= 0, op, "M, K, N and nnz must be >= 0, got ", M, ", ", K,
                 ", ", N, ", ", nnz);
  SK_CHECK_VALUE(elt == 2 || elt == 4, op, "elt must be 2 or 4 bytes, got ", elt);
  SK_CHECK_VALUE(col_bytes == 2 || col_bytes == 4 || col_bytes == 8, op, "col_bytes must be 2, 4 or 8, got ",
                 col_bytes);
  SK_CHECK_VALUE(sms >= 1 && sms <= 4096, op, "sms must be in [1, 4096], got ", sms);
  namespace plan = sparsekern::cuda::csr_mm;
  plan::PlanInputs in;
  in.M = M, in.N = N, in.K = K, in.nnz = nnz;
  in.elt = static_cast<int>(elt), in.col_bytes = static_cast<int>(col_bytes);
  in.rows_vec = rows_vec, in.rows_vec_nt = rows_vec_nt;
  in.sms = static_cast<int>(sms), in.trans_out = trans_out;
  const std::string cfg = config.has_value() ? std::string(*config) : std::string();
  const plan::Plan p = plan::choose_plan(in, cfg.c_str());
  return {p.kind == plan::Kind::kNzSplit ? 0 : 1, p.nt, p.log_s, p.staged, p.w, p.vec, p.trans_out};
}

}  // namespace

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
  // Internal, for tests: the CUDA csr_mm plan of a problem (see csr_mm_plan above); config as SPARSEKERN_CSR_MM_CONFIG.
  m.def("_csr_mm_plan(int M, int K, int N, int nnz, int elt, int col_bytes, bool rows_vec, bool rows_vec_nt, "
        "int sms, bool trans_out, str? config=None) -> (int, int, int, bool, int, int, bool)",
        &csr_mm_plan);
}
