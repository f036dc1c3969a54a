// Streaming MSP reductions (msp_reduce.cpp): exact per-level sums over the subtrees of roots.
#pragma once
#include <cstdint>
#include <vector>

#include "exact_sum.hpp"
#include "launchers.hpp"

namespace compmech {

struct EntropyTotals {
  std::vector<uint64_t> count;  // nodes per relative level 0..D
  std::vector<ExactSum> prob;   // sum of p per level
  std::vector<ExactSum> ent;    // sum of -p log2 p per level (bits)
  bool ok = true;               // false: a term was out of the fixed-point range
};

// Walks the subtrees of R roots (beliefs (R, S), probabilities (R,)) down to D levels below
// them (children kept as in msp_level: P(x|eta) > zero_tol, p > 0, p >= min_prob). Level 0
// (the roots themselves) is summed only with include_roots.
void msp_entropy_sums(const ProcessView& p, const double* roots, const double* root_probs, int64_t R, int D,
                      double min_prob, bool include_roots, EntropyTotals& out);

// sums[bins[i]] += values[i] exactly; false if a value is out of range (the caller checks bins).
bool exact_bin_sums(const double* values, const int64_t* bins, int64_t n, ExactSum* sums);

}  // namespace compmech
