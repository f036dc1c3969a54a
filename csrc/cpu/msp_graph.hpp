// Deduplicated mixed-state graph (compmech.msp): breadth-first search over beliefs, merging
// beliefs within a max-norm tolerance. Callers (bindings_graph.cpp) validate every argument.
#pragma once
#include <cstdint>
#include <vector>

#include "launchers.hpp"

namespace compmech {

struct MSPGraph {
  std::vector<double> beliefs;    // (K, S), normalised so that belief . w == 1
  std::vector<int32_t> depth;     // (K,) first-seen depth (BFS distance from the initial belief)
  std::vector<uint8_t> expanded;  // (K,) 1 if all out-edges of the state were explored
  std::vector<int32_t> src, dst;  // (E,) edges in (src, token) order
  std::vector<int32_t> token;     // (E,)
  std::vector<double> prob;       // (E,) P(token | belief of src)
  std::vector<double> dist;       // (E,) max-norm distance from the child belief to the state it
                                  // was merged into (0 where the edge created its target)
  bool hit_max_states = false;    // stopped because a new state would exceed max_states
  int64_t merges = 0;             // children that matched an existing state (dedup hits)
};

// max_depth < 0: unbounded. max_states >= 1. tol > 0: two beliefs are the same mixed state
// when max_i |a_i - b_i| <= tol; a child is merged into the earliest-found (smallest index)
// state within tol, whose belief is kept as the representative.
MSPGraph msp_graph_cpu(const ProcessView& p, const double* init, int64_t max_depth, int64_t max_states, double tol);

}  // namespace compmech
