// Sampling on the GPU: one thread per sequence, the whole time loop in one launch. Random
// words come from philox_block with the same (seed, row, position) counter as the CPU and the
// draws make alias_draw64's decisions (kernels.hpp) on the same alias tables (built on the host by build_hmm_tables) or, for GHMMs, the
// same belief arithmetic, so the GPU gives the CPU's tokens bit for bit.
#include <algorithm>
#include <string>

#include "compmech/kernels.hpp"
#include "device.cuh"

namespace compmech {
namespace cuda {
namespace {

// Tiles of up to 64 positions (a multiple of 4: one Philox call gives the words of 4 positions).
constexpr int kSampleTile = 64;

template <bool PACKED, typename Tok, typename St>
__global__ void __launch_bounds__(kRows)
    sample_hmm_kernel(DevHmmTables h, int64_t B, int64_t L, uint64_t seed, uint64_t row0, Tok* __restrict__ tokens,
                      St* __restrict__ states, int TT, bool tab_shared) {
  const int stride = TT + 1;
  const int S = h.S;
  const uint32_t K = static_cast<uint32_t>(h.V) * static_cast<uint32_t>(S);
  CM_DYNAMIC_SMEM(smem);
  uint64_t* sTab = reinterpret_cast<uint64_t*>(smem);
  const int64_t n_tab = PACKED && tab_shared ? static_cast<int64_t>(S) * K : 0;
  for (int64_t k = threadIdx.x; k < n_tab; k += blockDim.x) sTab[k] = h.packed[k];
  const uint64_t* tab = PACKED && tab_shared ? sTab : h.packed;
  Tok* sTok = reinterpret_cast<Tok*>(sTab + n_tab);
  St* sSt = reinterpret_cast<St*>(sTok + kRows * stride);  // only touched when states are wanted
  __syncthreads();

  const RowSlot slot = row_slot(B);
  const int64_t rb = slot.first, row = slot.row();
  const int nrows = slot.nrows, r = slot.r;
  const bool active = slot.active();
  uint32_t st = 0;
  if (active) {
    st = initial_state(seed, row0 + row, static_cast<uint32_t>(S), h.init_thresh, h.init_alias);
    if (states) states[row * (L + 1)] = static_cast<St>(st);
  }
  for (int64_t t0 = 0; t0 < L; t0 += TT) {
    const int nt = static_cast<int>(min(static_cast<int64_t>(TT), L - t0));
    if (active) {
      for (int tt = 0; tt < nt; tt += 4) {
        const U32x4 rnd = philox_block(seed, row0 + row, kDomainTokens, static_cast<uint32_t>((t0 + tt) >> 2));
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (tt + k >= nt) break;
          // alias_draw64's decision, as on the CPU: the low word is read only when the high one
          // leaves it open (rare, so the divergent branch costs nothing on average)
          const int64_t t = t0 + tt + k;
          const size_t base = static_cast<size_t>(st) * K;
          uint32_t tok;
          bool decided;
          if (PACKED) {
            uint32_t code;
            decided = packed_alias_fast(rnd.v[k], K, tab + base, code);
            tok = code >> 8;
            if (decided) st = code & 0xFF;
          } else {
            uint32_t o;
            decided = alias_draw_fast(rnd.v[k], K, h.thresh + base, h.alias + base, o);
            tok = o / S;
            if (decided) st = o % S;
          }
          if (!decided) {
            const uint32_t o = alias_draw64(rnd.v[k], low_word(seed, row0 + row, t), K, h.thresh + base, h.alias + base);
            tok = o / S;
            st = o % S;
          }
          sTok[r * stride + tt + k] = static_cast<Tok>(tok);
          if (states) sSt[r * stride + tt + k] = static_cast<St>(st);
        }
      }
    }
    __syncthreads();
    copy_rows_out(sTok, stride, nrows, nt, tokens + rb * L + t0, L);
    if (states) copy_rows_out(sSt, stride, nrows, nt, states + rb * (L + 1) + 1 + t0, L + 1);
    __syncthreads();  // the next tile overwrites the staged rows
  }
}

template <bool PACKED, typename Tok, typename St>
void launch_hmm(const Launch& at, const DevHmmTables& h, int64_t B, int64_t L, uint64_t seed, uint64_t row0,
                Tok* tokens, St* states) {
  const size_t tab_bytes = PACKED ? static_cast<size_t>(h.S) * h.V * h.S * sizeof(uint64_t) : 0;
  const bool tab_shared = PACKED && tab_bytes <= kTableBytes;
  const size_t per_pos = sizeof(Tok) + (states ? sizeof(St) : 0);
  const int TT = kRows * (kSampleTile + 1) * per_pos <= kStageBytes ? kSampleTile : kSampleTile / 2;
  const size_t smem = (tab_shared ? tab_bytes : 0) + kRows * (TT + 1) * per_pos + 16;
  const auto kernel = &sample_hmm_kernel<PACKED, Tok, St>;
  CM_LAUNCH(kernel, grid_for(blocks_for(B, kRows)), kRows, smem, at,
            h, B, L, seed, row0, tokens, states, TT, tab_shared);
  check_launch("the HMM sampling kernel (S=" + std::to_string(h.S) + ", V=" + std::to_string(h.V) +
                   (PACKED ? ", packed tables)" : ", alias tables)"), at);
}

template <typename Tok, typename St>
void dispatch_hmm(const Launch& at, const DevHmmTables& h, int64_t B, int64_t L, uint64_t seed, uint64_t row0,
                  void* tokens, void* states) {
  if (h.packed) {
    if constexpr (sizeof(Tok) == 1 && sizeof(St) == 1)
      return launch_hmm<true>(at, h, B, L, seed, row0, static_cast<Tok*>(tokens), static_cast<St*>(states));
    throw std::invalid_argument("packed sampling tables need uint8 tokens and states");
  }
  launch_hmm<false>(at, h, B, L, seed, row0, static_cast<Tok*>(tokens), static_cast<St*>(states));
}

template <typename Tok>
void dispatch_states(const Launch& at, const DevHmmTables& h, int64_t B, int64_t L, uint64_t seed,
                     uint64_t row0, void* tokens, void* states, IntType st_type) {
  switch (st_type) {
    case IntType::u8: return dispatch_hmm<Tok, uint8_t>(at, h, B, L, seed, row0, tokens, states);
    case IntType::u16: return dispatch_hmm<Tok, uint16_t>(at, h, B, L, seed, row0, tokens, states);
    case IntType::u32: return dispatch_hmm<Tok, uint32_t>(at, h, B, L, seed, row0, tokens, states);
    default: throw std::invalid_argument("states must be uint8, uint16 or uint32");
  }
}

// GHMM sampling through beliefs, as sample_ghmm_cpu: token probabilities are recomputed in the
// draw instead of held (V may be large), with the same arithmetic, hence the same tokens.
template <typename W, typename Tok, typename Out>
__global__ void __launch_bounds__(kRows)
    sample_ghmm_kernel(DevProcess p, const double* __restrict__ Tw, const double* __restrict__ init, int64_t B,
                       int64_t L, uint64_t seed, uint64_t row0, Tok* __restrict__ tokens, Out* __restrict__ beliefs,
                       unsigned long long* flags, int TT, bool t_shared, bool stage_out) {
  const int S = p.S;
  const int n = W::span(S);
  const int V = p.V;
  CM_DYNAMIC_SMEM(smem);
  double* sT = reinterpret_cast<double*>(smem);
  const int64_t nT = t_shared ? static_cast<int64_t>(V) * S * S : 0;
  const int64_t nTw = t_shared ? static_cast<int64_t>(V) * S : 0;
  double* sTw = sT + nT;
  Out* sOut = reinterpret_cast<Out*>(sTw + nTw);
  const int out_stride = odd_stride(TT * S);
  Tok* sTok = reinterpret_cast<Tok*>(sOut + (stage_out ? kRows * out_stride : 0));
  const int tok_stride = odd_stride(TT);
  load_shared(sT, p.T, nT);
  load_shared(sTw, Tw, nTw);
  __syncthreads();
  const double* T = t_shared ? sT : p.T;
  const double* tw = t_shared ? sTw : Tw;

  const RowSlot slot = row_slot(B);
  const int64_t rb = slot.first, row = slot.row();
  const int nrows = slot.nrows, r = slot.r;
  const bool active = slot.active();
  double eta[W::N], nxt[W::N];
  for (int j = 0; j < n; ++j) eta[j] = j < S ? init[j] : 0.0;
  bool failed = false;
  const double tol = p.zero_tol;
  for (int64_t t0 = 0; t0 < L; t0 += TT) {
    const int nt = static_cast<int>(min(static_cast<int64_t>(TT), L - t0));
    if (active) {
      U32x4 rnd{}, rlo{};
      for (int tt = 0; tt < nt; ++tt) {
        const int64_t t = t0 + tt;
        if ((t & 3) == 0) {
          rnd = philox_block(seed, row0 + row, kDomainTokens, static_cast<uint32_t>(t >> 2));
          rlo = philox_block(seed, row0 + row, kDomainTokensLow, static_cast<uint32_t>(t >> 2));
        }
        int x = -1;
        double norm = 0.0;
        if (!failed) {
          const auto prob = [&](int y) { return W::prob(eta, tw, y, S); };
          double total = 0.0;
          bool invalid = false;  // a negative probability: not a state (see negative_token_prob)
          for (int y = 0; y < V; ++y) {
            const double py = prob(y);
            total += py > tol ? py : 0.0;
            invalid |= negative_token_prob(py, eta, tw, y, S, tol);
          }
          if (total > tol && !invalid) x = categorical_draw_fn<double>(prob, V, total, u64_to_unit(word_of(rnd, t & 3), word_of(rlo, t & 3)), tol);
          if (x >= 0) norm = W::step(eta, T + static_cast<int64_t>(x) * S * S, p.w, nxt, S);
          if (!(norm > tol)) {
            atomicMin(flags, static_cast<unsigned long long>(row * L + t));
            failed = true;
          } else {
            const double inv = safe_inverse(norm, nxt, n);  // as in the beliefs kernel: same bits
            for (int j = 0; j < n; ++j) eta[j] = nxt[j] * inv;
          }
        }
        sTok[r * tok_stride + tt] = static_cast<Tok>(failed ? 0 : x);
        if (beliefs) {
          Out* d = stage_out ? sOut + r * out_stride + tt * S : beliefs + (row * L + t) * S;
          for (int j = 0; j < n; ++j)
            if (j < S) d[j] = static_cast<Out>(failed ? CUDART_NAN : eta[j]);
        }
      }
    }
    __syncthreads();
    copy_rows_out(sTok, tok_stride, nrows, nt, tokens + rb * L + t0, L);
    if (beliefs && stage_out) copy_rows_out(sOut, out_stride, nrows, nt * S, beliefs + (rb * L + t0) * S, L * S);
    __syncthreads();
  }
}

template <typename W, typename Tok, typename Out>
void launch_ghmm(const Launch& at, const DevProcess& p, const double* Tw, const double* init, int64_t B, int64_t L,
                 uint64_t seed, uint64_t row0, Tok* tokens, Out* beliefs, unsigned long long* flags) {
  const int S = p.S;
  const size_t t_bytes = static_cast<size_t>(p.V) * S * (S + 1) * sizeof(double);
  const bool t_shared = t_bytes <= kTableBytes;
  const size_t per_pos = sizeof(Tok) + (beliefs ? static_cast<size_t>(S) * sizeof(Out) : 0);
  // TT must be a multiple of 4: a tile starts on a Philox block boundary
  int TT = static_cast<int>(std::min<size_t>(32, kStageBytes / (kRows * per_pos))) / 4 * 4;
  const bool stage_out = beliefs != nullptr && TT >= 4;
  if (!stage_out) TT = 32;
  const size_t smem = (t_shared ? t_bytes : 0) + (stage_out ? kRows * odd_stride(TT * S) * sizeof(Out) : 0) +
                      kRows * odd_stride(TT) * sizeof(Tok);
  const auto kernel = &sample_ghmm_kernel<W, Tok, Out>;
  CM_LAUNCH(kernel, grid_for(blocks_for(B, kRows)), kRows, smem, at,
            p, Tw, init, B, L, seed, row0, tokens, beliefs, flags, TT, t_shared, stage_out);
  check_launch("the GHMM sampling kernel (S=" + std::to_string(S) + ", V=" + std::to_string(p.V) + ")", at);
}

template <typename Tok, typename Out>
void dispatch_ghmm(const Launch& at, const DevProcess& p, const double* Tw, const double* init, int64_t B, int64_t L,
                   uint64_t seed, uint64_t row0, void* tokens, void* beliefs, unsigned long long* flags) {
  dispatch_width(p.S, [&](auto w) {
    launch_ghmm<decltype(w)>(at, p, Tw, init, B, L, seed, row0, static_cast<Tok*>(tokens), static_cast<Out*>(beliefs),
                             flags);
  });
}

}  // namespace

void sample_hmm(const Launch& at, const DevHmmTables& h, int64_t B, int64_t L, uint64_t seed, uint64_t row0,
                void* tokens, IntType tok_type, void* states, IntType st_type) {
  if (B == 0) return;  // (L == 0 still writes each row's initial state)
  DeviceGuard guard(at.device);
  if (tok_type == IntType::u8) return dispatch_states<uint8_t>(at, h, B, L, seed, row0, tokens, states, st_type);
  if (tok_type == IntType::u16) return dispatch_states<uint16_t>(at, h, B, L, seed, row0, tokens, states, st_type);
  throw std::invalid_argument("sampled tokens must be uint8 or uint16");
}

void sample_ghmm(const Launch& at, const DevProcess& p, const double* Tw, const double* init, int64_t B, int64_t L,
                 uint64_t seed, uint64_t row0, void* tokens, IntType tok_type, void* beliefs, FloatType out_type,
                 unsigned long long* flags) {
  require_states(p.S);
  if (B == 0 || L == 0) return;
  DeviceGuard guard(at.device);
  const bool f64 = out_type == FloatType::f64;
  if (tok_type == IntType::u8)
    return f64 ? dispatch_ghmm<uint8_t, double>(at, p, Tw, init, B, L, seed, row0, tokens, beliefs, flags)
               : dispatch_ghmm<uint8_t, float>(at, p, Tw, init, B, L, seed, row0, tokens, beliefs, flags);
  if (tok_type == IntType::u16)
    return f64 ? dispatch_ghmm<uint16_t, double>(at, p, Tw, init, B, L, seed, row0, tokens, beliefs, flags)
               : dispatch_ghmm<uint16_t, float>(at, p, Tw, init, B, L, seed, row0, tokens, beliefs, flags);
  throw std::invalid_argument("sampled tokens must be uint8 or uint16");
}

}  // namespace cuda
}  // namespace compmech
