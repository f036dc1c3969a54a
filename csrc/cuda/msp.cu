// One level of the mixed-state tree on the GPU: one thread per candidate child (parent i,
// token x) in grid-stride loops, numbered i * V + x so that children come out in (parent, token) order. The keep
// test and the child belief are expand_range's arithmetic on the CPU (belief_step,
// safe_inverse), so levels match the CPU's. Offsets of the retained children are an exclusive
// prefix sum of `keep`, computed by the caller (torch.cumsum) between the two kernels.
#include <algorithm>
#include <string>
#include <type_traits>

#include "compmech/kernels.hpp"
#include "device.cuh"

namespace compmech {
namespace cuda {
namespace {

constexpr int kMspThreads = 256;

template <typename W, typename Out>
__device__ inline bool child(const DevProcess& p, const double* T, const Out* pb, const double* pp, int64_t i, int x,
                             double min_prob, double* nxt, double& cond, double& pc) {
  const int S = p.S;
  cond = W::step(pb + i * S, T + static_cast<int64_t>(x) * S * S, p.w, nxt, S);
  pc = pp[i] * cond;
  return cond > p.zero_tol && pc > 0.0 && pc >= min_prob;
}

// T goes to shared memory when small; returns the pointer to use.
__device__ inline const double* stage_T(const DevProcess& p, bool t_shared) {
  CM_DYNAMIC_SMEM(smem);
  double* sT = reinterpret_cast<double*>(smem);
  if (t_shared) load_shared(sT, p.T, static_cast<int64_t>(p.V) * p.S * p.S);
  __syncthreads();
  return t_shared ? sT : p.T;
}

template <typename W, typename Out>
__global__ void __launch_bounds__(kMspThreads)
    keep_kernel(DevProcess p, const Out* __restrict__ pb, const double* __restrict__ pp, int64_t P, double min_prob,
                int32_t* __restrict__ keep, bool t_shared) {
  const double* T = stage_T(p, t_shared);
  const int64_t n = P * p.V;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double nxt[W::N], cond, pc;
    keep[idx] = child<W>(p, T, pb, pp, idx / p.V, static_cast<int>(idx % p.V), min_prob, nxt, cond, pc) ? 1 : 0;
  }
}

// With keep/offsets (from keep_kernel and a prefix sum) the retained children go to offsets[idx];
// keep is what decides, so the two passes cannot disagree about the count. Without them the
// layout is the optimistic full one (child at idx) and a child that would be dropped sets *dropped;
// parent/token may then be null (a full level's lineage is implicit: idx / V, idx % V).
template <typename W, typename Out, typename Tok>
__global__ void __launch_bounds__(kMspThreads)
    fill_kernel(DevProcess p, const Out* __restrict__ pb, const double* __restrict__ pp, int64_t P, double min_prob,
                const int32_t* __restrict__ keep, const int64_t* __restrict__ offsets, Out* __restrict__ beliefs,
                double* __restrict__ probs, int32_t* __restrict__ parent, Tok* __restrict__ token,
                unsigned long long* dropped, bool t_shared) {
  const int S = p.S;
  const double* T = stage_T(p, t_shared);
  const int64_t n = P * p.V;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (keep && !keep[idx]) continue;
    const int64_t i = idx / p.V;
    const int x = static_cast<int>(idx % p.V);
    double nxt[W::N], cond, pc;
    const bool ok = child<W>(p, T, pb, pp, i, x, min_prob, nxt, cond, pc);
    if (!keep && !ok) {
      *dropped = 1;  // the optimistic full layout is wrong: the caller redoes the level
      continue;
    }
    const int64_t k = keep ? offsets[idx] : idx;
    W::store(nxt, cond, S, beliefs + k * S);
    probs[k] = pc;
    if (parent) parent[k] = static_cast<int32_t>(i);
    if (token) token[k] = static_cast<Tok>(x);
  }
}

struct Geometry {
  unsigned blocks;
  size_t smem;
  bool t_shared;
};

// Grid-stride loops: as many blocks as fit on the GPU at once (occupancy API) cover any P * V,
// and T is copied to shared memory once per block rather than once per 256 children.
template <typename K>
Geometry geometry(K kernel, const Launch& at, const DevProcess& p, int64_t P) {
  const size_t t_bytes = static_cast<size_t>(p.V) * p.S * p.S * sizeof(double);
  const bool t_shared = t_bytes <= kTableBytes;
  const size_t smem = t_shared ? t_bytes : 0;
  const int64_t resident = int64_t(resident_blocks(kernel, kMspThreads, smem)) * sm_count(at.device);
  const int64_t blocks = std::min<int64_t>(blocks_for(P * p.V, kMspThreads), resident);
  return {static_cast<unsigned>(blocks), smem, t_shared};
}

std::string variant(const char* what, const DevProcess& p, int64_t P, size_t out_bytes) {
  return std::string("the MSP ") + what + " kernel (S=" + std::to_string(p.S) + ", V=" + std::to_string(p.V) +
         ", P=" + std::to_string(P) + ", " + std::to_string(out_bytes) + "-byte beliefs)";
}

template <typename Out>
void keep_typed(const Launch& at, const DevProcess& p, const Out* pb, const double* pp, int64_t P, double min_prob,
                int32_t* keep) {
  dispatch_width(p.S, [&](auto w) {
    const auto kernel = &keep_kernel<decltype(w), Out>;
    const Geometry g = geometry(kernel, at, p, P);
    CM_LAUNCH(kernel, g.blocks, kMspThreads, g.smem, at, p, pb, pp, P, min_prob, keep, g.t_shared);
  });
  check_launch(variant("keep", p, P, sizeof(Out)), at);
}

template <typename Out, typename Tok>
void fill_typed(const Launch& at, const DevProcess& p, const Out* pb, const double* pp, int64_t P, double min_prob,
                const int32_t* keep, const int64_t* offsets, Out* beliefs, double* probs, int32_t* parent,
                Tok* token, unsigned long long* dropped) {
  dispatch_width(p.S, [&](auto w) {
    const auto kernel = &fill_kernel<decltype(w), Out, Tok>;
    const Geometry g = geometry(kernel, at, p, P);
    CM_LAUNCH(kernel, g.blocks, kMspThreads, g.smem, at,
              p, pb, pp, P, min_prob, keep, offsets, beliefs, probs, parent, token, dropped, g.t_shared);
  });
  check_launch(variant(keep ? "fill" : "full-level fill", p, P, sizeof(Out)), at);
}

template <typename Out>
void fill_tok(const Launch& at, const DevProcess& p, const void* pb, const double* pp, int64_t P, double min_prob,
              const int32_t* keep, const int64_t* offsets, void* beliefs, double* probs, int32_t* parent, void* token,
              IntType tok_type, unsigned long long* dropped) {
  const Out* b = static_cast<const Out*>(pb);
  Out* out = static_cast<Out*>(beliefs);
  if (tok_type == IntType::u8)
    return fill_typed(at, p, b, pp, P, min_prob, keep, offsets, out, probs, parent, static_cast<uint8_t*>(token),
                      dropped);
  if (tok_type == IntType::u16)
    return fill_typed(at, p, b, pp, P, min_prob, keep, offsets, out, probs, parent, static_cast<uint16_t*>(token),
                      dropped);
  throw std::invalid_argument("MSP tokens must be uint8 or uint16");
}

}  // namespace

void msp_keep(const Launch& at, const DevProcess& p, const void* parents, FloatType type, const double* pprobs,
              int64_t P, double min_prob, int32_t* keep) {
  require_states(p.S);
  if (P == 0) return;
  DeviceGuard guard(at.device);
  if (type == FloatType::f64) return keep_typed(at, p, static_cast<const double*>(parents), pprobs, P, min_prob, keep);
  keep_typed(at, p, static_cast<const float*>(parents), pprobs, P, min_prob, keep);
}

void msp_fill(const Launch& at, const DevProcess& p, const void* parents, FloatType type, const double* pprobs,
              int64_t P, double min_prob, const int32_t* keep, const int64_t* offsets, void* beliefs, double* probs,
              int32_t* parent, void* token, IntType tok_type, unsigned long long* dropped) {
  require_states(p.S);
  if ((keep == nullptr) != (offsets == nullptr)) throw std::invalid_argument("keep and offsets go together");
  if (P == 0) return;
  DeviceGuard guard(at.device);
  if (type == FloatType::f64)
    return fill_tok<double>(at, p, parents, pprobs, P, min_prob, keep, offsets, beliefs, probs, parent, token,
                            tok_type, dropped);
  fill_tok<float>(at, p, parents, pprobs, P, min_prob, keep, offsets, beliefs, probs, parent, token, tok_type,
                  dropped);
}

}  // namespace cuda
}  // namespace compmech
