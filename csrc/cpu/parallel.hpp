// Minimal fork-join over contiguous index ranges. Work is split into fixed chunks that do not
// depend on the thread count, so results never depend on it either.
//
// Interrupts: the thread that calls parallel_for takes chunks like the workers and, between
// chunks, polls the interrupt check registered by the Python module (Ctrl-C). When it fires,
// no further chunks are started, the workers are joined and Interrupted is thrown on the
// calling thread (the bindings turn it into KeyboardInterrupt).
#pragma once
#include <cstdint>
#include <exception>
#include <functional>

namespace compmech {

int num_threads();
void set_num_threads(int n);  // n <= 0 restores the default (env COMPMECH_NUM_THREADS or all cores)

// Calls fn(begin, end) on disjoint ranges covering [0, n), in parallel. Exceptions thrown by
// fn are rethrown on the calling thread (the first one, by range order).
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Thrown on the calling thread when the interrupt check fired.
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "interrupted"; }
};

// Returns true when the caller should stop (e.g. a pending SIGINT). Called only from the thread
// that entered the compiled code, at most every ~20 ms. nullptr: never interrupted.
using InterruptCheck = bool (*)();
void set_interrupt_check(InterruptCheck check);

// For long serial loops on the calling thread: throws Interrupted when the check fires
// (rate-limited, so it is cheap to call often).
void poll_interrupt();

}  // namespace compmech
