// Philox4x32-10 for 2 * Ops::kRows consecutive rows at once (the register-table sampling paths):
// each word is kept in two vectors of kRows 64-bit lanes (rows 0..kRows-1 and kRows..2kRows-1),
// the value in the low half. The 32x32->64 multiply then needs no shuffles, and the garbage it
// leaves in the high halves is never read (vpmuludq reads only low halves; callers extract low
// halves). Same arithmetic, same bits as philox_block (philox.hpp).
//
// blocks<N>() computes N consecutive token blocks (independent chains, so the multiplier latency
// is hidden) and skips the work that does not depend on the block: in round 1 the words (a0, a1)
// come from the row alone and (a2, a3) from the row and the scalar block * M0; in round 2 the
// product a0 * M0 is again the row's alone. blocks_shared() goes further for rows that share their
// high 32 bits (any group that does not straddle a multiple of 2^32).
//
// Ops (one per instruction set, see sample_avx512.hpp / sample_avx2.hpp) provides the vector type
// V, kRows, and set1_64, set1_32, iota64 (0, 1, ...), add64, srli64_32 (>> 32 per 64-bit lane),
// hi_to_lo (the high half of each 64-bit lane copied to its low half: vpshufd), mul32 (vpmuludq),
// xor2, xor3 and store64 (an aligned store of kRows 64-bit lanes).
#pragma once
#include <cstdint>

#include "compmech/alias.hpp"
#include "compmech/kernels.hpp"
#include "compmech/philox.hpp"

namespace compmech {

template <typename Ops>
struct PhiloxRows {
  using V = typename Ops::V;
  static constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  uint32_t k0[10], k1[10];
  V c2[2], c3[2];
  // per half h, domain kDomainTokens: round-1 a2 without the block's share (row_hi ^ k1[0]),
  // round-2 inputs: a1 ^ k0[1], hi(a0 * M0) ^ k1[1], lo(a0 * M0)
  V rh[2], a1k[2], h2[2], l2[2];
  uint32_t rh_s = 0;  // when the rows share row_hi: round-1 a2 without the block's share

  PhiloxRows() = default;
  PhiloxRows(uint64_t seed, uint64_t row0) {
    uint32_t a = static_cast<uint32_t>(seed), b = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      k0[r] = a;
      k1[r] = b;
      a += 0x9E3779B9u;
      b += 0xBB67AE85u;
    }
    const V vM0 = Ops::set1_64(M0), vM1 = Ops::set1_64(M1);
    rh_s = static_cast<uint32_t>(row0 >> 32) ^ k1[0];
    for (int h = 0; h < 2; ++h) {
      const V rows = Ops::add64(Ops::set1_64(row0 + Ops::kRows * h), Ops::iota64());
      c2[h] = rows;
      c3[h] = Ops::srli64_32(rows);
      const V p2 = Ops::mul32(c2[h], vM1);  // round 1: a2 = row_lo
      const V a0 = Ops::xor2(Ops::srli64_32(p2), Ops::set1_64(kDomainTokens ^ k0[0]));
      rh[h] = Ops::xor2(c3[h], Ops::set1_64(k1[0]));
      a1k[h] = Ops::xor2(p2, Ops::set1_32(k0[1]));
      const V p0 = Ops::mul32(a0, vM0);  // round 2's a0 * M0
      h2[h] = Ops::xor2(Ops::srli64_32(p0), Ops::set1_64(k1[1]));
      l2[h] = p0;
    }
  }

  // Rounds r0..9 on the state a[n][word][half].
  template <int N>
  static inline void rounds(const uint32_t* k0, const uint32_t* k1, int r0, V a[N][4][2]) {
    const V vM0 = Ops::set1_64(M0), vM1 = Ops::set1_64(M1);
#pragma GCC unroll 10
    for (int r = r0; r < 10; ++r) {
      const V key0 = Ops::set1_32(k0[r]), key1 = Ops::set1_32(k1[r]);
#pragma GCC unroll 4
      for (int n = 0; n < N; ++n)
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const V p0 = Ops::mul32(a[n][0][h], vM0), p2 = Ops::mul32(a[n][2][h], vM1);
          // the products' high halves to the low: one by a shuffle, one by a shift (Intel runs
          // 512-bit shuffles on port 5 only and shifts on port 0 only; measured 1.5% faster
          // than two shifts with the AVX-512 kernel on Granite Rapids)
          a[n][0][h] = Ops::xor3(Ops::hi_to_lo(p2), a[n][1][h], key0);
          a[n][2][h] = Ops::xor3(Ops::srli64_32(p0), a[n][3][h], key1);
          a[n][1][h] = p2;
          a[n][3][h] = p0;
        }
    }
  }

  // Whether rows row0 .. row0 + n - 1 share their high 32 bits (then blocks_shared applies).
  static bool rows_share_hi(uint64_t row0, uint64_t n) {
    const uint64_t last = row0 + n - 1;
    return last >= row0 && (row0 >> 32) == (last >> 32);
  }

  // The state a[word] of half h's rows after rounds 1-2 of token block `block` (domain
  // kDomainTokens): round 1's a0 = block, the rest from the row-only words above.
  inline void after_round2(uint32_t block, int h, V a[4]) const {
    const uint64_t p0 = static_cast<uint64_t>(block) * M0;
    const V p2 = Ops::mul32(Ops::xor2(rh[h], Ops::set1_32(static_cast<uint32_t>(p0 >> 32))), Ops::set1_64(M1));
    a[0] = Ops::xor2(Ops::srli64_32(p2), a1k[h]);
    a[1] = p2;
    a[2] = Ops::xor2(h2[h], Ops::set1_32(static_cast<uint32_t>(p0)));
    a[3] = l2[h];
  }

  // Token blocks block..block+N-1 (domain kDomainTokens): w[n][k][h] = word k of half h's rows.
  template <int N>
  inline void blocks(uint32_t block, V w[N][4][2]) const {
#pragma GCC unroll 4
    for (int n = 0; n < N; ++n)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        V a[4];
        after_round2(block + n, h, a);
        for (int k = 0; k < 4; ++k) w[n][k][h] = a[k];
      }
    rounds<N>(k0, k1, 2, w);
  }

  // When the rows share row_hi, round 1's a2 = row_hi ^ k1[0] ^ hi(block * M0) is one scalar, so
  // its product is a scalar multiply: the block's share of rounds 1-2 is three broadcast words,
  // the same for every group of rows with that row_hi (computed once for all of them).
  struct Shared {
    V lo0, hi2, lo2;  // lo(block * M0); hi and lo of round 1's a2 * M1
  };
  inline Shared shared(uint32_t block) const {
    const uint64_t p0 = static_cast<uint64_t>(block) * M0;
    const uint64_t p2 = static_cast<uint64_t>(rh_s ^ static_cast<uint32_t>(p0 >> 32)) * M1;
    return {Ops::set1_32(static_cast<uint32_t>(p0)), Ops::set1_32(static_cast<uint32_t>(p2 >> 32)),
            Ops::set1_32(static_cast<uint32_t>(p2))};
  }

  // after_round2() from a block's shared() words, for rows that share row_hi (rows_share_hi).
  inline void after_round2(const Shared& s, int h, V a[4]) const {
    a[0] = Ops::xor2(s.hi2, a1k[h]);
    a[1] = s.lo2;
    a[2] = Ops::xor2(h2[h], s.lo0);
    a[3] = l2[h];
  }

  // blocks<N>() for rows that share row_hi (rows_share_hi), from the blocks' shared() words.
  template <int N>
  inline void blocks_shared(const Shared* s, V w[N][4][2]) const {
#pragma GCC unroll 4
    for (int n = 0; n < N; ++n)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        V a[4];
        after_round2(s[n], h, a);
        for (int k = 0; k < 4; ++k) w[n][k][h] = a[k];
      }
    rounds<N>(k0, k1, 2, w);
  }

  // 32-bit lane l of the callers' decision vectors holds row lane_row(l): even lanes rows
  // 0..kRows-1, odd lanes the other half (how the two halves' 64-bit products interleave).
  static constexpr int lane_row(int l) { return (l & 1) * Ops::kRows + (l >> 1); }

  // initial_state() of the 2 * kRows rows (words 0 and 1 of block 0 in kDomainInitial, drawn from
  // init_a) as the callers' codes: lane[l] = K * the state of row lane_row(l).
  inline void initial_codes(const AliasTables& init_a, uint32_t K, uint32_t* lane) const {
    V w[4][2];
    (*this)(0, w, kDomainInitial);
    alignas(64) uint64_t hi[2 * Ops::kRows], lo[2 * Ops::kRows];
    for (int h = 0; h < 2; ++h) {
      Ops::store64(hi + Ops::kRows * h, w[0][h]);
      Ops::store64(lo + Ops::kRows * h, w[1][h]);
    }
    for (int l = 0; l < 2 * Ops::kRows; ++l) {
      const int i = lane_row(l);
      lane[l] = K * alias_draw64(static_cast<uint32_t>(hi[i]), static_cast<uint32_t>(lo[i]), init_a.K,
                                 init_a.thresh.data(), init_a.alias.data());
    }
  }

  // Any domain and block, all ten rounds (the initial states' block).
  inline void operator()(uint32_t block, V w[4][2], uint32_t domain) const {
    V a[1][4][2];
    for (int h = 0; h < 2; ++h) {
      a[0][0][h] = Ops::set1_64(block);
      a[0][1][h] = Ops::set1_64(domain);
      a[0][2][h] = c2[h];
      a[0][3][h] = c3[h];
    }
    rounds<1>(k0, k1, 0, a);
    for (int k = 0; k < 4; ++k)
      for (int h = 0; h < 2; ++h) w[k][h] = a[0][k][h];
  }
};

}  // namespace compmech
