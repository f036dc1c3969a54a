// The process as every kernel reads it, on the CPU and on the GPU (one struct for both: the
// CUDA launchers call it DevProcess). Self-contained so that the CUDA binding, which sees only
// csrc/, can include it.
#pragma once

namespace compmech {

struct ProcessView {
  const double* T;   // (V, S, S) row-major, T[x, i, j] = P(x, j | i)
  const double* w;   // (S,) right eigenvector for GHMMs; nullptr for HMMs (w = ones)
  int V, S;
  double zero_tol;   // P(x | eta) <= zero_tol counts as impossible (0 for HMMs)
};

}  // namespace compmech
