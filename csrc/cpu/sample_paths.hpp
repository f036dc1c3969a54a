// Which hidden-state sampling path the CPU sampler may use. Every path gives the same tokens bit
// for bit (the draw is defined once, by alias_draw64 in kernels.hpp); forcing a slower one is
// for tests and benchmarks that check exactly that.
#pragma once
#include <string>

namespace compmech {

enum class SamplePath { automatic, scalar, packed, avx512, avx2 };

// Sets the path for later calls (process-wide) and returns the previous one. "avx512" and "avx2"
// (the register-table paths for small processes) are only available when the core was built
// with that instruction set (sample_path_available).
SamplePath set_sample_path(SamplePath p);
bool sample_path_available(SamplePath p);

}  // namespace compmech
