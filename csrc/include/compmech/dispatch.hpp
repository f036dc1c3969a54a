// The one way kernels specialise on the number of states S (CPU launchers and CUDA kernels).
//
// A kernel is written once against a StateWidth W (W::N, W::span, W::step, W::store, W::prob)
// and instantiated by dispatch_states / dispatch_process, which pick the width for the runtime
// S. Every width does the same operations in the same order (belief_step_padded == belief_step
// bit for bit), so which width a row takes never changes its result.
#pragma once
#include <type_traits>

#include "compmech/kernels.hpp"
#include "compmech/process_view.hpp"

namespace compmech {

// Storage for one belief:
//   SC > 0:  S == SC at compile time (S = 2, 3, 4): every loop fully unrolled;
//   CAP > 0: runtime S <= CAP, loops unrolled to CAP over zero-padded arrays (these stay in GPU
//            registers; a runtime-length loop over a per-thread array would spill);
//   neither: runtime S; per-thread arrays of MAXN entries where a kernel needs them (GPU),
//            heap buffers on the CPU.
template <int SC, int CAP = 0, int MAXN = 0>
struct StateWidth {
  static constexpr int fixed = SC;  // compile-time S, or 0
  static constexpr int N = SC > 0 ? SC : (CAP > 0 ? CAP : MAXN);
  // loop bound for element-wise work on the (padded) arrays
  static CM_HD int span(int S) { return SC > 0 ? SC : (CAP > 0 ? CAP : S); }
  template <typename C, typename E>
  static CM_HD C step(const E* eta, const double* Tx, const double* w, C* out, int S) {
    if constexpr (CAP > 0) return belief_step_padded<CAP, C>(eta, Tx, w, out, S);
    else return belief_step<SC, C>(eta, Tx, w, out, S);
  }
  template <typename Out>
  static CM_HD void store(double* nxt, double norm, int S, Out* dst) {
    store_normalised<SC + CAP>(nxt, norm, S, dst);  // SC + CAP: the array length, or 0 (runtime S)
  }
  template <typename E>
  static CM_HD double prob(const E* eta, const double* Tw, int x, int S) {
    if constexpr (CAP > 0) return token_prob_padded<CAP, double>(eta, Tw, x, S);
    else return token_prob<double>(eta, Tw, x, SC > 0 ? SC : S);
  }
};

// Calls f(StateWidth<...>{}) for the width that suits S. Padded (the GPU's choice): S = 1 and
// 5..16 also get the CAP = 8 / 16 register tiers; MAXN sizes the runtime-S arrays.
template <bool Padded = false, int MAXN = 0, typename F>
inline void dispatch_states(int S, F&& f) {
  switch (S) {
    case 2: return f(StateWidth<2>{});
    case 3: return f(StateWidth<3>{});
    case 4: return f(StateWidth<4>{});
    default:
      if constexpr (Padded) {
        if (S <= 8) return f(StateWidth<0, 8>{});
        if (S <= 16) return f(StateWidth<0, 16>{});
      }
      return f(StateWidth<0, 0, MAXN>{});
  }
}

// dispatch_states plus the process kind: f(width, std::integral_constant<bool, GHMM>).
template <bool Padded = false, int MAXN = 0, typename F>
inline void dispatch_process(const ProcessView& p, F&& f) {
  dispatch_states<Padded, MAXN>(p.S, [&](auto width) {
    if (p.w) f(width, std::true_type{});
    else f(width, std::false_type{});
  });
}

}  // namespace compmech
