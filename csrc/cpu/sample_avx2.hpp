// AVX2 hidden-state sampling for small processes (S * V * S <= 32 table entries, V <= 8, e.g.
// Mess3), for machines without AVX-512. Philox4x32-10 for 8 rows at once (each word in two
// vectors of four 64-bit lanes), one row per 32-bit lane. With 16 ymm registers the AVX-512
// path's one-pass loop spills, so each 16-position chunk runs in two phases:
//  1. Philox (three half-blocks of 4 rows at a time: enough independent multiply chains to hide
//     their latency in 12 registers) and everything that does not depend on the hidden state
//     (bucket, fraction, the bucket's own outcome) for the chunk's 16 positions, into L1;
//  2. the state chains of G groups of 8 rows, interleaved (independent chains hide the lookup's
//     latency), reading that buffer as memory operands.
// The chain's lookup is one table entry per draw: the threshold's high word with its low 8 bits
// replaced by the alias outcome's 8-bit code (vpermd on one, two or four registers, blended on
// the index's bits 3 and 4). The truncated threshold widens the band of fractions the high word
// leaves undecided from K to about K + 2 * 255: a 16-position chunk of a row that met one (about
// 3 in 10^6 for Mess3) is redone by the scalar code, so the tokens are alias_draw64's.
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
  static V hi_to_lo(V a) { return _mm256_shuffle_epi32(a, 0xF5); }
  static V mul32(V a, V b) { return _mm256_mul_epu32(a, b); }
  static V xor2(V a, V b) { return _mm256_xor_si256(a, b); }
  static V xor3(V a, V b, V c) { return _mm256_xor_si256(a, _mm256_xor_si256(b, c)); }
  static void store64(uint64_t* p, V a) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), a); }
};
using Philox8 = PhiloxRows<Ops256>;

// Lane l holds row lane_row(l) of its group of 8 (even lanes rows 0-3, odd lanes rows 4-7: how
// the 64-bit products' halves interleave with one shuffle and one blend).
constexpr int lane_row(int l) { return Philox8::lane_row(l); }

// An outcome's 8-bit code: token << 5 | next state * K. The chain adds the next draw's bucket to
// it (state * K + bucket < 32 never carries into the token) to index the table.
constexpr int kTokenShift = 5;
constexpr uint32_t kCodeMask = 0xFF;

// Which processes the path takes: the register tables' size, and tokens that fit the code's 3 bits
// (only one-state processes with V > 8 miss out; they take the packed path).
inline bool fits(int V, int S) { return RegTables::fits(V, S) && V <= 8; }

// The AVX2 path's tables. ent[s * K + b] = (threshold's high 32 bits with the low 8 replaced by
// the alias outcome's code) ^ 2^31, sign-flipped for the signed compare; own[b] (16 bytes, once
// per 128-bit lane, for vpshufb) = the code of outcome b, the bucket's own.
struct Tables {
  alignas(32) uint32_t ent[32] = {};
  alignas(32) uint8_t own[32] = {};
  uint32_t K = 0;
  int nt = 1;  // 8-entry registers the S * K entries need: 1, 2 or 4
};

inline Tables tables(const RegTables& rt) {
  Tables t;
  t.K = rt.K;
  const uint32_t n = static_cast<uint32_t>(rt.S) * rt.K;
  t.nt = n <= 8 ? 1 : n <= 16 ? 2 : 4;
  // RegTables' codes are token << 8 | next state * K (16 bits): alias code high, own code low
  const auto code8 = [](uint32_t c16) { return (c16 >> 8) << kTokenShift | (c16 & 0xFF); };
  for (uint32_t i = 0; i < n; ++i) {
    t.ent[i] = ((rt.th[i] & ~kCodeMask) | code8(rt.e[i] >> 16)) ^ 0x80000000u;
    if (i < rt.K) t.own[i] = t.own[16 + i] = static_cast<uint8_t>(code8(rt.e[i] & 0xFFFF));
  }
  return t;
}

// Table lookup of 8 * NT entries from memory: vpermd reads the index's low 3 bits, bits 3 and 4
// pick the register.
template <int NT>
inline __m256i lookup(const uint32_t* T, __m256i idx) {
  const auto perm = [&](int q) {
    return _mm256_permutevar8x32_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(T + 8 * q)), idx);
  };
  // vblendvps on the index's bit (shifted to the sign); asm, as GCC would compute the sign mask
  // shared by two blends with an extra compare
  const auto pick = [](__m256i a, __m256i b, __m256i sign) {
    __m256i r;
    asm("vblendvps %3, %2, %1, %0" : "=x"(r) : "x"(a), "x"(b), "x"(sign));
    return r;
  };
  if constexpr (NT == 1) {
    return perm(0);
  } else if constexpr (NT == 2) {
    return pick(perm(0), perm(1), _mm256_slli_epi32(idx, 28));
  } else {
    const __m256i s3 = _mm256_slli_epi32(idx, 28);
    return pick(pick(perm(0), perm(1), s3), pick(perm(2), perm(3), s3), _mm256_slli_epi32(idx, 27));
  }
}

// Output bytes a call builds in L1 before writing them out (hmm_rows_impl).
constexpr int64_t kStageBytes = 16384;

// dst[0, n) = src[0, n): whole 64-byte lines of dst with streaming stores, the partial ones at its
// ends (shared with other calls) with ordinary stores. Call fence_streaming_stores() after a run
// of calls, before the output is handed on.
inline void stream_copy(uint8_t* dst, const uint8_t* src, int64_t n) {
  const int64_t head = std::min<int64_t>(n, (64 - reinterpret_cast<uintptr_t>(dst) % 64) % 64);
  std::memcpy(dst, src, static_cast<size_t>(head));
  int64_t i = head;
  for (; i + 64 <= n; i += 64) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 32),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 32)));
  }
  std::memcpy(dst + i, src + i, static_cast<size_t>(n - i));
}

inline void fence_streaming_stores() { _mm_sfence(); }

// Unsigned a > b, lane by lane.
inline __m256i cmpgt_epu32(__m256i a, __m256i b) {
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  return _mm256_cmpgt_epi32(_mm256_xor_si256(a, sign), _mm256_xor_si256(b, sign));
}

// What phase 1 leaves for one draw of 8 rows: the bucket, fm = (fraction - 255) ^ 2^31 (the
// fraction: high word * K's low half; sign-flipped for signed compares) and the code of the
// bucket's own outcome.
struct Draw {
  __m256i bucket, fm, own;
};

// Philox rounds 2-9 of NQ half-blocks at once (4 rows each; half-block q is half q % 2 of the
// chunk's block q / 2), from Q0 on, into w[block][word][half]. A half-block is two multiply
// chains in 4 registers: three at once (12 registers) keep the multipliers busy, where one
// block's two (8) wait on their latency and two blocks' four (16) spill.
template <int Q0, int NQ, bool SameHi>
inline void philox_halves(const Philox8& ph, const typename Philox8::Shared* sh, uint32_t block0, const __m256i (*keys)[2],
                          __m256i w[4][4][2]) {
  using P = Philox8;
  const __m256i vM0 = _mm256_set1_epi64x(P::M0), vM1 = _mm256_set1_epi64x(P::M1);
  __m256i a[NQ][4];
#pragma GCC unroll 4
  for (int i = 0; i < NQ; ++i) {  // the state after round 2
    const int n = (Q0 + i) / 2, h = (Q0 + i) % 2;
    if constexpr (SameHi) ph.after_round2(sh[n], h, a[i]);
    else ph.after_round2(block0 + n, h, a[i]);
  }
#pragma GCC unroll 8
  for (int r = 2; r < 10; ++r) {
#pragma GCC unroll 4
    for (int i = 0; i < NQ; ++i) {
      // in place: a0 <- a0 * M0, a2 <- a2 * M1 (the new a3, a1), a1 <- hi(a2 * M1) ^ (a1 ^ key0),
      // a3 <- hi(a0 * M0) ^ (a3 ^ key1) (the new a0, a2), the key off the critical path; asm, as
      // GCC's own order and association spill and add a cycle per round
      __m256i t;
      asm("vpmuludq %[m0], %[a0], %[a0]\n\t"
          "vpmuludq %[m1], %[a2], %[a2]\n\t"
          "vpxor %[k0], %[a1], %[a1]\n\t"
          "vpxor %[k1], %[a3], %[a3]\n\t"
          "vpsrlq $32, %[a2], %[t]\n\t"
          "vpxor %[t], %[a1], %[a1]\n\t"
          "vpsrlq $32, %[a0], %[t]\n\t"
          "vpxor %[t], %[a3], %[a3]"
          : [a0] "+x"(a[i][0]), [a1] "+x"(a[i][1]), [a2] "+x"(a[i][2]), [a3] "+x"(a[i][3]), [t] "=&x"(t)
          : [m0] "x"(vM0), [m1] "x"(vM1), [k0] "m"(keys[r][0]), [k1] "m"(keys[r][1]));
      const __m256i p0 = a[i][0];
      a[i][0] = a[i][1];
      a[i][1] = a[i][2];
      a[i][2] = a[i][3];
      a[i][3] = p0;
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < NQ; ++i)
    for (int k = 0; k < 4; ++k) w[(Q0 + i) / 2][k][(Q0 + i) % 2] = a[i][k];
}

// Phase 1 for one group and one chunk: Philox blocks t0/4 .. t0/4 + 3 and the draws' state-free
// parts into d[16]; returns the signed max of high and their fm (the carry check).
template <bool SameHi>
inline __m256i prepare(const Philox8& ph, const typename Philox8::Shared* sh, uint32_t block0, const __m256i (*keys)[2],
                       const Tables& tb, __m256i high, Draw* d) {
  const __m256i vK = _mm256_set1_epi64x(tb.K), bias = _mm256_set1_epi32(static_cast<int>(0x80000000u - kCodeMask));
  const __m256i own = _mm256_load_si256(reinterpret_cast<const __m256i*>(tb.own));
  alignas(32) __m256i w[4][4][2];  // the four blocks' words, then the draws' parts from them in L1
  philox_halves<0, 3, SameHi>(ph, sh, block0, keys, w);
  philox_halves<3, 3, SameHi>(ph, sh, block0, keys, w);
  philox_halves<6, 2, SameHi>(ph, sh, block0, keys, w);
  asm volatile("" ::"r"(&w[0][0][0]) : "memory");
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j)
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m256i pa = _mm256_mul_epu32(w[j][k][0], vK), pb = _mm256_mul_epu32(w[j][k][1], vK);
      const __m256i bucket = _mm256_blend_epi32(_mm256_shuffle_epi32(pa, 0xB1), pb, 0xAA);  // high halves
      const __m256i frac = _mm256_blend_epi32(pa, _mm256_shuffle_epi32(pb, 0xB1), 0xAA);    // low halves
      const __m256i fm = _mm256_add_epi32(frac, bias);  // (frac - 255) ^ 2^31
      high = _mm256_max_epi32(high, fm);
      Draw& o = d[4 * j + k];
      o.bucket = bucket;
      o.fm = fm;
      o.own = _mm256_shuffle_epi8(own, bucket);  // bytes 1-3 get own[0]: never read
    }
  return high;
}

// G groups of 8 rows, r0 .. r0 + 8G - 1 (row0 + r0 + i in the RNG stream), all L positions, as
// avx512::hmm_rows_reg; `redo(i, state, t0, t1)` recomputes positions [t0, t1) of row r0 + i.
//
// The decision: entry e holds the threshold's high word th with its low 8 bits replaced, so
// |e - th| <= 255, and fm = fraction - 255. A draw counts as undecided (its chunk is redone) when
// e - fm < K + 2 * 255 (unsigned: fraction in (e - 255 - K, e + 255]) or fm > 2^32 - K - 255
// (fraction below 255 or above 2^32 - K, where the low word's carry or the wrap matter). Else
// fraction + K <= th or fraction > th, so the high word decides (alias_decided), and own = e > fm
// (a signed compare of both, sign-flipped) is alias_draw64's decision.
template <int NT, int G, bool SameHi, typename Redo>
void hmm_rows_impl(const Tables& tb, const AliasTables& init_a, int64_t r0, int64_t L, uint64_t seed, uint64_t row0,
                   uint8_t* tokens, Redo&& redo) {
  const uint32_t K = tb.K;
  Philox8 philox[G];
  alignas(32) uint32_t lane[G][8];
  for (int g = 0; g < G; ++g) {
    philox[g] = Philox8(seed, row0 + r0 + 8 * g);
    philox[g].initial_codes(init_a, K, lane[g]);  // state * K: the code less its token
  }
  alignas(32) __m256i keys[10][2];  // the rounds' keys (the seed's: the same for every group)
  for (int r = 0; r < 10; ++r) {
    keys[r][0] = _mm256_set1_epi32(static_cast<int>(philox[0].k0[r]));
    keys[r][1] = _mm256_set1_epi32(static_cast<int>(philox[0].k1[r]));
  }
  const __m256i band = _mm256_set1_epi32(static_cast<int>(K + 2 * kCodeMask));
  const __m256i carry_at = _mm256_set1_epi32(static_cast<int>((0u - K - kCodeMask) ^ 0x80000000u));  // flipped
  // byte 0 (the code) of each 32-bit lane to byte k, for position k of 4
  alignas(32) uint8_t to_byte[4][32];
  for (int k = 0; k < 4; ++k)
    for (int b = 0; b < 32; ++b) to_byte[k][b] = (b & 3) == k ? static_cast<uint8_t>(b & ~3) : 0x80;
  __m256i code[G];
  for (int g = 0; g < G; ++g) code[g] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lane[g]));
  uint8_t* out = tokens + r0 * L;
  // The rows' 8 G L bytes are contiguous in the output: built in L1 when they fit, then written
  // with streaming stores (no read for ownership of the output's lines).
  alignas(64) uint8_t stage[kStageBytes];
  uint8_t* dst = 8 * G * L <= kStageBytes ? stage : out;
  alignas(32) Draw d[G][16];
  for (int64_t t0 = 0; t0 < L; t0 += 16) {
    const uint32_t block0 = static_cast<uint32_t>(t0 >> 2);
    typename Philox8::Shared sh[4];
    if constexpr (SameHi)
      for (int j = 0; j < 4; ++j) sh[j] = philox[0].shared(block0 + j);
    __m256i high[G];
    for (int g = 0; g < G; ++g)
      high[g] = prepare<SameHi>(philox[g], sh, block0, keys, tb, _mm256_set1_epi32(INT32_MIN), d[g]);
    __m256i start[G], low[G], packed[G][4];
    for (int g = 0; g < G; ++g) {
      start[g] = code[g];
      low[g] = _mm256_set1_epi32(-1);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      __m256i tok[G];
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k)
#pragma GCC unroll 4
        for (int g = 0; g < G; ++g) {
          const Draw& x = d[g][4 * j + k];
          const __m256i e = lookup<NT>(tb.ent, _mm256_add_epi32(code[g], x.bucket));
          const __m256i own = _mm256_cmpgt_epi32(e, x.fm);
          code[g] = _mm256_castps_si256(
              _mm256_blendv_ps(_mm256_castsi256_ps(e), _mm256_castsi256_ps(x.own), _mm256_castsi256_ps(own)));
          low[g] = _mm256_min_epu32(low[g], _mm256_sub_epi32(e, x.fm));
          const __m256i b = _mm256_shuffle_epi8(code[g], _mm256_load_si256(reinterpret_cast<const __m256i*>(to_byte[k])));
          tok[g] = k == 0 ? b : _mm256_or_si256(tok[g], b);
        }
      for (int g = 0; g < G; ++g)  // the codes' tokens (bits 5-7 of each byte)
        packed[g][j] = _mm256_and_si256(_mm256_srli_epi32(tok[g], kTokenShift), _mm256_set1_epi8(7));
    }
    const int n = static_cast<int>(std::min<int64_t>(16, L - t0));
    for (int g = 0; g < G; ++g) {
      const __m256i* p = packed[g];
      const __m256i a = _mm256_unpacklo_epi32(p[0], p[1]), b = _mm256_unpackhi_epi32(p[0], p[1]);
      const __m256i c = _mm256_unpacklo_epi32(p[2], p[3]), e = _mm256_unpackhi_epi32(p[2], p[3]);
      // r[k]: the 16 tokens of lane k (low half) and of lane 4 + k (high half)
      const __m256i r[4] = {_mm256_unpacklo_epi64(a, c), _mm256_unpackhi_epi64(a, c), _mm256_unpacklo_epi64(b, e),
                            _mm256_unpackhi_epi64(b, e)};
      uint8_t* o = dst + 8 * g * L + t0;
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
      const int undecided = _mm256_movemask_ps(
          _mm256_castsi256_ps(_mm256_or_si256(cmpgt_epu32(band, low[g]), _mm256_cmpgt_epi32(high[g], carry_at))));
      if (undecided) {  // rare: about 2^-20 of the row chunks
        alignas(32) uint32_t from[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lane[g]), code[g]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(from), start[g]);
        for (int l = 0; l < 8; ++l)
          if (undecided >> l & 1) {
            const int i = 8 * g + lane_row(l);
            lane[g][l] = redo(i, (from[l] & 31) / K, t0, t0 + n) * K;  // writes the output row
            if (dst != out) std::memcpy(dst + i * L + t0, out + i * L + t0, static_cast<size_t>(n));
          }
        code[g] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lane[g]));
      }
    }
  }
  if (dst != out) stream_copy(out, dst, 8 * G * L);
}

// G groups of 8 rows from r0 (see hmm_rows_impl), the table size and Philox's shortcut for rows
// that share their high 32 bits chosen at run time.
template <int G, typename Redo>
void hmm_rows(const Tables& tb, const AliasTables& init_a, int64_t r0, int64_t L, uint64_t seed, uint64_t row0,
              uint8_t* tokens, Redo&& redo) {
  const bool same = Philox8::rows_share_hi(row0 + r0, 8 * G);
  switch (tb.nt * 2 + same) {
    case 2: return hmm_rows_impl<1, G, false>(tb, init_a, r0, L, seed, row0, tokens, redo);
    case 3: return hmm_rows_impl<1, G, true>(tb, init_a, r0, L, seed, row0, tokens, redo);
    case 4: return hmm_rows_impl<2, G, false>(tb, init_a, r0, L, seed, row0, tokens, redo);
    case 5: return hmm_rows_impl<2, G, true>(tb, init_a, r0, L, seed, row0, tokens, redo);
    case 8: return hmm_rows_impl<4, G, false>(tb, init_a, r0, L, seed, row0, tokens, redo);
    default: return hmm_rows_impl<4, G, true>(tb, init_a, r0, L, seed, row0, tokens, redo);
  }
}

}  // namespace avx2
}  // namespace compmech
#endif
