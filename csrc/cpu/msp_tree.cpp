#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "compmech/dispatch.hpp"
#include "compmech/kernels.hpp"
#include "launchers.hpp"
#include "parallel.hpp"
#include "simd.hpp"
#include "transpose4.hpp"

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

// ---- full levels (every child kept) --------------------------------------------------------
// Child (i, x) lands at i * V + x, so W parents share the SIMD lanes (8 with AVX-512, else 4)
// and T[x] is a broadcast; only beliefs and probs are written (the lineage of a full level is
// implicit: parent = k / V, token = k % V).
#if defined(__AVX512F__)
using LaneVec = vd8;
#else
using LaneVec = vd4;
#endif
constexpr int kLanes = sizeof(LaneVec) / sizeof(double);

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// Lane tables for store_transposed: output vector q, element m comes from row c = f % R, lane
// l = f / R (f = flat index). Doubles: one index per q, one mask per (q, row). Floats: rows are
// paired into 16-float registers (row 2s in elements 0..7, 2s + 1 in 8..15).
template <int R>
struct Transpose8 {
  static constexpr int NQ = R;               // 8-double outputs
  static constexpr int NF = (8 * R + 15) / 16;  // 16-float outputs
  static constexpr int NS = (R + 1) / 2;     // 16-float source registers
  long long idx_d[NQ][8] = {};
  unsigned char mask_d[NQ][R] = {};
  int idx_f[NF][NS][16] = {};
  unsigned short mask_f[NF][NS] = {};
  constexpr Transpose8() {
    for (int f = 0; f < 8 * R; ++f) {
      const int l = f / R, c = f % R;
      idx_d[f / 8][f % 8] = l;
      mask_d[f / 8][c] = static_cast<unsigned char>(mask_d[f / 8][c] | (1u << (f % 8)));
      idx_f[f / 16][c / 2][f % 16] = (c % 2) * 8 + l;
      mask_f[f / 16][c / 2] = static_cast<unsigned short>(mask_f[f / 16][c / 2] | (1u << (f % 16)));
    }
  }
};
#endif

// eta[j] = value j of W consecutive parents' beliefs (SC values each) at src, in float64 lanes.
template <int SC, typename VD, typename Out>
inline void load_lanes(const Out* src, VD* eta) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<VD, vd8>::value && std::is_same<Out, float>::value && SC >= 2 && SC <= 4) {
    // the 8 parents' 8 * SC <= 32 floats: two loads (the second masked to the block), then one
    // two-source permute per state
    struct Idx {
      int v[SC][16] = {};
      constexpr Idx() {
        for (int j = 0; j < SC; ++j)
          for (int l = 0; l < 8; ++l) v[j][l] = l * SC + j;
      }
    };
    static constexpr Idx idx{};
    const __m512 a = _mm512_loadu_ps(src);
    const __m512 b = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (8 * SC - 16)) - 1), src + 16);
    for (int j = 0; j < SC; ++j) {
      const __m512 v = _mm512_permutex2var_ps(a, _mm512_loadu_si512(idx.v[j]), b);
      eta[j] = reinterpret_cast<VD>(_mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    }
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same<VD, vd4>::value && SC >= 2 && SC <= 4) return transpose4::load_lanes<SC>(src, eta);
#endif
  constexpr int W = sizeof(VD) / sizeof(double);
  for (int l = 0; l < W; ++l)
    for (int j = 0; j < SC; ++j) eta[j][l] = static_cast<double>(src[l * SC + j]);
}

// rows[c] holds value c of lanes 0..W-1; writes dst[l * R + c] for every lane l and c < R: the
// W lanes' R values, one after the other, as one contiguous block.
template <int R, typename VD, typename Out>
inline void store_transposed(const VD* rows, Out* dst) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  if constexpr (std::is_same<VD, vd8>::value) {
    static constexpr Transpose8<R> t{};
    if constexpr (std::is_same<Out, double>::value) {
#pragma GCC unroll 16
      for (int q = 0; q < R; ++q) {
        const __m512i idx = _mm512_loadu_si512(t.idx_d[q]);
        __m512d acc = _mm512_setzero_pd();
#pragma GCC unroll 16
        for (int c = 0; c < R; ++c)
          if (t.mask_d[q][c])
            acc = _mm512_mask_permutexvar_pd(acc, t.mask_d[q][c], idx, reinterpret_cast<__m512d>(rows[c]));
        _mm512_storeu_pd(dst + 8 * q, acc);
      }
      return;
    } else if constexpr (std::is_same<Out, float>::value) {
      __m512 reg[Transpose8<R>::NS];
#pragma GCC unroll 16
      for (int s = 0; s < Transpose8<R>::NS; ++s) {
        const __m256 lo = _mm512_cvtpd_ps(reinterpret_cast<__m512d>(rows[2 * s]));
        const int odd = 2 * s + 1 < R ? 2 * s + 1 : 0;
        const __m256 hi = 2 * s + 1 < R ? _mm512_cvtpd_ps(reinterpret_cast<__m512d>(rows[odd])) : _mm256_setzero_ps();
        reg[s] = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
      }
#pragma GCC unroll 16
      for (int q = 0; q < Transpose8<R>::NF; ++q) {
        __m512 acc = _mm512_setzero_ps();
#pragma GCC unroll 16
        for (int s = 0; s < Transpose8<R>::NS; ++s)
          if (t.mask_f[q][s])
            acc = _mm512_mask_permutexvar_ps(acc, t.mask_f[q][s], _mm512_loadu_si512(t.idx_f[q][s]), reg[s]);
        if (16 * q + 16 <= 8 * R) _mm512_storeu_ps(dst + 16 * q, acc);
        else _mm512_mask_storeu_ps(dst + 16 * q, static_cast<__mmask16>((1u << (8 * R - 16 * q)) - 1), acc);
      }
      return;
    }
  }
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same<VD, vd4>::value) return transpose4::store_lanes<R>(rows, dst);
#endif
  constexpr int W = sizeof(VD) / sizeof(double);
  for (int l = 0; l < W; ++l)
    for (int c = 0; c < R; ++c) dst[l * R + c] = static_cast<Out>(rows[c][l]);
}

// The full-level pass one parent at a time (fill_full's tail, and any S without a fixed-width
// path): expand_range's arithmetic at fixed offsets; false as soon as a child would be dropped.
template <int SC, typename Out>
bool full_tail(const ProcessView& p, const Out* pb, const double* pp, int64_t b, int64_t e, double min_prob,
               Out* beliefs, double* probs) {
  const int S = SC > 0 ? SC : p.S, V = p.V;
  std::vector<double> nxt(static_cast<size_t>(S));
  for (int64_t i = b; i < e; ++i)
    for (int x = 0; x < V; ++x) {
      const double* Tx = p.T + static_cast<int64_t>(x) * S * S;
      const double cond = belief_step<SC, double>(pb + i * S, Tx, p.w, nxt.data(), S);
      const double pc = pp[i] * cond;
      if (!(cond > p.zero_tol && pc > 0.0 && pc >= min_prob)) return false;
      const int64_t k = i * V + x;
      store_normalised(nxt.data(), cond, S, beliefs + k * S);
      probs[k] = pc;
    }
  return true;
}

// Children of parents [b, e), all kept, at i * V + x; VC > 0 fixes V at compile time (the
// children of W parents are then one contiguous block, stored with store_transposed). Returns
// false as soon as a child would be dropped (the caller then redoes the level by counting).
// Every lane does the scalar tail's arithmetic (store_normalised), hence the same bits.
template <int SC, int VC, bool GH, typename Out>
bool fill_full(const ProcessView& p, const Out* pb, const double* pp, int64_t b, int64_t e, double min_prob,
               Out* beliefs, double* probs) {
  using VD = LaneVec;
  using VL = decltype(VD{} < VD{});
  constexpr int W = kLanes;
  const int V = VC > 0 ? VC : p.V;
  const double *T = p.T, *w = GH ? p.w : nullptr;  // locals: the stores below cannot change them
  const double zero_tol = p.zero_tol;
  // pc > 0 and pc >= min_prob in one compare: no double lies between 0 and denorm_min (a NaN
  // min_prob stays NaN and keeps nothing, as before)
  const double least = min_prob <= 0.0 ? std::numeric_limits<double>::denorm_min() : min_prob;
  const auto kept = [&](VD cond, VD pc) { return (cond > zero_tol) & (pc >= least); };
  int64_t i = b;
  for (; i + W <= e; i += W) {
    VD eta[SC], ppv;
    load_lanes<SC>(pb + i * SC, eta);
    std::memcpy(&ppv, pp + i, sizeof(VD));
    if constexpr (VC > 0) {
      // all V children normalised as if no norm were tiny, then one test of the lanes: a drop
      // or a norm that safe_inverse rescales (both rare) sends these parents to full_tail
      VD rows[VC * SC], pcs[VC];
      VL ok = ~VL{};
      for (int x = 0; x < VC; ++x) {
        VD* nxt = rows + x * SC;
        const VD cond = belief_step<SC, VD>(eta, T + x * SC * SC, w, nxt, SC);
        pcs[x] = ppv * cond;
        ok &= kept(cond, pcs[x]) & (cond >= kTinyNorm);
        const VD inv = 1.0 / cond;
        for (int j = 0; j < SC; ++j) nxt[j] *= inv;
      }
      if (!all_of_lanes(ok)) {
        if (!full_tail<SC>(p, pb, pp, i, i + W, min_prob, beliefs, probs)) return false;
        continue;
      }
      store_transposed<VC * SC>(rows, beliefs + i * (VC * SC));
      store_transposed<VC>(pcs, probs + i * VC);
    } else {
      for (int x = 0; x < V; ++x) {
        VD nxt[SC];
        const VD cond = belief_step<SC, VD>(eta, T + static_cast<int64_t>(x) * SC * SC, w, nxt, SC);
        const VD pc = ppv * cond;
        if (!all_of_lanes(kept(cond, pc))) return false;
        const VD inv = safe_inverse_lanes(cond, nxt, SC);
        for (int l = 0; l < W; ++l) {
          const int64_t k = (i + l) * V + x;
          for (int j = 0; j < SC; ++j) beliefs[k * SC + j] = static_cast<Out>(nxt[j][l] * inv[l]);
          probs[k] = pc[l];
        }
      }
    }
  }
  return full_tail<SC>(p, pb, pp, i, e, min_prob, beliefs, probs);
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
              const int64_t* offsets, Out* beliefs, double* probs, int32_t* parent, Tok* token) {
  const int64_t n_chunks = (P + chunk - 1) / chunk;
  parallel_for(n_chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = c * chunk, e = std::min(P, b + chunk);
      dispatch_process(p, [&](auto width, auto gh) {
        fill_chunk<decltype(width)::fixed, decltype(gh)::value>(p, pb, pp, b, e, min_prob, offsets[c], beliefs, probs,
                                                                 parent, token);
      });
    }
  });
}

template <typename Out>
bool msp_fill_full(const ProcessView& p, const Out* pb, const double* pp, int64_t P, double min_prob, Out* beliefs,
                   double* probs) {
  // Chunks of ~4 MB of output: each thread first-touches (and the kernel zeroes) whole huge
  // pages of its own rather than two threads faulting on the same page. The layout is fixed,
  // so the chunk size cannot change a result.
  const int64_t per_parent = static_cast<int64_t>(p.V) * (p.S * static_cast<int64_t>(sizeof(Out)) + 8);
  const int64_t chunk = std::max<int64_t>(kLanes, ((int64_t(4) << 20) / per_parent) / kLanes * kLanes);
  std::atomic<bool> dropped{false};
  dispatch_process(p, [&](auto width, auto gh) {
    constexpr int SC = decltype(width)::fixed;
    constexpr bool GH = decltype(gh)::value;
    const auto run = [&](auto vc) {
      [[maybe_unused]] constexpr int VC = decltype(vc)::value;
      parallel_for((P + chunk - 1) / chunk, 1, [&](int64_t cb, int64_t ce) {
        for (int64_t c = cb; c < ce && !dropped.load(std::memory_order_relaxed); ++c) {
          const int64_t b = c * chunk, e = std::min(P, b + chunk);
          bool ok;
          if constexpr (SC > 0) ok = fill_full<SC, VC, GH>(p, pb, pp, b, e, min_prob, beliefs, probs);
          else ok = full_tail<SC>(p, pb, pp, b, e, min_prob, beliefs, probs);
          if (!ok) dropped = true;
        }
      });
    };
    if constexpr (SC > 0) {
      switch (p.V) {
        case 2: return run(std::integral_constant<int, 2>{});
        case 3: return run(std::integral_constant<int, 3>{});
        case 4: return run(std::integral_constant<int, 4>{});
      }
    }
    run(std::integral_constant<int, 0>{});
  });
  return !dropped.load();
}

#define CM_INST_MSP(OUT)                                                                                    \
  template void msp_count<OUT>(const ProcessView&, const OUT*, const double*, int64_t, double, int64_t,      \
                               int64_t*);                                                                   \
  template void msp_fill<OUT, uint8_t>(const ProcessView&, const OUT*, const double*, int64_t, double,       \
                                       int64_t, const int64_t*, OUT*, double*, int32_t*, uint8_t*);         \
  template void msp_fill<OUT, uint16_t>(const ProcessView&, const OUT*, const double*, int64_t, double,      \
                                        int64_t, const int64_t*, OUT*, double*, int32_t*, uint16_t*);       \
  template bool msp_fill_full<OUT>(const ProcessView&, const OUT*, const double*, int64_t, double, OUT*,     \
                                   double*);
CM_INST_MSP(float)
CM_INST_MSP(double)
#undef CM_INST_MSP

}  // namespace compmech
