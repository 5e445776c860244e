// CUDA kernels of csr_mm and csr_linear: Sputnik-class CSR SpMM on CUDA cores, fp32 accumulation.
// sparsekern-arch: sm_90a
//
// Two kernels, chosen by the width N of the dense operand (choose_plan in csr_mm/plan.h; every threshold is a first
// guess to be tuned on an H100, see bench/gpu_check.sh and SPARSEKERN_CSR_MM_CONFIG):
//
// * nzsplit (N <= kDecodeMaxN = 16, LLM decode): a pure bandwidth problem. Each stored value and index must be
//   read exactly once, so a subwarp of S lanes shares one row and splits its *nonzeros*: lane l takes chunks of
//   8 stored entries (16 B of fp16 values + 16 B of uint16 indices, one vector load each, streamed evict-first), with
//   the next chunk's loads issued before this chunk's math. Each lane keeps NT = next_pow2(N) fp32 accumulators
//   (one per output column) and gathers NT-wide rows of B; a butterfly over the subwarp finishes the row.
//   B's rows come from one of three sources (a template parameter, so each variant keeps only its own
//   registers): kVector, one NT-wide vector load per entry (rows contiguous and aligned); kScalar, NT strided
//   loads; kShared, the block first copies B (K, NT) into shared memory (through any strides, so the Linear
//   orientation stages x's rows directly) and blocks are persistent, so staging is paid once per block. kShared
//   is the default only where the rows would otherwise be scalar loads and the staging traffic is small.
// * rowsplit (N > kDecodeMaxN, prefill): Sputnik's 1-D tiling. A subwarp of W lanes owns one row and X = W * VEC
//   output columns, each lane VEC columns (one 16-byte vector: 8 fp16 / 4 fp32). All W lanes load the same
//   8-entry chunk of the row (one broadcast transaction), then each lane gathers a 16-byte vector of B per
//   entry: per 8 entries, 2-3 chunk loads, 8 gathers and 8 * VEC FMAs per lane. TRANS_OUT stages the (Y rows x X
//   columns) output tile in shared memory and writes it transposed, so that the Linear orientation's
//   (T, M) output is written coalesced along M (this needs the block's Y rows consecutive: no row order).
//
// Both walk rows in `row_order` (rows sorted by length, longest first) when given: heavy rows start first and
// the rows that share a warp have similar lengths, so neither the warp nor the grid's tail waits on one row.
//
// Chunks start at the row start rounded down to 8 entries and mask the entries outside the row (Sputnik's
// trick), so every chunk load is aligned; a chunk that would cross the end of the arrays, or arrays that are
// not 16-byte aligned, fall back to predicated scalar loads. Column indices outside [0, K) (possible only with
// unvalidated input) and a row order entry outside [0, M) are skipped, never read through; crow entries are
// clamped to [0, nnz]. Unvalidated garbage therefore gives wrong numbers but can never fault.
//
// Linear orientation, y (T, M) = x (T, K) @ A^T: B is x^T. For T <= kDecodeMaxN the kernel reads x in place: staged
// (x's rows copied coalesced into shared memory), or for T <= 2 gathered from global memory through strides
// (T scattered loads per entry). Otherwise x^T is written once per call into a (K, T_pad) buffer by a tiled
// transpose (T*K elements; next to the nnz*T FMAs and the nnz*(2+2) weight bytes this is small: at T = 1024,
// K = 4096 it is 16 MB of traffic against >= 430 MB of gathered B rows). Gathering x directly instead would
// cost one 32-byte sector per entry *per token*, T times the traffic of one contiguous row of x^T. A is never
// copied.
//
// Files, by role (as Sputnik's spmm/): csr_mm/config.h the kernels' compile-time shape; csr_mm/tiles.cuh the
// operands, chunk loads and row walk both kernels share; csr_mm/nzsplit.cuh and csr_mm/rowsplit.cuh the two
// kernels; csr_mm/transpose.cuh the x^T copy; csr_mm/plan.h the host plan (plain C++, tested on the CPU through
// sparsekern._csr_mm_plan); this file the host side: operands, launches and the two ops.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>

#include "checks.h"
#include "constants.h"
#include "cuda/csr_common.cuh"
#include "cuda/csr_mm/config.h"
#include "cuda/csr_mm/nzsplit.cuh"
#include "cuda/csr_mm/plan.h"
#include "cuda/csr_mm/rowsplit.cuh"
#include "cuda/csr_mm/tiles.cuh"
#include "cuda/csr_mm/transpose.cuh"

namespace sparsekern::cuda::csr_mm {
namespace {

// x (T, K) -> a (K, T) view of a fresh (K, ld) buffer, ld = T rounded up to `multiple`, padding zeroed.
at::Tensor transposed_padded(const at::Tensor& x, int64_t multiple) {
  const int64_t T = x.size(0), K = x.size(1), ld = (T + multiple - 1) / multiple * multiple;
  at::Tensor xt = at::empty({K, ld}, x.options());
  if (K == 0) return xt.narrow(1, 0, T);
  const dim3 block(32, 8),
      grid(static_cast<unsigned>((K + 31) / 32), static_cast<unsigned>(std::min<int64_t>((ld + 31) / 32, 65535)));
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    transpose_pad_kernel<scalar_t><<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), xt.data_ptr<scalar_t>(), T, K, x.stride(0), x.stride(1), ld);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return xt.narrow(1, 0, T);
}

// ------------------------------------------------------------------------------------------------ host

struct DeviceInfo {
  int sms = 0, smem_per_sm = 0;
};

const DeviceInfo& device_info() {
  static DeviceInfo infos[64];
  const int dev = c10::cuda::current_device();
  TORCH_CHECK(dev < 64, "sparsekern: device index ", dev, " out of range");
  DeviceInfo& d = infos[dev];
  if (d.sms == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  }
  return d;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether columns [n0, n0 + width) of every row of B load as one aligned vector, for every tile n0 < N: rows
// contiguous and aligned, and the last tile's vector inside B's storage (padding past N may be read, unused).
bool rows_load_as_vectors(const at::Tensor& B, int64_t width) {
  const int64_t K = B.size(0), N = B.size(1), elt = B.element_size();
  if (width == 1) return true;
  if (B.stride(1) != 1 || K == 0) return false;
  const int64_t align = std::min<int64_t>(16, width * elt);
  if ((B.stride(0) * elt) % align != 0 || reinterpret_cast<uintptr_t>(B.data_ptr()) % align != 0) return false;
  const int64_t tiles = (N + width - 1) / width;
  const int64_t last = B.storage_offset() + (K - 1) * B.stride(0) + tiles * width;
  return last * elt <= static_cast<int64_t>(B.storage().nbytes());
}

// The plan's view of this call: shapes, and what B's layout and the device allow.
PlanInputs plan_inputs(const Operands& a, const at::Tensor& B, bool trans_out) {
  PlanInputs in;
  in.M = a.M, in.N = a.N, in.K = a.K, in.nnz = a.nnz;
  in.elt = static_cast<int>(B.element_size());
  in.col_bytes = a.col_bytes;
  in.rows_vec = rows_load_as_vectors(B, 16 / in.elt);
  in.rows_vec_nt = rows_load_as_vectors(B, nzsplit_width(a.N));
  in.sms = device_info().sms;
  in.trans_out = trans_out;
  return in;
}

Plan plan_for(const Operands& a, const at::Tensor& B, bool trans_out) {
  return choose_plan(plan_inputs(a, B, trans_out), std::getenv("SPARSEKERN_CSR_MM_CONFIG"));
}

template <typename scalar_t, int NT, BSrc SRC>
void launch_nzsplit_as(const Operands& a, const Plan& p, cudaStream_t stream) {
  const int rows_per_block = kThreads >> p.log_s;
  int64_t groups = (a.M + rows_per_block - 1) / rows_per_block;
  size_t smem = 0;
  if constexpr (SRC == BSrc::kShared) {
    // Persistent blocks, kStagedBlocksPerSm per SM: few enough that staging B (once per block, from L2) stays
    // small next to the matrix bytes, each walking many row groups.
    smem = static_cast<size_t>(a.K) * NT * sizeof(typename Bits<scalar_t>::type);
    const DeviceInfo& d = device_info();
    const int per_sm = std::max<int>(1, std::min<int>(kStagedBlocksPerSm, d.smem_per_sm / std::max<int>(1, smem)));
    groups = std::min<int64_t>(groups, static_cast<int64_t>(d.sms) * per_sm);
  }
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(groups, INT32_MAX)),
                  static_cast<unsigned>((a.N + NT - 1) / NT));
  csr_mm_nzsplit<scalar_t, NT, SRC><<<grid, kThreads, smem, stream>>>(a, p.log_s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int W, int VEC, bool TRANS_OUT>
void launch_rowsplit_as(const Operands& a, cudaStream_t stream) {
  constexpr int Y = kThreads / W, X = W * VEC;
  const dim3 grid(static_cast<unsigned>((a.M + Y - 1) / Y), static_cast<unsigned>((a.N + X - 1) / X));
  csr_mm_rowsplit<scalar_t, W, VEC, TRANS_OUT><<<grid, kThreads, 0, stream>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// vec_rows: B's rows load as NT-wide vectors (nzsplit's kVector source).
template <typename scalar_t>
void launch(const Operands& a, const Plan& p, bool vec_rows) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (p.kind == Kind::kNzSplit) {
    TORCH_CHECK((a.N + p.nt - 1) / p.nt <= 65535, "sparsekern: N = ", a.N, " is too wide for the nzsplit kernel");
    const auto go = [&](auto nt) {
      constexpr int NT = decltype(nt)::value;
      if (p.staged) launch_nzsplit_as<scalar_t, NT, BSrc::kShared>(a, p, stream);
      else if (NT == 1 || vec_rows) launch_nzsplit_as<scalar_t, NT, BSrc::kVector>(a, p, stream);
      else if constexpr (NT > 1) launch_nzsplit_as<scalar_t, NT, BSrc::kScalar>(a, p, stream);
    };
    switch (p.nt) {
      case 1: go(std::integral_constant<int, 1>{}); break;
      case 2: go(std::integral_constant<int, 2>{}); break;
      case 4: go(std::integral_constant<int, 4>{}); break;
      case 8: go(std::integral_constant<int, 8>{}); break;
      default: go(std::integral_constant<int, 16>{}); break;
    }
    return;
  }
  constexpr int V = 16 / sizeof(typename Bits<scalar_t>::type);
  TORCH_CHECK((a.N + p.w * p.vec - 1) / (p.w * p.vec) <= 65535, "sparsekern: N = ", a.N, " is too wide");
  if (p.vec == 1) return launch_rowsplit_as<scalar_t, 32, 1, false>(a, stream);
  const auto go = [&](auto w) {
    constexpr int Wc = decltype(w)::value;
    if (p.trans_out) launch_rowsplit_as<scalar_t, Wc, V, true>(a, stream);
    else launch_rowsplit_as<scalar_t, Wc, V, false>(a, stream);
  };
  switch (p.w) {
    case 8: go(std::integral_constant<int, 8>{}); break;
    case 16: go(std::integral_constant<int, 16>{}); break;
    default: go(std::integral_constant<int, 32>{}); break;
  }
}

// A's components made contiguous once per call (no-ops for a CSRMatrix), and the bias.
struct Components {
  at::Tensor crow, col, val, order, bias;
  Components(const at::Tensor& crow_, const at::Tensor& col_, const at::Tensor& val_,
             const std::optional<at::Tensor>& order_, const std::optional<at::Tensor>& bias_)
      : crow(crow_.contiguous()), col(col_.contiguous()), val(val_.contiguous()),
        order(order_.has_value() ? order_->contiguous() : at::Tensor()),
        bias(bias_.has_value() ? bias_->contiguous() : at::Tensor()) {}
};

// out (M, N) = A @ B + bias[:, None]; B (K, N) and out may have any strides.
Operands operands(const char* op, const Components& c, const at::Tensor& B, at::Tensor& out) {
  Operands a{};
  a.crow = c.crow.data_ptr();
  a.col = c.col.data_ptr();
  a.order = c.order.defined() ? c.order.data_ptr() : nullptr;
  a.val = c.val.data_ptr();
  a.B = B.data_ptr();
  a.bias = c.bias.defined() ? c.bias.data_ptr() : nullptr;
  a.out = out.data_ptr();
  a.M = out.size(0), a.N = out.size(1), a.K = B.size(0), a.nnz = c.col.numel();
  SK_CHECK_VALUE(a.K < static_cast<int64_t>(kNoCol), op, "K = ", a.K, " is too large for the CUDA kernels");
  a.sbk = B.stride(0), a.sbn = B.stride(1), a.som = out.stride(0), a.son = out.stride(1);
  a.crow_bytes = static_cast<int>(c.crow.element_size());
  a.col_bytes = static_cast<int>(c.col.element_size());
  a.nz_aligned = aligned16(a.val) && aligned16(a.col);
  return a;
}

void execute(const Operands& a, const Plan& p, const at::Tensor& B) {
  if (a.M == 0 || a.N == 0) return;
  const bool vec_rows = p.kind == Kind::kNzSplit && rows_load_as_vectors(B, p.nt);
  dispatch_float(B.scalar_type(), [&](auto tag) { launch<decltype(tag)>(a, p, vec_rows); });
}

at::Tensor csr_mm_cuda(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val, const at::Tensor& B,
                       const std::optional<at::Tensor>& row_order) {
  const char* op = "csr_mm";
  check_csr_mm_args(op, crow, col, val, row_order, B, "B");
  const c10::cuda::CUDAGuard guard(B.device());
  at::Tensor out = at::empty({crow.numel() - 1, B.size(1)}, B.options());
  const Components c(crow, col, val, row_order, std::nullopt);
  const Operands a = operands(op, c, B, out);
  execute(a, plan_for(a, B, false), B);
  return out;
}

at::Tensor csr_linear_cuda(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                           const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& row_order) {
  const char* op = "csr_linear";
  check_csr_mm_args(op, crow, col, val, row_order, x, "x");
  const int64_t M = crow.numel() - 1, T = x.size(0);
  check_linear_bias(op, bias, val, M);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({T, M}, x.options());
  at::Tensor out = y.t();
  if (M == 0 || T == 0) return y;
  const Components c(crow, col, val, row_order, bias);
  if (T > kDecodeMaxN) {
    // Prefill: x^T once, padded so that its rows load as 16-byte vectors; the output tile written transposed.
    const at::Tensor xt = transposed_padded(x, 16 / x.element_size());
    const Operands a = operands(op, c, xt, out);
    execute(a, plan_for(a, xt, true), xt);
    return y;
  }
  // Decode: x read in place (staged into shared memory, or gathered through strides while T is tiny), else a
  // (K, NT) x^T so that each stored entry gathers one contiguous NT-wide row.
  const at::Tensor xv = x.t();
  const Operands a = operands(op, c, xv, out);
  const Plan p = plan_for(a, xv, false);
  if (p.kind == Kind::kNzSplit && !p.staged && T > kLinearDirectMaxT && !rows_load_as_vectors(xv, p.nt)) {
    const at::Tensor xt = transposed_padded(x, p.nt);
    execute(operands(op, c, xt, out), p, xt);
  } else {
    execute(a, p, xv);
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CUDA, m) { m.impl("csr_mm", &csr_mm_cuda).impl("csr_linear", &csr_linear_cuda); }

}  // namespace sparsekern::cuda::csr_mm
