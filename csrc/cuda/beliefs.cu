// Belief propagation on the GPU: one thread per sequence runs the whole time loop (one launch
// per call). The per-step arithmetic is belief_step / safe_inverse from kernels.hpp, the same
// code the CPU runs. Tokens come in and beliefs go out through shared-memory tiles of TT
// positions so that global reads and writes are coalesced.
#include <algorithm>
#include <cmath>

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
  if (active && logp) logp[row] = failed ? -CUDART_INF : acc.value();
}

template <typename W, typename Tok, typename Out>
void launch(const Launch& at, const DevProcess& p, const double* init, const Tok* tokens, int64_t B, int64_t L,
            Out* out, double* logp, unsigned long long* flags) {
  const int S = p.S;
  const size_t t_bytes = static_cast<size_t>(p.V) * S * S * sizeof(double);
  const bool t_shared = t_bytes <= kTableBytes;
  // Output tiles of TT positions are staged when at least one position fits; only the widest
  // beliefs (S * sizeof(Out) near 192 bytes) go straight out, already contiguous per row.
  const size_t per_pos = sizeof(int) + (out ? static_cast<size_t>(S) * sizeof(Out) : 0);
  int TT = static_cast<int>(std::min<size_t>(32, kStageBytes / (kRows * per_pos)));
  const bool stage_out = out != nullptr && TT >= 1;
  TT = stage_out ? lane_friendly_tile(TT, S) : 32;
  const size_t smem = (t_shared ? t_bytes : 0) + kRows * odd_stride(TT) * sizeof(int) +
                      (stage_out ? kRows * odd_stride(TT * S) * sizeof(Out) : 0);
  const auto kernel = &beliefs_kernel<W, Tok, Out>;
  CM_LAUNCH(kernel, grid_for(blocks_for(B, kRows)), kRows, smem, at,
            p, init, tokens, B, L, out, logp, flags, TT, t_shared, stage_out);
  check_launch("the beliefs kernel");
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

void beliefs(const Launch& at, const DevProcess& p, const double* init, const void* tokens, IntType tok_type,
             int64_t B, int64_t L, void* out, FloatType out_type, double* logp, unsigned long long* flags) {
  if (p.S < 1 || p.S > kMaxStates) throw std::invalid_argument("S out of range for the CUDA kernels");
  if (B == 0 || L == 0) return;  // nothing to do; the caller sets logp = 0 for L == 0
  DeviceGuard guard(at.device);
  switch (tok_type) {
    case IntType::u8: return dispatch_out<uint8_t>(at, p, init, tokens, B, L, out, out_type, logp, flags);
    case IntType::i32: return dispatch_out<int32_t>(at, p, init, tokens, B, L, out, out_type, logp, flags);
    case IntType::i64: return dispatch_out<int64_t>(at, p, init, tokens, B, L, out, out_type, logp, flags);
    default: throw std::invalid_argument("CUDA beliefs take uint8, int32 or int64 tokens");
  }
}

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
