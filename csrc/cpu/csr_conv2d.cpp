// CPU kernel of csr_conv2d: a convolution whose (out_channels, in_channels/groups * kh * kw) weight is CSR,
// computed as an implicit GEMM (csr_conv2d_kernel.h) over a phase-plane copy of the input instead of an unfold.
//
// Staging: x (N, C, H, W) is zero-padded and split by the stride into sh * sw phase planes per channel,
// buf[n, c, p, q, a, b] = xpad[n, c, a * sh + p, b * sw + q], each plane (Hq, Wq) = (ceil(Hp / sh), ceil(Wp / sw)).
// The copy is C * Hp * Wp elements (one pass over the input, in fp32 whatever x's dtype), against C * kh * kw *
// Ho * Wo for an unfold. A 1x1 convolution without padding is first sliced to its strided grid, so it stages only
// the pixels it reads and runs as a plain GEMM over the input's rows.
//
// A 1x1 convolution (after that slicing) whose input cannot be read in place (a grid that is not a multiple of 8
// columns, as at 14x14 and 7x7, or a strided, channels_last or half input) runs as csr_mm on the (C, H * W)
// image instead: its K-blocked panels keep the gathered rows in L2, where the staged planes of 1024 or 2048
// channels did not (csr_mm measured 14-20% faster on ResNet-50's 14x14 and 7x7 1x1 layers on a Zen 3 EPYC,
// 11-81% slower at 28x28 and 56x56, which read in place).
//
// Groups need no slicing: a stored weight's offset adds its group's first channel (row m is in group m / (M / g)).
// Work is split over (image, grid-column block, row chunk): a column block's input window (C planes x a few rows)
// stays in L2 while a chunk of rows sweeps it.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "cpu/csr_common.h"
#include "cpu/csr_mm.h"
#include "cpu/isa.h"

#define SK_KERNEL_HEADER "cpu/csr_conv2d_kernel.h"
#include "cpu/isa_variants.h"

namespace sparsekern::cpu {
namespace {

// Grid columns per work item: one 64-wide tile. Every row of the chunk then sweeps the same input window (C
// channels x 64 columns, plus (kh - 1) grid rows for a k x k kernel), which stays in L1/L2 while the rows reuse it;
// with 256-column items the window (256 KiB at C = 256) fell out of L2 between rows.
constexpr int64_t kColumnBlock = 64;

// buf[n, c, p, q, a, b] = x[n, c, a * sh + p - pt, b * sw + q - pl], zero outside x, in fp32: one pass over the
// planes, any input strides and dtype. At stride 2 the ATen route (constant_pad_nd, then a permuted copy) took a
// fifth of a ResNet-50 strided 3x3 layer's time.
template <typename scalar_t>
void stage_planes(const at::Tensor& x, float* buf, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t Hq,
                  int64_t Wq) {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t sN = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  at::parallel_for(0, x.size(0) * C, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const scalar_t* xc = xp + (i / C) * sN + (i % C) * sC;
      float* dst = buf + i * sh * sw * Hq * Wq;
      for (int64_t p = 0; p < sh; ++p) {
        for (int64_t q = 0; q < sw; ++q) {
          // Plane columns b whose input column b * sw + q - pl lies in [0, W).
          const int64_t b0 = std::clamp<int64_t>((pl - q + sw - 1) / sw, 0, Wq);
          const int64_t b1 = std::clamp<int64_t>((W + pl - q + sw - 1) / sw, b0, Wq);
          for (int64_t a = 0; a < Hq; ++a, dst += Wq) {
            const int64_t h = a * sh + p - pt;
            if (h < 0 || h >= H || b0 == b1) {
              std::fill(dst, dst + Wq, 0.f);
              continue;
            }
            std::fill(dst, dst + b0, 0.f);
            const scalar_t* src = xc + h * sH + (b0 * sw + q - pl) * sW;
            const int64_t step = sw * sW;
            for (int64_t b = b0; b < b1; ++b) dst[b] = static_cast<float>(src[(b - b0) * step]);
            std::fill(dst + b1, dst + Wq, 0.f);
          }
        }
      }
    }
  });
}

at::Tensor csr_conv2d_cpu(const at::Tensor& x_in, const at::Tensor& crow, const at::Tensor& col,
                          const at::Tensor& val, const std::optional<at::Tensor>& bias, at::IntArrayRef kernel_size,
                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                          bool channels_last) {
  const char* op = "csr_conv2d";
  check_csr_components(op, crow, col, val);
  check_dim(op, x_in, "x", 4);
  check_float(op, x_in, "x");
  check_same_dtype(op, val, "values", x_in, "x");
  check_same_device(op, val, "values", x_in, "x");
  SK_CHECK_VALUE(kernel_size.size() == 2 && stride.size() == 2 && dilation.size() == 2 && padding.size() == 4, op,
                 "kernel_size, stride and dilation take 2 ints, padding 4 (top, bottom, left, right)");
  int64_t kh = kernel_size[0], kw = kernel_size[1], sh = stride[0], sw = stride[1];
  const int64_t dh = dilation[0], dw = dilation[1];
  int64_t pt = padding[0], pb = padding[1], pl = padding[2], pr = padding[3];
  SK_CHECK_VALUE(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1, op,
                 "kernel_size, stride and dilation must be >= 1, got ", kernel_size, ", ", stride, ", ", dilation);
  SK_CHECK_VALUE(pt >= 0 && pb >= 0 && pl >= 0 && pr >= 0, op, "padding must be >= 0, got ", padding);
  const int64_t M = crow.numel() - 1, N = x_in.size(0), C = x_in.size(1);
  SK_CHECK_VALUE(groups >= 1 && C % groups == 0 && M % groups == 0, op, "groups = ", groups,
                 " must divide the input channels (", C, ") and the output channels (", M, ")");
  const int64_t cig = C / groups, cog = M / groups, taps = kh * kw, K = cig * taps;
  const int64_t Hp = x_in.size(2) + pt + pb, Wp = x_in.size(3) + pl + pr;
  SK_CHECK_VALUE(Hp >= dh * (kh - 1) + 1 && Wp >= dw * (kw - 1) + 1, op, "the padded input (", Hp, ", ", Wp,
                 ") is smaller than the dilated kernel (", dh * (kh - 1) + 1, ", ", dw * (kw - 1) + 1, ")");
  const int64_t Ho = (Hp - dh * (kh - 1) - 1) / sh + 1, Wo = (Wp - dw * (kw - 1) - 1) / sw + 1;
  if (bias.has_value()) check_linear_bias(op, bias, val, M);

  at::Tensor out = at::empty({N, M, Ho, Wo}, x_in.options().memory_format(
                                                channels_last ? at::MemoryFormat::ChannelsLast
                                                              : at::MemoryFormat::Contiguous));
  const at::Tensor crow_c = crow.contiguous(), col_c = col.contiguous();
  const int64_t nnz = col_c.numel();

  // A 1x1 kernel without padding reads only the strided grid: slice it out and run at stride 1.
  at::Tensor x = x_in;
  if (taps == 1 && pt == 0 && pb == 0 && pl == 0 && pr == 0 && (sh > 1 || sw > 1)) {
    x = x.slice(2, 0, (Ho - 1) * sh + 1, sh).slice(3, 0, (Wo - 1) * sw + 1, sw);
    sh = sw = 1;
  }
  const int64_t H = x.size(2), W = x.size(3);
  const int64_t Hq = (H + pt + pb + sh - 1) / sh, Wq = (W + pl + pr + sw - 1) / sw;
  const int64_t plane = Hq * Wq, chan = sh * sw * plane, image = C * chan;
  const int64_t T = Ho * Wq, T8 = (T + 7) / 8 * 8;
  SK_CHECK_VALUE(image + Wq < (int64_t{1} << 31), op, "one image's staged input (", image,
                 " elements) exceeds the int32 offsets");

  // Stage the phase planes (stage_planes). A contiguous fp32 input that needs no staging (a 1x1 convolution at
  // stride 1, H * W a multiple of 8 so that no tile reads past its end) is read in place: staging it measured a
  // third of the kernel's time at 256 channels, 56x56. The csr_mm route reads x itself.
  at::Tensor buf;
  const bool gemm = taps == 1 && sh == 1 && sw == 1 && pt + pb + pl + pr == 0;
  const bool in_place = gemm && x.scalar_type() == at::kFloat && x.is_contiguous() && T % 8 == 0;
  const bool as_csr_mm = gemm && !in_place && groups == 1;
  if (in_place) {
    buf = x;
  } else if (!as_csr_mm) {
    // Slack for grid columns that are computed and dropped: a tap's window runs up to b < Wq past its plane,
    // and the last tile is rounded up to 8 columns.
    buf = at::empty({N * image + Wq + 8}, x.options().dtype(at::kFloat));
    buf.narrow(0, N * image, Wq + 8).zero_();
    float* buf_p = buf.data_ptr<float>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sparsekern_csr_conv2d_stage", [&] {
      stage_planes<scalar_t>(x, buf_p, sh, sw, pt, pl, Hq, Wq);
    });
  }

  // Each weight column's (channel, tap) window offset into a group's channels. The kernel looks it up per stored
  // weight (the table stays in L1): a per-call pass writing every stored weight's offset, with a division and a
  // modulo each, took as long as the convolution itself at 2048 channels, 7x7.
  std::vector<int32_t> col_off(static_cast<size_t>(K));
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j) {
      const int64_t r = i * dh, c = j * dw;
      const int64_t tap = ((r % sh) * sw + (c % sw)) * plane + (r / sh) * Wq + (c / sw);
      for (int64_t ch = 0; ch < cig; ++ch) col_off[ch * taps + i * kw + j] = static_cast<int32_t>(ch * chan + tap);
    }
  const at::Tensor val_f = as_float_contiguous(val);
  const at::Tensor bias_f = bias.has_value() ? as_float_contiguous(*bias) : at::Tensor();
  AT_DISPATCH_INDEX_TYPES(crow_c.scalar_type(), "sparsekern_csr_conv2d", [&] {
    const index_t* crow_p = crow_c.data_ptr<index_t>();
    check_crow(op, crow_p, M, nnz);
    with_col_ptr<index_t>(col_c, [&](const auto* col_p) {
      // The kernel reads the table unchecked: one pass for the largest column, as unsigned (a negative int32
      // index is then huge) in the columns' own width so that it vectorises.
      using ucol_t = std::make_unsigned_t<std::remove_cv_t<std::remove_pointer_t<decltype(col_p)>>>;
      ucol_t hi = 0;
      for (int64_t e = 0; e < nnz; ++e) hi = std::max(hi, static_cast<ucol_t>(col_p[e]));
      if (nnz > 0 && static_cast<uint64_t>(hi) >= static_cast<uint64_t>(K)) {
        for (int64_t e = 0; e < nnz; ++e) {
          const int64_t c = static_cast<int64_t>(col_p[e]);
          SK_CHECK_INDEX(c >= 0 && c < K, op, "col_indices[", e, "] = ", c, " is out of range for K = ", K,
                         " (in_channels / groups * kh * kw)");
        }
      }
      if (N == 0 || M == 0 || Ho == 0 || Wo == 0) return;
      if (as_csr_mm) {
        for (int64_t n = 0; n < N; ++n) {
          at::Tensor out_n = out[n].view({M, Ho * Wo});
          csr_mm_into(op, crow_c, col_c, val, x[n].reshape({C, H * W}), bias, out_n);
        }
        return;
      }
      // Equal blocks rather than 64s and a remainder: 200 columns (14x14) as 4 x 56, not 3 x 64 + 8, whose last
      // 8-column tile costs a 64-column tile's time per entry.
      const int64_t col_blocks = (T8 + kColumnBlock - 1) / kColumnBlock;
      const int64_t block_cols = (T8 / 8 + col_blocks - 1) / col_blocks * 8;
      // Row chunks: enough work items for every thread even where one image is one column block (7x7 planes).
      const int64_t want = static_cast<int64_t>(at::get_num_threads()) * 8;
      const int64_t chunks = std::clamp<int64_t>((want + N * col_blocks - 1) / (N * col_blocks), 1, M);
      const auto splits = balanced_row_splits(crow_p, M, chunks);
      const int64_t row_parts = static_cast<int64_t>(splits.size()) - 1;
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "sparsekern_csr_conv2d", [&] {
        const float* val_p = val_f.data_ptr<float>();
        const float* bias_p = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
        const float* buf_p = buf.data_ptr<float>();
        scalar_t* out_p = out.data_ptr<scalar_t>();
        const int64_t osn = out.stride(0), osc = out.stride(1), osh = out.stride(2), osw = out.stride(3);
        const bool direct = std::is_same_v<scalar_t, float> && Wq == Wo && osw == 1 && osh == Wo && T == T8;
        at::parallel_for(0, N * col_blocks * row_parts, 1, [&](int64_t i0, int64_t i1) {
          for (int64_t item = i0; item < i1; ++item) {
            const int64_t rp = item % row_parts, cb = (item / row_parts) % col_blocks;
            const int64_t n = item / (row_parts * col_blocks);
            const int64_t t0 = cb * block_cols, t1 = std::min(T8, t0 + block_cols);
            SK_ISA_DISPATCH(conv_rows, crow_p, col_p, col_off.data(), cog, cig * chan, val_p, buf_p + n * image,
                            bias_p, splits[rp], splits[rp + 1], t0, t1, Wq, Ho, Wo, out_p + n * osn, osc, osh, osw,
                            direct);
          }
        });
      });
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekern, CPU, m) { m.impl("csr_conv2d", &csr_conv2d_cpu); }

}  // namespace sparsekern::cpu
