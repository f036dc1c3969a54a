// Shared macros for kernel bodies that compile for both host (CPU) and device (CUDA).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define CM_HD __host__ __device__ __forceinline__
#define CM_UNROLL _Pragma("unroll")
#else
#define CM_HD inline __attribute__((always_inline))
#define CM_UNROLL
#endif

namespace compmech {
// Bit casts between double and int64 that work on host and device.
CM_HD int64_t bits_of(double x) {
#if defined(__CUDA_ARCH__)
  return __double_as_longlong(x);
#else
  int64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
#endif
}
CM_HD double double_of(int64_t b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(b);
#else
  double x;
  std::memcpy(&x, &b, sizeof x);
  return x;
#endif
}
}  // namespace compmech
