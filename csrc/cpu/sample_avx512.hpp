// AVX-512 hidden-state sampling for small processes (S * V * S <= 32 table entries, e.g. Mess3):
// one row per 32-bit lane (16 rows per vector), Philox4x32-10 for 16 rows at once, and the
// whole alias table in four registers (vpermt2d lookups). The decisions are alias_draw64's
// (kernels.hpp): the high word decides every draw except the rare undecided one, and a 16-position
// chunk of a row that met one is redone by the scalar code, so the tokens are the scalar path's.
#pragma once
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define COMPMECH_SAMPLE_AVX512 1
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "compmech/alias.hpp"
#include "compmech/kernels.hpp"
#include "sample_philox.hpp"
#include "sample_reg.hpp"

namespace compmech {
namespace avx512 {

// 512-bit operations for PhiloxRows (sample_philox.hpp): Philox16 computes 16 rows at once.
struct Ops512 {
  using V = __m512i;
  static constexpr int kRows = 8;
  static V set1_64(uint64_t x) { return _mm512_set1_epi64(static_cast<long long>(x)); }
  static V set1_32(uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
  static V iota64() { return _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7); }
  static V add64(V a, V b) { return _mm512_add_epi64(a, b); }
  static V srli64_32(V a) { return _mm512_srli_epi64(a, 32); }
  static V hi_to_lo(V a) { return _mm512_shuffle_epi32(a, _MM_PERM_DDBB); }
  static V mul32(V a, V b) { return _mm512_mul_epu32(a, b); }
  static V xor2(V a, V b) { return _mm512_xor_si512(a, b); }
  static V xor3(V a, V b, V c) { return _mm512_ternarylogic_epi32(a, b, c, 0x96); }
  static void store64(uint64_t* p, V a) { _mm512_store_si512(p, a); }
};
using Philox16 = PhiloxRows<Ops512>;

// Tokens of 4 positions (bits 8..15 of each code vector) as 4 bytes per row: position k in byte k.
// Shifts, a word blend and a bitwise select, not byte permutes: vpermt2b takes port 5 for two
// cycles on Intel cores, and port 5 already does the draws' shuffles, lookups and compares.
inline __m512i pack_tokens(const __m512i c[4]) {
  const __m512i y = _mm512_mask_blend_epi16(0xAAAAAAAAu, c[0], _mm512_slli_epi32(c[2], 16));  // codes 0, 2
  const __m512i z = _mm512_mask_blend_epi16(0xAAAAAAAAu, c[1], _mm512_slli_epi32(c[3], 16));  // codes 1, 3
  return _mm512_ternarylogic_epi32(_mm512_srli_epi32(y, 8), z, _mm512_set1_epi32(0x00FF00FF), 0xE4);  // c ? a : b
}

// Lane l of the decision vectors holds row lane_row(l) of its group of 16: the draw's bucket and
// fraction come out of the two 64-bit-lane halves (rows 0-7 and 8-15) by one masked vpshufd
// each, which interleaves them (even lanes rows 0-7, odd lanes rows 8-15).
constexpr int lane_row(int l) { return Philox16::lane_row(l); }

// The stage, 16 rows x 64 positions (one output line per row) in L1. Row R's 16-byte slot c
// (positions 16c..16c+15) sits at (4k + c) * 64 + 16i, where lane 4i + k holds row R: a chunk's
// tokens, transposed, are then four aligned 64-byte stores, and a row's line is gathered (one load,
// three inserts) when it is written out, instead of 12 extracts and 16 16-byte stores a chunk.
constexpr int lane_of_row(int R) { return 2 * (R % 8) + R / 8; }  // lane_row's inverse
inline size_t stage_off(int R, int pos) {
  const int l = lane_of_row(R);
  return static_cast<size_t>(((l & 3) * 4 + (pos >> 4)) * 64 + (l >> 2) * 16 + (pos & 15));
}

// Stages slot c of 16 rows: p[j] holds positions 4j..4j+3 of row lane_row(l) in lane l.
inline void stage_chunk(const __m512i p[4], uint8_t* st, int c) {
  const __m512i a = _mm512_unpacklo_epi32(p[0], p[1]), b = _mm512_unpackhi_epi32(p[0], p[1]);
  const __m512i d = _mm512_unpacklo_epi32(p[2], p[3]), e = _mm512_unpackhi_epi32(p[2], p[3]);
  // 128-bit lane i of the k-th vector: the 16 tokens of lane 4i + k
  _mm512_store_si512(st + (0 + c) * 64, _mm512_unpacklo_epi64(a, d));
  _mm512_store_si512(st + (4 + c) * 64, _mm512_unpackhi_epi64(a, d));
  _mm512_store_si512(st + (8 + c) * 64, _mm512_unpacklo_epi64(b, e));
  _mm512_store_si512(st + (12 + c) * 64, _mm512_unpackhi_epi64(b, e));
}

// Row R's staged line (64 positions).
inline __m512i stage_row(const uint8_t* st, int R) {
  const uint8_t* s = st + stage_off(R, 0);
  const auto slot = [&](int c) { return _mm_load_si128(reinterpret_cast<const __m128i*>(s + 64 * c)); };
  __m512i v = _mm512_castsi128_si512(slot(0));
  v = _mm512_inserti32x4(v, slot(1), 1);
  v = _mm512_inserti32x4(v, slot(2), 2);
  return _mm512_inserti32x4(v, slot(3), 3);
}

// G groups of 16 rows, r0 .. r0 + 16G - 1 (row0 + r0 + i in the RNG stream), all L positions,
// starting from initial_state() (init_a: the initial distribution's tables). The groups' state
// chains are independent, so interleaving them hides the latency of each step's table lookup.
// `redo(i, state, t0, t1)` recomputes positions [t0, t1) of row r0 + i from hidden state `state`
// with the scalar code, writing its tokens, and returns the state after them. Philox runs NB
// consecutive blocks of a group at once (2: more chains hide its latency; 4 spill registers);
// SameHi: all rows share row >> 32 (PhiloxRows::blocks_shared).
template <int G, int NB, bool SameHi, typename Redo>
void hmm_rows_reg_impl(const RegTables& rt, const AliasTables& init_a, int64_t r0, int64_t L, uint64_t seed,
                       uint64_t row0, uint8_t* tokens, Redo&& redo) {
  const uint32_t K = rt.K;
  Philox16 philox[G];
  for (int g = 0; g < G; ++g) philox[g] = Philox16(seed, row0 + r0 + 16 * g);
  alignas(64) uint32_t lane[G][16];
  for (int g = 0; g < G; ++g) philox[g].initial_codes(init_a, K, lane[g]);
  const __m512i TH0 = _mm512_load_si512(rt.th), TH1 = _mm512_load_si512(rt.th + 16);
  const __m512i E0 = _mm512_load_si512(rt.e), E1 = _mm512_load_si512(rt.e + 16);
  const __m512i vK = _mm512_set1_epi64(K), vK32 = _mm512_set1_epi32(static_cast<int>(K));
  const __m512i carry_at = _mm512_set1_epi32(static_cast<int>(0u - K));
  __m512i code[G];
  for (int g = 0; g < G; ++g) code[g] = _mm512_load_si512(lane[g]);
  uint8_t* out = tokens + r0 * L;
  alignas(64) uint8_t stage[G][16 * 64];
  // Lines start where rows meet 64-byte boundaries: after `head` positions (a multiple of 16 when
  // the output is 16-byte aligned and L % 64 == 0, as numpy's are; else lines are not aligned).
  const bool aligned = L % 64 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 && L >= 128;
  const int64_t head = aligned ? static_cast<int64_t>((64 - reinterpret_cast<uintptr_t>(out) % 64) % 64) : 0;
  // A row's first `head` positions and the row before's last 64 - head share a cache line: they
  // are kept here until the end, which writes that line whole (only the block's first head and
  // last tail, shared with other calls, are partial stores).
  alignas(64) uint8_t heads[G][16 * 64];
  for (int64_t t0 = 0; t0 < L; t0 += 16) {
    __m512i start[G], low[G], high[G], packed[G][4];
    for (int g = 0; g < G; ++g) {
      start[g] = code[g];
      low[g] = _mm512_set1_epi32(-1);
      high[g] = _mm512_setzero_si512();
    }
#pragma GCC unroll 2
    for (int j0 = 0; j0 < 4; j0 += NB) {
      // Philox for NB consecutive blocks of each group at once (independent chains hide latency)
      __m512i w[G][NB][4][2];
      const uint32_t block = static_cast<uint32_t>(t0 >> 2) + j0;
      if constexpr (SameHi) {
        typename Philox16::Shared sh[NB];
        for (int n = 0; n < NB; ++n) sh[n] = philox[0].shared(block + n);
        for (int g = 0; g < G; ++g) philox[g].template blocks_shared<NB>(sh, w[g]);
      } else {
        for (int g = 0; g < G; ++g) philox[g].template blocks<NB>(block, w[g]);
      }
#pragma GCC unroll 2
      for (int n = 0; n < NB; ++n) {
        __m512i c[G][4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k)
#pragma GCC unroll 2
          for (int g = 0; g < G; ++g) {
            const __m512i pa = _mm512_mul_epu32(w[g][n][k][0], vK), pb = _mm512_mul_epu32(w[g][n][k][1], vK);
            const __m512i bucket = _mm512_mask_shuffle_epi32(pb, 0x5555, pa, _MM_PERM_CDAB);  // high halves
            const __m512i frac = _mm512_mask_shuffle_epi32(pa, 0xAAAA, pb, _MM_PERM_CDAB);    // low halves
            const __m512i idx = _mm512_add_epi32(code[g], bucket);  // vpermt2d reads the low 5 bits
            const __m512i th = _mm512_permutex2var_epi32(TH0, idx, TH1);
            const __m512i e = _mm512_permutex2var_epi32(E0, idx, E1);
            code[g] = _mm512_mask_srli_epi32(e, _mm512_cmpge_epu32_mask(frac, th), e, 16);
            low[g] = _mm512_min_epu32(low[g], _mm512_sub_epi32(th, frac));  // alias_decided, for all 16 draws
            high[g] = _mm512_max_epu32(high[g], frac);
            c[g][k] = code[g];
          }
        for (int g = 0; g < G; ++g) packed[g][j0 + n] = pack_tokens(c[g]);
      }
    }
    const int n = static_cast<int>(std::min<int64_t>(16, L - t0));
    // staged in L1 (16 rows x 64 bytes), written out a cache line per row at a time
    const int64_t line = t0 < head ? 0 : head + ((t0 - head) & ~int64_t(63));
    for (int g = 0; g < G; ++g) {
      uint8_t* st = t0 < head ? heads[g] : stage[g];
      stage_chunk(packed[g], st, static_cast<int>(t0 - line) >> 4);
      const __mmask16 undecided =
          _mm512_cmplt_epu32_mask(low[g], vK32) | _mm512_cmpgt_epu32_mask(high[g], carry_at);
      if (undecided) {  // rare: about 32 K draws in 2^32
        alignas(64) uint32_t from[16];
        _mm512_store_si512(lane[g], code[g]);
        _mm512_store_si512(from, start[g]);
        for (int l = 0; l < 16; ++l)
          if (undecided >> l & 1) {
            const int i = 16 * g + lane_row(l);
            lane[g][l] = redo(i, (from[l] & 31) / K, t0, t0 + n) * K;  // writes the output row
            std::memcpy(st + stage_off(lane_row(l), static_cast<int>(t0 - line)), out + i * L + t0, static_cast<size_t>(n));
          }
        code[g] = _mm512_load_si512(lane[g]);
      }
    }
    if (head > 0 && t0 + 16 >= L) {  // the last lines, completed by the next row's head
      const int m = static_cast<int>(64 - head);
      const __mmask64 tail = (__mmask64(1) << m) - 1;
      alignas(64) uint8_t heads_rows[G][16 * 64];  // heads_rows[g][l * 64]: row 16 g + l's line
      for (int g = 0; g < G; ++g)
        for (int l = 0; l < 16; ++l) _mm512_store_si512(heads_rows[g] + l * 64, stage_row(heads[g], l));
      const uint8_t* h = heads_rows[0];  // 64 bytes per row throughout
      _mm512_mask_storeu_epi8(out - m, ~tail, _mm512_maskz_loadu_epi8(~tail, h - m));
      for (int i = 0; i < 16 * G; ++i) {
        const __m512i t = stage_row(stage[i / 16], i % 16);
        uint8_t* o = out + i * L + line;
        if (i + 1 < 16 * G)
          _mm512_stream_si512(reinterpret_cast<__m512i*>(o),
                              _mm512_mask_blend_epi8(tail, _mm512_maskz_loadu_epi8(~tail, h + (i + 1) * 64 - m), t));
        else
          _mm512_mask_storeu_epi8(o, tail, t);
      }
    } else if (t0 + 16 - line == 64 || t0 + 16 >= L) {  // flush the line of every row
      const int m = static_cast<int>(t0 + n - line);
      for (int g = 0; g < G; ++g) {
        uint8_t* o = out + 16 * g * L + line;
        if (m == 64 && aligned)  // whole aligned lines: streaming stores (no read for ownership)
          for (int l = 0; l < 16; ++l)
            _mm512_stream_si512(reinterpret_cast<__m512i*>(o + l * L), stage_row(stage[g], l));
        else
          for (int l = 0; l < 16; ++l)
            _mm512_mask_storeu_epi8(o + l * L, m >= 64 ? ~__mmask64(0) : (__mmask64(1) << m) - 1,
                                    stage_row(stage[g], l));
      }
    }
  }
}

// The kernels write whole lines with streaming (weakly ordered) stores and leave the fence to the
// caller: one fence after a run of calls, before the array is handed on (a fence per call of 32
// rows cost 3-4% with a 1 MB output).
inline void fence_streaming_stores() { _mm_sfence(); }

// hmm_rows_reg_impl, with Philox's shortcut for rows that share their high 32 bits (all but a
// group that straddles a multiple of 2^32). Call fence_streaming_stores() after a run of calls.
template <int G, typename Redo>
void hmm_rows_reg(const RegTables& rt, const AliasTables& init_a, int64_t r0, int64_t L, uint64_t seed,
                  uint64_t row0, uint8_t* tokens, Redo&& redo) {
  if (Philox16::rows_share_hi(row0 + r0, 16 * G))
    hmm_rows_reg_impl<G, 2, true>(rt, init_a, r0, L, seed, row0, tokens, redo);
  else
    hmm_rows_reg_impl<G, 2, false>(rt, init_a, r0, L, seed, row0, tokens, redo);
}

}  // namespace avx512
}  // namespace compmech
#endif
