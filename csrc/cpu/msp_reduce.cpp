// Streaming reductions over the subtrees of an MSP tree without materialising any level: a
// depth-first walk from each root keeps one belief per depth, and adds each node's exact
// probability and -p log2 p into order-independent fixed-point sums (exact_sum.hpp), so any
// sharding of the roots over tasks and workers gives bit-identical totals.
#include "msp_reduce.hpp"

#include <cmath>
#include <type_traits>
#include <vector>

#include "compmech/kernels.hpp"
#include "fast_log2.hpp"

namespace compmech {
namespace {

template <int SC, bool GH>
struct EntropyWalker {
  const ProcessView& p;
  double min_prob;
  int D;  // deepest relative level
  EntropyTotals& out;
  std::vector<ExactSum128> prob, ent;  // per level; folded into out by finish()
  bool ok = true;
  int S;
  std::vector<double> scratch;  // per level: V*S unnormalised children, V conditionals, S child

  EntropyWalker(const ProcessView& pv, double mp, int depth, EntropyTotals& o)
      : p(pv), min_prob(mp), D(depth), out(o), prob(depth + 1), ent(depth + 1), S(SC > 0 ? SC : pv.S),
        scratch(static_cast<size_t>(depth + 1) * stride()) {}

  void finish() {
    for (size_t l = 0; l < prob.size(); ++l) {
      out.prob[l].merge(prob[l].exact());
      out.ent[l].merge(ent[l].exact());
    }
    out.ok &= ok;
  }

  size_t stride() const { return static_cast<size_t>(p.V) * (S + 1) + S; }

  // Children of a node at relative level l (belief eta, probability pp) go to level l+1.
  // The arithmetic (belief_step, pp * cond, the keep test, store_normalised) is msp_level's, so
  // the probabilities are bit-identical to cm.msp_tree's. Each child's -p log2 p is computed
  // from its own p, and the V children of one node are summed in token order before the exact
  // add: a grouping fixed by the tree, so any split into shards gives the same bits.
  void visit(const double* eta, double pp, int l) {
    const int V = p.V;
    double* nxt = scratch.data() + static_cast<size_t>(l) * stride();
    double* cond = nxt + static_cast<size_t>(V) * S;
    double* child = cond + V;
    const double* w = GH ? p.w : nullptr;
    double sp = 0.0, sh = 0.0;
    uint64_t kept = 0;
    for (int x = 0; x < V; ++x) {
      const double c = belief_step<SC, double>(eta, p.T + static_cast<int64_t>(x) * S * S, w, nxt + x * S, S);
      const double pc = pp * c;
      if (!(c > p.zero_tol) || !(pc > 0.0) || pc < min_prob) {
        cond[x] = -1.0;
        continue;
      }
      cond[x] = c;
      sp += pc;
      sh -= pc * fast_log2(pc);
      ++kept;
    }
    if (!kept) return;
    out.count[l + 1] += kept;
    ok &= prob[l + 1].add(sp);
    ok &= ent[l + 1].add(sh);
    if (l + 1 >= D) return;
    for (int x = 0; x < V; ++x) {
      if (cond[x] < 0.0) continue;
      store_normalised(nxt + x * S, cond[x], S, child);
      visit(child, pp * cond[x], l + 1);
    }
  }
};

template <typename F>
void dispatch_small_s(const ProcessView& p, F&& f) {
  const bool gh = p.w != nullptr;
  auto go = [&](auto sc) { gh ? f(sc, std::true_type{}) : f(sc, std::false_type{}); };
  switch (p.S) {
    case 2: return go(std::integral_constant<int, 2>{});
    case 3: return go(std::integral_constant<int, 3>{});
    case 4: return go(std::integral_constant<int, 4>{});
    default: return go(std::integral_constant<int, 0>{});
  }
}

}  // namespace

void msp_entropy_sums(const ProcessView& p, const double* roots, const double* root_probs, int64_t R, int D,
                      double min_prob, bool include_roots, EntropyTotals& out) {
  out.count.assign(static_cast<size_t>(D) + 1, 0);
  out.prob.assign(static_cast<size_t>(D) + 1, ExactSum{});
  out.ent.assign(static_cast<size_t>(D) + 1, ExactSum{});
  out.ok = true;
  dispatch_small_s(p, [&](auto sc, auto gh) {
    EntropyWalker<decltype(sc)::value, decltype(gh)::value> walker(p, min_prob, D, out);
    for (int64_t r = 0; r < R; ++r) {
      const double pr = root_probs[r];
      if (!(pr > 0.0)) continue;
      if (include_roots) {
        out.count[0] += 1;
        walker.ok &= walker.prob[0].add(pr);
        walker.ok &= walker.ent[0].add(-pr * fast_log2(pr));
      }
      if (D > 0) walker.visit(roots + r * p.S, pr, 0);
    }
    walker.finish();
  });
}

bool exact_bin_sums(const double* values, const int64_t* bins, int64_t n, ExactSum* sums) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= sums[bins[i]].add(values[i]);
  return ok;
}

}  // namespace compmech
