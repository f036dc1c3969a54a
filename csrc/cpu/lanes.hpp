// The vector unit of the tiled belief paths (S <= 4, small V; beliefs.cpp, row_stage.hpp): one
// vector of W doubles holds W rows, and T[x, i, j] is looked up in a register indexed by each
// lane's token. AVX-512 builds use W = 8 (V <= 8 fills a 512-bit register); AVX2 builds W = 4
// (V <= 4). The kernels are written once against `Lanes`; only these few operations differ.
#pragma once
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__AVX512VBMI__)
#define CM_TILED_LANES 8
#elif defined(__AVX2__)
#define CM_TILED_LANES 4
#endif

#if defined(CM_TILED_LANES)
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "simd.hpp"

namespace compmech {

#if CM_TILED_LANES == 8
struct Lanes {
  static constexpr int W = 8, kMaxV = 8;
  using VD = vd8;
  using VL = vl8;
  using Idx = __m512i;  // a step's tokens as lookup indices (int64 lanes)
  using Tab = __m512d;  // T[x, i, j] in lane x, zero past V
  using Mask = __mmask8;
  static constexpr unsigned kAll = 0xFF;

  static Tab table(const double* v) { return _mm512_loadu_pd(v); }
  static VD lookup(Tab t, Idx x) { return reinterpret_cast<VD>(_mm512_permutexvar_pd(x, t)); }
  static Idx index(const int64_t* x) { return _mm512_load_si512(x); }  // x: W tokens, 64-byte aligned
  template <int P>
  static Mask cmp(VD a, VD b) {
    return _mm512_cmp_pd_mask(reinterpret_cast<__m512d>(a), reinterpret_cast<__m512d>(b), P);
  }
  template <int P>
  static Mask cmp(Mask k, VD a, VD b) {  // lanes of k only
    return _mm512_mask_cmp_pd_mask(k, reinterpret_cast<__m512d>(a), reinterpret_cast<__m512d>(b), P);
  }
  static Mask nonzero(VL m) {
    const __m512i v = reinterpret_cast<__m512i>(m);
    return _mm512_test_epi64_mask(v, v);
  }
  static VL lanes(Mask m) { return reinterpret_cast<VL>(_mm512_movm_epi64(m)); }
  static VL shift52(VL v) { return reinterpret_cast<VL>(_mm512_srli_epi64(reinterpret_cast<__m512i>(v), 52)); }
  static int64_t token(Idx x, int l) {  // lane l's token (slow paths)
    alignas(64) int64_t v[8];
    _mm512_store_si512(v, x);
    return v[l];
  }

  // A tile of 8 positions of 8 byte-token rows (row stride L), transposed with one byte permute.
  // The 8 rows' bytes are assembled in registers: through memory, the 64-byte load would wait
  // for the 8-byte stores to commit (no store forwarding across several stores).
  // Each row's next line is prefetched (the rows are read 8 bytes at a time, L bytes apart,
  // which the hardware prefetchers do not follow well); prefetches never fault.
  static void stage_bytes(const uint8_t* rows, int64_t L, Idx* xs) {
    __m128i q[4];
    for (int k = 0; k < 4; ++k) {
      int64_t lo, hi;
      std::memcpy(&lo, rows + 2 * k * L, 8);
      std::memcpy(&hi, rows + (2 * k + 1) * L, 8);
      q[k] = _mm_insert_epi64(_mm_cvtsi64_si128(lo), hi, 1);
      _mm_prefetch(reinterpret_cast<const char*>(rows + 2 * k * L + 64), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(rows + (2 * k + 1) * L + 64), _MM_HINT_T0);
    }
    const __m512i m = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(q[0]), q[1], 1)),
                                         _mm256_inserti128_si256(_mm256_castsi128_si256(q[2]), q[3], 1), 1);
    alignas(64) static const uint8_t kIdx[64] = {
        0, 8, 16, 24, 32, 40, 48, 56, 1, 9, 17, 25, 33, 41, 49, 57, 2, 10, 18, 26, 34, 42, 50, 58,
        3, 11, 19, 27, 35, 43, 51, 59, 4, 12, 20, 28, 36, 44, 52, 60, 5, 13, 21, 29, 37, 45, 53, 61,
        6, 14, 22, 30, 38, 46, 54, 62, 7, 15, 23, 31, 39, 47, 55, 63};
    alignas(64) uint8_t tb[64];
    _mm512_store_si512(tb, _mm512_permutexvar_epi8(_mm512_load_si512(kIdx), m));
    for (int tt = 0; tt < 8; ++tt)
      xs[tt] = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(tb + tt * 8)));
  }
};
#else
struct Lanes {
  static constexpr int W = 4, kMaxV = 4;
  using VD = vd4;
  using VL = vl4;
  // A step's tokens as permutevar8x32 indices: lane l (a double, two 32-bit halves) reads
  // halves 2x and 2x + 1 of the table, i.e. its token x's double.
  using Idx = __m256i;
  using Tab = __m256;  // T[x, i, j] in double lane x, zero past V, viewed as 8 floats
  using Mask = unsigned;
  static constexpr unsigned kAll = 0xF;

  static Tab table(const double* v) { return _mm256_castpd_ps(_mm256_loadu_pd(v)); }
  static VD lookup(Tab t, Idx x) { return reinterpret_cast<VD>(_mm256_castps_pd(_mm256_permutevar8x32_ps(t, x))); }
  static Idx index(const int64_t* x) {
    const vl4 x2 = *reinterpret_cast<const vl4*>(x) * 2;
    return reinterpret_cast<__m256i>(x2 | ((x2 + 1) << 32));
  }
  template <int P>
  static Mask cmp(VD a, VD b) {
    return static_cast<Mask>(_mm256_movemask_pd(_mm256_cmp_pd(reinterpret_cast<__m256d>(a), reinterpret_cast<__m256d>(b), P)));
  }
  template <int P>
  static Mask cmp(Mask k, VD a, VD b) {
    return k & cmp<P>(a, b);
  }
  static Mask nonzero(VL m) { return static_cast<Mask>(_mm256_movemask_pd(reinterpret_cast<__m256d>(m != 0))); }
  static VL lanes(Mask m) { return (VL{1, 2, 4, 8} & static_cast<int64_t>(m)) != 0; }
  static VL shift52(VL v) { return reinterpret_cast<VL>(_mm256_srli_epi64(reinterpret_cast<__m256i>(v), 52)); }
  static int64_t token(Idx x, int l) {  // lane l's token (slow paths)
    alignas(32) int32_t v[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(v), x);
    return v[2 * l] >> 1;
  }

  // A tile of 8 positions of 4 byte-token rows (row stride L): byte tt of each row's 8 becomes
  // that lane's two index halves 2x, 2x + 1 (x < V <= 4), one in-lane byte shuffle per position.
  static void stage_bytes(const uint8_t* rows, int64_t L, Idx* xs) {
    int64_t q[4];
    for (int l = 0; l < 4; ++l) std::memcpy(&q[l], rows + l * L, 8);
    __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
    m = _mm256_add_epi8(m, m);
    // in each 128-bit half: 32-bit elements 0, 1 from byte tt, elements 2, 3 from byte 8 + tt
    const __m256i sel = _mm256_setr_epi8(0, -128, -128, -128, 0, -128, -128, -128, 8, -128, -128, -128, 8, -128,
                                         -128, -128, 0, -128, -128, -128, 0, -128, -128, -128, 8, -128, -128, -128,
                                         8, -128, -128, -128);
    const __m256i odd = _mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1);
    for (int tt = 0; tt < 8; ++tt)  // -128 + tt keeps the high bit: those bytes stay zero
      xs[tt] = _mm256_or_si256(_mm256_shuffle_epi8(m, _mm256_add_epi8(sel, _mm256_set1_epi8(static_cast<char>(tt)))), odd);
  }
};
#endif

}  // namespace compmech
#endif
