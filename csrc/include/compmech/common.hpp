// Shared macros for kernel bodies that compile for both host (CPU) and device (CUDA).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define CM_HD __host__ __device__ __forceinline__
#else
#define CM_HD inline __attribute__((always_inline))
#endif
