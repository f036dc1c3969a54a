// Belief propagation on the GPU: one thread per sequence runs the whole time loop (one launch
// per call). The per-step arithmetic is belief_step / safe_inverse from kernels.hpp (log_prob
// alone: belief_step / ScaledLogProb), the same code the CPU runs. Tokens come in and beliefs
// go out through shared-memory tiles of TT positions so that global reads and writes are coalesced.
#include <algorithm>
#include <cmath>
#include <string>

#include "compmech/kernels.hpp"
#include "device.cuh"

namespace compmech {
namespace cuda {
namespace {

template <typename W, typename Tok, typename Out>
__global__ void __launch_bounds__(kRows)
    beliefs_kernel(DevProcess p, const double* __restrict__ init, const Tok* __restrict__ tokens, int64_t B,
                   int64_t L, Out* __restrict__ out, double* __restrict__ logp, unsigned long long* flags, int TT,
                   bool t_shared, bool stage_out) {
  const int S = p.S;
  const int n = W::span(S);
  CM_DYNAMIC_SMEM(smem);
  double* sT = reinterpret_cast<double*>(smem);
  const int64_t nT = t_shared ? static_cast<int64_t>(p.V) * S * S : 0;
  const int tok_stride = odd_stride(TT);
  int* sTok = reinterpret_cast<int*>(sT + nT);
  // kRows * odd stride ints: a multiple of 8 bytes, so sOut stays aligned for doubles
  Out* sOut = reinterpret_cast<Out*>(sTok + kRows * tok_stride);
  const int out_stride = odd_stride(TT * S);

  load_shared(sT, p.T, nT);  // first read after the barrier that ends the first token staging
  const double* T = t_shared ? sT : p.T;
  const RowSlot slot = row_slot(B);
  const int64_t rb = slot.first, row = slot.row();
  const int nrows = slot.nrows, r = slot.r;
  const bool active = slot.active();

  double eta[W::N], nxt[W::N];
  for (int j = 0; j < n; ++j) eta[j] = j < S ? init[j] : 0.0;
  LogProbAcc acc;
  // log_prob alone: ScaledLogProb's unnormalised arithmetic (eta holds v), as on the CPU
  const bool scaled = logp && !out;
  ScaledLogProb sc;
  bool failed = false;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, nwarps = blockDim.x / kWarp;

  for (int64_t t0 = 0; t0 < L; t0 += TT) {
    const int nt = static_cast<int>(min(static_cast<int64_t>(TT), L - t0));
    // Stage this tile's tokens (one warp per row), checking their range on the way.
    for (int rr = warp; rr < nrows; rr += nwarps) {
      const Tok* src = tokens + (rb + rr) * L + t0;
      for (int tt = lane; tt < nt; tt += kWarp) {
        const int64_t x = static_cast<int64_t>(src[tt]);
        const bool ok = x >= 0 && x < p.V;
        if (!ok) atomicMin(flags + 1, static_cast<unsigned long long>((rb + rr) * L + t0 + tt));
        sTok[rr * tok_stride + tt] = ok ? static_cast<int>(x) : -1;
      }
    }
    __syncthreads();
    if (active) {
      for (int tt = 0; tt < nt; ++tt) {
        const int x = sTok[r * tok_stride + tt];
        double norm = 0.0;
        if (x >= 0) {
          norm = W::step(eta, T + static_cast<int64_t>(x) * S * S, p.w, nxt, S);
        } else {
          for (int j = 0; j < n; ++j) nxt[j] = 0.0;
        }
        if (scaled) {
          if (failed) continue;
          if (!sc.possible(norm, p.zero_tol)) {
            atomicMin(flags, static_cast<unsigned long long>(row * L + t0 + tt));
            failed = true;
            continue;
          }
          for (int j = 0; j < n; ++j) eta[j] = nxt[j];
          sc.settle(t0 + tt, norm, eta, n);
          continue;
        }
        if (!(norm > p.zero_tol)) {
          if (!failed) atomicMin(flags, static_cast<unsigned long long>(row * L + t0 + tt));
          failed = true;
          norm = CUDART_NAN;  // poisons the rest of the row, as on the CPU
        }
        const double inv = safe_inverse(norm, nxt, n);
        for (int j = 0; j < n; ++j) eta[j] = nxt[j] * inv;
        if (out) {
          Out* d = stage_out ? sOut + r * out_stride + tt * S : out + (row * L + t0 + tt) * S;
          for (int j = 0; j < n; ++j)
            if (j < S) d[j] = static_cast<Out>(eta[j]);
        }
        if (logp) acc.add(norm);
      }
    }
    __syncthreads();
    // The next tile's staging writes sTok only (read above, before this barrier) and its compute
    // writes sOut only after the next barrier, so this copy needs no barrier of its own.
    if (out && stage_out) copy_rows_out(sOut, out_stride, nrows, nt * S, out + (rb * L + t0) * S, L * S);
  }
  if (active && logp) logp[row] = failed ? -CUDART_INF : scaled ? sc.value() : acc.value();
}

// Registers the emulation pretends a beliefs kernel uses (two belief arrays of W::N doubles in
// registers up to 16 states, local memory above), so its launch planning has something to plan with.
template <typename W>
constexpr int modelled_registers() {
  return W::N <= 16 ? 40 + 4 * W::N : 96;
}

// Shared memory layout of one launch: T (when small), the token tile and, when at least one
// position fits, the staged output tile. The tile length TT comes from the shared memory each
// block may use at the occupancy its registers allow (so S = 5..16, whose kernels are limited
// by registers to a few blocks per SM, get long tiles instead of a fixed 24 KiB budget's short ones).
BeliefsPlan plan_beliefs(const DeviceLimits& d, int regs, int V, int S, size_t out_elem) {
  BeliefsPlan pl{};
  pl.regs = regs;
  pl.blocks_per_sm = blocks_by_registers(d, regs, kRows);
  const size_t t_bytes = static_cast<size_t>(V) * S * S * sizeof(double);
  pl.t_shared = t_bytes <= kTableBytes;
  const size_t fixed = pl.t_shared ? t_bytes : 0;
  const size_t budget = std::max<size_t>(smem_budget(d, regs, kRows), 8192);
  const auto bytes = [&](int tt, bool staged) {
    return fixed + kRows * odd_stride(tt) * sizeof(int) + (staged ? kRows * odd_stride(tt * S) * out_elem : 0);
  };
  pl.TT = 0;
  if (out_elem > 0)
    for (int tt = 32; tt >= 1 && pl.TT == 0; --tt)
      if (bytes(tt, true) <= budget) pl.TT = tt;
  pl.stage_out = pl.TT > 0;
  pl.TT = pl.stage_out ? lane_friendly_tile(pl.TT, S) : 32;
  pl.smem = bytes(pl.TT, pl.stage_out);
  return pl;
}

template <typename W, typename Tok, typename Out>
BeliefsPlan plan_for(int device, int V, int S, bool with_out) {
  const auto kernel = &beliefs_kernel<W, Tok, Out>;
  return plan_beliefs(device_limits(device), kernel_registers(kernel, modelled_registers<W>()), V, S,
                      with_out ? sizeof(Out) : 0);
}

template <typename W, typename Tok, typename Out>
void launch(const Launch& at, const DevProcess& p, const double* init, const Tok* tokens, int64_t B, int64_t L,
            Out* out, double* logp, unsigned long long* flags) {
  const BeliefsPlan pl = plan_for<W, Tok, Out>(at.device, p.V, p.S, out != nullptr);
  const auto kernel = &beliefs_kernel<W, Tok, Out>;
  allow_dynamic_smem(kernel, pl.smem);
  CM_LAUNCH(kernel, grid_for(blocks_for(B, kRows)), kRows, pl.smem, at,
            p, init, tokens, B, L, out, logp, flags, pl.TT, pl.t_shared, pl.stage_out);
  check_launch("the beliefs kernel (S=" + std::to_string(p.S) + ", V=" + std::to_string(p.V) + ", " +
                   std::to_string(sizeof(Tok)) + "-byte tokens, " + (out ? std::to_string(sizeof(Out)) + "-byte" : "no") +
                   " output, tile " + std::to_string(pl.TT) + (pl.stage_out ? " staged" : " unstaged") + ")",
               at);
}

template <typename Tok, typename Out>
void dispatch_s(const Launch& at, const DevProcess& p, const double* init, const void* tokens, int64_t B,
                int64_t L, void* out, double* logp, unsigned long long* flags) {
  dispatch_width(p.S, [&](auto w) {
    launch<decltype(w)>(at, p, init, static_cast<const Tok*>(tokens), B, L, static_cast<Out*>(out), logp, flags);
  });
}

template <typename Tok>
void dispatch_out(const Launch& at, const DevProcess& p, const double* init, const void* tokens, int64_t B,
                  int64_t L, void* out, FloatType out_type, double* logp, unsigned long long* flags) {
  if (out_type == FloatType::f64) return dispatch_s<Tok, double>(at, p, init, tokens, B, L, out, logp, flags);
  return dispatch_s<Tok, float>(at, p, init, tokens, B, L, out, logp, flags);
}

}  // namespace

BeliefsPlan beliefs_plan(int device, int V, int S, int out_bytes) {
  require_states(S);
  DeviceGuard guard(device);
  BeliefsPlan pl{};
  dispatch_width(S, [&](auto w) {
    using W = decltype(w);
    pl = out_bytes == 8 ? plan_for<W, uint8_t, double>(device, V, S, true)
                        : plan_for<W, uint8_t, float>(device, V, S, out_bytes == 4);
  });
  return pl;
}

void beliefs(const Launch& at, const DevProcess& p, const double* init, const void* tokens, IntType tok_type,
             int64_t B, int64_t L, void* out, FloatType out_type, double* logp, unsigned long long* flags) {
  require_states(p.S);
  if (B == 0 || L == 0) return;  // nothing to do; the caller sets logp = 0 for L == 0
  DeviceGuard guard(at.device);
  switch (tok_type) {
    case IntType::u8: return dispatch_out<uint8_t>(at, p, init, tokens, B, L, out, out_type, logp, flags);
    case IntType::u16: return dispatch_out<uint16_t>(at, p, init, tokens, B, L, out, out_type, logp, flags);
    case IntType::i32: return dispatch_out<int32_t>(at, p, init, tokens, B, L, out, out_type, logp, flags);
    case IntType::i64: return dispatch_out<int64_t>(at, p, init, tokens, B, L, out, out_type, logp, flags);
    default: throw std::invalid_argument("CUDA beliefs take uint8, uint16, int32 or int64 tokens");
  }
}

bool debug_mode() { return debug_sync(); }

#if defined(COMPMECH_CUDA_EMULATION)
int device_count() { return 0; }
std::string runtime_version() { return "emulation"; }
#else
int device_count() {
  int n = 0;
  check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  return n;
}

std::string runtime_version() {
  int v = 0;
  check(cudaRuntimeGetVersion(&v), "cudaRuntimeGetVersion");
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}
#endif

}  // namespace cuda
}  // namespace compmech
