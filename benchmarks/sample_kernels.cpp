// The register-table sampling kernels alone (tables built, output buffer reused, one thread), on
// Mess3 (x=0.05, alpha=0.85), B=4096, L=256: ns per token for the 16-lane (AVX-512) and 8-lane
// (AVX2) Philox alone and for each whole kernel, every run checked token for token against the
// scalar definition (alias_draw64 on philox_block words). Not part of the Python build:
//   g++ -O3 -march=native -std=c++17 -Icsrc/include -Icsrc benchmarks/sample_kernels.cpp -o /tmp/sk && /tmp/sk
// and, for the code an AVX2-only machine gets (AVX-512 compiled out):
//   g++ -O3 -march=x86-64-v3 -std=c++17 -Icsrc/include -Icsrc benchmarks/sample_kernels.cpp -o /tmp/sk2 && /tmp/sk2
// To time an earlier AVX2 kernel against the current one in the same process (alternating runs,
// both checked), give its header, renamed to namespace avx2_prev (a commit before issue 16's
// two-phase kernel took RegTables and ran 8 rows per call, as below), e.g.
//   git show 08cf8be:csrc/cpu/sample_avx2.hpp | sed 's/namespace avx2 {/namespace avx2_prev {/;
//     s/COMPMECH_SAMPLE_AVX2 1/COMPMECH_SAMPLE_AVX2_PREV 1/; s/"sample_/"cpu\/sample_/' > /tmp/prev.hpp
// and add -DAVX2_PREV='"/tmp/prev.hpp"' to the x86-64-v3 command.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "compmech/alias.hpp"
#include "compmech/kernels.hpp"
#include "cpu/sample_avx2.hpp"
#include "cpu/sample_avx512.hpp"
#if defined(AVX2_PREV)
#include AVX2_PREV
#endif

using namespace compmech;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

constexpr int V = 3, S = 3, REPS = 50;
constexpr int64_t B = 4096, L = 256;
constexpr uint64_t SEED = 1;

// median seconds of REPS runs of fn, as ns per token
template <typename F>
double ns_per_token(F&& fn) {
  std::vector<double> t;
  for (int r = 0; r < REPS; ++r) {
    const double t0 = now();
    fn();
    t.push_back(now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[REPS / 2] / (B * L) * 1e9;
}

// Runs a kernel as a separate function, as in the library (inlined into main, the kernels'
// register allocation differs and they run slower).
template <typename F>
__attribute__((noinline)) void run(const F& kernel) {
  kernel();
}

}  // namespace

int main() {
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {  // the machine's other load, for the record
    char buf[64] = {};
    if (std::fgets(buf, sizeof buf, f)) std::printf("load average: %s", buf);
    std::fclose(f);
  }
  double T[V * S * S], init[S] = {1.0 / 3, 1.0 / 3, 1.0 / 3};  // Mess3's stationary distribution is uniform
  const double x = 0.05, alpha = 0.85;
  for (int k = 0; k < V; ++k)
    for (int i = 0; i < S; ++i)
      for (int j = 0; j < S; ++j)
        T[(k * S + i) * S + j] = (j == k ? alpha : (1 - alpha) / 2) * (i == j ? 1 - 2 * x : x);
  const HmmTables h = build_hmm_tables(T, init, V, S);
  const AliasTables& tr = h.trans;
  const RegTables rt = reg_tables(tr, S);
  std::vector<uint8_t> ref(B * L), out(B * L);
  const auto draw = [&](int64_t row, uint32_t& st, int64_t t) {
    const uint32_t hi = word_of(philox_block(SEED, row, kDomainTokens, static_cast<uint32_t>(t >> 2)), static_cast<int>(t & 3));
    const uint32_t o = alias_draw64(hi, low_word(SEED, row, t), tr.K, tr.thresh.data() + st * tr.K, tr.alias.data() + st * tr.K);
    st = o % S;
    return static_cast<uint8_t>(o / S);
  };
  for (int64_t r = 0; r < B; ++r) {
    uint32_t st = initial_state(SEED, r, h.init.K, h.init.thresh.data(), h.init.alias.data());
    for (int64_t t = 0; t < L; ++t) ref[r * L + t] = draw(r, st, t);
  }
  const auto redo = [&](int64_t r0) {
    return [&, r0](int i, uint32_t st, int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) out[(r0 + i) * L + t] = draw(r0 + i, st, t);
      return st;
    };
  };
  const auto check = [&](const char* name) {
    if (out != ref) {
      std::printf("%s: tokens differ from the scalar definition\n", name);
      std::exit(1);
    }
    std::fill(out.begin(), out.end(), 0);
  };
  uint64_t sink = 0;
#if defined(COMPMECH_SAMPLE_AVX512)
  // Philox16 alone as the kernel runs it: two consecutive blocks at once, round 2 from the
  // block's shared words (rows below 2^32 share row_hi)
  const double ph16 = ns_per_token([&] {
    __m512i acc = _mm512_setzero_si512();
    for (int64_t r = 0; r < B; r += 16) {
      const avx512::Philox16 ph(SEED, r);
      for (uint32_t b = 0; b < L / 4; b += 2) {
        __m512i w[2][4][2];
        const avx512::Philox16::Shared sh[2] = {ph.shared(b), ph.shared(b + 1)};
        ph.blocks_shared<2>(sh, w);
        for (int n = 0; n < 2; ++n)
          for (int k = 0; k < 4; ++k) acc = _mm512_ternarylogic_epi32(acc, w[n][k][0], w[n][k][1], 0x96);
      }
    }
    sink += _mm512_reduce_add_epi64(acc);
  });
  const auto avx512_rows = [&] {
    for (int64_t r = 0; r < B; r += 32) avx512::hmm_rows_reg<2>(rt, h.init, r, L, SEED, 0, out.data(), redo(r));
    avx512::fence_streaming_stores();
  };
  const double k512 = ns_per_token([&] { run(avx512_rows); });
  check("avx512");
  std::printf("AVX-512: Philox16 alone %.3f ns/token, whole kernel %.3f ns/token (%.2f G tokens/s per core)\n", ph16,
              k512, 1 / k512);
#endif
#if defined(COMPMECH_SAMPLE_AVX2)
  // Philox8 alone as the kernel's phase 1 runs it: a chunk's four blocks as three, three and two
  // half-blocks at a time, round 2 from the shared words (rows below 2^32 share row_hi)
  const double ph8 = ns_per_token([&] {
    __m256i acc = _mm256_setzero_si256();
    alignas(32) __m256i keys[10][2];
    for (int64_t r = 0; r < B; r += 8) {
      const avx2::Philox8 ph(SEED, r);
      for (int i = 0; i < 10; ++i) {
        keys[i][0] = _mm256_set1_epi32(static_cast<int>(ph.k0[i]));
        keys[i][1] = _mm256_set1_epi32(static_cast<int>(ph.k1[i]));
      }
      for (uint32_t b = 0; b < L / 4; b += 4) {
        const avx2::Philox8::Shared sh[4] = {ph.shared(b), ph.shared(b + 1), ph.shared(b + 2), ph.shared(b + 3)};
        __m256i w[4][4][2];
        avx2::philox_halves<0, 3, true>(ph, sh, b, keys, w);
        avx2::philox_halves<3, 3, true>(ph, sh, b, keys, w);
        avx2::philox_halves<6, 2, true>(ph, sh, b, keys, w);
        for (int j = 0; j < 4; ++j)
          for (int k = 0; k < 4; ++k) acc = _mm256_xor_si256(acc, _mm256_xor_si256(w[j][k][0], w[j][k][1]));
      }
    }
    sink += static_cast<uint64_t>(_mm256_extract_epi64(acc, 0));
  });
  // as the library runs it: groups of 32 rows (four interleaved state chains of 8)
  const avx2::Tables tb = avx2::tables(rt);
  const auto avx2_rows = [&] {
    for (int64_t r = 0; r < B; r += 32) avx2::hmm_rows<4>(tb, h.init, r, L, SEED, 0, out.data(), redo(r));
    avx2::fence_streaming_stores();
  };
  const double k256 = ns_per_token([&] { run(avx2_rows); });
  check("avx2");
  std::printf("AVX2: Philox8 alone %.3f ns/token, whole kernel %.3f ns/token (%.2f G tokens/s per core)\n", ph8, k256,
              1 / k256);
#if defined(AVX2_PREV)
  {  // alternating runs of the earlier kernel and this one, REPS each
    std::vector<double> tp, tn;
    for (int r = 0; r < REPS; ++r) {
      double t0 = now();
      run([&] {
        for (int64_t r = 0; r < B; r += 8) avx2_prev::hmm_rows<1>(rt, h.init, r, L, SEED, 0, out.data(), redo(r));
      });
      tp.push_back(now() - t0);
      check("avx2 (earlier)");
      t0 = now();
      run(avx2_rows);
      tn.push_back(now() - t0);
      check("avx2");
    }
    std::sort(tp.begin(), tp.end());
    std::sort(tn.begin(), tn.end());
    const double f = 1e9 / (B * L);
    std::printf("AVX2 alternating, medians of %d: earlier %.3f, now %.3f ns/token (ratio %.3f; best %.3f, %.3f)\n", REPS,
                tp[REPS / 2] * f, tn[REPS / 2] * f, tn[REPS / 2] / tp[REPS / 2], tp[0] * f, tn[0] * f);
  }
#endif
#endif
  std::printf("(checksum %llu)\n", static_cast<unsigned long long>(sink));
  return 0;
}
