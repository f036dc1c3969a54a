// Small SIMD helpers for the CPU launchers, written with GCC/Clang vector extensions (which
// lower to SSE2 pairs on a portable build) plus AVX2 intrinsics where they pay off.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "compmech/common.hpp"
#include "compmech/kernels.hpp"

namespace compmech {

// Four lanes of doubles / 64-bit masks: one lane per independent sequence or tree node.
typedef double vd4 __attribute__((vector_size(32)));
typedef int64_t vl4 __attribute__((vector_size(32)));
CM_HD bool all_lanes(vl4 m) {
#if defined(__AVX2__)
  return _mm256_movemask_pd(reinterpret_cast<__m256d>(m)) == 0xF;
#else
  return m[0] && m[1] && m[2] && m[3];
#endif
}
CM_HD bool any_lane(vl4 m) {
#if defined(__AVX2__)
  return _mm256_movemask_pd(reinterpret_cast<__m256d>(m)) != 0;
#else
  return m[0] || m[1] || m[2] || m[3];
#endif
}

// Eight lanes (AVX-512 where present; GCC splits them into narrower vectors elsewhere).
typedef double vd8 __attribute__((vector_size(64)));
typedef int64_t vl8 __attribute__((vector_size(64)));

template <typename VL>
inline bool any_lane_of(VL m) {
  bool any = false;
  for (int l = 0; l < static_cast<int>(sizeof(VL) / sizeof(int64_t)); ++l) any |= m[l] != 0;
  return any;
}
template <>
inline bool any_lane_of<vl4>(vl4 m) { return any_lane(m); }
#if defined(__AVX512F__)
template <>
inline bool any_lane_of<vl8>(vl8 m) {
  const __m512i v = reinterpret_cast<__m512i>(m);
  return _mm512_test_epi64_mask(v, v) != 0;
}
#endif
// Whether every lane of a comparison's mask is set.
template <typename VL>
inline bool all_of_lanes(VL m) {
  if constexpr (std::is_same<VL, vl4>::value) return all_lanes(m);
  else return !any_lane_of(~m);
}

// LogProbAcc (kernels.hpp) for W lanes at once: the same formula lane by lane, so a row's
// log-probability has the same bits whichever path carried it.
template <typename VD, typename VL>
struct LogProbLanesT {
  static constexpr int W = sizeof(VD) / sizeof(double);
  VD mant = VD{} + 1.0;
  VL expo = VL{};
  double extra[W] = {};

  void add(VD norm) {
    const VL tiny = norm < kTinyNorm;
    if (any_lane_of(tiny))
      for (int l = 0; l < W; ++l)
        if (tiny[l]) extra[l] += std::log(norm[l]);
    VL bits = reinterpret_cast<VL>(mant * (tiny ? VD{} + 1.0 : norm));
    expo += ((bits >> 52) & 0x7FF) - 1023;
    bits = (bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL;
    mant = reinterpret_cast<VD>(bits);
  }
  LogProbAcc lane(int l) const { return LogProbAcc{mant[l], expo[l], extra[l]}; }
};
using LogProbLanes = LogProbLanesT<vd4, vl4>;

// ScaledLogProb (kernels.hpp) for W lanes. The caller computes each step's norm and flags the
// lanes that need a look (norm below kRescaleBelow, or the token possibly impossible): fix()
// settles those lane by lane; rescale() is the periodic rescaling of every lane, done with bit
// operations (every live lane's norm is then normal: >= kRescaleBelow), which give exactly
// exponent_of and times_pow2's values. Lanes that met an impossible token leave `live` (their
// result is -inf whatever they compute next).
template <typename VD, typename VL>
struct ScaledLanesT {
  static constexpr int W = sizeof(VD) / sizeof(double);
  VD last = VD{} + 1.0;
  VL expo = VL{};
  VL live = VL{} - 1;

  // Lanes of `bad` after a step at t whose v (n vectors) already holds v T[x] and whose `last`
  // already holds the new norm; prev = the norms before the step (v . w).
  __attribute__((noinline, cold)) void fix(VL bad, int64_t t, VD prev, VD* v, int n, double zero_tol,
                                           int64_t* fail) {
    for (int l = 0; l < W; ++l) {
      if (!bad[l]) continue;
      ScaledLogProb s{prev[l], expo[l]};
      if (!s.possible(last[l], zero_tol)) {
        if (fail[l] < 0) fail[l] = t;
        live[l] = 0;
        continue;
      }
      double x[8];
      for (int j = 0; j < n; ++j) x[j] = v[j][l];
      s.settle(t, last[l], x, n);
      for (int j = 0; j < n; ++j) v[j][l] = x[j];
      last[l] = s.last;
      expo[l] = s.expo;
    }
  }
  // The rescaling due after position t when (t + 1) % kRescaleEvery == 0.
  inline void rescale(VD* v, int n) {
    const VL biased = (reinterpret_cast<VL>(last) >> 52) & 0x7FF;
    expo += biased - 1023;
    const VD scale = reinterpret_cast<VD>((2046 - biased) << 52);
    for (int j = 0; j < n; ++j) v[j] *= scale;
    last *= scale;
  }
  ScaledLogProb lane(int l) const { return ScaledLogProb{last[l], expo[l]}; }
};
using ScaledLanes = ScaledLanesT<vd4, vl4>;

// Lane-wise safe_inverse (see kernels.hpp) for vd4 or vd8: rescales only the lanes whose norm
// is tiny.
template <typename VD>
inline VD safe_inverse_lanes(VD norm, VD* out, int n) {
  const auto tiny = norm < kTinyNorm;
  if (any_lane_of(tiny)) {
    const VD s = tiny ? VD{} + kTinyScale : VD{} + 1.0;
    for (int j = 0; j < n; ++j) out[j] *= s;
    norm *= s;
  }
  return 1.0 / norm;
}

#if defined(__AVX2__)
// v[l][j] -> v[j][l] for l, j < 4 (four lanes of four doubles).
inline void transpose4x4(__m256d* v) {
  const __m256d t0 = _mm256_unpacklo_pd(v[0], v[1]), t1 = _mm256_unpackhi_pd(v[0], v[1]);
  const __m256d t2 = _mm256_unpacklo_pd(v[2], v[3]), t3 = _mm256_unpackhi_pd(v[2], v[3]);
  v[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
  v[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
  v[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
  v[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}
#endif

// Writes lane l's belief (S values, one per vector in e) to dst + l * stride: with AVX2, 4 x 4
// transposes of (value, lane), four values per lane at a time, the last group's masked.
template <int SC, typename Out>
inline void store_lanes(const vd4* e, Out* dst, int64_t stride) {
#if defined(__AVX2__)
  if constexpr (SC >= 2 && (std::is_same<Out, float>::value || std::is_same<Out, double>::value)) {
    for (int c = 0; c < SC; c += 4) {
      const int n = SC - c < 4 ? SC - c : 4;  // values in this group
      if constexpr (std::is_same<Out, float>::value) {
        __m128 r[4];
        for (int k = 0; k < 4; ++k)
          r[k] = k < n ? _mm256_cvtpd_ps(reinterpret_cast<__m256d>(e[c + (k < n ? k : 0)])) : _mm_setzero_ps();
        _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]);
        const __m128i mask = _mm_setr_epi32(-1, n > 1 ? -1 : 0, n > 2 ? -1 : 0, n > 3 ? -1 : 0);
        for (int l = 0; l < 4; ++l) _mm_maskstore_ps(dst + l * stride + c, mask, r[l]);
      } else {
        __m256d r[4];
        for (int k = 0; k < 4; ++k)
          r[k] = k < n ? reinterpret_cast<__m256d>(e[c + (k < n ? k : 0)]) : _mm256_setzero_pd();
        transpose4x4(r);
        const __m256i mask = _mm256_setr_epi64x(-1, n > 1 ? -1 : 0, n > 2 ? -1 : 0, n > 3 ? -1 : 0);
        for (int l = 0; l < 4; ++l) _mm256_maskstore_pd(dst + l * stride + c, mask, r[l]);
      }
    }
    return;
  }
#endif
  for (int l = 0; l < 4; ++l)
    for (int j = 0; j < SC; ++j) dst[l * stride + j] = static_cast<Out>(e[j][l]);
}

}  // namespace compmech
