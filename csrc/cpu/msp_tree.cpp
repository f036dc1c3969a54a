#include <algorithm>
#include <vector>

#include "compmech/dispatch.hpp"
#include "compmech/kernels.hpp"
#include "launchers.hpp"
#include "parallel.hpp"
#include "simd.hpp"

namespace compmech {
namespace {

// Visits the children of parents [b, e) in (parent, token) order; emit(parent, x, belief, prob)
// is called for each possible child. The belief is normalised in place in `nxt`.
template <int SC, bool GH, typename Out, typename Emit>
void expand_range(const ProcessView& p, const Out* par_beliefs, const double* par_probs, int64_t b, int64_t e,
                  double min_prob, double* nxt, Emit&& emit) {
  const int S = SC > 0 ? SC : p.S;
  const double* w = GH ? p.w : nullptr;
  for (int64_t i = b; i < e; ++i) {
    const Out* eta = par_beliefs + i * S;
    const double pp = par_probs[i];
    for (int x = 0; x < p.V; ++x) {
      const double cond = belief_step<SC, double>(eta, p.T + static_cast<int64_t>(x) * S * S, w, nxt, S);
      if (!(cond > p.zero_tol)) continue;
      const double pc = pp * cond;
      if (!(pc > 0.0) || pc < min_prob) continue;
      emit(i, x, cond, pc);
    }
  }
}

template <int SC, bool GH, typename Out>
void count_chunk(const ProcessView& p, const Out* pb, const double* pp, int64_t b, int64_t e, double min_prob,
                 int64_t* count) {
  std::vector<double> nxt(static_cast<size_t>(p.S));
  int64_t n = 0;
  expand_range<SC, GH>(p, pb, pp, b, e, min_prob, nxt.data(), [&](int64_t, int, double, double) { ++n; });
  *count = n;
}

template <int SC, bool GH, typename Out, typename Tok>
int64_t fill_chunk(const ProcessView& p, const Out* pb, const double* pp, int64_t b, int64_t e, double min_prob,
                   int64_t offset, Out* beliefs, double* probs, int32_t* parent, Tok* token) {
  const int S = SC > 0 ? SC : p.S;
  std::vector<double> nxt_buf(static_cast<size_t>(S));
  double* nxt = nxt_buf.data();
  int64_t k = offset;
  expand_range<SC, GH>(p, pb, pp, b, e, min_prob, nxt, [&](int64_t i, int x, double cond, double pc) {
    store_normalised(nxt, cond, S, beliefs + k * S);
    probs[k] = pc;
    parent[k] = static_cast<int32_t>(i);
    token[k] = static_cast<Tok>(x);
    ++k;
  });
  return k - offset;
}

// Full-level fast path (every child kept): child (i, x) lands at i * V + x, so four parents
// share SIMD lanes and T[x] is a broadcast. Returns false as soon as a child would be dropped;
// the caller then redoes the level with the counting pass.
template <int SC, bool GH, typename Out, typename Tok>
bool fill_full(const ProcessView& p, const Out* pb, const double* pp, int64_t b, int64_t e, double min_prob,
               Out* beliefs, double* probs, int32_t* parent, Tok* token) {
  const int V = p.V;
  const double* w = GH ? p.w : nullptr;
  const auto keep = [&](double cond, double pc) { return cond > p.zero_tol && pc > 0.0 && pc >= min_prob; };
  int64_t i = b;
  for (; i + 4 <= e; i += 4) {
    vd4 eta[SC];
    for (int j = 0; j < SC; ++j)
      for (int l = 0; l < 4; ++l) eta[j][l] = static_cast<double>(pb[(i + l) * SC + j]);
    const vd4 ppv = {pp[i], pp[i + 1], pp[i + 2], pp[i + 3]};
    for (int x = 0; x < V; ++x) {
      vd4 nxt[SC];
      const vd4 cond = belief_step<SC, vd4>(eta, p.T + static_cast<int64_t>(x) * SC * SC, w, nxt, SC);
      const vd4 pc = ppv * cond;
      if (!all_lanes((cond > p.zero_tol) & (pc > 0.0) & (pc >= min_prob))) return false;
      const vd4 inv = safe_inverse_lanes(cond, nxt, SC);
      for (int j = 0; j < SC; ++j) nxt[j] *= inv;
      const int64_t k0 = i * V + x;
      store_lanes<SC>(nxt, beliefs + k0 * SC, static_cast<int64_t>(V) * SC);
      for (int l = 0; l < 4; ++l) {
        probs[k0 + l * V] = pc[l];
        parent[k0 + l * V] = static_cast<int32_t>(i + l);
        token[k0 + l * V] = static_cast<Tok>(x);
      }
    }
  }
  double nxt[SC];
  for (; i < e; ++i)
    for (int x = 0; x < V; ++x) {
      const double cond = belief_step<SC, double>(pb + i * SC, p.T + static_cast<int64_t>(x) * SC * SC, w, nxt, SC);
      const double pc = pp[i] * cond;
      if (!keep(cond, pc)) return false;
      const int64_t k = i * V + x;
      store_normalised(nxt, cond, SC, beliefs + k * SC);  // the lanes' arithmetic above: bit-identical
      probs[k] = pc;
      parent[k] = static_cast<int32_t>(i);
      token[k] = static_cast<Tok>(x);
    }
  return true;
}

}  // namespace

template <typename Out>
void msp_count(const ProcessView& p, const Out* pb, const double* pp, int64_t P, double min_prob, int64_t chunk,
               int64_t* counts) {
  const int64_t n_chunks = (P + chunk - 1) / chunk;
  parallel_for(n_chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = c * chunk, e = std::min(P, b + chunk);
      dispatch_process(p, [&](auto width, auto gh) {
        count_chunk<decltype(width)::fixed, decltype(gh)::value>(p, pb, pp, b, e, min_prob, counts + c);
      });
    }
  });
}

template <typename Out, typename Tok>
void msp_fill(const ProcessView& p, const Out* pb, const double* pp, int64_t P, double min_prob, int64_t chunk,
              const int64_t* offsets, Out* beliefs, double* probs, int32_t* parent, Tok* token, int64_t* counts) {
  const int64_t n_chunks = (P + chunk - 1) / chunk;
  parallel_for(n_chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = c * chunk, e = std::min(P, b + chunk);
      dispatch_process(p, [&](auto width, auto gh) {
        constexpr int SC = decltype(width)::fixed;
        constexpr bool GH = decltype(gh)::value;
        if constexpr (SC > 0) {
          if (counts) {  // optimistic full layout: offsets[c] == b * V
            counts[c] = fill_full<SC, GH>(p, pb, pp, b, e, min_prob, beliefs, probs, parent, token) ? (e - b) * p.V : -1;
            return;
          }
        }
        const int64_t n = fill_chunk<SC, GH>(p, pb, pp, b, e, min_prob, offsets[c], beliefs, probs, parent, token);
        if (counts) counts[c] = n;
      });
    }
  });
}

#define CM_INST_MSP(OUT)                                                                                   \
  template void msp_count<OUT>(const ProcessView&, const OUT*, const double*, int64_t, double, int64_t,     \
                               int64_t*);                                                                  \
  template void msp_fill<OUT, uint8_t>(const ProcessView&, const OUT*, const double*, int64_t, double,      \
                                       int64_t, const int64_t*, OUT*, double*, int32_t*, uint8_t*, int64_t*);        \
  template void msp_fill<OUT, uint16_t>(const ProcessView&, const OUT*, const double*, int64_t, double,     \
                                        int64_t, const int64_t*, OUT*, double*, int32_t*, uint16_t*, int64_t*);
CM_INST_MSP(float)
CM_INST_MSP(double)
#undef CM_INST_MSP

}  // namespace compmech
