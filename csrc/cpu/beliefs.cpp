#include <algorithm>
#include <cmath>
#include <type_traits>
#include <limits>
#include <vector>

#include "compmech/kernels.hpp"
#include "launchers.hpp"
#include "simd.hpp"
#include "parallel.hpp"

namespace compmech {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A block of R rows advanced together one position at a time: the R dependency chains are
// independent, so the CPU overlaps them (a single row is latency-bound by its own chain).
template <int SC, int R, bool GH, bool LOGP, typename Tok, typename Out>
void rows_fixed(const ProcessView& p, const double* init, const Tok* tokens, int64_t r0, int64_t L,
                Out* beliefs, double* logp, int64_t* fail) {
  const double* w = GH ? p.w : nullptr;
  double eta[R][SC];
  double acc[R];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < SC; ++j) eta[r][j] = init[j];
    acc[r] = 0.0;
    fail[r] = -1;
  }
  for (int64_t t = 0; t < L; ++t) {
    for (int r = 0; r < R; ++r) {
      const int64_t row = r0 + r;
      const int64_t x = static_cast<int64_t>(tokens[row * L + t]);
      double nxt[SC];
      double norm = belief_step<SC, double>(eta[r], p.T + x * SC * SC, w, nxt, SC);
      if (!(norm > p.zero_tol)) {
        if (fail[r] < 0) fail[r] = t;
        norm = kNaN;  // poisons the rest of the row: NaN beliefs, and the caller raises or reports
      }
      const double inv = safe_inverse(norm, nxt, SC);
      for (int j = 0; j < SC; ++j) eta[r][j] = nxt[j] * inv;
      if (beliefs) {
        Out* dst = beliefs + (row * L + t) * SC;
        for (int j = 0; j < SC; ++j) dst[j] = static_cast<Out>(eta[r][j]);
      }
      if (LOGP) acc[r] += std::log(norm);
    }
  }
  if (logp)
    for (int r = 0; r < R; ++r) logp[r0 + r] = fail[r] >= 0 ? -std::numeric_limits<double>::infinity() : acc[r];
}

// SIMD path for small S and V: lanes hold W sequences, and G lane groups are interleaved so
// their dependency chains overlap. Each lane computes eta @ T[x] for every x and keeps the
// one matching its token (a blend instead of a gather): V * S^2 multiply-adds per update,
// cheap for the small V this path is used for.
constexpr int kLaneW = 4, kLaneG = 4, kLaneRows = kLaneW * kLaneG;
constexpr int kLaneMaxV = 8;

template <int SC, bool GH, bool LOGP, typename Tok, typename Out>
void rows_lanes(const ProcessView& p, const double* init, const Tok* tokens, int64_t r0, int64_t L,
                Out* beliefs, double* logp, int64_t* fail) {
  constexpr int W = kLaneW, G = kLaneG;
  const double* w = GH ? p.w : nullptr;
  const int V = p.V;
  vd4 eta[G][SC];
  // log-probability as mantissa * 2^expo, renormalised every step with bit operations (a
  // log per update would dominate); `extra` catches norms too small for that trick.
  vd4 mant[G];
  vl4 expo[G];
  double extra[G * W] = {};
  for (int g = 0; g < G; ++g) {
    for (int j = 0; j < SC; ++j) eta[g][j] = vd4{} + init[j];
    mant[g] = vd4{} + 1.0;
    expo[g] = vl4{};
  }
  for (int r = 0; r < W * G; ++r) fail[r] = -1;
  vd4 table_store[SC * SC];
  const vd4* tables = nullptr;
  if (V <= 4) {
    for (int i = 0; i < SC; ++i)
      for (int j = 0; j < SC; ++j)
        for (int x = 0; x < 4; ++x) table_store[i * SC + j][x] = x < V ? p.T[(x * SC + i) * SC + j] : 0.0;
    tables = table_store;
  }
  (void)tables;
  for (int64_t t = 0; t < L; ++t) {
    for (int g = 0; g < G; ++g) {
      const int64_t rb = r0 + g * W;
      vl4 xv;
      for (int l = 0; l < W; ++l) xv[l] = static_cast<int64_t>(tokens[(rb + l) * L + t]);
      vd4 nxt[SC];
      vd4 norm;
#if defined(__AVX2__)
      if (tables) {
        // Each lane's T[x] entry comes from an in-register table lookup (V <= 4 doubles fit a
        // 256-bit register): one permute per matrix entry instead of V full products.
        const vl4 i64 = xv * 2;
        const __m256i idx = reinterpret_cast<__m256i>(i64 | ((i64 + 1) << 32));
        for (int j = 0; j < SC; ++j) nxt[j] = vd4{};
        for (int i = 0; i < SC; ++i)
          for (int j = 0; j < SC; ++j) {
            const vd4 m = reinterpret_cast<vd4>(_mm256_permutevar8x32_ps(
                _mm256_castpd_ps(reinterpret_cast<__m256d>(tables[i * SC + j])), idx));
            nxt[j] += eta[g][i] * m;
          }
        norm = vd4{};
        for (int j = 0; j < SC; ++j) norm += GH ? nxt[j] * w[j] : nxt[j];
      } else
#endif
      {
        norm = belief_step<SC, vd4>(eta[g], p.T, w, nxt, SC);
        for (int x = 1; x < V; ++x) {
          vd4 y[SC];
          const vd4 nx = belief_step<SC, vd4>(eta[g], p.T + x * SC * SC, w, y, SC);
          const vl4 m = xv == x;
          for (int j = 0; j < SC; ++j) nxt[j] = m ? y[j] : nxt[j];
          norm = m ? nx : norm;
        }
      }
      const vl4 ok = norm > p.zero_tol;
      const vl4 tiny = norm < 1e-290;
      if (!all_lanes(ok) || (LOGP && any_lane(tiny))) {
        for (int l = 0; l < W; ++l) {
          if (!ok[l]) {
            if (fail[g * W + l] < 0) fail[g * W + l] = t;
            norm[l] = kNaN;
          } else if (LOGP && tiny[l]) {
            extra[g * W + l] += std::log(norm[l]);
          }
        }
      }
      const vd4 inv = safe_inverse_lanes(norm, nxt, SC);
      for (int j = 0; j < SC; ++j) eta[g][j] = nxt[j] * inv;
      if (beliefs) store_lanes<SC>(eta[g], beliefs + (rb * L + t) * SC, L * SC);
      if (LOGP) {
        const vd4 factor = tiny ? vd4{} + 1.0 : norm;
        vl4 bits = reinterpret_cast<vl4>(mant[g] * factor);
        expo[g] += ((bits >> 52) & 0x7FF) - 1023;
        bits = (bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL;
        mant[g] = reinterpret_cast<vd4>(bits);
      }
    }
  }
  if (logp) {
    constexpr double kLn2 = 0.69314718055994530942;
    for (int g = 0; g < G; ++g)
      for (int l = 0; l < W; ++l) {
        const int r = g * W + l;
        logp[r0 + r] = fail[r] >= 0 ? -std::numeric_limits<double>::infinity()
                                    : std::log(mant[g][l]) + static_cast<double>(expo[g][l]) * kLn2 + extra[r];
      }
  }
}

// Any S: R rows advanced together, their matrix-vector products interleaved term by term so
// R independent accumulation chains hide the multiply-add latency (one row alone would wait
// on its own chain). Per row the arithmetic order is fixed, so R does not change results.
template <int R, bool GH, bool LOGP, typename Tok, typename Out>
void rows_generic(const ProcessView& p, const double* init, const Tok* tokens, int64_t r0, int64_t L,
                  Out* beliefs, double* logp, int64_t* fail, std::vector<double>& buf) {
  const int S = p.S;
  buf.resize(2 * static_cast<size_t>(R) * S);
  double* eta = buf.data();
  double* nxt = eta + static_cast<size_t>(R) * S;
  double acc[R];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < S; ++j) eta[r * S + j] = init[j];
    acc[r] = 0.0;
    fail[r] = -1;
  }
  for (int64_t t = 0; t < L; ++t) {
    const double* Tx[R];
    for (int r = 0; r < R; ++r) Tx[r] = p.T + static_cast<int64_t>(tokens[(r0 + r) * L + t]) * S * S;
    for (int k = 0; k < R * S; ++k) nxt[k] = 0.0;
    for (int i = 0; i < S; ++i)
      for (int r = 0; r < R; ++r) {
        const double e = eta[r * S + i];
        const double* __restrict__ row = Tx[r] + static_cast<int64_t>(i) * S;
        double* __restrict__ o = nxt + r * S;
        for (int j = 0; j < S; ++j) o[j] += e * row[j];
      }
    for (int r = 0; r < R; ++r) {
      const double* o = nxt + r * S;
      double norm = 0.0;
      for (int j = 0; j < S; ++j) norm += GH ? o[j] * p.w[j] : o[j];
      if (!(norm > p.zero_tol)) {
        if (fail[r] < 0) fail[r] = t;
        norm = kNaN;
      }
      const double inv = safe_inverse(norm, nxt + r * S, S);
      double* er = eta + r * S;
      for (int j = 0; j < S; ++j) er[j] = o[j] * inv;
      if (beliefs) {
        Out* dst = beliefs + ((r0 + r) * L + t) * S;
        for (int j = 0; j < S; ++j) dst[j] = static_cast<Out>(er[j]);
      }
      if (LOGP) acc[r] += std::log(norm);
    }
  }
  if (logp)
    for (int r = 0; r < R; ++r) logp[r0 + r] = fail[r] >= 0 ? -std::numeric_limits<double>::infinity() : acc[r];
}

template <int SC, bool GH, bool LOGP, typename Tok, typename Out>
void run_rows(const ProcessView& p, const double* init, const Tok* tokens, int64_t b, int64_t e, int64_t L,
              Out* beliefs, double* logp, int64_t* fail_rows) {
  if constexpr (SC > 0) {
    constexpr int R = 8;
    int64_t r = b;
    if (p.V <= kLaneMaxV)
      for (; r + kLaneRows <= e; r += kLaneRows)
        rows_lanes<SC, GH, LOGP>(p, init, tokens, r, L, beliefs, logp, fail_rows + r);
    for (; r + R <= e; r += R) rows_fixed<SC, R, GH, LOGP>(p, init, tokens, r, L, beliefs, logp, fail_rows + r);
    for (; r < e; ++r) rows_fixed<SC, 1, GH, LOGP>(p, init, tokens, r, L, beliefs, logp, fail_rows + r);
  } else {
    std::vector<double> buf;
    constexpr int R = 4;
    int64_t r = b;
    for (; r + R <= e; r += R) rows_generic<R, GH, LOGP>(p, init, tokens, r, L, beliefs, logp, fail_rows + r, buf);
    for (; r < e; ++r) rows_generic<1, GH, LOGP>(p, init, tokens, r, L, beliefs, logp, fail_rows + r, buf);
  }
}

template <int SC, typename Tok, typename Out>
void dispatch_flags(const ProcessView& p, const double* init, const Tok* tokens, int64_t b, int64_t e,
                    int64_t L, Out* beliefs, double* logp, int64_t* fail_rows) {
  const bool gh = p.w != nullptr;
  if (gh && logp) run_rows<SC, true, true>(p, init, tokens, b, e, L, beliefs, logp, fail_rows);
  else if (gh) run_rows<SC, true, false>(p, init, tokens, b, e, L, beliefs, logp, fail_rows);
  else if (logp) run_rows<SC, false, true>(p, init, tokens, b, e, L, beliefs, logp, fail_rows);
  else run_rows<SC, false, false>(p, init, tokens, b, e, L, beliefs, logp, fail_rows);
}

}  // namespace

template <typename Tok, typename Out>
ZeroProb beliefs_cpu(const ProcessView& p, const double* init, const Tok* tokens, int64_t B, int64_t L,
                     Out* beliefs, double* logp) {
  std::vector<int64_t> fail(static_cast<size_t>(B), -1);
  if (L == 0) {
    if (logp)
      for (int64_t r = 0; r < B; ++r) logp[r] = 0.0;
    return {};
  }
  // ~64k token updates per chunk: large enough to amortise, small enough to balance two cores.
  const int64_t grain = std::max<int64_t>(16, ((65536 / L) + 15) / 16 * 16);
  parallel_for(B, grain, [&](int64_t b, int64_t e) {
    int64_t* f = fail.data();
    switch (p.S) {
      case 2: dispatch_flags<2>(p, init, tokens, b, e, L, beliefs, logp, f); break;
      case 3: dispatch_flags<3>(p, init, tokens, b, e, L, beliefs, logp, f); break;
      case 4: dispatch_flags<4>(p, init, tokens, b, e, L, beliefs, logp, f); break;
      default: dispatch_flags<0>(p, init, tokens, b, e, L, beliefs, logp, f); break;
    }
  });
  for (int64_t r = 0; r < B; ++r)
    if (fail[static_cast<size_t>(r)] >= 0) return ZeroProb{r, fail[static_cast<size_t>(r)]};
  return {};
}

template <typename Tok>
ZeroProb find_bad_token(const Tok* tokens, int64_t n_rows, int64_t L, int V) {
  std::vector<int64_t> first_bad(static_cast<size_t>(n_rows), -1);
  parallel_for(n_rows, std::max<int64_t>(1, 262144 / std::max<int64_t>(L, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const Tok* row = tokens + r * L;
      // vectorisable min/max scan first; locate the offending position only if there is one
      Tok lo = L ? row[0] : Tok(0), hi = lo;
      for (int64_t t = 0; t < L; ++t) {
        lo = row[t] < lo ? row[t] : lo;
        hi = row[t] > hi ? row[t] : hi;
      }
      if (static_cast<int64_t>(lo) >= 0 && static_cast<int64_t>(hi) < V) continue;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t x = static_cast<int64_t>(row[t]);
        if (x < 0 || x >= V) {
          first_bad[static_cast<size_t>(r)] = t;
          break;
        }
      }
    }
  });
  for (int64_t r = 0; r < n_rows; ++r)
    if (first_bad[static_cast<size_t>(r)] >= 0) return ZeroProb{r, first_bad[static_cast<size_t>(r)]};
  return {};
}

#define CM_INST_BELIEFS(TOK)                                                                             \
  template ZeroProb beliefs_cpu<TOK, float>(const ProcessView&, const double*, const TOK*, int64_t, int64_t, \
                                            float*, double*);                                             \
  template ZeroProb beliefs_cpu<TOK, double>(const ProcessView&, const double*, const TOK*, int64_t,       \
                                             int64_t, double*, double*);                                  \
  template ZeroProb find_bad_token<TOK>(const TOK*, int64_t, int64_t, int);
CM_INST_BELIEFS(uint8_t)
CM_INST_BELIEFS(uint16_t)
CM_INST_BELIEFS(int32_t)
CM_INST_BELIEFS(int64_t)
#undef CM_INST_BELIEFS

}  // namespace compmech
