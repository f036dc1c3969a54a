// Exact (order-independent) summation of doubles into a 192-bit two's-complement fixed-point
// number with unit 2^-128 (range |sum| < 2^63). Each term is converted exactly, except that bits
// below 2^-128 are truncated (toward zero), so a sum is the same bits whatever the order, the
// threads, the shards or the workers: distributed reductions merge by integer addition.
#pragma once
#include <cstdint>

#include "compmech/common.hpp"

namespace compmech {

struct ExactSum {
  uint64_t limb[3] = {0, 0, 0};  // little-endian; limb[2]'s top bit is the sign

  inline void add_magnitude(uint64_t m, int s, bool neg) {
    // m * 2^s in units of 2^-128, s >= 0, m < 2^53, s + 53 <= 190.
    uint64_t v[3] = {0, 0, 0};
    const int li = s >> 6, bit = s & 63;
    v[li] = m << bit;
    if (bit && li < 2) v[li + 1] = m >> (64 - bit);
    if (neg) {  // two's complement negation of v
      v[0] = ~v[0];
      v[1] = ~v[1];
      v[2] = ~v[2];
      if (++v[0] == 0 && ++v[1] == 0) ++v[2];
    }
    unsigned __int128 acc = static_cast<unsigned __int128>(limb[0]) + v[0];
    limb[0] = static_cast<uint64_t>(acc);
    acc = static_cast<unsigned __int128>(limb[1]) + v[1] + static_cast<uint64_t>(acc >> 64);
    limb[1] = static_cast<uint64_t>(acc);
    limb[2] += v[2] + static_cast<uint64_t>(acc >> 64);
  }

  // Adds x (finite, |x| < 2^62). Returns false (and adds nothing) when x is out of range.
  inline bool add(double x) {
    const uint64_t b = static_cast<uint64_t>(bits_of(x));
    const int ex = static_cast<int>((b >> 52) & 0x7ff);
    if (ex == 0x7ff || ex >= 1023 + 62) return false;
    uint64_t m = b & ((uint64_t(1) << 52) - 1);
    if (ex) m |= uint64_t(1) << 52;
    if (m == 0) return true;
    int s = (ex ? ex : 1) - 1075 + 128;  // x = m * 2^(s - 128)
    if (s < 0) {
      if (s <= -53) return true;  // below the unit: truncated to 0
      m >>= -s;
      s = 0;
    }
    add_magnitude(m, s, (b >> 63) != 0);
    return true;
  }

  inline void merge(const ExactSum& o) {
    unsigned __int128 acc = static_cast<unsigned __int128>(limb[0]) + o.limb[0];
    limb[0] = static_cast<uint64_t>(acc);
    acc = static_cast<unsigned __int128>(limb[1]) + o.limb[1] + static_cast<uint64_t>(acc >> 64);
    limb[1] = static_cast<uint64_t>(acc);
    limb[2] += o.limb[2] + static_cast<uint64_t>(acc >> 64);
  }
};

}  // namespace compmech

namespace compmech {

// Cheaper exact accumulator for the hot loop: a 128-bit integer in units of 2^-100, range
// |sum| < 2^26 (bits below 2^-100 are truncated, toward zero, per term). Converted to an
// ExactSum (unit 2^-128) at the end, so it merges with everything else.
struct ExactSum128 {
  __int128 v = 0;

  inline bool add(double x) {
    const uint64_t b = static_cast<uint64_t>(bits_of(x));
    const int ex = static_cast<int>((b >> 52) & 0x7ff);
    if (ex >= 1023 + 26) return false;  // also inf / nan
    uint64_t m = b & ((uint64_t(1) << 52) - 1);
    if (ex) m |= uint64_t(1) << 52;
    const int s = (ex ? ex : 1) - 1075 + 100;  // x = m * 2^(s - 100)
    __int128 mag;
    if (s >= 0) {
      mag = static_cast<__int128>(m) << s;  // s <= 74 + 1: fits
    } else {
      mag = s <= -53 ? 0 : static_cast<__int128>(m >> -s);
    }
    v += (b >> 63) ? -mag : mag;
    return true;
  }

  inline ExactSum exact() const {
    // v * 2^28 as a 192-bit two's complement number.
    const unsigned __int128 u = static_cast<unsigned __int128>(v);
    const uint64_t lo = static_cast<uint64_t>(u), hi = static_cast<uint64_t>(u >> 64);
    ExactSum r;
    r.limb[0] = lo << 28;
    r.limb[1] = (hi << 28) | (lo >> 36);
    r.limb[2] = (v < 0 ? ~uint64_t(0) << 28 : 0) | (hi >> 36);
    return r;
  }
};

}  // namespace compmech
