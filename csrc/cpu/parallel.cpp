#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <system_error>
#include <thread>
#include <vector>

namespace compmech {
namespace {

int default_threads() {
  if (const char* env = std::getenv("COMPMECH_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

std::atomic<int> g_threads{0};

}  // namespace

int num_threads() {
  int n = g_threads.load();
  if (n <= 0) {
    n = default_threads();
    g_threads.store(n);
  }
  return n;
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : default_threads()); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  const int nt = static_cast<int>(std::min<int64_t>(num_threads(), chunks));
  if (nt <= 1) {
    fn(0, n);
    return;
  }
  // Dynamic chunk claiming keeps cores busy on uneven rows; each chunk is processed whole,
  // so the arithmetic per row is the same whichever thread takes it.
  std::atomic<int64_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(chunks));
  auto worker = [&]() {
    for (;;) {
      const int64_t c = next.fetch_add(1);
      if (c >= chunks) return;
      const int64_t b = c * grain, e = std::min(n, b + grain);
      try {
        fn(b, e);
      } catch (...) {
        errors[static_cast<size_t>(c)] = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(nt - 1));
  try {
    for (int i = 1; i < nt; ++i) pool.emplace_back(worker);
  } catch (const std::system_error&) {
    // could not start more threads: the ones running and this one share the work
  }
  worker();
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace compmech
