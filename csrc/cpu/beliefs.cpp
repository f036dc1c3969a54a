#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <limits>
#include <vector>

#include "compmech/dispatch.hpp"
#include "compmech/kernels.hpp"
#include "gemm_rows.hpp"
#include "launchers.hpp"
#include "simd.hpp"
#include "parallel.hpp"
#include "row_stage.hpp"

namespace compmech {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Belief outputs larger than this leave the tiled path by non-temporal stores (they would not
// stay in cache anyway, and full-line streaming skips reading every line before writing it).
constexpr int64_t kStreamBytes = int64_t(32) << 20;

// logp of n rows from their accumulators: -inf for a row that met an impossible token.
template <typename Acc>
inline void finish_logp(const Acc* acc, const int64_t* fail, int n, double* logp) {
  if (!logp) return;
  for (int r = 0; r < n; ++r) logp[r] = fail[r] >= 0 ? -std::numeric_limits<double>::infinity() : acc[r].value();
}

// One row's ScaledLogProb step for the runtime-S paths: nxt = v T[x] with norm `norm` becomes
// the row's v (rows that met an impossible token stay as they are).
inline void scaled_step(ScaledLogProb& sc, int64_t& fail, int64_t t, double norm, double zero_tol, const double* nxt,
                        double* v, int S) {
  if (fail >= 0) return;
  if (!sc.possible(norm, zero_tol)) {
    fail = t;
    return;
  }
  std::copy(nxt, nxt + S, v);
  sc.settle(t, norm, v, S);
}

// A block of R rows advanced together one position at a time: the R dependency chains are
// independent, so the CPU overlaps them (a single row is latency-bound by its own chain).
// SCALED (log_prob without beliefs): eta holds ScaledLogProb's unnormalised v instead.
template <int SC, int R, bool GH, bool LOGP, bool SCALED, typename Tok, typename Out>
void rows_fixed(const ProcessView& p, const double* init, const Tok* tokens, int64_t r0, int64_t L,
                Out* beliefs, double* logp, int64_t* fail) {
  const double* w = GH ? p.w : nullptr;
  double eta[R][SC];
  LogProbAcc acc[R];
  ScaledLogProb sc[R];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < SC; ++j) eta[r][j] = init[j];
    fail[r] = -1;
  }
  for (int64_t t = 0; t < L; ++t) {
    for (int r = 0; r < R; ++r) {
      const int64_t row = r0 + r;
      const int64_t x = static_cast<int64_t>(tokens[row * L + t]);
      double nxt[SC];
      double norm = belief_step<SC, double>(eta[r], p.T + x * SC * SC, w, nxt, SC);
      if constexpr (SCALED) {
        scaled_step(sc[r], fail[r], t, norm, p.zero_tol, nxt, eta[r], SC);
        continue;
      }
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
      if (LOGP) acc[r].add(norm);
    }
  }
  if constexpr (SCALED) finish_logp(sc, fail, R, logp + r0);
  else finish_logp(acc, fail, R, logp ? logp + r0 : nullptr);
}

// SIMD path for small S and V: lanes hold W sequences, and G lane groups are interleaved so
// their dependency chains overlap. Each lane computes eta @ T[x] for every x and keeps the
// one matching its token (a blend instead of a gather): V * S^2 multiply-adds per update,
// cheap for the small V this path is used for.
constexpr int kLaneW = 4, kLaneG = 4, kLaneRows = kLaneW * kLaneG;
constexpr int kLaneMaxV = 8;

template <int SC, bool GH, bool LOGP, bool SCALED, typename Tok, typename Out>
void rows_lanes(const ProcessView& p, const double* init, const Tok* tokens, int64_t r0, int64_t L,
                Out* beliefs, double* logp, int64_t* fail) {
  constexpr int W = kLaneW, G = kLaneG;
  const double* w = GH ? p.w : nullptr;
  const int V = p.V;
  vd4 eta[G][SC];
  LogProbLanes acc[G];  // the shared accumulator: no log per update
  ScaledLanes sc[G];    // SCALED: eta holds the unnormalised v
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < SC; ++j) eta[g][j] = vd4{} + init[j];
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
      if constexpr (SCALED) {
        const vl4 bad = sc[g].live & ~((norm >= kRescaleBelow) & (norm > p.zero_tol * sc[g].last));
        const vd4 prev = sc[g].last;
        for (int j = 0; j < SC; ++j) eta[g][j] = nxt[j];
        sc[g].last = norm;
        if (any_lane(bad)) sc[g].fix(bad, t, prev, eta[g], SC, p.zero_tol, fail + g * W);
        if ((t + 1) % kRescaleEvery == 0) sc[g].rescale(eta[g], SC);
        continue;
      }
      const vl4 ok = norm > p.zero_tol;
      if (!all_lanes(ok)) {
        for (int l = 0; l < W; ++l)
          if (!ok[l]) {
            if (fail[g * W + l] < 0) fail[g * W + l] = t;
            norm[l] = kNaN;
          }
      }
      const vd4 inv = safe_inverse_lanes(norm, nxt, SC);
      for (int j = 0; j < SC; ++j) eta[g][j] = nxt[j] * inv;
      if (beliefs) store_lanes<SC>(eta[g], beliefs + (rb * L + t) * SC, L * SC);
      if (LOGP) acc[g].add(norm);
    }
  }
  if constexpr (SCALED) {
    ScaledLogProb lanes[W * G];
    for (int r = 0; r < W * G; ++r) lanes[r] = sc[r / W].lane(r % W);
    finish_logp(lanes, fail, W * G, logp + r0);
  } else if (logp) {
    LogProbAcc lanes[W * G];
    for (int r = 0; r < W * G; ++r) lanes[r] = acc[r / W].lane(r % W);
    finish_logp(lanes, fail, W * G, logp + r0);
  }
}

#if defined(CM_TILED_LANES)
// Tiled path for S <= 4, V <= Lanes::kMaxV (lanes.hpp: W = 8 rows per vector on AVX-512, 4 on
// AVX2), G vectors interleaved. Each T[x, i, j] is one in-register table lookup (the values of
// T[., i, j] fill a register, indexed by the lanes' tokens). Tokens come in 8-position tiles;
// the arithmetic is belief_step's, operation for operation, so the bits equal every other path's.
using VD = Lanes::VD;
using VL = Lanes::VL;
using Mask = Lanes::Mask;
constexpr int kW = Lanes::W, kTile = 8;
// Lane groups interleaved: enough independent chains to cover a step's latency, few enough
// that the groups' beliefs stay in registers (32 on AVX-512, 16 on AVX2; measured on Zen 3).
constexpr int kTileG = kW == 8 ? 4 : 3;
constexpr int kTileRows = kW * kTileG;

// The lanes' tokens for a tile of kTile positions: xs[tt] holds position t0 + tt of rows
// rb..rb+W-1 as lookup indices.
template <typename Tok>
inline void stage_tokens(const Tok* tokens, int64_t rb, int64_t L, int64_t t0, int nt, Lanes::Idx* xs) {
  if constexpr (std::is_same<Tok, uint8_t>::value)
    if (nt == kTile) return Lanes::stage_bytes(tokens + rb * L + t0, L, xs);
  alignas(64) int64_t x[kTile][kW];
  for (int l = 0; l < kW; ++l)
    for (int tt = 0; tt < nt; ++tt) x[tt][l] = static_cast<int64_t>(tokens[(rb + l) * L + t0 + tt]);
  for (int tt = 0; tt < nt; ++tt) xs[tt] = Lanes::index(x[tt]);
}

// The log-probability of W lanes, as LogProbAcc (kernels.hpp) computes it lane by lane, with
// the rare tiny norms (logged directly) handled by the caller's slow path. The exponent fields
// are summed raw (the 1023 biases come off at the end: integer arithmetic, so the same value).
struct LogProbTiled {
  VD mant = VD{} + 1.0;
  VL field = VL{};
  double extra[kW] = {};
  int64_t steps = 0;

  // One step on register copies of mant and field. norm is positive in every lane that has
  // not failed (a failed lane's value is never used), so the product's sign bit is 0.
  static inline void add(VD& mant, VL& field, VD norm) {
    const VL bits = reinterpret_cast<VL>(mant * norm);
    field += Lanes::shift52(bits);
    mant = reinterpret_cast<VD>((bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL);
  }
  LogProbAcc lane(int l) const { return LogProbAcc{mant[l], field[l] - 1023 * steps, extra[l]}; }
};

// The rare lanes of a step: impossible tokens (recorded, NaN from here on) and tiny norms
// (scaled by 2^600 before the inverse, logged directly). Out of line and by value, so that the
// common path keeps everything in registers.
struct LaneFix {
  VD norm, scale, acc_norm;
};
__attribute__((noinline, cold)) LaneFix fix_lanes(VD norm, Mask ok, int64_t t, int64_t* fail, double* extra) {
  for (int l = 0; l < kW; ++l)
    if (!((ok >> l) & 1)) {
      if (fail[l] < 0) fail[l] = t;
      norm[l] = kNaN;  // poisons the rest of the row
    }
  LaneFix f{norm, VD{} + 1.0, norm};
  for (int l = 0; l < kW; ++l)
    if (norm[l] < kTinyNorm) {  // NaN (failed) lanes are not tiny
      f.scale[l] = kTinyScale;
      if (extra) extra[l] += std::log(norm[l]);
      f.acc_norm[l] = 1.0;
    }
  return f;
}

// sum_j v[j] (* w[j]) of W lanes in ascending j. For HMMs the leading 0 + is dropped: it changes
// only the sign of a zero norm, which fails either way. GHMMs keep it, so that the compiler fuses
// each product into the running sum exactly as belief_step does.
template <int SC, bool GH>
__attribute__((always_inline)) inline VD norm_tiled(const VD* v, const double* w) {
  VD norm = GH ? VD{} : v[0];
  for (int j = GH ? 0 : 1; j < SC; ++j) norm += GH ? v[j] * w[j] : v[j];
  return norm;
}

// nxt = eta @ T[x] for W lanes, belief_step's products: T[x, i, j] is looked up in tab by each
// lane's token.
template <int SC>
__attribute__((always_inline)) inline void products_tiled(const VD* eta, const Lanes::Tab* tab, Lanes::Idx x, VD* nxt) {
  for (int j = 0; j < SC; ++j) nxt[j] = VD{};
  for (int i = 0; i < SC; ++i)
    for (int j = 0; j < SC; ++j) nxt[j] += eta[i] * Lanes::lookup(tab[i * SC + j], x);
}

// One compare finds the lanes with nothing to fix, norm > zero_tol and norm >= kTinyNorm:
// norm > fast_bar(zero_tol) (false for NaN). Doubles have nothing strictly between
// kTinyNorm's predecessor and kTinyNorm, so > the predecessor is >= kTinyNorm.
inline double fast_bar(double zero_tol) { return std::max(zero_tol, std::nextafter(kTinyNorm, 0.0)); }

// One group of W rows, one position: belief_step + safe_inverse, operation for operation.
// Returns the norm the accumulator takes (1 in lanes whose tiny norm went to `extra`).
template <int SC, bool GH, bool LOGP>
__attribute__((always_inline)) inline VD step_tiled(VD* eta, const Lanes::Tab* tab, Lanes::Idx x, const double* w,
                                                    VD zero_tol, VD bar, int64_t t, int64_t* fail, double* extra) {
  VD nxt[SC];
  products_tiled<SC>(eta, tab, x, nxt);
  VD norm = norm_tiled<SC, GH>(nxt, w);
  VD acc_norm = norm;
  if (__builtin_expect(Lanes::cmp<_CMP_GT_OQ>(norm, bar) != Lanes::kAll, 0)) {
    const Mask ok = Lanes::cmp<_CMP_GT_OQ>(norm, zero_tol);
    const LaneFix f = fix_lanes(norm, ok, t, fail, LOGP ? extra : nullptr);
    for (int j = 0; j < SC; ++j) nxt[j] *= f.scale;
    norm = f.norm * f.scale;
    acc_norm = f.acc_norm;
  }
  const VD inv = 1.0 / norm;
  for (int j = 0; j < SC; ++j) eta[j] = nxt[j] * inv;
  return acc_norm;
}

template <int SC, typename Out>
using TileStage = RowStage<SC, kTileG, Out>;

// tab[i * SC + j] holds T[x, i, j] in lane x (V <= W), zero past V.
template <int SC>
inline void fill_tables(const ProcessView& p, Lanes::Tab* tab) {
  for (int i = 0; i < SC; ++i)
    for (int j = 0; j < SC; ++j) {
      double v[kW];
      for (int x = 0; x < kW; ++x) v[x] = x < p.V ? p.T[(x * SC + i) * SC + j] : 0.0;
      tab[i * SC + j] = Lanes::table(v);
    }
}

// kTile positions of the block from xs; eta and the accumulators live in registers meanwhile
// (copied in and out, so that nothing is spilled per step across the stage's tile writes).
template <int SC, bool GH, bool LOGP, typename Out>
__attribute__((always_inline)) inline void tile_beliefs(VD (*eta_mem)[SC], LogProbTiled* acc, const Lanes::Tab* tab,
                                                        const Lanes::Idx (*xs)[kTile], int nt, int64_t t0, int tt0,
                                                        const double* w, double zero_tol, int64_t* fail,
                                                        TileStage<SC, Out>* stage) {
  constexpr int G = kTileG;
  VD eta[G][SC];
  VD mant[G];
  VL field[G];
  for (int g = 0; g < G; ++g) {
    for (int j = 0; j < SC; ++j) eta[g][j] = eta_mem[g][j];
    mant[g] = acc[g].mant;
    field[g] = acc[g].field;
  }
  const VD tol = VD{} + zero_tol, bar = VD{} + fast_bar(zero_tol);
  for (int tt = 0; tt < nt; ++tt) {
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {  // the G groups' chains are independent: they overlap
      const VD a = step_tiled<SC, GH, LOGP>(eta[g], tab, xs[g][tt], w, tol, bar, t0 + tt, fail + g * kW, acc[g].extra);
      if (stage) stage->put(g, tt0 + tt, eta[g]);
      if (LOGP) LogProbTiled::add(mant[g], field[g], a);
    }
    if (stage) stage->step(tt0 + tt);
  }
  for (int g = 0; g < G; ++g) {
    for (int j = 0; j < SC; ++j) eta_mem[g][j] = eta[g][j];
    acc[g].mant = mant[g];
    acc[g].field = field[g];
    acc[g].steps += nt;
  }
}

template <int SC, bool GH, bool LOGP, typename Tok, typename Out>
void rows_tiled_run(const ProcessView& p, const double* init, const Tok* tokens, int64_t r0, int64_t L,
                    TileStage<SC, Out>* stage, double* logp, int64_t* fail) {
  constexpr int W = kW, G = kTileG;
  const double* w = GH ? p.w : nullptr;
  Lanes::Tab tab[SC * SC];
  fill_tables<SC>(p, tab);
  VD eta[G][SC];
  LogProbTiled acc[G];
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < SC; ++j) eta[g][j] = VD{} + init[j];
  for (int r = 0; r < W * G; ++r) fail[r] = -1;
  Lanes::Idx xs[G][kTile];
  for (int64_t t0 = 0; t0 < L; t0 += kTile) {
    const int nt = static_cast<int>(std::min<int64_t>(kTile, L - t0));
    for (int g = 0; g < G; ++g) stage_tokens(tokens, r0 + g * W, L, t0, nt, xs[g]);
    constexpr int NP = TileStage<SC, Out>::NP;  // a multiple of kTile
    const int tt0 = static_cast<int>(t0 % NP);
    tile_beliefs<SC, GH, LOGP, Out>(eta, acc, tab, xs, nt, t0, tt0, w, p.zero_tol, fail, stage);
    if (stage && (tt0 + nt == NP || t0 + nt >= L)) stage->end_tile(tt0 + nt, t0 + nt >= L);
  }
  if (logp) {
    LogProbAcc lanes[W * G];
    for (int r = 0; r < W * G; ++r) lanes[r] = acc[r / W].lane(r % W);
    finish_logp(lanes, fail, W * G, logp + r0);
  }
}

// log_prob alone on the tiled path: ScaledLogProb's arithmetic (kernels.hpp), no division.
// Per step the products and the norm are step_tiled's; one compare flags the lanes that need a
// look (a norm below kRescaleBelow, an impossible token), and the rescaling due every
// kRescaleEvery == kTile positions happens at the end of each whole tile.
static_assert(kRescaleEvery == kTile, "the tiled log_prob path rescales once per token tile");
using ScaledTiled = ScaledLanesT<VD, VL>;

// TOL: the zero tolerance is checked against the norm before each step (GHMMs, or an HMM given
// a nonzero tolerance). Without it (HMMs: norm >= kRescaleBelow already implies norm > 0) no
// norm is carried from step to step: the rescaling at the end of the tile recomputes the last
// one from v with the same sums (exact also where fix() rescaled a lane: scaling up by a power
// of two rounds nothing), which keeps registers free for the lane groups' beliefs.
// An HMM's norm does not grow from one step to the next (P(x | eta) <= 1; round-off and rows of
// T.sum(0) renormalised to 1 leave far less than a factor 2 over a tile). So when a whole tile
// ends with every norm at or above this bar, no step inside it went below kRescaleBelow or met
// an impossible token (a zero norm stays zero), and none needed a look.
constexpr double kReplayBar = 2 * kRescaleBelow;

// The lanes of `lanes` redo a whole tile one step at a time with ScaledLogProb (belief_step and
// settle, the scalar definition), from the tile's starting v0 and `last0`: for the rare tiles
// whose end norm is below kReplayBar. v (the tile's end) and st get the lanes' results.
template <int SC>
__attribute__((noinline, cold)) void replay_lanes(const ProcessView& p, const VD* v0, VD last0, Mask lanes,
                                                  const Lanes::Idx* xs, int64_t t0, int64_t* fail, VD* v,
                                                  ScaledTiled& st) {
  for (int l = 0; l < kW; ++l) {
    if (!((lanes >> l) & 1)) continue;
    double vv[SC];
    for (int j = 0; j < SC; ++j) vv[j] = v0[j][l];
    ScaledLogProb s{last0[l], st.expo[l]};
    int64_t f = -1;
    for (int tt = 0; tt < kTile && f < 0; ++tt) {
      double nxt[SC];
      const double norm = belief_step<SC, double>(vv, p.T + Lanes::token(xs[tt], l) * SC * SC, nullptr, nxt, SC);
      scaled_step(s, f, t0 + tt, norm, p.zero_tol, nxt, vv, SC);
    }
    if (f >= 0) {
      if (fail[l] < 0) fail[l] = f;
      st.live[l] = 0;
      continue;
    }
    for (int j = 0; j < SC; ++j) v[j][l] = vv[j];
    st.last[l] = s.last;
    st.expo[l] = s.expo;
  }
}

// NT > 0: a whole tile of NT == kTile positions, known at compile time (the common case, fully
// unrolled); NT == 0: the last, partial tile of nt positions. HMMs (no TOL) check whole tiles
// only at their end (DEFER, see kReplayBar): per step, only the lookups and multiply-adds.
template <int SC, bool GH, bool TOL, int NT>
__attribute__((always_inline)) inline void tile_logp(VD (*v_mem)[SC], ScaledTiled* st, const Lanes::Tab* tab,
                                                     const Lanes::Idx (*xs)[kTile], int nt_runtime, int64_t t0,
                                                     const double* w, const ProcessView& p, int64_t* fail) {
  constexpr int G = kTileG;
  constexpr bool DEFER = !GH && !TOL && NT == kTile;
  const int nt = NT > 0 ? NT : nt_runtime;
  const double zero_tol = p.zero_tol;
  VD v[G][SC];
  VD last[G];
  Mask live[G];
  for (int g = 0; g < G; ++g) {
    for (int j = 0; j < SC; ++j) v[g][j] = v_mem[g][j];
    if (TOL) last[g] = st[g].last;
    live[g] = Lanes::nonzero(st[g].live);
  }
  const VD below = VD{} + kRescaleBelow;
  for (int tt = 0; tt < nt; ++tt) {
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      VD nxt[SC];
      products_tiled<SC>(v[g], tab, xs[g][tt], nxt);
      for (int j = 0; j < SC; ++j) v[g][j] = nxt[j];
      if (DEFER) continue;
      const VD norm = norm_tiled<SC, GH>(nxt, w);
      Mask bad = Lanes::cmp<_CMP_NGE_UQ>(live[g], norm, below);
      if (TOL) bad |= Lanes::cmp<_CMP_NGT_UQ>(live[g], norm, zero_tol * last[g]);
      // without TOL the tolerance is 0 and prev only needs to be finite in live lanes
      const VD prev = TOL ? last[g] : norm;
      if (TOL) last[g] = norm;
      if (__builtin_expect(bad != 0, 0)) {
        // through a copy: v's own address never escapes, so it stays in registers
        VD tmp[SC];
        for (int j = 0; j < SC; ++j) tmp[j] = v[g][j];
        st[g].last = norm;
        st[g].fix(Lanes::lanes(bad), t0 + tt, prev, tmp, SC, zero_tol, fail + g * kW);
        for (int j = 0; j < SC; ++j) v[g][j] = tmp[j];
        if (TOL) last[g] = st[g].last;
        live[g] = Lanes::nonzero(st[g].live);
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    const VD last0 = st[g].last;
    st[g].last = TOL ? last[g] : norm_tiled<SC, GH>(v[g], w);
    if (DEFER) {
      const Mask bad = Lanes::cmp<_CMP_NGE_UQ>(live[g], st[g].last, VD{} + kReplayBar);
      if (__builtin_expect(bad != 0, 0)) {
        VD tmp[SC];
        for (int j = 0; j < SC; ++j) tmp[j] = v[g][j];
        replay_lanes<SC>(p, v_mem[g], last0, bad, xs[g], t0, fail + g * kW, tmp, st[g]);
        for (int j = 0; j < SC; ++j) v[g][j] = tmp[j];
      }
    }
    if (nt == kTile) st[g].rescale(v[g], SC);  // t0 % kTile == 0: position t0 + 7 ends a period
    for (int j = 0; j < SC; ++j) v_mem[g][j] = v[g][j];
  }
}

template <int SC, bool GH, bool TOL, typename Tok>
__attribute__((noinline)) void rows_tiled_logp_run(const ProcessView& p, const double* init, const Tok* tokens,
                                                   int64_t r0, int64_t L, double* logp, int64_t* fail) {
  constexpr int W = kW, G = kTileG;
  const double* w = GH ? p.w : nullptr;
  Lanes::Tab tab[SC * SC];
  fill_tables<SC>(p, tab);
  VD v[G][SC];
  ScaledTiled st[G];
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < SC; ++j) v[g][j] = VD{} + init[j];
  for (int r = 0; r < W * G; ++r) fail[r] = -1;
  Lanes::Idx xs[G][kTile];
  for (int64_t t0 = 0; t0 < L; t0 += kTile) {
    const int nt = static_cast<int>(std::min<int64_t>(kTile, L - t0));
    for (int g = 0; g < G; ++g) stage_tokens(tokens, r0 + g * W, L, t0, nt, xs[g]);
    if (nt == kTile) tile_logp<SC, GH, TOL, kTile>(v, st, tab, xs, nt, t0, w, p, fail);
    else tile_logp<SC, GH, TOL, 0>(v, st, tab, xs, nt, t0, w, p, fail);
  }
  ScaledLogProb lanes[W * G];
  for (int r = 0; r < W * G; ++r) lanes[r] = st[r / W].lane(r % W);
  finish_logp(lanes, fail, W * G, logp + r0);
}

template <int SC, bool GH, typename Tok>
void rows_tiled_logp(const ProcessView& p, const double* init, const Tok* tokens, int64_t r0, int64_t L, double* logp,
                     int64_t* fail) {
  if (GH || p.zero_tol != 0.0) rows_tiled_logp_run<SC, GH, true>(p, init, tokens, r0, L, logp, fail);
  else rows_tiled_logp_run<SC, GH, false>(p, init, tokens, r0, L, logp, fail);
}

template <int SC, bool GH, bool LOGP, typename Tok, typename Out>
void rows_tiled(const ProcessView& p, const double* init, const Tok* tokens, int64_t r0, int64_t L, Out* beliefs,
                double* logp, int64_t* fail, bool stream) {
  if (!beliefs) return rows_tiled_run<SC, GH, LOGP, Tok, Out>(p, init, tokens, r0, L, nullptr, logp, fail);
  TileStage<SC, Out> stage(beliefs + r0 * L * SC, L, stream);
  rows_tiled_run<SC, GH, LOGP, Tok, Out>(p, init, tokens, r0, L, &stage, logp, fail);
}
#endif

// Any S: R rows advanced together, their matrix-vector products interleaved term by term so
// R independent accumulation chains hide the multiply-add latency (one row alone would wait
// on its own chain). Per row the arithmetic order is fixed, so R does not change results.
template <int R, bool GH, bool LOGP, bool SCALED, typename Tok, typename Out>
void rows_generic(const ProcessView& p, const double* init, const Tok* tokens, int64_t r0, int64_t L,
                  Out* beliefs, double* logp, int64_t* fail, std::vector<double>& buf) {
  const int S = p.S;
  buf.resize(2 * static_cast<size_t>(R) * S);
  double* eta = buf.data();
  double* nxt = eta + static_cast<size_t>(R) * S;
  LogProbAcc acc[R];
  ScaledLogProb sc[R];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < S; ++j) eta[r * S + j] = init[j];
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
      for (int j = 0; j < S; ++j) norm = GH ? fused_madd(o[j], p.w[j], norm) : norm + o[j];
      if constexpr (SCALED) {
        scaled_step(sc[r], fail[r], t, norm, p.zero_tol, o, eta + r * S, S);
        continue;
      }
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
      if (LOGP) acc[r].add(norm);
    }
  }
  if constexpr (SCALED) finish_logp(sc, fail, R, logp + r0);
  else finish_logp(acc, fail, R, logp ? logp + r0 : nullptr);
}

// Many states: at each position the block's rows are grouped by token, so that each group is
// one dense product (rows, S) @ T[x] (S, S) done by a register-blocked kernel (gemm_rows.hpp).
// Every output element is still sum_i eta[i] * T[x, i, j] in ascending i, as in belief_step, so
// a row's bits do not depend on its group or block.
constexpr int kGroupMinS = 16;     // below this the per-row paths are faster
// Rows advanced together: about 32 per token group, so that most of a group's rows fill whole
// register blocks (gemm_rows.hpp) rather than a short remainder block.
inline int64_t group_rows(int V) { return std::min<int64_t>(2048, std::max<int64_t>(256, int64_t(32) * V)); }

template <bool GH, bool LOGP, bool SCALED, typename Tok, typename Out>
void rows_grouped(const ProcessView& p, const double* init, const Tok* tokens, int64_t r0, int n, int64_t L,
                  Out* beliefs, double* logp, int64_t* fail) {
  const int S = p.S, V = p.V;
  std::vector<double> eta(static_cast<size_t>(n) * S), nxt(static_cast<size_t>(n) * S);
  std::vector<int> start(static_cast<size_t>(V) + 1), order(static_cast<size_t>(n)), xr(static_cast<size_t>(n));
  std::vector<const double*> a(static_cast<size_t>(n));
  std::vector<double*> c(static_cast<size_t>(n));
  std::vector<LogProbAcc> acc(static_cast<size_t>(n));
  std::vector<ScaledLogProb> sc(SCALED ? static_cast<size_t>(n) : 0);
  for (int r = 0; r < n; ++r) {
    std::copy(init, init + S, eta.data() + static_cast<size_t>(r) * S);
    fail[r] = -1;
  }
  for (int64_t t = 0; t < L; ++t) {
    // counting sort of the rows by their token at t
    std::fill(start.begin(), start.end(), 0);
    for (int r = 0; r < n; ++r) ++start[(xr[r] = static_cast<int>(tokens[(r0 + r) * L + t])) + 1];
    for (int x = 0; x < V; ++x) start[x + 1] += start[x];
    for (int r = 0; r < n; ++r) {
      const int k = start[xr[r]]++;
      order[k] = r;
      a[k] = eta.data() + static_cast<size_t>(r) * S;
      c[k] = nxt.data() + static_cast<size_t>(r) * S;
    }
    for (int x = 0, k0 = 0; x < V; ++x) {  // start[x] is now the end of group x
      const int k1 = start[x];
      if (k1 > k0) gemm_group(a.data() + k0, c.data() + k0, k1 - k0, p.T + static_cast<int64_t>(x) * S * S, S);
      k0 = k1;
    }
    for (int r = 0; r < n; ++r) {
      double* o = nxt.data() + static_cast<size_t>(r) * S;
      double norm = 0.0;
      for (int j = 0; j < S; ++j) norm = GH ? fused_madd(o[j], p.w[j], norm) : norm + o[j];
      if constexpr (SCALED) {
        scaled_step(sc[static_cast<size_t>(r)], fail[r], t, norm, p.zero_tol, o, eta.data() + static_cast<size_t>(r) * S, S);
        continue;
      }
      if (!(norm > p.zero_tol)) {
        if (fail[r] < 0) fail[r] = t;
        norm = kNaN;
      }
      const double inv = safe_inverse(norm, o, S);
      double* er = eta.data() + static_cast<size_t>(r) * S;
      for (int j = 0; j < S; ++j) er[j] = o[j] * inv;
      if (beliefs) {
        Out* dst = beliefs + ((r0 + r) * L + t) * S;
        for (int j = 0; j < S; ++j) dst[j] = static_cast<Out>(er[j]);
        // this row's next position is written a whole pass over the block from now: ask for its
        // lines now, so their reads for ownership overlap the arithmetic instead of stalling it
        // (S = 16..64 float32: 1.2-1.6x). Not for rows of more than 4 lines: a block's worth of
        // them then crowds the token matrices out of L2 (S = 128 ran 5 % slower).
        if (t + 1 < L && S * sizeof(Out) <= 256) {
          const char* next = reinterpret_cast<const char*>(dst + S);
          for (int64_t k = 0; k < static_cast<int64_t>(S * sizeof(Out)); k += 64) __builtin_prefetch(next + k, 1, 3);
        }
      }
      if (LOGP) acc[static_cast<size_t>(r)].add(norm);
    }
  }
  if constexpr (SCALED) finish_logp(sc.data(), fail, n, logp + r0);
  else finish_logp(acc.data(), fail, n, logp ? logp + r0 : nullptr);
}

// Rows r..e on the unrolled per-row path: blocks of R rows, then single rows.
template <int SC, int R, bool GH, bool LOGP, bool SCALED, typename Tok, typename Out>
void fixed_rows(const ProcessView& p, const double* init, const Tok* tokens, int64_t r, int64_t e, int64_t L,
                Out* beliefs, double* logp, int64_t* fail_rows) {
  for (; r + R <= e; r += R) rows_fixed<SC, R, GH, LOGP, SCALED>(p, init, tokens, r, L, beliefs, logp, fail_rows + r);
  for (; r < e; ++r) rows_fixed<SC, 1, GH, LOGP, SCALED>(p, init, tokens, r, L, beliefs, logp, fail_rows + r);
}

// Rows r..e on the runtime-S path: blocks of 4 rows, then single rows.
template <bool GH, bool LOGP, bool SCALED, typename Tok, typename Out>
void generic_rows(const ProcessView& p, const double* init, const Tok* tokens, int64_t r, int64_t e, int64_t L,
                  Out* beliefs, double* logp, int64_t* fail_rows) {
  std::vector<double> buf;
  constexpr int R = 4;
  for (; r + R <= e; r += R) rows_generic<R, GH, LOGP, SCALED>(p, init, tokens, r, L, beliefs, logp, fail_rows + r, buf);
  for (; r < e; ++r) rows_generic<1, GH, LOGP, SCALED>(p, init, tokens, r, L, beliefs, logp, fail_rows + r, buf);
}

// SCALED: log_prob without beliefs (ScaledLogProb's arithmetic on every path).
template <int SC, bool GH, bool LOGP, bool SCALED, typename Tok, typename Out>
void run_rows(const ProcessView& p, const double* init, const Tok* tokens, int64_t b, int64_t e, int64_t L,
              Out* beliefs, double* logp, int64_t* fail_rows, bool stream) {
  if constexpr (SC > 4) {  // unrolled S = 5..12 (dispatch_beliefs)
    int64_t r = b;
#if defined(__AVX2__)
    if (p.V <= 4)  // rows_lanes' in-register table lookups
      for (; r + kLaneRows <= e; r += kLaneRows)
        rows_lanes<SC, GH, LOGP, SCALED>(p, init, tokens, r, L, beliefs, logp, fail_rows + r);
#endif
    // see dispatch_beliefs: at S = 8 the unrolled per-row step is slower than the runtime-S one
    if constexpr (SC == 8) generic_rows<GH, LOGP, SCALED>(p, init, tokens, r, e, L, beliefs, logp, fail_rows);
    else fixed_rows<SC, (SC <= 6 ? 8 : 4), GH, LOGP, SCALED>(p, init, tokens, r, e, L, beliefs, logp, fail_rows);
  } else if constexpr (SC > 0) {
    int64_t r = b;
#if defined(CM_TILED_LANES)
    if (p.V <= Lanes::kMaxV) {
      for (; r + kTileRows <= e; r += kTileRows) {
        if constexpr (SCALED) rows_tiled_logp<SC, GH>(p, init, tokens, r, L, logp, fail_rows + r);
        else rows_tiled<SC, GH, LOGP>(p, init, tokens, r, L, beliefs, logp, fail_rows + r, stream);
      }
      if (stream && r > b) _mm_sfence();  // the blocks' non-temporal stores (row_stage.hpp)
    }
#endif
    if (p.V <= kLaneMaxV)
      for (; r + kLaneRows <= e; r += kLaneRows)
        rows_lanes<SC, GH, LOGP, SCALED>(p, init, tokens, r, L, beliefs, logp, fail_rows + r);
    fixed_rows<SC, 8, GH, LOGP, SCALED>(p, init, tokens, r, e, L, beliefs, logp, fail_rows);
  } else if (p.S >= kGroupMinS) {
    const int64_t rows = group_rows(p.V);
    for (int64_t r = b; r < e; r += rows) {
      const int n = static_cast<int>(std::min(rows, e - r));
      rows_grouped<GH, LOGP, SCALED>(p, init, tokens, r, n, L, beliefs, logp, fail_rows + r);
    }
  } else {
    generic_rows<GH, LOGP, SCALED>(p, init, tokens, b, e, L, beliefs, logp, fail_rows);
  }
}

}  // namespace

// dispatch_process, plus compile-time S = 5..12 for beliefs and log_prob (the other kernels keep
// dispatch_process's widths): blocks of 16 rows take rows_lanes' 4-lane in-register table
// lookups when V <= 4, other rows the unrolled belief_step<SC> (rows_fixed). Both give the bits
// of the runtime-S loop (dispatch.hpp); together 3-7x its rate (Intel AVX-512, 2026-12-02). At
// S = 8 the rows outside the lane blocks stay on the runtime-S loop: GCC turns the unrolled step
// into one 8-wide register whose in-order norm is summed lane by lane (0.65x).
template <int SC = 5, typename F>
void dispatch_beliefs(const ProcessView& p, F&& f) {
  if constexpr (SC <= 12) {
    if (p.S != SC) return dispatch_beliefs<SC + 1>(p, f);
    if (p.w) f(StateWidth<SC>{}, std::true_type{});
    else f(StateWidth<SC>{}, std::false_type{});
  } else {
    dispatch_process(p, f);
  }
}

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
  int64_t grain = std::max<int64_t>(16, ((65536 / L) + 15) / 16 * 16);
  // many states: blocks of rows large enough that every token's group fills the GEMM kernel
  if (p.S >= kGroupMinS) grain = std::max<int64_t>(grain, std::min<int64_t>(group_rows(p.V), (B + 1) / 2));
  const bool stream = beliefs && B * L * p.S * static_cast<int64_t>(sizeof(Out)) >= kStreamBytes;
  parallel_for(B, grain, [&](int64_t b, int64_t e) {
    int64_t* f = fail.data();
    dispatch_beliefs(p, [&](auto width, auto gh) {
      constexpr int SC = decltype(width)::fixed;
      constexpr bool GH = decltype(gh)::value;
      if (logp && !beliefs) run_rows<SC, GH, true, true>(p, init, tokens, b, e, L, beliefs, logp, f, stream);
      else if (logp) run_rows<SC, GH, true, false>(p, init, tokens, b, e, L, beliefs, logp, f, stream);
      else run_rows<SC, GH, false, false>(p, init, tokens, b, e, L, beliefs, logp, f, stream);
    });
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
