// CPU emulation of the few CUDA features the kernels use, so the same .cu sources compile with
// the host compiler into compmech._cuda_emu: every block runs as blockDim.x std::threads with a
// real barrier for __syncthreads and shared memory per block. The tests run the kernels'
// indexing, tiling, barriers and error flags this way on machines without a GPU; only the
// CUDA runtime calls (device guard, streams, launch errors) are left to the GPU tests.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define CUDART_NAN std::numeric_limits<double>::quiet_NaN()
#define CUDART_INF std::numeric_limits<double>::infinity()

namespace compmech {
namespace cuda {
namespace emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

// Barrier for the threads of one block; a thread that returns leaves it (as on the GPU,
// exited threads no longer count at __syncthreads).
class Barrier {
 public:
  explicit Barrier(int n) : count_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(m_);
    const uint64_t gen = gen_;
    if (++waiting_ >= count_) {
      release();
    } else {
      cv_.wait(lock, [&] { return gen_ != gen; });
    }
  }
  void drop() {
    std::lock_guard<std::mutex> lock(m_);
    --count_;
    if (waiting_ > 0 && waiting_ >= count_) release();
  }

 private:
  void release() {
    waiting_ = 0;
    ++gen_;
    cv_.notify_all();
  }
  std::mutex m_;
  std::condition_variable cv_;
  int count_, waiting_ = 0;
  uint64_t gen_ = 0;
};

inline thread_local Dim3 thread_idx, block_idx, block_dim, grid_dim;
inline thread_local unsigned char* shared_mem = nullptr;
inline thread_local Barrier* barrier = nullptr;

// Runs body() as grid x block threads, one block at a time.
// The limits a real launch of these kernels would hit (no opt-in to larger shared memory).
constexpr size_t kMaxDynamicSmem = 48 * 1024;
constexpr unsigned kMaxBlock = 1024;

template <typename F>
void launch(unsigned grid, unsigned block, size_t smem_bytes, F&& body) {
  if (smem_bytes > kMaxDynamicSmem || block > kMaxBlock || block % 32 != 0 || grid == 0)
    throw std::runtime_error("emulated launch outside CUDA limits: grid " + std::to_string(grid) + ", block " +
                             std::to_string(block) + ", dynamic shared memory " + std::to_string(smem_bytes));
  for (unsigned b = 0; b < grid; ++b) {
    Barrier bar(static_cast<int>(block));
    std::vector<double> smem((smem_bytes + 7) / 8);  // 8-byte aligned, no slack (ASan sees overruns)
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t)
      threads.emplace_back([&, b, t] {
        thread_idx = Dim3{t, 0, 0};
        block_idx = Dim3{b, 0, 0};
        block_dim = Dim3{block, 1, 1};
        grid_dim = Dim3{grid, 1, 1};
        shared_mem = reinterpret_cast<unsigned char*>(smem.data());
        barrier = &bar;
        body();
        bar.drop();
      });
    for (auto& th : threads) th.join();
  }
}

}  // namespace emu

template <typename T>
inline T min(T a, T b) {
  return b < a ? b : a;
}

inline void __syncthreads() { emu::barrier->arrive_and_wait(); }

inline unsigned long long atomicMin(unsigned long long* addr, unsigned long long v) {
  unsigned long long old = __atomic_load_n(addr, __ATOMIC_RELAXED);
  while (v < old && !__atomic_compare_exchange_n(addr, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}

}  // namespace cuda
}  // namespace compmech

#define threadIdx (::compmech::cuda::emu::thread_idx)
#define blockIdx (::compmech::cuda::emu::block_idx)
#define blockDim (::compmech::cuda::emu::block_dim)
#define gridDim (::compmech::cuda::emu::grid_dim)
