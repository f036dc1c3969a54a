// log2 for x > 0 in a few ulp, branch-free so that loops over it vectorise, and with every
// multiply-add an explicit std::fma: scalar and SIMD code give the same bits, which the exact
// (split-independent) entropy sums of msp_reduce.cpp rely on.
#pragma once
#include <cmath>
#include <cstdint>

#include "compmech/common.hpp"

namespace compmech {

inline double fast_log2(double x) {
  // Subnormal and tiny inputs are scaled up by 2^600 first (exact).
  const bool tiny = x < 0x1p-1000;
  x = tiny ? x * 0x1p600 : x;
  const int64_t b = bits_of(x);
  int64_t e = ((b >> 52) & 0x7ff) - 1023 - (tiny ? 600 : 0);
  double m = double_of((b & 0xFFFFFFFFFFFFFLL) | 0x3FF0000000000000LL);  // [1, 2)
  const bool big = m > 1.4142135623730951;
  m = big ? m * 0.5 : m;  // [sqrt(1/2), sqrt(2)): |s| <= 0.1716
  e += big ? 1 : 0;
  // log2 m = s * P(s^2), s = (m - 1) / (m + 1), P(t) = 2/ln2 * sum_k t^k / (2k + 1) to t^10.
  const double s = (m - 1.0) / (m + 1.0);
  const double t = s * s;
  double p = 0.1373995277037108;
  p = std::fma(p, t, 0.15186263588304877);
  p = std::fma(p, t, 0.16972882833987804);
  p = std::fma(p, t, 0.19235933878519512);
  p = std::fma(p, t, 0.2219530832136867);
  p = std::fma(p, t, 0.2623081892525388);
  p = std::fma(p, t, 0.3205988979753252);
  p = std::fma(p, t, 0.41219858311113244);
  p = std::fma(p, t, 0.5770780163555853);
  p = std::fma(p, t, 0.9617966939259757);
  p = std::fma(p, t, 2.8853900817779268);
  return std::fma(s, p, static_cast<double>(e));
}

}  // namespace compmech
