// Output staging for the tiled belief paths (lanes.hpp): lanes are rows, but the output is
// row-major, so writing each step straight out costs W scattered 3-value stores per vector
// (and a read-for-ownership of every line). Instead a step stores its S vectors unchanged
// (lane-major) into a small tile; every tile of positions is transposed in registers
// into per-row runs, and each row's run leaves as whole 64-byte lines, non-temporal when the
// output is too large to stay in cache. A row's partial line waits for the next tile; only a
// row's first and last lines (which it may share with its neighbours) use ordinary stores.
#pragma once
#include "lanes.hpp"

#if defined(CM_TILED_LANES)
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "simd.hpp"

namespace compmech {

// transpose_block: in-place W x W transposes, r[k] holds element k of W lanes; afterwards r[l]
// holds lane l's W elements.
#if CM_TILED_LANES == 8
inline void transpose_block(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

inline void transpose_block(__m512d* r) {
  __m512d a[8], b[8];
  for (int k = 0; k < 8; k += 2) {
    a[k] = _mm512_unpacklo_pd(r[k], r[k + 1]);      // columns 0, 2, 4, 6 of rows k, k + 1
    a[k + 1] = _mm512_unpackhi_pd(r[k], r[k + 1]);  // columns 1, 3, 5, 7
  }
  for (int h = 0; h < 8; h += 4)
    for (int q = 0; q < 2; ++q) {
      b[h + 2 * q] = _mm512_shuffle_f64x2(a[h + q], a[h + q + 2], 0x88);      // columns q, q + 4
      b[h + 2 * q + 1] = _mm512_shuffle_f64x2(a[h + q], a[h + q + 2], 0xDD);  // columns q + 2, q + 6
    }
  // b[0] = cols 0,4 (rows 0-3), b[1] = cols 2,6, b[2] = cols 1,5, b[3] = cols 3,7; b[4..7] rows 4-7
  const int col_of[4][2] = {{0, 4}, {2, 6}, {1, 5}, {3, 7}};
  for (int k = 0; k < 4; ++k) {
    r[col_of[k][0]] = _mm512_shuffle_f64x2(b[k], b[k + 4], 0x88);
    r[col_of[k][1]] = _mm512_shuffle_f64x2(b[k], b[k + 4], 0xDD);
  }
}

// Two 8 x 8 float transposes at once, one in each 256-bit half (the steps of the __m256
// transpose_block): a 512-bit shuffle costs what a 256-bit one does, so half the shuffles per
// element. r[k] holds elements k and 8 + k of 8 lanes (halves); afterwards r[l] holds lane l's
// elements 0..15.
inline void transpose_pairs(__m512* r) {
  __m512 t[8], s[8];
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
    t[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
  }
  for (int h = 0; h < 8; h += 4) {
    s[h] = _mm512_shuffle_ps(t[h], t[h + 2], 0x44);
    s[h + 1] = _mm512_shuffle_ps(t[h], t[h + 2], 0xEE);
    s[h + 2] = _mm512_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    s[h + 3] = _mm512_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  // _mm256_permute2f128_ps(a, b, 0x20) and (a, b, 0x31) in each half
  const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
  const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm512_permutex2var_ps(s[k], lo, s[k + 4]);
    r[k + 4] = _mm512_permutex2var_ps(s[k], hi, s[k + 4]);
  }
}

// Copies n (>= 0) elements with masked 64-byte moves (no call, no byte loop).
template <typename Out>
inline void copy_run(Out* dst, const Out* src, int n) {
  constexpr int E = 64 / sizeof(Out);
  for (int i = 0; i < n; i += E) {
    const int k = n - i < E ? n - i : E;
    if constexpr (sizeof(Out) == 4) {
      const __mmask16 m = static_cast<__mmask16>((1u << k) - 1);
      _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, src + i));
    } else {
      const __mmask8 m = static_cast<__mmask8>((1u << k) - 1);
      _mm512_mask_storeu_pd(dst + i, m, _mm512_maskz_loadu_pd(m, src + i));
    }
  }
}

// One cache line from src to dst (64-byte aligned), non-temporal.
template <typename Out>
inline void stream_line(Out* dst, const Out* src) {
  _mm512_stream_si512(reinterpret_cast<__m512i*>(dst), _mm512_loadu_si512(src));
}

using StageF = __m256;
using StageD = __m512d;
inline __m256 to_stage(vd8 e, float*) { return _mm512_cvtpd_ps(reinterpret_cast<__m512d>(e)); }
inline __m512d to_stage(vd8 e, double*) { return reinterpret_cast<__m512d>(e); }
inline void store_block(float* d, __m256 v) { _mm256_storeu_ps(d, v); }
inline void store_block(double* d, __m512d v) { _mm512_storeu_pd(d, v); }
#else
inline void transpose_block(__m128* r) { _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]); }
inline void transpose_block(__m256d* r) { transpose4x4(r); }

// Copies n (>= 0) elements: whole 32-byte moves, then one masked move for the tail.
template <typename Out>
inline void copy_run(Out* dst, const Out* src, int n) {
  constexpr int E = 32 / sizeof(Out);
  int i = 0;
  for (; i + E <= n; i += E)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
  if (i == n) return;
  if constexpr (sizeof(Out) == 4) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - i), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(dst + i, m, _mm256_maskload_ps(src + i, m));
  } else {
    const __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n - i), _mm256_setr_epi64x(0, 1, 2, 3));
    _mm256_maskstore_pd(dst + i, m, _mm256_maskload_pd(src + i, m));
  }
}

template <typename Out>
inline void stream_line(Out* dst, const Out* src) {  // one line, 64-byte aligned dst
  for (int h = 0; h < 2; ++h)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst) + h, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src) + h));
}

using StageF = __m128;
using StageD = __m256d;
inline __m128 to_stage(vd4 e, float*) { return _mm256_cvtpd_ps(reinterpret_cast<__m256d>(e)); }
inline __m256d to_stage(vd4 e, double*) { return reinterpret_cast<__m256d>(e); }
inline void store_block(float* d, __m128 v) { _mm_storeu_ps(d, v); }
inline void store_block(double* d, __m256d v) { _mm256_storeu_pd(d, v); }
#endif

// A tile keeps W floats or W doubles per (position, value).
template <typename Out>
struct StageVec {
  using type = StageD;
};
template <>
struct StageVec<float> {
  using type = StageF;
};

// The output side of a block of G x W rows advanced by rows_tiled: vectors in, row-major
// lines out. A tile is NP = one line's worth of positions (16 floats, 8 doubles), so that every
// row leaves SC whole lines per tile once aligned. While a tile fills, the previous one is
// transposed a group of W rows at a time and written out a few rows per position, so the
// stores drain while the arithmetic runs instead of in bursts.
template <int SC, int G, typename Out>
class RowStage {
 public:
  static constexpr int LE = 64 / static_cast<int>(sizeof(Out));  // elements per cache line
  static constexpr int NP = LE;                                     // positions per tile

 private:
  static constexpr int W = Lanes::W;
  static constexpr int K = NP * SC;  // elements per row per tile, a multiple of W and of LE
  static constexpr int kEvery = NP / G > 0 ? NP / G : 1;  // positions between two written groups
  static constexpr int kRowsPerStep = (W + kEvery - 1) / kEvery;  // rows written out per position
  // Float tiles of 8 lanes are transposed in pairs of 8 x 8 blocks (transpose_pairs).
  static constexpr bool kPairs = W == 8 && sizeof(Out) == 4;
  static_assert(!kPairs || K % 16 == 0, "whole 16-element chunks per row and tile");
  using Vec = typename StageVec<Out>::type;

  Vec tile_[2][G][K];                    // tile_[.][g][tt * SC + j]: value j at position tt, a lane per row
  alignas(64) Out run_[G * W][LE + K];  // a row's output: carry (< LE) + one tile
  int carry_[G * W];
  int64_t written_[G * W];
  Out* rows_;        // the block's first row
  int64_t row_len_;  // L * SC
  bool stream_;
  int cur_ = 0;  // the tile being filled; cur_ ^ 1 is being written out
  int todo_ = G;  // next group of the previous tile to write out (G: none)
  int pending_ = -1;  // the group whose runs are filled but not all written out (-1: none)
  int emitted_ = 0;   // its rows written out so far

 public:
  // stream: non-temporal full lines (only when the output is element-aligned).
  RowStage(Out* rows, int64_t L, bool stream)
      : rows_(rows), row_len_(L * SC), stream_(stream && reinterpret_cast<uintptr_t>(rows) % sizeof(Out) == 0) {
    for (int r = 0; r < G * W; ++r) carry_[r] = 0, written_[r] = 0;
  }

  // Lane l of e[j] is the belief value j of row g * W + l at tile position tt.
  inline void put(int g, int tt, const Lanes::VD* e) {
    for (int j = 0; j < SC; ++j) tile_[cur_][g][tt * SC + j] = to_stage(e[j], static_cast<Out*>(nullptr));
  }

  // After position tt of the current tile: a few rows of the previous tile leave, and the next
  // group of it is transposed when due.
  inline void step(int tt) {
    emit_some();
    if (todo_ < G && (tt + 1) % kEvery == 0) next_group();
  }

  // The current tile is complete with nt positions (nt < NP only when last).
  void end_tile(int nt, bool last) {
    while (todo_ < G) next_group();
    if (last) {  // all groups' runs are stored before any is read back (see next_group)
      emit_pending();
      for (int g = 0; g < G; ++g) transpose_group(g, cur_, nt);
      for (int g = 0; g < G; ++g) emit_group(g, nt, true);
      return;
    }
    todo_ = 0;
    cur_ ^= 1;
  }

  // Non-temporal stores are weakly ordered: the caller fences (_mm_sfence) once after its
  // blocks, before the data is handed back; a fence per block would wait for each block's last
  // lines to drain.

 private:
  // Group todo_ of the previous tile goes into its rows' runs, which leave a few rows per
  // position from the next position on (emit_some): the runs are stored in 8- or 16-element
  // pieces and read back as whole lines, and a line read right away would wait for its pieces to
  // commit (no store forwarding from several stores); spread out, the streaming stores also
  // drain while the arithmetic runs, rather than fill the store buffer in bursts.
  inline void next_group() {
    emit_pending();
    transpose_group(todo_, cur_ ^ 1, NP);
    pending_ = todo_++;
    emitted_ = 0;
  }

  inline void emit_some() {
    if (pending_ < 0) return;
    for (int k = 0; k < kRowsPerStep && emitted_ < W; ++k) emit(pending_ * W + emitted_++, NP * SC, false);
  }

  inline void emit_pending() {
    if (pending_ < 0) return;
    while (emitted_ < W) emit(pending_ * W + emitted_++, NP * SC, false);
    pending_ = -1;
  }

  // Transposes group g's nt positions of tile `buf` into its rows' runs.
  void transpose_group(int g, int buf, int nt) {
#if CM_TILED_LANES == 8
    if constexpr (kPairs) {
      for (int c = 0; c < (nt * SC + 15) / 16; ++c) {  // elements 16c .. 16c + 15 of each row's tile
        __m512 v[W];
        const __m256* e = reinterpret_cast<const __m256*>(tile_[buf][g]) + 16 * c;
        for (int k = 0; k < W; ++k) v[k] = _mm512_insertf32x8(_mm512_castps256_ps512(e[k]), e[8 + k], 1);
        transpose_pairs(v);
        for (int l = 0; l < W; ++l) _mm512_storeu_ps(run_[g * W + l] + carry_[g * W + l] + 16 * c, v[l]);
      }
      return;
    }
#endif
    const int blocks = (nt * SC + W - 1) / W;
    for (int b = 0; b < blocks; ++b) {  // W x W block b: elements Wb .. Wb + W - 1 of each row's tile
      Vec v[W];
      for (int k = 0; k < W; ++k) v[k] = tile_[buf][g][W * b + k];
      transpose_block(v);
      for (int l = 0; l < W; ++l) store_block(run_[g * W + l] + carry_[g * W + l] + W * b, v[l]);
    }
  }

  void emit_group(int g, int nt, bool last) {
    for (int l = 0; l < W; ++l) emit(g * W + l, nt * SC, last);
  }

  void emit(int r, int fresh, bool last) {
    Out* dst = rows_ + r * row_len_ + written_[r];
    Out* src = run_[r];
    const int n = carry_[r] + fresh;
    if (last || !stream_) {
      copy_run(dst, src, n);
      written_[r] += n;
      carry_[r] = 0;
      return;
    }
    // up to the row's first line boundary with ordinary stores (the line may hold the row
    // before); n >= K >= LE, so afterwards dst stays aligned
    const int mis = static_cast<int>(reinterpret_cast<uintptr_t>(dst) % 64 / sizeof(Out));
    int done = 0;
    if (mis) {
      done = LE - mis;
      copy_run(dst, src, done);
    }
    for (; done + LE <= n; done += LE) stream_line(dst + done, src + done);
    written_[r] += done;
    carry_[r] = n - done;
    copy_run(src, src + done, n - done);  // the carry (< one line) moves to the front
  }
};

}  // namespace compmech
#endif
