// CPU launchers: thread the kernel bodies of compmech/kernels.hpp over rows / tree nodes.
// Callers (bindings.cpp) have validated every argument; these functions trust their inputs.
#pragma once
#include <cstdint>
#include <vector>

#include "compmech/process_view.hpp"

namespace compmech {

// First zero-probability token in row-major order; row == -1 if none.
struct ZeroProb {
  int64_t row = -1, pos = -1;
};

// beliefs (B, L, S) [nullable]; logp (B,) [nullable]. nan_on_zero: a row that meets an
// impossible token gets NaN beliefs from there on and logp = -inf (else the caller raises).
template <typename Tok, typename Out>
ZeroProb beliefs_cpu(const ProcessView& p, const double* init, const Tok* tokens, int64_t B, int64_t L,
                     Out* beliefs, double* logp);

// First token out of [0, V) in row-major order; row == -1 if none.
template <typename Tok>
ZeroProb find_bad_token(const Tok* tokens, int64_t n_rows, int64_t L, int V);

// Hidden-state sampling of an HMM: tokens (B, L), states (B, L+1) [nullable].
template <typename Tok, typename St>
void sample_hmm_cpu(const ProcessView& p, const double* init, int64_t B, int64_t L, uint64_t seed,
                    uint64_t row0, Tok* tokens, St* states);

// Belief-driven sampling (GHMMs): tokens (B, L), beliefs (B, L, S) [nullable].
// Returns the first (row, pos) where the belief assigned no mass to any token (invalid GHMM).
template <typename Tok, typename Out>
ZeroProb sample_ghmm_cpu(const ProcessView& p, const double* init, int64_t B, int64_t L, uint64_t seed,
                         uint64_t row0, Tok* tokens, Out* beliefs);

// One level of the mixed-state tree. Parents (P, S) with probabilities (P,); children in
// (parent, token) order, dropped when impossible or below min_prob. Work is cut into chunks
// of `chunk` parents; msp_count gives each chunk's number of children, msp_fill writes them
// (with their parent index and token) at the given per-chunk offsets.
template <typename Out>
void msp_count(const ProcessView& p, const Out* par_beliefs, const double* par_probs, int64_t P,
               double min_prob, int64_t chunk, int64_t* counts);
template <typename Out, typename Tok>
void msp_fill(const ProcessView& p, const Out* par_beliefs, const double* par_probs, int64_t P,
              double min_prob, int64_t chunk, const int64_t* offsets, Out* beliefs, double* probs,
              int32_t* parent, Tok* token);
// The optimistic single pass for a level expected to keep every child: child (i, x) at
// i * V + x, beliefs and probs only (a full level's parent and token are implicit). Returns
// false, having stopped early, if a child had to be dropped (then redo the level by counting).
template <typename Out>
bool msp_fill_full(const ProcessView& p, const Out* par_beliefs, const double* par_probs, int64_t P,
                   double min_prob, Out* beliefs, double* probs);

}  // namespace compmech
