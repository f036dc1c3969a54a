// CUDA launchers: the plain C++ interface between the pybind11 module (bindings_cuda.cpp,
// compiled by the host compiler, no CUDA headers) and the kernels (*.cu, compiled by nvcc).
// Every pointer is device memory owned by the caller (torch tensors, allocated in Python);
// the Python layer (compmech/_cuda_ops.py) has checked shapes, dtypes and devices. Launches are
// asynchronous on `stream` (synchronised with COMPMECH_CUDA_DEBUG=1); launch failures throw
// std::runtime_error with the CUDA error text and the kernel's name.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "../include/compmech/process_view.hpp"  // relative: the CUDA binding sees only csrc/

namespace compmech {
namespace cuda {

enum class IntType { u8, u16, u32, i32, i64 };
enum class FloatType { f32, f64 };

struct Launch {
  int device;         // CUDA device ordinal
  uintptr_t stream;   // cudaStream_t (torch.cuda.current_stream().cuda_stream); 0 = legacy default
};

using DevProcess = ProcessView;  // device pointers; the same struct the CPU kernels read

// Largest S the device kernels take (beliefs are held per thread).
constexpr int kMaxStates = 64;

// flags[0]: smallest row * L + pos where a token had zero probability (the row is NaN from
// there on, its logp -inf); flags[1]: smallest row * L + pos holding a token outside [0, V).
// Both must be preset to a value >= B * L by the caller.
void beliefs(const Launch& at, const DevProcess& p, const double* init, const void* tokens, IntType tok_type,
             int64_t B, int64_t L, void* out, FloatType out_type, double* logp, unsigned long long* flags);

struct DevHmmTables {
  int V, S;
  const uint64_t* packed;       // (S, V*S) packed entries, or nullptr when V or S > 256
  const uint64_t* thresh;       // (S, V*S) alias thresholds (64-bit fixed point)
  const uint32_t* alias;        // (S, V*S)
  const uint64_t* init_thresh;  // (S,)
  const uint32_t* init_alias;   // (S,)
};

void sample_hmm(const Launch& at, const DevHmmTables& h, int64_t B, int64_t L, uint64_t seed, uint64_t row0,
                void* tokens, IntType tok_type, void* states, IntType st_type);

// Tw: (V, S) = T[x] @ w. flags[0] as in beliefs (a belief that gave no token positive mass).
void sample_ghmm(const Launch& at, const DevProcess& p, const double* Tw, const double* init, int64_t B,
                 int64_t L, uint64_t seed, uint64_t row0, void* tokens, IntType tok_type, void* beliefs,
                 FloatType out_type, unsigned long long* flags);

// One MSP level. keep[i * V + x] = 1 if child (i, x) is retained (as in the CPU msp_level).
void msp_keep(const Launch& at, const DevProcess& p, const void* parents, FloatType type, const double* pprobs,
              int64_t P, double min_prob, int32_t* keep);
// Writes the children with keep[i * V + x] != 0 at offsets[i * V + x] (exclusive prefix sum of
// keep); with keep == offsets == nullptr every child at i * V + x, setting *dropped = 1 if some
// child is not retained (the optimistic layout for a level expected to be full).
void msp_fill(const Launch& at, const DevProcess& p, const void* parents, FloatType type, const double* pprobs,
              int64_t P, double min_prob, const int32_t* keep, const int64_t* offsets, void* beliefs, double* probs,
              int32_t* parent, void* token, IntType tok_type, unsigned long long* dropped);

// How a beliefs launch is laid out on a device (see plan_beliefs in beliefs.cu): tile length in
// positions, whether output goes through shared memory, whether T does, dynamic shared memory,
// registers per thread, and the blocks per SM those registers allow.
struct BeliefsPlan {
  int TT;
  bool stage_out;
  bool t_shared;
  size_t smem;
  int regs;
  int blocks_per_sm;
};
// out_bytes: 0 (log-probabilities only), 4 (float32 output) or 8 (float64 output).
BeliefsPlan beliefs_plan(int device, int V, int S, int out_bytes);

// Whether COMPMECH_CUDA_DEBUG is on (a synchronisation and check after every launch).
bool debug_mode();

int device_count();            // throws with the CUDA error text (no driver, no device, ...)
std::string runtime_version();  // of the statically linked CUDA runtime, e.g. "13.0"

}  // namespace cuda
}  // namespace compmech
