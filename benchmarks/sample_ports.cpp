// What bounds the AVX-512 sampling kernel on this core: the throughput of each instruction it uses
// (12 independent chains of one instruction, uops.info style: 1 per cycle = one port, 0.5 = two
// ports) and the per-draw decision step of sample_avx512.hpp alone (its state chain's latency
// with one group, its throughput with more). Cycles from a dependent vpaddd zmm chain timed in the
// same run (the clock under AVX-512 load; a loaded machine skews single numbers, not the classes).
// Not part of the Python build:
//   g++ -O2 -march=native -std=c++17 benchmarks/sample_ports.cpp -o /tmp/ports && /tmp/ports
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <typename F>
double best_of(F&& f, int reps = 7) {
  double best = 1e9;
  for (int r = 0; r < reps; ++r) {
    const double t = now();
    f();
    best = std::min(best, now() - t);
  }
  return best;
}

constexpr long kIters = 10000000;
#define CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "k1"
#define X12(I) I(0) I(1) I(2) I(3) I(4) I(5) I(6) I(7) I(8) I(9) I(10) I(11)
#define LOOP(name, INS) \
  __attribute__((noinline)) void name() { \
    for (long i = 0; i < kIters; ++i) asm volatile(X12(INS)::: CLOBBERS); \
  }
#define MUL(i) "vpmuludq %%zmm20, %%zmm" #i ", %%zmm" #i "\n"
#define SRL(i) "vpsrlq $32, %%zmm" #i ", %%zmm" #i "\n"
#define SHUFD(i) "vpshufd $0xf5, %%zmm" #i ", %%zmm" #i "\n"
#define TERN(i) "vpternlogd $0x96, %%zmm20, %%zmm21, %%zmm" #i "\n"
#define ADD(i) "vpaddd %%zmm20, %%zmm" #i ", %%zmm" #i "\n"
#define MINU(i) "vpminud %%zmm20, %%zmm" #i ", %%zmm" #i "\n"
#define PERM2D(i) "vpermt2d %%zmm20, %%zmm21, %%zmm" #i "\n"
#define PERM2B(i) "vpermt2b %%zmm20, %%zmm21, %%zmm" #i "\n"
#define CMPK(i) "vpcmpud $5, %%zmm20, %%zmm" #i ", %%k1\n"
#define MUL_SRL(i) MUL(i) SRL(i)
#define MUL_PERM(i) MUL(i) PERM2D(i)
LOOP(mul, MUL) LOOP(srl, SRL) LOOP(shufd, SHUFD) LOOP(tern, TERN) LOOP(add, ADD) LOOP(minu, MINU)
LOOP(perm2d, PERM2D) LOOP(perm2b, PERM2B) LOOP(cmpk, CMPK) LOOP(mul_srl, MUL_SRL) LOOP(mul_perm, MUL_PERM)

__attribute__((noinline)) void clock_chain() {
  for (long i = 0; i < kIters; ++i)
    asm volatile("vpaddd %%zmm1, %%zmm0, %%zmm0\n vpaddd %%zmm1, %%zmm0, %%zmm0\n"
                 "vpaddd %%zmm1, %%zmm0, %%zmm0\n vpaddd %%zmm1, %%zmm0, %%zmm0\n" ::: "xmm0");
}

// G groups' decision steps as the kernel makes them (two adds stand in for Philox's words).
template <int G>
__attribute__((noinline)) uint64_t decisions(long n, uint64_t seed) {
  const __m512i TH0 = _mm512_set1_epi32(0x40000000), TH1 = _mm512_set1_epi32(0x50000000);
  const __m512i E0 = _mm512_set1_epi32(0x00030001), E1 = _mm512_set1_epi32(0x00050002);
  const __m512i vK = _mm512_set1_epi64(9), step = _mm512_set1_epi64(0x9E3779B97F4A7C15ll);
  __m512i code[G], low[G], high[G], wa[G], wb[G];
  for (int g = 0; g < G; ++g) {
    code[g] = _mm512_setzero_si512();
    low[g] = high[g] = _mm512_set1_epi32(-1);
    wa[g] = _mm512_set1_epi64(static_cast<long long>(seed + 77 * g));
    wb[g] = _mm512_set1_epi64(static_cast<long long>(seed + 91 * g));
  }
  for (long i = 0; i < n; ++i)
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      wa[g] = _mm512_add_epi64(wa[g], step);
      wb[g] = _mm512_add_epi64(wb[g], step);
      const __m512i pa = _mm512_mul_epu32(wa[g], vK), pb = _mm512_mul_epu32(wb[g], vK);
      const __m512i bucket = _mm512_mask_shuffle_epi32(pb, 0x5555, pa, _MM_PERM_CDAB);
      const __m512i frac = _mm512_mask_shuffle_epi32(pa, 0xAAAA, pb, _MM_PERM_CDAB);
      const __m512i idx = _mm512_add_epi32(code[g], bucket);
      const __m512i th = _mm512_permutex2var_epi32(TH0, idx, TH1);
      const __m512i e = _mm512_permutex2var_epi32(E0, idx, E1);
      code[g] = _mm512_mask_srli_epi32(e, _mm512_cmpge_epu32_mask(frac, th), e, 16);
      low[g] = _mm512_min_epu32(low[g], _mm512_sub_epi32(th, frac));
      high[g] = _mm512_max_epu32(high[g], frac);
    }
  __m512i acc = _mm512_setzero_si512();
  for (int g = 0; g < G; ++g) acc = _mm512_ternarylogic_epi32(acc, code[g], _mm512_xor_si512(low[g], high[g]), 0x96);
  return static_cast<uint64_t>(_mm512_reduce_add_epi64(acc));
}

}  // namespace

int main() {
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    char buf[64] = {};
    if (std::fgets(buf, sizeof buf, f)) std::printf("load average: %s", buf);
    std::fclose(f);
  }
  const double ghz = kIters * 4.0 / best_of(clock_chain) / 1e9;
  std::printf("clock (dependent vpaddd zmm): %.2f GHz\n", ghz);
  const struct {
    const char* name;
    void (*fn)();
    int per_iter;
  } loops[] = {{"vpaddd", add, 12},           {"vpternlogd", tern, 12},  {"vpmuludq", mul, 12},
               {"vpsrlq", srl, 12},           {"vpminud", minu, 12},     {"vpshufd", shufd, 12},
               {"vpermt2d", perm2d, 12},      {"vpermt2b", perm2b, 12},  {"vpcmpud -> k", cmpk, 12},
               {"vpmuludq + vpsrlq (pair)", mul_srl, 12}, {"vpmuludq + vpermt2d (pair)", mul_perm, 12}};
  for (const auto& l : loops)
    std::printf("%-22s %.2f cycles each\n", l.name, best_of(l.fn) * ghz * 1e9 / (kIters * double(l.per_iter)));
  uint64_t sink = 0;
  constexpr long n = 2000000;
  const auto step = [&](auto g, const char* what) {
    constexpr int G = decltype(g)::value;
    const double t = best_of([&] { sink += decisions<G>(n, sink); });
    std::printf("decision step, %d group(s): %.2f cycles per step of one group (%s)\n", G, t * ghz * 1e9 / (n * G), what);
  };
  step(std::integral_constant<int, 1>{}, "the state chain's latency");
  step(std::integral_constant<int, 2>{}, "as the kernel interleaves them");
  step(std::integral_constant<int, 4>{}, "throughput: 13 vector ops, 5 of them port-5 only");
  std::printf("(%llu)\n", static_cast<unsigned long long>(sink));
  return 0;
}
