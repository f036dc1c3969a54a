// Kernel bodies: one small inline function per operation, shared by the CPU launchers
// (csrc/cpu) and the CUDA kernels (csrc/cuda), so CPU tests exercise the GPU's arithmetic.
//
// Conventions (see docs/design.md): T is (V, S, S) row-major, T[x, i, j] = P(x, j | i).
// Beliefs are kept normalised so that eta . w == 1 (w = ones for HMMs); then
// P(x | eta) = eta T[x] w and the next belief is eta T[x] / P(x | eta).
#pragma once
#include <cmath>

#include "compmech/common.hpp"
#include "compmech/philox.hpp"

namespace compmech {

// a * b + c for the dot products below, rounded once wherever the build has FMA (every GPU, and
// CPU builds for a CPU with it), as the compiler contracts it everywhere else. Spelled out
// because GCC vectorizes a plain `s += a[i] * b[i]` loop over a runtime length as vector products
// followed by in-order scalar adds, which are never fused: such a sum then differed in its last
// bit from the GPU's and from the unrolled fixed-S loops'. SIMD vector types (one lane per
// sequence) take the plain expression, which is contracted lane by lane.
template <typename C, typename B>
CM_HD C fused_madd(C a, B b, C c) {
  return a * b + c;
}
CM_HD double fused_madd(double a, double b, double c) {
#if defined(__CUDA_ARCH__) || defined(__FMA__)
  return fma(a, b, c);
#else
  return a * b + c;
#endif
}

// out = eta @ T[x] (unnormalised); returns out . w, i.e. P(x | eta) for a normalised eta.
// SC > 0 fixes S at compile time (fully unrolled); SC == 0 uses the runtime S.
// w == nullptr means w = ones (HMM).
// C may also be a SIMD vector of doubles (one lane per sequence): only +, * and
// scalar broadcasts are used.
template <int SC, typename C, typename E>
CM_HD C belief_step(const E* eta, const double* Tx, const double* w, C* out, int S) {
  const int n = SC > 0 ? SC : S;
  for (int j = 0; j < n; ++j) out[j] = C{};
  for (int i = 0; i < n; ++i) {
    const C e = eta[i];
    const double* row = Tx + static_cast<int64_t>(i) * n;
    for (int j = 0; j < n; ++j) out[j] += e * row[j];
  }
  C norm{};
  if (w) {
    for (int j = 0; j < n; ++j) norm = fused_madd(out[j], w[j], norm);
  } else {
    for (int j = 0; j < n; ++j) norm += out[j];
  }
  return norm;
}

// belief_step for a runtime S <= CAP: every loop runs to the compile-time CAP, guarded by S, so
// a GPU thread keeps eta and out in registers (a loop of runtime length over a per-thread array
// would put the array in slow local memory). out[S..CAP) is 0. Same arithmetic order as
// belief_step, hence the same bits.
template <int CAP, typename C, typename E>
CM_HD C belief_step_padded(const E* eta, const double* Tx, const double* w, C* out, int S) {
  CM_UNROLL
  for (int j = 0; j < CAP; ++j) out[j] = C{};
  CM_UNROLL
  for (int i = 0; i < CAP; ++i) {
    if (i < S) {
      const C e = eta[i];
      const double* row = Tx + static_cast<int64_t>(i) * S;
      CM_UNROLL
      for (int j = 0; j < CAP; ++j)
        if (j < S) out[j] += e * row[j];
    }
  }
  C norm{};
  if (w) {
    CM_UNROLL
    for (int j = 0; j < CAP; ++j)
      if (j < S) norm = fused_madd(out[j], w[j], norm);
  } else {
    CM_UNROLL
    for (int j = 0; j < CAP; ++j)
      if (j < S) norm += out[j];
  }
  return norm;
}

// 1/norm overflows for a subnormal norm (below ~5.6e-309), yet such a token is possible. Every
// path normalises as out * (1 / norm) after scaling out and norm by 2^600 (exact) when norm is
// below kTinyNorm, so tiny probabilities stay finite and all paths stay bit-identical.
constexpr double kTinyNorm = 1e-290;
constexpr double kTinyScale = 0x1p600;

// Returns 1 / norm, first rescaling out[0..n) when norm is tiny.
template <typename C>
CM_HD C safe_inverse(C norm, C* out, int n) {
  if (norm < kTinyNorm) {
    for (int j = 0; j < n; ++j) out[j] *= kTinyScale;
    norm *= kTinyScale;
  }
  return C(1) / norm;
}

// dst = nxt / norm (via safe_inverse, so tiny norms stay finite): a normalised belief stored
// in the output precision. N > 0: nxt holds N >= S entries, zero past S, and every loop runs
// to the compile-time N (see belief_step_padded).
template <int N = 0, typename Out>
CM_HD void store_normalised(double* nxt, double norm, int S, Out* dst) {
  const int n = N > 0 ? N : S;
  const double inv = safe_inverse(norm, nxt, n);
  CM_UNROLL
  for (int j = 0; j < n; ++j)
    if (N == 0 || j < S) dst[j] = static_cast<Out>(nxt[j] * inv);
}

// P(x | eta) = eta . Tw[x], given Tw[x, i] = (T[x] w)_i (precomputed).
template <typename C, typename E>
CM_HD C token_prob(const E* eta, const double* Tw, int x, int S) {
  C p = C(0);
  for (int i = 0; i < S; ++i) p = fused_madd(static_cast<C>(eta[i]), static_cast<C>(Tw[static_cast<int64_t>(x) * S + i]), p);
  return p;
}

// token_prob for a runtime S <= CAP (see belief_step_padded).
template <int CAP, typename C, typename E>
CM_HD C token_prob_padded(const E* eta, const double* Tw, int x, int S) {
  C p = C(0);
  CM_UNROLL
  for (int i = 0; i < CAP; ++i)
    if (i < S) p = fused_madd(static_cast<C>(eta[i]), static_cast<C>(Tw[static_cast<int64_t>(x) * S + i]), p);
  return p;
}

// Whether p = P(x | eta) (token_prob's value) is negative beyond round-off. A state of a GHMM gives
// every token a probability >= 0, so eta is then not one (an initial vector outside the process's
// states, which a GHMM may carry for a while before some token's probability turns negative).
// Round-off is judged against sum_i |eta_i Tw[x, i]|, so that large cancelling terms do not trip it.
CM_HD bool negative_token_prob(double p, const double* eta, const double* Tw, int x, int S, double tol) {
  if (!(p < -tol)) return false;
  double mag = 0.0;
  for (int i = 0; i < S; ++i) mag += fabs(eta[i] * Tw[static_cast<int64_t>(x) * S + i]);
  return p < -tol * (mag > 1.0 ? mag : 1.0);
}

// Tw[x, i] = (T[x] w)_i (w = ones for HMMs), the weights token_prob takes. One definition for
// the CPU and the GPU samplers, so both draw from the same numbers.
inline void token_weights(const double* T, const double* w, int V, int S, double* Tw) {
  for (int x = 0; x < V; ++x)
    for (int i = 0; i < S; ++i) {
      double s = 0.0;
      for (int j = 0; j < S; ++j) s += T[(static_cast<int64_t>(x) * S + i) * S + j] * (w ? w[j] : 1.0);
      Tw[static_cast<int64_t>(x) * S + i] = s;
    }
}

// P(x | eta) for every token x.
template <typename C, typename E>
CM_HD void next_token_probs(const E* eta, const double* Tw, int V, int S, C* probs) {
  for (int x = 0; x < V; ++x) probs[x] = token_prob<C>(eta, Tw, x, S);
}

// Walker alias draw over K outcomes, exact to 2^-64. The draw is the 64-bit uniform
// U = hi * 2^32 + lo (two Philox words, see philox.hpp); P = U * K picks bucket P >> 64, whose own
// outcome is taken when the fraction P mod 2^64 is below the bucket's 64-bit threshold, else its
// alias. Every path (scalar, SIMD, GPU) makes exactly this decision.
CM_HD uint32_t alias_draw64(uint32_t hi, uint32_t lo, uint32_t K, const uint64_t* thresh, const uint32_t* alias) {
  const uint64_t plo = static_cast<uint64_t>(lo) * K;
  const uint64_t m = static_cast<uint64_t>(hi) * K + (plo >> 32);  // (U * K) >> 32, < K * 2^32
  const uint32_t bucket = static_cast<uint32_t>(m >> 32);
  const uint64_t frac = (m << 32) | static_cast<uint32_t>(plo);
  return frac < thresh[bucket] ? bucket : alias[bucket];
}

// Whether the high word alone decides alias_draw64 for a bucket whose threshold's high 32 bits
// are th_hi. With m = hi * K, the low word adds c in [0, K) to the fraction's high half
// frac_hi = (uint32)m: so the bucket is m >> 32 and the decision is frac_hi < th_hi, unless
// frac_hi may carry into the next bucket or th_hi - frac_hi lies in [0, K). Undecided draws
// (about 2K in 2^32) are redone by alias_draw64 with the low word.
CM_HD bool alias_decided(uint32_t frac_hi, uint32_t th_hi, uint32_t K) {
  return static_cast<uint32_t>(th_hi - frac_hi) >= K && frac_hi <= static_cast<uint32_t>(0u - K);
}

// Fast alias draw from the high word: returns false when the low word is needed (then call
// alias_draw64), else sets `out`.
CM_HD bool alias_draw_fast(uint32_t hi, uint32_t K, const uint64_t* thresh, const uint32_t* alias, uint32_t& out) {
  const uint64_t m = static_cast<uint64_t>(hi) * K;
  const uint32_t bucket = static_cast<uint32_t>(m >> 32), frac = static_cast<uint32_t>(m);
  const uint32_t th_hi = static_cast<uint32_t>(thresh[bucket] >> 32);
  out = frac < th_hi ? bucket : alias[bucket];
  return alias_decided(frac, th_hi, K);
}

// Fast draw over packed entries (build_hmm_tables): row_tab is the leaving state's row of K
// entries, each (threshold's high 32 bits << 32 | alias code << 16 | own code). Sets the drawn
// outcome's code, token << 8 | next state, and returns whether the high word decided it.
CM_HD bool packed_alias_fast(uint32_t hi, uint32_t K, const uint64_t* row_tab, uint32_t& code) {
  const uint64_t m = static_cast<uint64_t>(hi) * K;
  const uint64_t e = row_tab[static_cast<uint32_t>(m >> 32)];
  const uint32_t frac = static_cast<uint32_t>(m), th_hi = static_cast<uint32_t>(e >> 32);
  code = static_cast<uint32_t>(e >> (frac < th_hi ? 0 : 16)) & 0xFFFF;
  return alias_decided(frac, th_hi, K);
}

// The code (token << 8 | next state) of outcome o = token * S + next state.
CM_HD uint32_t outcome_code(uint32_t o, int S) {
  return ((o / static_cast<uint32_t>(S)) << 8) | (o % static_cast<uint32_t>(S));
}

// The low word of the draw at position t of a row (domain kDomainTokensLow).
CM_HD uint32_t low_word(uint64_t seed, uint64_t row, int64_t t) {
  return word_of(philox_block(seed, row, kDomainTokensLow, static_cast<uint32_t>(t >> 2)), static_cast<int>(t & 3));
}

// The initial hidden state of a row: alias_draw64 on words 0 (high) and 1 (low) of its
// kDomainInitial block.
CM_HD uint32_t initial_state(uint64_t seed, uint64_t row, uint32_t S, const uint64_t* thresh, const uint32_t* alias) {
  const U32x4 r = philox_block(seed, row, kDomainInitial, 0);
  return alias_draw64(r.v[0], r.v[1], S, thresh, alias);
}

// Inverse-CDF draw from unnormalised weights prob(0..V-1) with total `total` (the sum of the
// weights above `tol`); weights <= tol (GHMM round-off, or below its zero tolerance) count as
// zero. Never returns such an index unless all are (the caller checks total > 0). `prob` is a
// callable so the GPU can recompute weights instead of holding V of them per thread.
template <typename C, typename P>
CM_HD int categorical_draw_fn(P&& prob, int V, C total, double u, C tol) {
  C target = static_cast<C>(u) * total;
  int last = -1;
  for (int x = 0; x < V; ++x) {
    const C px0 = prob(x);
    const C px = px0 > tol ? px0 : C(0);
    if (px > C(0)) {
      last = x;
      if (target < px) return x;
      target -= px;
    }
  }
  return last;  // round-off pushed target past the end: the last possible token
}

template <typename C>
CM_HD int categorical_draw(const C* p, int V, C total, double u, C tol) {
  return categorical_draw_fn<C>([p](int x) { return p[x]; }, V, total, u, tol);
}

// Natural-log probability of a sequence accumulated as mantissa * 2^expo: one multiply and a
// few bit operations per token instead of a log (norms below kTinyNorm, where the product
// could underflow, are logged directly into `extra`). Same formula as the CPU lane path.
struct LogProbAcc {
  double mant = 1.0;
  int64_t expo = 0;
  double extra = 0.0;

  CM_HD void add(double norm) {
    if (norm < kTinyNorm) {
      extra += log(norm);
      return;
    }
    int64_t bits = bits_of(mant * norm);
    expo += ((bits >> 52) & 0x7FF) - 1023;
    bits = (bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL;
    mant = double_of(bits);
  }
  CM_HD double value() const { return log(mant) + static_cast<double>(expo) * 0.69314718055994530942 + extra; }
};

// x * 2^k with one rounding, as ldexp: a multiply when 2^k is a normal double (always, on the
// paths below, except after a subnormal norm).
CM_HD double times_pow2(double x, int k) {
  if (k >= -1022 && k <= 1023) return x * double_of(static_cast<int64_t>(k + 1023) << 52);
  return ldexp(x, k);
}

// floor(log2 x) of a positive finite x (ilogb), cheap for normal numbers.
CM_HD int exponent_of(double x) {
  const int biased = static_cast<int>((bits_of(x) >> 52) & 0x7FF);
  return biased ? biased - 1023 : ilogb(x);
}

// cm.log_prob alone (no beliefs) needs no normalised belief. It propagates v' = v T[x] as it is
// and keeps v in range by exact power-of-two rescaling: after the step at position t, when
// (t + 1) % kRescaleEvery == 0 or the norm fell below kRescaleBelow, v and the norm are
// multiplied by 2^-e with e = floor(log2 norm), and e is added to an integer. The division per
// step, its 3 multiplies and the product of norms go away. Power-of-two scaling is exact (no
// value is rounded by it unless it is subnormal), so every path that follows this schedule gets
// the same bits. v . w stays in [2^-64, 2), so, compared with normalised beliefs, subnormals
// appear at most 64 binades earlier: at most, a sequence whose log-probability is finite and
// representable stays finite. log P = log(m) + E log 2, where m in [1, 2) is the
// last norm's mantissa and E the sum of exponents taken out.
constexpr int kRescaleEvery = 8;
constexpr double kRescaleBelow = 0x1p-64;

struct ScaledLogProb {
  double last = 1.0;  // v . w as computed: the last step's norm in v's current scale
  int64_t expo = 0;   // sum of the exponents taken out of v

  // The step's token is possible: P(x | eta) = norm / (v . w) > zero_tol (zero_tol = 0 for HMMs).
  CM_HD bool possible(double norm, double zero_tol) const { return norm > zero_tol * last; }
  // After a possible step at position t: v[0..n) holds v T[x], norm its (v T[x]) . w.
  template <typename C>
  CM_HD void settle(int64_t t, double norm, C* v, int n) {
    last = norm;
    if ((t + 1) % kRescaleEvery == 0 || norm < kRescaleBelow) {
      const int e = exponent_of(norm);
      for (int j = 0; j < n; ++j) v[j] = times_pow2(v[j], -e);
      last = times_pow2(norm, -e);
      expo += e;
    }
  }
  CM_HD double value() const {
    const int e = exponent_of(last);
    return log(times_pow2(last, -e)) + static_cast<double>(expo + e) * 0.69314718055994530942;
  }
};

}  // namespace compmech
