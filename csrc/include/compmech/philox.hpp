// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// Counter-based: the output is a pure function of (key, counter), so every sampled value
// depends only on the seed and its (row, position) — never on threads, batch split or device.
#pragma once
#include "compmech/common.hpp"

namespace compmech {

struct U32x4 {
  uint32_t v[4];
};

CM_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

CM_HD U32x4 philox4x32_10(U32x4 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(M0, ctr.v[0], hi0, lo0);
    mulhilo32(M1, ctr.v[2], hi1, lo1);
    ctr = U32x4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += W0;
    k1 += W1;
  }
  return ctr;
}

// Stream layout, shared by every launcher (CPU and GPU must agree bit for bit):
//   key     = the 64-bit seed
//   counter = (block, domain, row_lo, row_hi); one call yields 4 words.
//   domain 0: the token draw at position t uses block t / 4, word t % 4 (its high 32 bits).
//   domain 2: the same place, block t / 4, word t % 4, holds the draw's low 32 bits.
//   domain 1: the initial hidden state uses block 0, words 0 (high) and 1 (low).
// A draw is a 64-bit uniform; hidden-state sampling reads its low word only in the rare draw
// (about 2K in 2^32 for K outcomes per state) that the high word leaves undecided.
enum : uint32_t { kDomainTokens = 0, kDomainInitial = 1, kDomainTokensLow = 2 };

CM_HD U32x4 philox_block(uint64_t seed, uint64_t row, uint32_t domain, uint32_t block) {
  U32x4 c{{block, domain, static_cast<uint32_t>(row), static_cast<uint32_t>(row >> 32)}};
  return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Word k (0..3) of a block, selected without indexing (a GPU thread keeps the block in registers).
CM_HD uint32_t word_of(const U32x4& r, int k) {
  return k == 0 ? r.v[0] : k == 1 ? r.v[1] : k == 2 ? r.v[2] : r.v[3];
}

// Uniform double in [0, 1) with 53-bit resolution from a draw's high and low words (GHMM
// sampling): the top 53 bits of hi * 2^32 + lo, times 2^-53 (exact).
CM_HD double u64_to_unit(uint32_t hi, uint32_t lo) {
  const uint64_t x = (static_cast<uint64_t>(hi) << 21) | (lo >> 11);
  return static_cast<double>(x) * (1.0 / 9007199254740992.0);
}

}  // namespace compmech
