#include "cpu/digits.hpp"

#include <algorithm>
#include <atomic>
#include <limits>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "cpu/parallel.hpp"

namespace compmech {
namespace {

// Elements per chunk: the joint chunk stays in L1/L2 while each factor's digits are written.
constexpr int64_t kGrain = int64_t(1) << 15;
// Joint ranges up to this use one digit table per factor (at most 128 KiB each).
constexpr int64_t kTableLimit = int64_t(1) << 16;

void record_min(std::atomic<int64_t>& first, int64_t e) {
  int64_t cur = first.load();
  while (e < cur && !first.compare_exchange_weak(cur, e)) {
  }
}

// Index of the first element of a[0..n) outside [0, limit), or -1. The max/min pass vectorises;
// the scan runs only in a chunk that holds a bad value.
template <typename T>
int64_t first_outside(const T* a, int64_t n, uint64_t limit) {
  const auto bad = [limit](T v) {
    if constexpr (std::is_signed_v<T>) {
      if (v < 0) return true;
    }
    return static_cast<uint64_t>(v) >= limit;
  };
  T hi = 0, lo = 0;
  for (int64_t e = 0; e < n; ++e) {
    hi = std::max(hi, a[e]);
    lo = std::min(lo, a[e]);
  }
  if (!bad(lo) && !bad(hi)) return -1;
  for (int64_t e = 0; e < n; ++e)
    if (bad(a[e])) return e;
  return -1;
}

template <typename Tok, typename D>
void lookup(const Tok* x, int64_t n, const D* tab, D* out) {
  for (int64_t e = 0; e < n; ++e) out[e] = tab[static_cast<size_t>(x[e])];
}

// floor(x / s) % r for 8-bit x by 16-bit high-half multiplications (exact while x * s and
// x * r stay below 2^16: joint ranges <= 256), which vectorise (vpmulhuw) where the table lookups
// cannot.
struct ByteDigit {
  uint16_t ms, mr, r;  // ms = ceil(2^16 / s), mr = ceil(2^16 / r); 0 for s == 1 / r == 1
};
inline ByteDigit byte_digit(uint32_t s, uint32_t r) {
  const auto magic = [](uint32_t d) { return static_cast<uint16_t>(d == 1 ? 0 : (65536u + d - 1) / d); };
  return {magic(s), magic(r), static_cast<uint16_t>(r)};
}
inline uint16_t mulhi(uint16_t a, uint16_t b) { return static_cast<uint16_t>((uint32_t(a) * b) >> 16); }
inline uint16_t byte_digit_of(uint16_t x, ByteDigit m) {
  const uint16_t q = m.ms ? mulhi(x, m.ms) : x;
  return static_cast<uint16_t>(q - m.r * mulhi(q, m.mr));
}
#if defined(__AVX2__)
// 16 digits at once in 16-bit lanes (GCC widens the scalar loop to 32-bit products instead)
inline __m256i byte_digits16(__m256i x, __m256i ms, __m256i mr, __m256i r, bool divide) {
  const __m256i q = divide ? _mm256_mulhi_epu16(x, ms) : x;
  return _mm256_sub_epi16(q, _mm256_mullo_epi16(r, _mm256_mulhi_epu16(q, mr)));
}
#endif
void byte_digits(const uint8_t* x, int64_t n, ByteDigit m, uint8_t* out) {
  if (m.r == 1) {
    std::fill(out, out + n, uint8_t(0));
    return;
  }
  int64_t e = 0;
#if defined(__AVX2__)
  const __m256i ms = _mm256_set1_epi16(static_cast<int16_t>(m.ms)), mr = _mm256_set1_epi16(static_cast<int16_t>(m.mr));
  const __m256i r = _mm256_set1_epi16(static_cast<int16_t>(m.r));
  const bool divide = m.ms != 0;
  for (; e + 32 <= n; e += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + e));
    const __m256i lo = byte_digits16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(v)), ms, mr, r, divide);
    const __m256i hi = byte_digits16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(v, 1)), ms, mr, r, divide);
    // packus interleaves the 128-bit halves: put them back in order
    const __m256i d = _mm256_permute4x64_epi64(_mm256_packus_epi16(lo, hi), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + e), d);
  }
#endif
  for (; e < n; ++e) out[e] = static_cast<uint8_t>(byte_digit_of(x[e], m));
}

template <typename Tok>
void divide_out(const Tok* x, int64_t b, int64_t n, const Digits& d) {
  for (int64_t e = b; e < b + n; ++e) {
    uint64_t rest = static_cast<uint64_t>(x[e]);
    for (size_t i = d.radix.size(); i-- > 0;) {
      const uint64_t r = static_cast<uint64_t>(d.radix[i]);
      const uint64_t digit = rest % r;
      rest /= r;
      if (!d.data[i]) continue;
      if (d.wide(i)) static_cast<uint16_t*>(d.data[i])[e] = static_cast<uint16_t>(digit);
      else static_cast<uint8_t*>(d.data[i])[e] = static_cast<uint8_t>(digit);
    }
  }
}

template <typename D, typename Out>
void fold_in(const D* digit, int64_t n, bool first, Out radix, Out* acc) {
  if (first) {
    for (int64_t e = 0; e < n; ++e) acc[e] = static_cast<Out>(digit[e]);
  } else {
    for (int64_t e = 0; e < n; ++e) acc[e] = static_cast<Out>(acc[e] * radix + digit[e]);
  }
}

}  // namespace

template <typename Tok>
int64_t split_digits(const Tok* joint, int64_t n, const Digits& d) {
  const size_t k = d.radix.size();
  uint64_t total = 1;
  for (int64_t r : d.radix) total *= static_cast<uint64_t>(r);
  // digit tables: tab[i][x] is factor i's digit of joint value x
  const bool table = total <= static_cast<uint64_t>(kTableLimit);
  std::vector<std::vector<uint8_t>> tab8(k);
  std::vector<std::vector<uint16_t>> tab16(k);
  if (table) {
    uint64_t stride = 1;
    for (size_t i = k; i-- > 0; stride *= static_cast<uint64_t>(d.radix[i])) {
      if (!d.data[i]) continue;
      const uint64_t r = static_cast<uint64_t>(d.radix[i]);
      if (d.wide(i)) tab16[i].resize(total);
      else tab8[i].resize(total);
      for (uint64_t x = 0; x < total; ++x) {
        const uint64_t digit = x / stride % r;
        if (d.wide(i)) tab16[i][x] = static_cast<uint16_t>(digit);
        else tab8[i][x] = static_cast<uint8_t>(digit);
      }
    }
  }
  std::atomic<int64_t> first{std::numeric_limits<int64_t>::max()};
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    const int64_t bad = first_outside(joint + b, e - b, total);
    if (bad >= 0) {
      record_min(first, b + bad);
      return;
    }
    if (!table) {
      divide_out(joint, b, e - b, d);
      return;
    }
    if constexpr (std::is_same_v<Tok, uint8_t>) {
      if (total <= 256) {
        uint32_t stride = 1;
        for (size_t i = k; i-- > 0; stride *= static_cast<uint32_t>(d.radix[i]))
          if (d.data[i])
            byte_digits(joint + b, e - b, byte_digit(stride, static_cast<uint32_t>(d.radix[i])),
                        static_cast<uint8_t*>(d.data[i]) + b);
        return;
      }
    }
    for (size_t i = 0; i < k; ++i) {
      if (!d.data[i]) continue;
      if (d.wide(i)) lookup(joint + b, e - b, tab16[i].data(), static_cast<uint16_t*>(d.data[i]) + b);
      else lookup(joint + b, e - b, tab8[i].data(), static_cast<uint8_t*>(d.data[i]) + b);
    }
  });
  const int64_t f = first.load();
  return f == std::numeric_limits<int64_t>::max() ? -1 : f;
}

template <typename Out>
BadDigit join_digits(const Digits& d, int64_t n, Out* joint) {
  const size_t k = d.radix.size();
  std::atomic<int64_t> first{std::numeric_limits<int64_t>::max()};
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    int64_t bad = -1;
    for (size_t i = 0; i < k; ++i) {
      const uint64_t r = static_cast<uint64_t>(d.radix[i]);
      const int64_t f = d.wide(i) ? first_outside(static_cast<const uint16_t*>(d.data[i]) + b, e - b, r)
                                  : first_outside(static_cast<const uint8_t*>(d.data[i]) + b, e - b, r);
      if (f >= 0 && (bad < 0 || f < bad)) bad = f;
    }
    if (bad >= 0) {
      record_min(first, b + bad);
      return;
    }
    for (size_t i = 0; i < k; ++i) {
      const uint64_t r = static_cast<uint64_t>(d.radix[i]);
      if (d.wide(i)) fold_in(static_cast<const uint16_t*>(d.data[i]) + b, e - b, i == 0, static_cast<Out>(r), joint + b);
      else fold_in(static_cast<const uint8_t*>(d.data[i]) + b, e - b, i == 0, static_cast<Out>(r), joint + b);
    }
  });
  BadDigit out;
  const int64_t f = first.load();
  if (f == std::numeric_limits<int64_t>::max()) return out;
  // name the lowest factor that is bad at that index
  out.index = f;
  for (size_t i = 0; i < k && out.factor < 0; ++i) {
    const uint64_t v = d.wide(i) ? static_cast<const uint16_t*>(d.data[i])[f] : static_cast<const uint8_t*>(d.data[i])[f];
    if (v >= static_cast<uint64_t>(d.radix[i])) out.factor = static_cast<int>(i);
  }
  return out;
}

template int64_t split_digits(const uint8_t*, int64_t, const Digits&);
template int64_t split_digits(const uint16_t*, int64_t, const Digits&);
template int64_t split_digits(const uint32_t*, int64_t, const Digits&);
template int64_t split_digits(const uint64_t*, int64_t, const Digits&);
template int64_t split_digits(const int8_t*, int64_t, const Digits&);
template int64_t split_digits(const int16_t*, int64_t, const Digits&);
template int64_t split_digits(const int32_t*, int64_t, const Digits&);
template int64_t split_digits(const int64_t*, int64_t, const Digits&);
template BadDigit join_digits(const Digits&, int64_t, uint8_t*);
template BadDigit join_digits(const Digits&, int64_t, uint16_t*);
template BadDigit join_digits(const Digits&, int64_t, uint32_t*);
template BadDigit join_digits(const Digits&, int64_t, uint64_t*);

}  // namespace compmech
