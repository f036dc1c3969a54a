// Alias tables small enough to live in vector registers (S * V * S <= 32 entries, e.g. Mess3),
// shared by the AVX-512 and AVX2 register paths. ISA-neutral.
#pragma once
#include <cstdint>

#include "compmech/alias.hpp"

namespace compmech {

// Table entry e[s * K + b] = alias code << 16 | own code, code = token << 8 | next state * K;
// th[s * K + b] = the bucket threshold's high 32 bits.
struct RegTables {
  alignas(64) uint32_t th[32] = {};
  alignas(64) uint32_t e[32] = {};
  uint32_t K = 0;
  int S = 0;

  static bool fits(int V, int S) { return static_cast<int64_t>(V) * S * S <= 32; }
};

inline RegTables reg_tables(const AliasTables& tr, int S) {
  RegTables rt;
  rt.K = tr.K;
  rt.S = S;
  const auto code = [&](uint32_t o) { return ((o / S) << 8) | ((o % S) * tr.K); };
  for (uint32_t idx = 0; idx < S * tr.K; ++idx) {
    rt.th[idx] = static_cast<uint32_t>(tr.thresh[idx] >> 32);
    rt.e[idx] = (code(tr.alias[idx]) << 16) | code(idx % tr.K);
  }
  return rt;
}

}  // namespace compmech
