#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "compmech/alias.hpp"
#include "compmech/kernels.hpp"
#include "launchers.hpp"
#include "parallel.hpp"
#include "sample_avx2.hpp"
#include "sample_avx512.hpp"
#include "sample_paths.hpp"
#include "sample_reg.hpp"  // RegTables are built on every build (the SIMD headers include it only with AVX2)

namespace compmech {
namespace {

// Philox4x32-10 for 8 consecutive rows at once (same counter layout as philox_block), writing
// out[k * 8 + l] = word k of row row0 + l. AVX2 multiplies 4 lanes per instruction; the scalar
// fallback is philox_block itself, so both give the same bits.
inline void philox_rows8(uint64_t seed, uint64_t row0, uint32_t domain, uint32_t block, uint32_t* out) {
#if defined(__AVX2__)
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  __m256i c0 = _mm256_set1_epi32(static_cast<int>(block));
  __m256i c1 = _mm256_set1_epi32(static_cast<int>(domain));
  uint32_t lo[8], hi[8];
  for (int l = 0; l < 8; ++l) {
    lo[l] = static_cast<uint32_t>(row0 + l);
    hi[l] = static_cast<uint32_t>((row0 + l) >> 32);
  }
  __m256i c2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo));
  __m256i c3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    // 32x32 -> 64-bit products of even and odd lanes, recombined into hi/lo words
    const __m256i pe0 = _mm256_mul_epu32(c0, m0), po0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
    const __m256i pe1 = _mm256_mul_epu32(c2, m1), po1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
    const __m256i lo0 = _mm256_blend_epi32(pe0, _mm256_slli_epi64(po0, 32), 0xAA);
    const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(pe0, 32), po0, 0xAA);
    const __m256i lo1 = _mm256_blend_epi32(pe1, _mm256_slli_epi64(po1, 32), 0xAA);
    const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(pe1, 32), po1, 0xAA);
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 0), c0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), c1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), c2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 24), c3);
#else
  for (int l = 0; l < 8; ++l) {
    const U32x4 v = philox_block(seed, row0 + l, domain, block);
    for (int k = 0; k < 4; ++k) out[k * 8 + l] = v.v[k];
  }
#endif
}

// The outcome (token * S + next state) of the draw at position t of `row` from hidden state st:
// alias_draw64 on the draw's two words, reading the low word only when the high one leaves the
// decision open. Every CPU path calls this (or makes the same fast decision) for every draw.
inline uint32_t draw_outcome(const AliasTables& tr, uint32_t st, uint32_t hi, uint64_t seed, uint64_t row, int64_t t) {
  const size_t base = static_cast<size_t>(st) * tr.K;
  uint32_t o;
  if (!alias_draw_fast(hi, tr.K, tr.thresh.data() + base, tr.alias.data() + base, o))
    o = alias_draw64(hi, low_word(seed, row, t), tr.K, tr.thresh.data() + base, tr.alias.data() + base);
  return o;
}

inline uint32_t first_state(const AliasTables& init_a, uint64_t seed, uint64_t row) {
  return initial_state(seed, row, init_a.K, init_a.thresh.data(), init_a.alias.data());
}

// Packed path for V <= 256 and S <= 256: one 64-bit table entry per (state, bucket) holds the
// threshold's high half and both candidate outcomes, each packed as (token << 8 | next state).
template <typename Tok, typename St>
void hmm_rows_packed(const AliasTables& init_a, const AliasTables& tr, const std::vector<uint64_t>& packed, int S,
                     int64_t r0, int64_t L, uint64_t seed, uint64_t row0, Tok* tokens, St* states) {
  constexpr int R = 16;
  const uint32_t K = tr.K;
  const uint64_t* tab = packed.data();
  uint32_t base[R];
  for (int r = 0; r < R; ++r) {
    const int64_t row = r0 + r;
    const uint32_t st = first_state(init_a, seed, row0 + row);
    base[r] = st * K;
    if (states) states[row * (L + 1)] = static_cast<St>(st);
  }
  alignas(32) uint32_t rnd[2][32];
  for (int64_t t0 = 0; t0 < L; t0 += 4) {
    philox_rows8(seed, row0 + r0, kDomainTokens, static_cast<uint32_t>(t0 >> 2), rnd[0]);
    philox_rows8(seed, row0 + r0 + 8, kDomainTokens, static_cast<uint32_t>(t0 >> 2), rnd[1]);
    const int kmax = static_cast<int>(std::min<int64_t>(4, L - t0));
    for (int k = 0; k < kmax; ++k) {
      const int64_t t = t0 + k;
      Tok* tcol = tokens + r0 * L + t;
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const uint32_t hi = rnd[r >> 3][k * 8 + (r & 7)];
        uint32_t code;
        if (!packed_alias_fast(hi, K, tab + base[r], code))
          code = outcome_code(draw_outcome(tr, base[r] / K, hi, seed, row0 + r0 + r, t), S);
        tcol[r * L] = static_cast<Tok>(code >> 8);
        base[r] = (code & 0xFF) * K;
      }
      if (states)
        for (int r = 0; r < R; ++r) states[(r0 + r) * (L + 1) + t + 1] = static_cast<St>(base[r] / K);
    }
  }
}

// Scalar path, any V and S: R rows side by side.
template <int R, typename Tok, typename St>
void hmm_rows(const AliasTables& init_a, const AliasTables& tr, int S, int64_t r0, int64_t L, uint64_t seed,
              uint64_t row0, Tok* tokens, St* states) {
  uint32_t st[R];
  for (int r = 0; r < R; ++r) {
    const int64_t row = r0 + r;
    st[r] = first_state(init_a, seed, row0 + row);
    if (states) states[row * (L + 1)] = static_cast<St>(st[r]);
  }
  for (int64_t t0 = 0; t0 < L; t0 += 4) {
    U32x4 rnd[R];
    for (int r = 0; r < R; ++r) rnd[r] = philox_block(seed, row0 + r0 + r, kDomainTokens, static_cast<uint32_t>(t0 >> 2));
    const int kmax = static_cast<int>(std::min<int64_t>(4, L - t0));
    for (int k = 0; k < kmax; ++k) {
      const int64_t t = t0 + k;
      for (int r = 0; r < R; ++r) {
        const int64_t row = r0 + r;
        const uint32_t o = draw_outcome(tr, st[r], rnd[r].v[k], seed, row0 + row, t);
        tokens[row * L + t] = static_cast<Tok>(o / static_cast<uint32_t>(S));
        st[r] = o % static_cast<uint32_t>(S);
        if (states) states[row * (L + 1) + t + 1] = static_cast<St>(st[r]);
      }
    }
  }
}

// Positions [t0, t1) of one row from hidden state st, scalar; returns the state after them.
template <typename Tok>
uint32_t redo_row(const AliasTables& tr, int S, uint32_t st, int64_t row, int64_t t0, int64_t t1, int64_t L,
                  uint64_t seed, uint64_t row0, Tok* tokens) {
  for (int64_t t = t0; t < t1; ++t) {
    const uint32_t hi = word_of(philox_block(seed, row0 + row, kDomainTokens, static_cast<uint32_t>(t >> 2)),
                                static_cast<int>(t & 3));
    const uint32_t o = draw_outcome(tr, st, hi, seed, row0 + row, t);
    tokens[row * L + t] = static_cast<Tok>(o / static_cast<uint32_t>(S));
    st = o % static_cast<uint32_t>(S);
  }
  return st;
}

std::atomic<SamplePath> g_sample_path{SamplePath::automatic};

}  // namespace

bool sample_path_available(SamplePath p) {
#if !defined(COMPMECH_SAMPLE_AVX512)
  if (p == SamplePath::avx512) return false;
#endif
#if !defined(COMPMECH_SAMPLE_AVX2)
  if (p == SamplePath::avx2) return false;
#endif
  return true;
}

SamplePath set_sample_path(SamplePath p) {
  return g_sample_path.exchange(p);
}

template <typename Tok, typename St>
void sample_hmm_cpu(const ProcessView& p, const double* init, int64_t B, int64_t L, uint64_t seed,
                    uint64_t row0, Tok* tokens, St* states) {
  const int V = p.V, S = p.S;
  const HmmTables h = build_hmm_tables(p.T, init, V, S);
  const AliasTables& tr = h.trans;
  const AliasTables& ia = h.init;
  const SamplePath want = g_sample_path;
  const bool use_packed = HmmTables::packable(V, S) && (want == SamplePath::automatic || want == SamplePath::packed);
  // Register-table paths (small processes, tokens only): AVX-512 on 32 and 16 rows, AVX2 on 32
  // and 8 (also the AVX-512 path's leftover rows).
  const bool reg_ok = std::is_same<Tok, uint8_t>::value && states == nullptr && RegTables::fits(V, S);
  [[maybe_unused]] const bool use_reg512 = reg_ok && sample_path_available(SamplePath::avx512) &&
                          (want == SamplePath::automatic || want == SamplePath::avx512);
  [[maybe_unused]] const RegTables rt = reg_ok ? reg_tables(tr, S) : RegTables{};
#if defined(COMPMECH_SAMPLE_AVX2)
  const bool use_reg256 = reg_ok && avx2::fits(V, S) &&
                          (want == SamplePath::automatic || want == SamplePath::avx2 || use_reg512);
  const avx2::Tables rt8 = use_reg256 ? avx2::tables(rt) : avx2::Tables{};
#endif
  const std::vector<uint64_t>& packed = h.packed;
  // Chunks of ~65536 tokens (about 30 us on the AVX-512 path), whole 32-row groups: the last
  // chunk a thread claims leaves the other at most that long alone at the end of the call.
  const int64_t grain = std::max<int64_t>(32, ((65536 / std::max<int64_t>(L, 1)) + 31) / 32 * 32);
  parallel_for(B, grain, [&](int64_t b, int64_t e) {
    constexpr int R = 16;
    int64_t r = b;
    if constexpr (std::is_same<Tok, uint8_t>::value) {
      const auto redo = [&](int64_t r0) {
        return [&, r0](int i, uint32_t st, int64_t t0, int64_t t1) {
          return redo_row(tr, S, st, r0 + i, t0, t1, L, seed, row0, tokens);
        };
      };
      uint8_t* tok8 = reinterpret_cast<uint8_t*>(tokens);
#if defined(COMPMECH_SAMPLE_AVX512)
      if (use_reg512) {
        for (; r + 2 * R <= e; r += 2 * R) avx512::hmm_rows_reg<2>(rt, ia, r, L, seed, row0, tok8, redo(r));
        for (; r + R <= e; r += R) avx512::hmm_rows_reg<1>(rt, ia, r, L, seed, row0, tok8, redo(r));
        avx512::fence_streaming_stores();  // before this thread's rows are handed on
      }
#endif
#if defined(COMPMECH_SAMPLE_AVX2)
      if (use_reg256) {
        for (; r + 32 <= e; r += 32) avx2::hmm_rows<4>(rt8, ia, r, L, seed, row0, tok8, redo(r));
        for (; r + 8 <= e; r += 8) avx2::hmm_rows<1>(rt8, ia, r, L, seed, row0, tok8, redo(r));
        avx2::fence_streaming_stores();  // before this thread's rows are handed on
      }
#endif
      (void)redo;
      (void)tok8;
    }
    if (use_packed)
      for (; r + R <= e; r += R) hmm_rows_packed(ia, tr, packed, S, r, L, seed, row0, tokens, states);
    for (; r + R <= e; r += R) hmm_rows<R>(ia, tr, S, r, L, seed, row0, tokens, states);
    for (; r < e; ++r) hmm_rows<1>(ia, tr, S, r, L, seed, row0, tokens, states);
  });
}

template <typename Tok, typename Out>
ZeroProb sample_ghmm_cpu(const ProcessView& p, const double* init, int64_t B, int64_t L, uint64_t seed,
                         uint64_t row0, Tok* tokens, Out* beliefs) {
  const int V = p.V, S = p.S;
  // Tw[x, i] = (T[x] w)_i, so that P(x | eta) = eta . Tw[x].
  std::vector<double> Tw(static_cast<size_t>(V) * S, 0.0);
  token_weights(p.T, p.w, V, S, Tw.data());
  std::vector<int64_t> fail(static_cast<size_t>(B), -1);
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(L, 1));
  parallel_for(B, grain, [&](int64_t b, int64_t e) {
    std::vector<double> eta(S), nxt(S), probs(V);
    for (int64_t row = b; row < e; ++row) {
      for (int j = 0; j < S; ++j) eta[j] = init[j];
      U32x4 rnd{}, rlo{};
      for (int64_t t = 0; t < L; ++t) {
        if ((t & 3) == 0) {
          rnd = philox_block(seed, row0 + row, kDomainTokens, static_cast<uint32_t>(t >> 2));
          rlo = philox_block(seed, row0 + row, kDomainTokensLow, static_cast<uint32_t>(t >> 2));
        }
        next_token_probs<double>(eta.data(), Tw.data(), V, S, probs.data());
        double total = 0.0;
        bool invalid = false;  // a negative probability: not a state (see negative_token_prob)
        for (int x = 0; x < V; ++x) {
          total += probs[x] > p.zero_tol ? probs[x] : 0.0;
          invalid |= negative_token_prob(probs[x], eta.data(), Tw.data(), x, S, p.zero_tol);
        }
        const int x = total > p.zero_tol && !invalid
                          ? categorical_draw<double>(probs.data(), V, total, u64_to_unit(rnd.v[t & 3], rlo.v[t & 3]), p.zero_tol)
                          : -1;
        double norm = x >= 0 ? belief_step<0, double>(eta.data(), p.T + static_cast<int64_t>(x) * S * S, p.w, nxt.data(), S) : 0.0;
        if (!(norm > p.zero_tol)) {
          fail[static_cast<size_t>(row)] = t;
          break;
        }
        tokens[row * L + t] = static_cast<Tok>(x);
        const double inv = safe_inverse(norm, nxt.data(), S);  // as in the beliefs kernel: same bits
        for (int j = 0; j < S; ++j) eta[j] = nxt[j] * inv;
        if (beliefs)
          for (int j = 0; j < S; ++j) beliefs[(row * L + t) * S + j] = static_cast<Out>(eta[j]);
      }
    }
  });
  for (int64_t r = 0; r < B; ++r)
    if (fail[static_cast<size_t>(r)] >= 0) return ZeroProb{r, fail[static_cast<size_t>(r)]};
  return {};
}

#define CM_INST_HMM(TOK)                                                                                   \
  template void sample_hmm_cpu<TOK, uint8_t>(const ProcessView&, const double*, int64_t, int64_t, uint64_t, \
                                             uint64_t, TOK*, uint8_t*);                                    \
  template void sample_hmm_cpu<TOK, uint16_t>(const ProcessView&, const double*, int64_t, int64_t, uint64_t,\
                                              uint64_t, TOK*, uint16_t*);                                  \
  template void sample_hmm_cpu<TOK, uint32_t>(const ProcessView&, const double*, int64_t, int64_t, uint64_t,\
                                              uint64_t, TOK*, uint32_t*);                                  \
  template ZeroProb sample_ghmm_cpu<TOK, float>(const ProcessView&, const double*, int64_t, int64_t,       \
                                                uint64_t, uint64_t, TOK*, float*);                         \
  template ZeroProb sample_ghmm_cpu<TOK, double>(const ProcessView&, const double*, int64_t, int64_t,      \
                                                 uint64_t, uint64_t, TOK*, double*);
CM_INST_HMM(uint8_t)
CM_INST_HMM(uint16_t)
#undef CM_INST_HMM

}  // namespace compmech
