// cm.log_prob's per-core cost on Mess3 (x=0.05, alpha=0.85), B=65536, L=256, uint8 tokens: the
// 8-lane kernels alone against the API's C++ entry (beliefs_cpu with no belief output: chunking,
// thread pool, per-row log and failure scan), in the same process:
//   - "normalised": the previous arithmetic (division by each norm, product of norms), which
//     beliefs(..., return_log_prob=True) still uses;
//   - "scaled": ScaledLogProb (power-of-two rescaling every 8 positions), what log_prob runs now;
//   - "bound": the same table lookups, multiply-adds and norm with no check and no rescaling
//     (wrong results: it only shows what the rest costs).
// Figures are medians of REPS calls in process CPU time per update (robust to other jobs on
// shared cores), next to wall clock. Not part of the Python build:
//   g++ -O3 -march=native -std=c++17 -Icsrc/include -Icsrc benchmarks/log_prob_kernels.cpp csrc/cpu/parallel.cpp
//       -lpthread -o /tmp/lpk && /tmp/lpk [REPS]
#include "cpu/beliefs.cpp"  // the kernels live in an anonymous namespace: one translation unit

#include <chrono>
#include <cstdio>
#include <ctime>
#include <random>

using namespace compmech;

namespace {

constexpr int64_t B = 65536, L_ = 256;
// L through an opaque copy: with a constant L the compiler clones the kernels for L = 256 (a
// faster clone than the library's, which sees a runtime L), and the figures would flatter them.
int64_t opaque(int64_t x) {
  asm volatile("" : "+r"(x));
  return x;
}
const int64_t L = opaque(L_);

double wall() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
double cpu() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

struct Time {
  double wall, cpu;  // medians, seconds
};
template <typename F>
Time median(F&& f, int reps) {
  std::vector<double> w, c;
  for (int k = 0; k < reps; ++k) {
    const double t = wall(), u = cpu();
    f();
    w.push_back(wall() - t);
    c.push_back(cpu() - u);
  }
  std::sort(w.begin(), w.end());
  std::sort(c.begin(), c.end());
  return {w[reps / 2], c[reps / 2]};
}

// The products and the norm of tile_logp8, nothing else (the per-row result is meaningless).
__attribute__((noinline)) void bound_rows(const ProcessView& p, const double* init, const uint8_t* tokens, int64_t r0,
                                          double* out) {
  constexpr int SC = 3, G = kLane8G;
  __m512d tab[SC * SC];
  fill_tables8<SC>(p, tab);
  vd8 v[G][SC];
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < SC; ++j) v[g][j] = vd8{} + init[j];
  __m512i xs[G][kTile];
  vd8 acc = vd8{};
  for (int64_t t0 = 0; t0 < L; t0 += kTile) {
    for (int g = 0; g < G; ++g) stage_tokens8(tokens, r0 + g * 8, L, t0, kTile, xs[g]);
    for (int tt = 0; tt < kTile; ++tt)
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) {
        vd8 nxt[SC];
        products_lanes8<SC>(v[g], tab, xs[g][tt], nxt);
        acc += norm_lanes8<SC, false>(nxt, nullptr);
        for (int j = 0; j < SC; ++j) v[g][j] = nxt[j];
      }
  }
  out[r0] = acc[0];
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, atoi(argv[1])) : 15;
  const double T[27] = {0.765,   0.00375, 0.00375, 0.0425,  0.0675,  0.00375, 0.0425,  0.00375, 0.0675,
                        0.0675,  0.0425,  0.00375, 0.00375, 0.765,   0.00375, 0.00375, 0.0425,  0.0675,
                        0.0675,  0.00375, 0.0425,  0.00375, 0.0675,  0.0425,  0.00375, 0.00375, 0.765};
  const double init[3] = {1 / 3., 1 / 3., 1 / 3.};
  const ProcessView p{T, nullptr, 3, 3, 0.0};
  // Mess3 sequences from its hidden-state chain
  std::vector<uint8_t> tok(static_cast<size_t>(B * L));
  std::mt19937_64 rng(0);
  std::uniform_real_distribution<double> u(0, 1);
  for (int64_t r = 0; r < B; ++r) {
    int s = static_cast<int>(rng() % 3);
    for (int64_t t = 0; t < L; ++t) {
      double q = u(rng);
      int x = 0, j = 0;
      for (int k = 0; k < 9; ++k) {
        x = k / 3, j = k % 3;
        q -= T[(x * 3 + s) * 3 + j];
        if (q < 0) break;
      }
      tok[static_cast<size_t>(r * L + t)] = static_cast<uint8_t>(x);
      s = j;
    }
  }
  std::vector<double> api(B), scaled(B), normalised(B), sink(B);
  std::vector<int64_t> fail(B);
  const double N = double(B) * L;
  const auto show = [&](const char* name, Time m, int threads) {
    std::printf("%-44s %d thread%s  CPU %.3f ns/update  wall %6.2f ms = %.3f G updates/s\n", name, threads,
                threads > 1 ? "s" : " ", m.cpu / N * 1e9, m.wall * 1e3, N / m.wall / 1e9);
  };
  for (int round = 0; round < 2; ++round) {
    for (int th : {1, 2}) {
      set_num_threads(th);
      show("log_prob: beliefs_cpu, no belief output", median([&] {
        beliefs_cpu<uint8_t, float>(p, init, tok.data(), B, L, nullptr, api.data());
      }, reps), th);
    }
    show("scaled 8-lane kernel alone (rows_logp8)", median([&] {
      for (int64_t r = 0; r < B; r += kLane8Rows) rows_logp8<3, false>(p, init, tok.data(), r, L, scaled.data(), fail.data() + r);
    }, reps), 1);
    show("normalised 8-lane kernel (rows_lanes8_run)", median([&] {
      for (int64_t r = 0; r < B; r += kLane8Rows)
        rows_lanes8_run<3, false, true, uint8_t, float>(p, init, tok.data(), r, L, nullptr, normalised.data(), fail.data() + r);
    }, reps), 1);
    show("bound: lookups + multiply-adds + norm only", median([&] {
      for (int64_t r = 0; r < B; r += kLane8Rows) bound_rows(p, init, tok.data(), r, sink.data());
    }, reps), 1);
  }
  double worst = 0;
  for (int64_t r = 0; r < B; ++r) {
    if (api[r] != scaled[r]) {
      std::printf("MISMATCH row %lld: %.17g vs %.17g\n", static_cast<long long>(r), api[r], scaled[r]);
      return 1;
    }
    worst = std::max(worst, std::abs(scaled[r] - normalised[r]) / std::abs(normalised[r]));
  }
  std::printf("scaled == API bit for bit; max relative difference scaled vs normalised: %.2g\n", worst);
}
