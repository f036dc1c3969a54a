// AVX2 hidden-state sampling for small processes (S * V * S <= 32 table entries, e.g. Mess3), for
// machines without AVX-512: the AVX-512 register path's algorithm on 8 lanes. Philox4x32-10 for
// 8 rows at once (each word in two vectors of four 64-bit lanes), the alias table in one, two or
// four registers (vpermd, blended on the index's bits 3 and 4), one row per 32-bit lane. The
// decisions are alias_draw64's (kernels.hpp): the high word decides every draw except the rare
// undecided one, and a 16-position chunk of a row that met one is redone by the scalar code.
// Only AVX2 instructions are used, so the path runs (and is tested) on AVX-512 machines too.
#pragma once
#if defined(__AVX2__)
#define COMPMECH_SAMPLE_AVX2 1
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "compmech/alias.hpp"
#include "compmech/kernels.hpp"
#include "sample_philox.hpp"
#include "sample_reg.hpp"

namespace compmech {
namespace avx2 {

// 256-bit operations for PhiloxRows (sample_philox.hpp): Philox8 computes 8 rows at once.
struct Ops256 {
  using V = __m256i;
  static constexpr int kRows = 4;
  static V set1_64(uint64_t x) { return _mm256_set1_epi64x(static_cast<long long>(x)); }
  static V set1_32(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static V iota64() { return _mm256_setr_epi64x(0, 1, 2, 3); }
  static V add64(V a, V b) { return _mm256_add_epi64(a, b); }
  static V srli64_32(V a) { return _mm256_srli_epi64(a, 32); }
  static V mul32(V a, V b) { return _mm256_mul_epu32(a, b); }
  static V xor2(V a, V b) { return _mm256_xor_si256(a, b); }
  static V xor3(V a, V b, V c) { return _mm256_xor_si256(a, _mm256_xor_si256(b, c)); }
  static void store64(uint64_t* p, V a) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), a); }
};
using Philox8 = PhiloxRows<Ops256>;

// Lane l holds row lane_row(l) of its group of 8 (even lanes rows 0-3, odd lanes rows 4-7: how
// the 64-bit products' halves interleave with one shuffle and one blend).
constexpr int lane_row(int l) { return Philox8::lane_row(l); }

// Table lookup of 8 * NT entries: vpermd reads the index's low 3 bits, bits 3 and 4 pick the register.
template <int NT>
inline __m256i lookup(const __m256i* T, __m256i idx) {
  const auto pick = [](__m256i a, __m256i b, __m256i sign) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), _mm256_castsi256_ps(sign)));
  };
  if constexpr (NT == 1) {
    return _mm256_permutevar8x32_epi32(T[0], idx);
  } else if constexpr (NT == 2) {
    return pick(_mm256_permutevar8x32_epi32(T[0], idx), _mm256_permutevar8x32_epi32(T[1], idx), _mm256_slli_epi32(idx, 28));
  } else {
    const __m256i s3 = _mm256_slli_epi32(idx, 28);
    const __m256i a = pick(_mm256_permutevar8x32_epi32(T[0], idx), _mm256_permutevar8x32_epi32(T[1], idx), s3);
    const __m256i b = pick(_mm256_permutevar8x32_epi32(T[2], idx), _mm256_permutevar8x32_epi32(T[3], idx), s3);
    return pick(a, b, _mm256_slli_epi32(idx, 27));
  }
}

// Unsigned a > b, lane by lane.
inline __m256i cmpgt_epu32(__m256i a, __m256i b) {
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  return _mm256_cmpgt_epi32(_mm256_xor_si256(a, sign), _mm256_xor_si256(b, sign));
}

// G groups of 8 rows, r0 .. r0 + 8G - 1 (row0 + r0 + i in the RNG stream), all L positions, as
// avx512::hmm_rows_reg; `redo(i, state, t0, t1)` recomputes positions [t0, t1) of row r0 + i.
template <int NT, int G, typename Redo>
void hmm_rows_reg8(const RegTables& rt, const AliasTables& init_a, int64_t r0, int64_t L, uint64_t seed,
                   uint64_t row0, uint8_t* tokens, Redo&& redo) {
  const uint32_t K = rt.K;
  Philox8 philox[G];
  alignas(32) uint32_t lane[G][8];
  for (int g = 0; g < G; ++g) {
    philox[g] = Philox8(seed, row0 + r0 + 8 * g);
    philox[g].initial_codes(init_a, K, lane[g]);
  }
  __m256i TH[NT], E[NT];
  for (int q = 0; q < NT; ++q) {
    TH[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(rt.th + 8 * q));
    E[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(rt.e + 8 * q));
  }
  const __m256i vK = _mm256_set1_epi64x(K), vK32 = _mm256_set1_epi32(static_cast<int>(K));
  const __m256i carry_at = _mm256_set1_epi32(static_cast<int>(0u - K)), sixteen = _mm256_set1_epi32(16);
  // byte 1 (the token) of each 32-bit lane to byte k, for position k of 4
  __m256i to_byte[4];
  for (int k = 0; k < 4; ++k) {
    alignas(32) uint8_t m[32];
    for (int b = 0; b < 32; ++b) m[b] = (b & 3) == k ? static_cast<uint8_t>((b & ~3) + 1) : 0x80;
    to_byte[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
  }
  __m256i code[G];
  for (int g = 0; g < G; ++g) code[g] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lane[g]));
  uint8_t* out = tokens + r0 * L;
  for (int64_t t0 = 0; t0 < L; t0 += 16) {
    __m256i start[G], low[G], high[G], packed[G][4];
    for (int g = 0; g < G; ++g) {
      start[g] = code[g];
      low[g] = _mm256_set1_epi32(-1);
      high[g] = _mm256_setzero_si256();
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      __m256i w[G][1][4][2];
      for (int g = 0; g < G; ++g) philox[g].template blocks<1>(static_cast<uint32_t>(t0 >> 2) + j, w[g]);
      __m256i tok[G];
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k)
#pragma GCC unroll 2
        for (int g = 0; g < G; ++g) {
          const __m256i pa = _mm256_mul_epu32(w[g][0][k][0], vK), pb = _mm256_mul_epu32(w[g][0][k][1], vK);
          const __m256i bucket = _mm256_blend_epi32(_mm256_shuffle_epi32(pa, 0xB1), pb, 0xAA);  // high halves
          const __m256i frac = _mm256_blend_epi32(pa, _mm256_shuffle_epi32(pb, 0xB1), 0xAA);    // low halves
          const __m256i idx = _mm256_add_epi32(code[g], bucket);
          const __m256i th = lookup<NT>(TH, idx), e = lookup<NT>(E, idx);
          const __m256i alias = _mm256_cmpeq_epi32(_mm256_max_epu32(frac, th), frac);  // frac >= th
          code[g] = _mm256_srlv_epi32(e, _mm256_and_si256(alias, sixteen));
          low[g] = _mm256_min_epu32(low[g], _mm256_sub_epi32(th, frac));  // alias_decided, for all 16 draws
          high[g] = _mm256_max_epu32(high[g], frac);
          const __m256i b = _mm256_shuffle_epi8(code[g], to_byte[k]);
          tok[g] = k == 0 ? b : _mm256_or_si256(tok[g], b);
        }
      for (int g = 0; g < G; ++g) packed[g][j] = tok[g];
    }
    const int n = static_cast<int>(std::min<int64_t>(16, L - t0));
    for (int g = 0; g < G; ++g) {
      const __m256i* p = packed[g];
      const __m256i a = _mm256_unpacklo_epi32(p[0], p[1]), b = _mm256_unpackhi_epi32(p[0], p[1]);
      const __m256i c = _mm256_unpacklo_epi32(p[2], p[3]), d = _mm256_unpackhi_epi32(p[2], p[3]);
      // r[k]: the 16 tokens of lane k (low half) and of lane 4 + k (high half)
      const __m256i r[4] = {_mm256_unpacklo_epi64(a, c), _mm256_unpackhi_epi64(a, c), _mm256_unpacklo_epi64(b, d),
                            _mm256_unpackhi_epi64(b, d)};
      uint8_t* o = out + 8 * g * L + t0;
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const __m128i q[2] = {_mm256_castsi256_si128(r[k]), _mm256_extracti128_si256(r[k], 1)};
        for (int s = 0; s < 2; ++s) {
          uint8_t* row = o + lane_row(4 * s + k) * L;
          if (n == 16) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(row), q[s]);
          } else {
            alignas(16) uint8_t tmp[16];
            _mm_store_si128(reinterpret_cast<__m128i*>(tmp), q[s]);
            std::memcpy(row, tmp, static_cast<size_t>(n));
          }
        }
      }
      const int undecided = _mm256_movemask_ps(_mm256_castsi256_ps(
          _mm256_or_si256(cmpgt_epu32(vK32, low[g]), cmpgt_epu32(high[g], carry_at))));
      if (undecided) {  // rare: about 32 K draws in 2^32
        alignas(32) uint32_t from[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lane[g]), code[g]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(from), start[g]);
        for (int l = 0; l < 8; ++l)
          if (undecided >> l & 1) lane[g][l] = redo(8 * g + lane_row(l), (from[l] & 31) / K, t0, t0 + n) * K;
        code[g] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lane[g]));
      }
    }
  }
}

// Number of 8-entry registers the S * K table needs.
inline int table_regs(const RegTables& rt) {
  const uint32_t n = static_cast<uint32_t>(rt.S) * rt.K;
  return n <= 8 ? 1 : n <= 16 ? 2 : 4;
}

// hmm_rows_reg8 with the table size chosen at run time.
template <int G, typename Redo>
void hmm_rows(const RegTables& rt, const AliasTables& init_a, int64_t r0, int64_t L, uint64_t seed, uint64_t row0,
              uint8_t* tokens, Redo&& redo) {
  switch (table_regs(rt)) {
    case 1: return hmm_rows_reg8<1, G>(rt, init_a, r0, L, seed, row0, tokens, redo);
    case 2: return hmm_rows_reg8<2, G>(rt, init_a, r0, L, seed, row0, tokens, redo);
    default: return hmm_rows_reg8<4, G>(rt, init_a, r0, L, seed, row0, tokens, redo);
  }
}

}  // namespace avx2
}  // namespace compmech
#endif
