// Kernel bodies: one small inline function per operation, shared by the CPU launchers
// (csrc/cpu) and, later, the CUDA launchers, so CPU tests exercise the GPU's arithmetic.
//
// Conventions (see DESIGN.md): T is (V, S, S) row-major, T[x, i, j] = P(x, j | i).
// Beliefs are kept normalised so that eta . w == 1 (w = ones for HMMs); then
// P(x | eta) = eta T[x] w and the next belief is eta T[x] / P(x | eta).
#pragma once
#include "compmech/common.hpp"
#include "compmech/philox.hpp"

namespace compmech {

// out = eta @ T[x] (unnormalised); returns out . w, i.e. P(x | eta) for a normalised eta.
// SC > 0 fixes S at compile time (fully unrolled); SC == 0 uses the runtime S.
// w == nullptr means w = ones (HMM).
// C may also be a SIMD vector of doubles (one lane per sequence): only +, * and
// scalar broadcasts are used.
template <int SC, typename C, typename E>
CM_HD C belief_step(const E* eta, const double* Tx, const double* w, C* out, int S) {
  const int n = SC > 0 ? SC : S;
  for (int j = 0; j < n; ++j) out[j] = C{};
  for (int i = 0; i < n; ++i) {
    const C e = eta[i];
    const double* row = Tx + static_cast<int64_t>(i) * n;
    for (int j = 0; j < n; ++j) out[j] += e * row[j];
  }
  C norm{};
  if (w) {
    for (int j = 0; j < n; ++j) norm += out[j] * w[j];
  } else {
    for (int j = 0; j < n; ++j) norm += out[j];
  }
  return norm;
}

// 1/norm overflows for a subnormal norm (below ~5.6e-309), yet such a token is possible. Every
// path normalises as out * (1 / norm) after scaling out and norm by 2^600 (exact) when norm is
// below kTinyNorm, so tiny probabilities stay finite and all paths stay bit-identical.
constexpr double kTinyNorm = 1e-290;
constexpr double kTinyScale = 0x1p600;

// Returns 1 / norm, first rescaling out[0..n) when norm is tiny.
template <typename C>
CM_HD C safe_inverse(C norm, C* out, int n) {
  if (norm < kTinyNorm) {
    for (int j = 0; j < n; ++j) out[j] *= kTinyScale;
    norm *= kTinyScale;
  }
  return C(1) / norm;
}

// P(x | eta) for every token x, given Tw[x, i] = (T[x] w)_i (precomputed): probs[x] = eta . Tw[x].
template <typename C, typename E>
CM_HD void next_token_probs(const E* eta, const double* Tw, int V, int S, C* probs) {
  for (int x = 0; x < V; ++x) {
    C p = C(0);
    for (int i = 0; i < S; ++i) p += static_cast<C>(eta[i]) * static_cast<C>(Tw[static_cast<int64_t>(x) * S + i]);
    probs[x] = p;
  }
}

// Walker alias draw over K outcomes from one 32-bit word: the high part of r*K picks the
// bucket, the low part is the uniform used against the bucket's threshold (2^-32 resolution).
CM_HD uint32_t alias_draw(uint32_t r, uint32_t K, const uint32_t* thresh, const uint32_t* alias) {
  const uint64_t m = static_cast<uint64_t>(r) * K;
  const uint32_t bucket = static_cast<uint32_t>(m >> 32);
  const uint32_t frac = static_cast<uint32_t>(m);
  return frac < thresh[bucket] ? bucket : alias[bucket];
}

// Inverse-CDF draw from unnormalised weights p[0..V-1] with total `total` (the sum of the
// weights above `tol`); weights <= tol (GHMM round-off, or below its zero tolerance) count as
// zero. Never returns such an index unless all are (the caller checks total > 0).
template <typename C>
CM_HD int categorical_draw(const C* p, int V, C total, double u, C tol) {
  C target = static_cast<C>(u) * total;
  int last = -1;
  for (int x = 0; x < V; ++x) {
    const C px = p[x] > tol ? p[x] : C(0);
    if (px > C(0)) {
      last = x;
      if (target < px) return x;
      target -= px;
    }
  }
  return last;  // round-off pushed target past the end: the last possible token
}

}  // namespace compmech
