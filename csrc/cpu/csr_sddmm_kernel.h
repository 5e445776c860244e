// SDDMM inner loops (gradient of CSR values), compiled once per instruction set by isa_variants.h.
//
// out[j] = dot(G[m, :], B[col[j], :]) for each entry j of row m. The dot product keeps 16 partial sums so the
// compiler can vectorise it without reassociating a single float sum (which it may not do without
// -ffast-math).

namespace sparsekern::cpu::SK_ISA_NS {

template <typename index_t, typename col_t, typename out_t>
bool csr_sddmm_rows(const index_t* __restrict crow, const col_t* __restrict col, const float* __restrict G,
                    const float* __restrict B, int64_t K, int64_t N, out_t* __restrict out, int64_t r0,
                    int64_t r1) {
  constexpr int L = 16;
  for (int64_t m = r0; m < r1; ++m) {
    const float* __restrict g = G + m * N;
    for (int64_t j = crow[m]; j < crow[m + 1]; ++j) {
      const int64_t c = col[j];
      if (static_cast<uint64_t>(c) >= static_cast<uint64_t>(K)) return false;
      const float* __restrict b = B + c * N;
      float part[L] = {};
      int64_t n = 0;
      for (; n + L <= N; n += L)
        for (int l = 0; l < L; ++l) part[l] += g[n + l] * b[n + l];
      for (int l = 0; n + l < N; ++l) part[l] += g[n + l] * b[n + l];
      float s = 0.f;
      for (int l = 0; l < L; ++l) s += part[l];
      out[j] = static_cast<out_t>(s);
    }
  }
  return true;
}

}  // namespace sparsekern::cpu::SK_ISA_NS
