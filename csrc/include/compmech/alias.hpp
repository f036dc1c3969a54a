// Host-side construction of the alias tables that hidden-state sampling draws from. The CPU
// sampler and the CUDA sampler use the same tables (built here, once per call), so both make
// the same decisions on the same Philox words: same tokens, bit for bit.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace compmech {

// Vose's alias tables for n_dist distributions over K outcomes each (weights need not sum to
// 1). Thresholds are 64-bit fixed point, floor(q * 2^64) of the bucket's own share q in [0, 1)
// (see alias_draw64 for how a draw uses them); a full bucket aliases to itself.
struct AliasTables {
  uint32_t K = 0;
  std::vector<uint64_t> thresh;
  std::vector<uint32_t> alias;
};

// floor(q * 2^64) for q in [0, 1] (exact: q * 2^64 is a double with at most 53 significant bits),
// saturating at 2^64 - 1.
inline uint64_t fixed64(double q) {
  if (!(q > 0.0)) return 0;
  if (q >= 1.0) return ~uint64_t(0);
  return static_cast<uint64_t>(q * 18446744073709551616.0);
}

inline AliasTables build_alias(const double* weights, int64_t n_dist, uint32_t K) {
  AliasTables a;
  a.K = K;
  a.thresh.assign(static_cast<size_t>(n_dist) * K, 0);
  a.alias.assign(static_cast<size_t>(n_dist) * K, 0);
  std::vector<double> q(K);
  std::vector<uint32_t> small, large;
  for (int64_t d = 0; d < n_dist; ++d) {
    const double* wd = weights + d * K;
    double total = 0.0;
    for (uint32_t k = 0; k < K; ++k) total += wd[k];
    small.clear();
    large.clear();
    for (uint32_t k = 0; k < K; ++k) {
      q[k] = total > 0 ? wd[k] * K / total : 1.0;
      (q[k] < 1.0 ? small : large).push_back(k);
    }
    uint64_t* th = a.thresh.data() + d * K;
    uint32_t* al = a.alias.data() + d * K;
    while (!small.empty() && !large.empty()) {
      const uint32_t s = small.back(), l = large.back();
      small.pop_back();
      th[s] = fixed64(q[s]);
      al[s] = l;
      q[l] -= 1.0 - q[s];
      if (q[l] < 1.0) {
        large.pop_back();
        small.push_back(l);
      }
    }
    // Leftovers are full buckets up to round-off. A leftover with q == 0 exactly (a zero
    // weight) must never be drawn, so it points at some bucket with positive weight.
    for (uint32_t k : large) { th[k] = ~uint64_t(0); al[k] = k; }
    for (uint32_t k : small) {
      th[k] = ~uint64_t(0);
      al[k] = k;
      if (wd[k] <= 0.0) {
        uint32_t best = 0;
        for (uint32_t m = 0; m < K; ++m) if (wd[m] > wd[best]) best = m;
        th[k] = 0;
        al[k] = best;
      }
    }
  }
  return a;
}

// Everything hidden-state sampling needs. Leaving state i, outcome o = x * S + j (emit x, go
// to j) has weight T[x, i, j]; row i of `trans` is that distribution over K = V * S outcomes.
// `packed` (only when V <= 256 and S <= 256) holds, per (state, bucket), the threshold's high 32
// bits and both candidate outcomes as (token << 8 | next state): one 64-bit load per draw; the
// rare draw that the high bits leave undecided reads `trans` (see packed_alias_fast).
struct HmmTables {
  int V = 0, S = 0;
  AliasTables init, trans;
  std::vector<uint64_t> packed;

  static bool packable(int V, int S) { return V <= 256 && S <= 256; }
};

inline HmmTables build_hmm_tables(const double* T, const double* init, int V, int S) {
  HmmTables h;
  h.V = V;
  h.S = S;
  const uint32_t K = static_cast<uint32_t>(V) * static_cast<uint32_t>(S);
  std::vector<double> joint(static_cast<size_t>(S) * K);
  for (int i = 0; i < S; ++i)
    for (int x = 0; x < V; ++x)
      for (int j = 0; j < S; ++j)
        joint[static_cast<size_t>(i) * K + static_cast<size_t>(x) * S + j] = T[(static_cast<int64_t>(x) * S + i) * S + j];
  h.trans = build_alias(joint.data(), S, K);
  h.init = build_alias(init, 1, static_cast<uint32_t>(S));
  if (HmmTables::packable(V, S)) {
    h.packed.resize(h.trans.thresh.size());
    const auto code = [S](uint32_t o) { return static_cast<uint64_t>(((o / S) << 8) | (o % S)); };
    for (size_t idx = 0; idx < h.packed.size(); ++idx)
      h.packed[idx] = (h.trans.thresh[idx] & 0xFFFFFFFF00000000ull) | (code(h.trans.alias[idx]) << 16) |
                      code(static_cast<uint32_t>(idx % K));
  }
  return h;
}

}  // namespace compmech
