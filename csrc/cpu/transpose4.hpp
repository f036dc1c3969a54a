// AVX2 moves between four SIMD lanes (one tree node each) and the nodes' contiguous values, for
// the full-level MSP kernel: per-lane vector loads or stores around 4 x 4 transposes instead of
// one insert or extract per element. float <-> double conversions are exact one way and round
// like static_cast the other, so the values are the scalar path's, bit for bit.
#pragma once
#if defined(__AVX2__)
#include <immintrin.h>

#include "simd.hpp"

namespace compmech {
namespace transpose4 {

// transpose4x4 (simd.hpp) within each 128-bit half of four float vectors (two 4 x 4 transposes
// at once).
inline void transpose_halves(__m256* v) {
  const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
  const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
  v[0] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  v[1] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  v[2] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  v[3] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
}

// ---- loads: 4 nodes x SC values -> SC vectors ------------------------------------------------

// The first K <= 4 values at src (masked: nothing past src + K is read).
template <int K>
inline __m128i first32() { return _mm_setr_epi32(-1, K > 1 ? -1 : 0, K > 2 ? -1 : 0, K > 3 ? -1 : 0); }
template <int K>
inline __m256i first64() { return _mm256_setr_epi64x(-1, K > 1 ? -1 : 0, K > 2 ? -1 : 0, K > 3 ? -1 : 0); }
template <int K>
inline __m256d load_first(const double* src) {
  if constexpr (K == 4) return _mm256_loadu_pd(src);
  else return _mm256_maskload_pd(src, first64<K>());
}

// eta[j][l] = src[l * SC + j] for 2 <= SC <= 4: the 4 nodes' SC values (one contiguous block),
// one vector per value. Lanes 0-2 load 4 values each, which stays inside the block (SC >= 2);
// lane 3 loads its SC (masked). float32 is transposed before the conversion (in-lane shuffles).
template <int SC, typename Out>
inline void load_lanes(const Out* src, vd4* eta) {
  static_assert(SC >= 2 && SC <= 4, "4 x 4 transpose");
  if constexpr (std::is_same<Out, float>::value) {
    __m128 f[4] = {_mm_loadu_ps(src), _mm_loadu_ps(src + SC), _mm_loadu_ps(src + 2 * SC),
                   _mm_maskload_ps(src + 3 * SC, first32<SC>())};
    _MM_TRANSPOSE4_PS(f[0], f[1], f[2], f[3]);
    for (int j = 0; j < SC; ++j) eta[j] = reinterpret_cast<vd4>(_mm256_cvtps_pd(f[j]));
  } else {
    __m256d v[4] = {load_first<4>(src), load_first<4>(src + SC), load_first<4>(src + 2 * SC),
                    load_first<SC>(src + 3 * SC)};
    transpose4x4(v);
    for (int j = 0; j < SC; ++j) eta[j] = reinterpret_cast<vd4>(v[j]);
  }
}

// ---- stores: R vectors -> 4 nodes x R values -------------------------------------------------

// The first K <= 4 values of v at dst (nothing past dst + K is written).
template <int K>
inline void store_first(double* dst, __m256d v) {
  if constexpr (K == 4) return _mm256_storeu_pd(dst, v);
  const __m128d lo = _mm256_castpd256_pd128(v);
  if constexpr (K == 1) _mm_store_sd(dst, lo);
  else _mm_storeu_pd(dst, lo);
  if constexpr (K == 3) _mm_store_sd(dst + 2, _mm256_extractf128_pd(v, 1));
}
template <int K>
inline void store_first(float* dst, __m128 v) {
  if constexpr (K == 4) return _mm_storeu_ps(dst, v);
  if constexpr (K == 1) _mm_store_ss(dst, v);
  else _mm_storel_pi(reinterpret_cast<__m64*>(dst), v);
  if constexpr (K == 3) _mm_store_ss(dst + 2, _mm_movehl_ps(v, v));
}

// Values c0 .. c0 + K - 1 (K <= 4) of the 4 lanes, R apart, from rows[c0 ..] (4 x 4 transpose;
// the rows past K are zeros).
template <int R, int K>
inline void store_block4(const vd4* rows, double* dst) {
  __m256d t[4];
  for (int j = 0; j < 4; ++j) t[j] = j < K ? reinterpret_cast<__m256d>(rows[j]) : _mm256_setzero_pd();
  transpose4x4(t);
  // a lane's only block (R < 4) is stored whole but by lane 3: the values past K land on the
  // next lane's first ones, which its own store then rewrites
  constexpr int KS = R == K && R >= 2 ? 4 : K;
  for (int l = 0; l < 3; ++l) store_first<KS>(dst + l * R, t[l]);
  store_first<K>(dst + 3 * R, t[3]);
}
template <int R, int K>
inline void store_block4(const __m128* f, float* dst) {
  __m128 t[4];
  for (int j = 0; j < 4; ++j) t[j] = j < K ? f[j] : _mm_setzero_ps();
  _MM_TRANSPOSE4_PS(t[0], t[1], t[2], t[3]);
  for (int l = 0; l < 4; ++l) store_first<K>(dst + l * R, t[l]);
}

// dst[l * R + c] = rows[c][l] for c < R, l < 4: the lanes' R values each, one after the other
// (one contiguous block). float32 output converts first and then moves 8 values per lane at a
// time (two 4 x 4 transposes in one 256-bit register).
template <int R, typename Out>
inline void store_lanes(const vd4* rows, Out* dst) {
  constexpr int C4 = R / 4 * 4, K = R - C4;  // whole blocks of 4 values, then K < 4 more
  if constexpr (std::is_same<Out, double>::value) {
    for (int c = 0; c < C4; c += 4) store_block4<R, 4>(rows + c, dst + c);
    if constexpr (K > 0) store_block4<R, K>(rows + C4, dst + C4);
  } else {
    constexpr int C8 = R / 8 * 8;
    __m128 f[R];
    for (int c = 0; c < R; ++c) f[c] = _mm256_cvtpd_ps(reinterpret_cast<__m256d>(rows[c]));
    for (int c = 0; c < C8; c += 8) {
      __m256 t[4];
      for (int j = 0; j < 4; ++j) t[j] = _mm256_insertf128_ps(_mm256_castps128_ps256(f[c + j]), f[c + 4 + j], 1);
      transpose_halves(t);
      for (int l = 0; l < 4; ++l) _mm256_storeu_ps(dst + l * R + c, t[l]);
    }
    if constexpr (C4 > C8) store_block4<R, 4>(f + C8, dst + C8);
    if constexpr (K > 0) store_block4<R, K>(f + C4, dst + C4);
  }
}

}  // namespace transpose4
}  // namespace compmech
#endif
