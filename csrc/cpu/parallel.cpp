#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <system_error>
#include <thread>
#include <vector>

namespace compmech {
namespace {

int default_threads() {
  if (const char* env = std::getenv("COMPMECH_NUM_THREADS")) {
    // Only a whole positive integer counts ("1.5" or "4x" is not 1 or 4); compmech warns at
    // import about any other value and ignores it here.
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    while (end && (*end == ' ' || *end == '\t' || *end == '\n')) ++end;
    if (end != env && end && *end == '\0' && n > 0 && n <= 1 << 16) return static_cast<int>(n);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

std::atomic<int> g_threads{0};
std::atomic<InterruptCheck> g_check{nullptr};

// The check takes the GIL, so it runs at most this often per calling thread.
constexpr auto kPollInterval = std::chrono::milliseconds(20);

// True when the registered check fires (rate-limited per thread).
bool interrupt_requested() {
  const InterruptCheck check = g_check.load(std::memory_order_relaxed);
  if (!check) return false;
  thread_local std::chrono::steady_clock::time_point last{};
  const auto now = std::chrono::steady_clock::now();
  if (now - last < kPollInterval) return false;
  last = now;
  return check();
}

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

void set_interrupt_check(InterruptCheck check) { g_check.store(check); }

void poll_interrupt() {
  if (interrupt_requested()) throw Interrupted();
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  const int nt = static_cast<int>(std::min<int64_t>(num_threads(), chunks));
  // Dynamic chunk claiming keeps cores busy on uneven rows; each chunk is processed whole,
  // so the arithmetic per row is the same whichever thread takes it (or how many there are).
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(chunks));
  auto worker = [&](bool caller) {
    for (;;) {
      if (caller && interrupt_requested()) {
        stop.store(true);
        return;
      }
      if (stop.load(std::memory_order_relaxed)) return;
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
  if (nt > 1) {
    pool.reserve(static_cast<size_t>(nt - 1));
    try {
      for (int i = 1; i < nt; ++i) pool.emplace_back(worker, false);
    } catch (const std::system_error&) {
      // could not start more threads: the ones running and this one share the work
    }
  }
  worker(true);
  for (auto& t : pool) t.join();
  if (stop.load()) throw Interrupted();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace compmech
