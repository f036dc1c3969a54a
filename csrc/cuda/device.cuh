// Shared by the .cu files: error checks, the device guard, block geometry and the staging of
// per-row tiles through shared memory (rows are L apart in global memory, so a thread writing
// its own row element by element would scatter; a warp copying one row's tile is coalesced).
//
// Compiled by nvcc for the GPU, or by the host compiler with COMPMECH_CUDA_EMULATION for the
// CPU emulation used in tests (emulation.hpp); CM_LAUNCH and CM_DYNAMIC_SMEM hide the difference.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "compmech/dispatch.hpp"
#include "compmech/kernels.hpp"
#include "launch.hpp"

namespace compmech {
namespace cuda {
// COMPMECH_CUDA_DEBUG=1 (read once): every launch is followed by a synchronisation of its
// stream, so a fault is reported by the kernel that caused it rather than by a later call.
inline bool debug_sync() {
  static const bool on = [] {
    const char* v = std::getenv("COMPMECH_CUDA_DEBUG");
    return v != nullptr && *v != '\0' && std::string(v) != "0";
  }();
  return on;
}
}  // namespace cuda
}  // namespace compmech

#if defined(COMPMECH_CUDA_EMULATION)
#include "emulation.hpp"

namespace compmech {
namespace cuda {
class DeviceGuard {
 public:
  explicit DeviceGuard(int) {}
};
// Launches run to completion before CM_LAUNCH returns: nothing to synchronise or check.
inline void check_launch(const std::string&, const Launch&) {}
inline int sm_count(int) { return 2; }
template <typename K>
int kernel_registers(K, int modelled) { return modelled; }
template <typename K>
void allow_dynamic_smem(K, size_t) {}
template <typename K>
int resident_blocks(K, int, size_t) { return 2; }
}  // namespace cuda
}  // namespace compmech

#define CM_DYNAMIC_SMEM(name) unsigned char* name = ::compmech::cuda::emu::shared_mem
#define CM_LAUNCH(kernel, grid, block, smem, at, ...) \
  ::compmech::cuda::emu::launch(grid, block, smem, [&] { kernel(__VA_ARGS__); })
#else
#include <cuda_runtime.h>
#include <math_constants.h>

#define CM_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#define CM_LAUNCH(kernel, grid, block, smem, at, ...) \
  kernel<<<grid, block, smem, ::compmech::cuda::stream_of(at)>>>(__VA_ARGS__)

namespace compmech {
namespace cuda {

inline void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::string msg = std::string("CUDA error in ") + what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  if (e == cudaErrorInsufficientDriver) {
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    msg += ": compmech was built with CUDA " + std::to_string(runtime / 1000) + "." +
           std::to_string(runtime % 1000 / 10) + ", the driver supports up to CUDA " + std::to_string(driver / 1000) +
           "." + std::to_string(driver % 1000 / 10) +
           " (0.0: no driver); rebuild compmech with a CUDA toolkit no newer than the driver";
  }
  throw std::runtime_error(msg);
}

// Makes `device` current for the launch and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

inline cudaStream_t stream_of(const Launch& at) { return reinterpret_cast<cudaStream_t>(at.stream); }

// Throws if the launch just made on this thread failed (bad configuration, no device, ...),
// naming the kernel; in debug mode also waits for it and reports a fault it raised.
inline void check_launch(const std::string& kernel, const Launch& at) {
  check(cudaGetLastError(), ("launching " + kernel).c_str());
  if (debug_sync()) check(cudaStreamSynchronize(stream_of(at)), ("running " + kernel + " (COMPMECH_CUDA_DEBUG)").c_str());
}

inline int device_attribute(cudaDeviceAttr attr, int device) {
  int n = 0;
  check(cudaDeviceGetAttribute(&n, attr, device), "cudaDeviceGetAttribute");
  return n;
}

inline int sm_count(int device) { return device_attribute(cudaDevAttrMultiProcessorCount, device); }

// Registers per thread the compiler gave a kernel (`modelled` is the emulation's stand-in).
template <typename K>
int kernel_registers(K kernel, int /*modelled*/) {
  cudaFuncAttributes a{};
  check(cudaFuncGetAttributes(&a, kernel), "cudaFuncGetAttributes");
  return a.numRegs;
}

// Opt in to more than 48 KiB of dynamic shared memory for a kernel (sm_70 and later).
template <typename K>
void allow_dynamic_smem(K kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
          "cudaFuncSetAttribute");
}

// Blocks of a kernel that fit on one SM at once (registers, shared memory, threads).
template <typename K>
int resident_blocks(K kernel, int threads, size_t smem) {
  int n = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  return n > 0 ? n : 1;
}

}  // namespace cuda
}  // namespace compmech
#endif

namespace compmech {
namespace cuda {

constexpr int kRows = 128;              // threads per block in the per-sequence kernels (1 row each)
constexpr int kWarp = 32;
constexpr size_t kStageBytes = 24576;   // shared memory for staged tiles per block (sampling)
constexpr size_t kTableBytes = 16384;   // process tables copied to shared memory up to this size

// The one guard on S for every launcher (the per-thread belief arrays hold kMaxStates); the
// user-facing check, with its message, is in compmech/_cuda_ops.py.
inline void require_states(int S) {
  if (S < 1 || S > kMaxStates) throw std::invalid_argument("S out of range for the CUDA kernels");
}

// What the launch planning needs to know about a device.
struct DeviceLimits {
  int regs_per_sm;         // 32-bit registers per SM
  int smem_per_sm;         // shared memory per SM (bytes)
  int smem_per_block;      // largest dynamic shared memory one block may opt in to (bytes)
  int smem_reserved;       // shared memory the runtime reserves per block (bytes)
  int max_blocks_per_sm;
};

#if defined(COMPMECH_CUDA_EMULATION)
// A stand-in sm_90-like SM, without the shared-memory opt-in (the emulated launch refuses
// more than 48 KiB, as a GPU does without it).
inline DeviceLimits device_limits(int) { return {65536, 228 * 1024, 48 * 1024, 1024, 32}; }
#else
inline DeviceLimits device_limits(int device) {
  return {device_attribute(cudaDevAttrMaxRegistersPerMultiprocessor, device),
          device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor, device),
          device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
          device_attribute(cudaDevAttrReservedSharedMemoryPerBlock, device),
          device_attribute(cudaDevAttrMaxBlocksPerMultiprocessor, device)};
}
#endif

// Blocks of `threads` threads with `regs` registers each that fit on one SM by registers
// (allocated per warp in units of 256).
inline int blocks_by_registers(const DeviceLimits& d, int regs, int threads) {
  const int per_warp = (std::max(regs, 1) * kWarp + 255) / 256 * 256;
  const int per_block = per_warp * ((threads + kWarp - 1) / kWarp);
  return std::max(1, std::min(d.max_blocks_per_sm, d.regs_per_sm / per_block));
}

// Shared memory one block may use without lowering the occupancy its registers allow: the
// SM's shared memory split over that many blocks, within what one block may opt in to.
inline size_t smem_budget(const DeviceLimits& d, int regs, int threads) {
  const int blocks = blocks_by_registers(d, regs, threads);
  const size_t share = static_cast<size_t>(d.smem_per_sm) / blocks;
  const size_t share_net = share > static_cast<size_t>(d.smem_reserved) ? share - d.smem_reserved : 0;
  return std::min(static_cast<size_t>(d.smem_per_block), share_net);
}

inline int64_t blocks_for(int64_t n, int64_t per_block) { return (n + per_block - 1) / per_block; }

// Per-thread belief storage, chosen by S (compmech/dispatch.hpp): fixed S = 2..4, register
// tiers CAP = 8 / 16 for S = 1 and 5..16, local-memory arrays of kMaxStates beyond.
template <int SC, int CAP>
using Width = StateWidth<SC, CAP, kMaxStates>;

// Calls f(Width<SC, CAP>{}) for the storage that suits S.
template <typename F>
void dispatch_width(int S, F&& f) {
  dispatch_states<true, kMaxStates>(S, f);
}

// Grid size for n blocks, refusing what a launch cannot express.
inline unsigned grid_for(int64_t blocks) {
  if (blocks > 0x7FFFFFFFLL) throw std::invalid_argument("batch too large for one CUDA launch");
  return static_cast<unsigned>(blocks);
}

// This thread's sequence in the per-sequence kernels: block b holds rows [b * kRows, ...).
struct RowSlot {
  int64_t first;  // the block's first row
  int nrows;      // rows in this block (the last block may be partial)
  int r;          // this thread's row within the block
  __host__ __device__ bool active() const { return r < nrows; }
  __host__ __device__ int64_t row() const { return first + r; }
};

__device__ inline RowSlot row_slot(int64_t B) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kRows;
  return RowSlot{first, static_cast<int>(min(static_cast<int64_t>(kRows), B - first)), static_cast<int>(threadIdx.x)};
}

// Tile length (positions) up to tt_max for staged rows of tt * S elements, copied out by a
// warp per row: the one that leaves the fewest lanes idle in the last copy instruction (for
// Mess3, 10 positions = 30 floats rather than 12 = 36, which needs a second, mostly idle pass).
inline int lane_friendly_tile(int tt_max, int S) {
  int best = tt_max;
  double best_use = 0.0;
  for (int tt = tt_max; tt >= 1 && tt * 2 > tt_max; --tt) {  // only tiles at least half the size
    const int n = tt * S;
    const double use = static_cast<double>(n) / (kWarp * ((n + kWarp - 1) / kWarp));
    if (use > best_use + 1e-9) {
      best = tt;
      best_use = use;
    }
  }
  return best;
}

// Odd stride (in elements) for a staged row of n elements: rows then start in different banks.
__host__ __device__ inline int odd_stride(int n) { return n | 1; }

// Cooperative copy of staged rows [0, nrows) (each n elements, `stride` apart in shared memory)
// to global rows `dst_stride` apart: one warp per row, lanes over consecutive elements.
template <typename T>
__device__ inline void copy_rows_out(const T* __restrict__ src, int stride, int nrows, int n,
                                     T* __restrict__ dst, int64_t dst_stride) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nwarps = blockDim.x / kWarp;
  for (int r = warp; r < nrows; r += nwarps) {
    T* d = dst + r * dst_stride;
    const T* s = src + r * stride;
    for (int k = lane; k < n; k += kWarp) d[k] = s[k];
  }
}

// Copy n doubles from global memory to shared memory (whole block).
__device__ inline void load_shared(double* __restrict__ dst, const double* __restrict__ src, int64_t n) {
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) dst[k] = src[k];
}

}  // namespace cuda
}  // namespace compmech
