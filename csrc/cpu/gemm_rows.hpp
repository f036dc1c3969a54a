// The dense product behind the many-state belief path (rows grouped by token): C[r, :] =
// A[r, :] @ Tx for a group of rows given by pointers, register-blocked as kGemmMr rows x two
// vectors of columns. The block is sized to the register file: 8 x 2 zmm of 32 with AVX-512,
// 6 x 2 ymm of 16 with AVX2 (8 x 2 ymm would be 32 accumulators: they spill, and the product
// runs at a few per cent of the machine). Every output element is sum_i A[r, i] * Tx[i, j] in
// ascending i, one multiply-add per i, as belief_step computes it, so a row's bits depend
// neither on the blocking nor on the instruction set.
#pragma once
#include <cstdint>

#include "compmech/kernels.hpp"

namespace compmech {

#if defined(__AVX512F__)
typedef double gemm_vec __attribute__((vector_size(64), aligned(8)));  // unaligned loads/stores
constexpr int kGemmMr = 8;
#else
typedef double gemm_vec __attribute__((vector_size(32), aligned(8)));
constexpr int kGemmMr = 6;
#endif
constexpr int kGemmW = sizeof(gemm_vec) / sizeof(double);

// Columns [j, j + NV * kGemmW) of the NR rows.
template <int NR, int NV>
inline void gemm_block(const double* const* a, double* const* c, const double* Tx, int S, int j) {
  gemm_vec acc[NR][NV];
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = gemm_vec{};
  for (int i = 0; i < S; ++i) {
    const double* row = Tx + static_cast<int64_t>(i) * S + j;
    gemm_vec b[NV];
    for (int v = 0; v < NV; ++v) b[v] = *reinterpret_cast<const gemm_vec*>(row + v * kGemmW);
    for (int r = 0; r < NR; ++r) {
      const double e = a[r][i];
      for (int v = 0; v < NV; ++v) acc[r][v] += e * b[v];
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < NV; ++v) *reinterpret_cast<gemm_vec*>(c[r] + j + v * kGemmW) = acc[r][v];
}

// Columns [j, j + NV * kGemmW) of the n rows: blocks of kGemmMr rows, then the n % kGemmMr left.
template <int NV, int NR = kGemmMr>
inline void gemm_panel(const double* const* a, double* const* c, int n, const double* Tx, int S, int j) {
  if constexpr (NR == kGemmMr)
    for (; n >= NR; n -= NR, a += NR, c += NR) gemm_block<NR, NV>(a, c, Tx, S, j);
  if constexpr (NR > 1) {
    if (n == NR - 1) return gemm_block<NR - 1, NV>(a, c, Tx, S, j);
    gemm_panel<NV, NR - 1>(a, c, n, Tx, S, j);
  }
}

// C = A @ Tx for the n rows a[0..n), c[0..n): panels of two vectors of columns, one panel of
// one vector, then single columns. The panel loop is outside the row loop so that a panel of Tx
// (S x 2 vectors: 8 KB at S = 128 with AVX2) is read from L1 by every block of rows, instead
// of the whole of Tx (128 KB) streaming through once per block.
inline void gemm_group(const double* const* a, double* const* c, int n, const double* Tx, int S) {
  int j = 0;
  for (; j + 2 * kGemmW <= S; j += 2 * kGemmW) gemm_panel<2>(a, c, n, Tx, S, j);
  if (j + kGemmW <= S) {
    gemm_panel<1>(a, c, n, Tx, S, j);
    j += kGemmW;
  }
  for (; j < S; ++j)
    for (int r = 0; r < n; ++r) {
      double o = 0.0;
      for (int i = 0; i < S; ++i) o = fused_madd(a[r][i], Tx[static_cast<int64_t>(i) * S + j], o);  // (kernels.hpp)
      c[r][j] = o;
    }
}

}  // namespace compmech
