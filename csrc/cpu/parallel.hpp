// Minimal fork-join over contiguous index ranges. Work is split into fixed chunks that do not
// depend on the thread count, so results never depend on it either.
#pragma once
#include <cstdint>
#include <functional>

namespace compmech {

int num_threads();
void set_num_threads(int n);  // n <= 0 restores the default (env COMPMECH_NUM_THREADS or all cores)

// Calls fn(begin, end) on disjoint ranges covering [0, n), in parallel. Exceptions thrown by
// fn are rethrown on the calling thread (the first one, by range order).
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace compmech
