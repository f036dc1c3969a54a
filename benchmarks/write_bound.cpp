// The machine's write bound for a beliefs-sized output (Mess3, B=65536, L=256, float32: 201 MB),
// reused buffer on huge pages, 1 and 2 threads each writing its own half:
//   - memset: what numpy's fill (the bound quiet_check.py and bench_core.py report) does;
//   - store: ordinary 64-byte vector stores (each line is read for ownership first);
//   - stream: non-temporal 64-byte stores, as the belief kernels write large outputs
//     (row_stage.hpp), so this, not numpy's fill, is what `out=` can approach.
// Medians of REPS rounds. Not part of the Python build:
//   g++ -O2 -march=native -std=c++17 benchmarks/write_bound.cpp -lpthread -o /tmp/wb && /tmp/wb [REPS]
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr size_t kBytes = size_t(65536) * 256 * 3 * sizeof(float);

#if defined(__AVX512F__)
using Line = __m512i;
inline Line line_of(int v) { return _mm512_set1_epi32(v); }
inline void store_line(char* p, Line v) { _mm512_store_si512(p, v); }
inline void stream_line(char* p, Line v) { _mm512_stream_si512(reinterpret_cast<__m512i*>(p), v); }
#else
struct Line { __m256i a; };
inline Line line_of(int v) { return {_mm256_set1_epi32(v)}; }
inline void store_line(char* p, Line v) {
  _mm256_store_si256(reinterpret_cast<__m256i*>(p), v.a);
  _mm256_store_si256(reinterpret_cast<__m256i*>(p + 32), v.a);
}
inline void stream_line(char* p, Line v) {
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v.a);
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p + 32), v.a);
}
#endif

enum Mode { kMemset, kStore, kStream };

void write_part(char* p, size_t n, Mode mode) {
  const Line v = line_of(3);
  if (mode == kMemset) std::memset(p, 1, n);
  else if (mode == kStore) for (size_t i = 0; i < n; i += 64) store_line(p + i, v);
  else {
    for (size_t i = 0; i < n; i += 64) stream_line(p + i, v);
    _mm_sfence();
  }
}

double seconds(char* buf, int threads, Mode mode) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  const size_t part = kBytes / threads;  // kBytes is a multiple of 2 MB: whole huge pages each
  for (int k = 0; k < threads; ++k) pool.emplace_back(write_part, buf + k * part, part, mode);
  for (auto& t : pool) t.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 9;
  char* buf = static_cast<char*>(std::aligned_alloc(size_t(1) << 21, kBytes));
  madvise(buf, kBytes, MADV_HUGEPAGE);
  std::memset(buf, 0, kBytes);  // first touch: the rounds measure a reused buffer
  const char* names[] = {"memset", "store", "stream"};
  for (int threads = 1; threads <= 2; ++threads)
    for (Mode mode : {kMemset, kStore, kStream}) {
      std::vector<double> t(reps);
      for (double& s : t) s = seconds(buf, threads, mode);
      std::sort(t.begin(), t.end());
      const double med = t[reps / 2];
      std::printf("%d thread(s) %-6s median %6.1f ms  %5.1f GB/s  = %.2f G updates/s at 12 B (best %.1f ms)\n", threads,
                  names[mode], med * 1e3, kBytes / med / 1e9, kBytes / 12.0 / med / 1e9, t[0] * 1e3);
    }
  std::free(buf);
}
