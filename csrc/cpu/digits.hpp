// Mixed-radix digits of joint tokens: a product process's joint token x = ((x1*V2 + x2)*V3 + x3)...
// split into its factors' tokens, and the factors' tokens (or states) joined back. Numpy's divmod
// and multiply-add passes over the arrays cost several times the factors' own propagations; these
// are one threaded pass each, through a per-factor digit table where the joint range is small.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace compmech {

// Per-factor digit arrays, each n long: uint8 where the radix is <= 256, else uint16; a null one is
// not written (split_digits) — one factor's tokens at a time keep the memory to one array.
struct Digits {
  std::vector<void*> data;
  std::vector<int64_t> radix;  // >= 1 each, product < 2^64
  bool wide(size_t i) const { return radix[i] > 256; }
};

// Writes the digits of joint[0..n) (the last radix varies fastest). Returns the flat index of the
// first value outside [0, prod radix), or -1; after a bad value the digits are unspecified.
template <typename Tok>
int64_t split_digits(const Tok* joint, int64_t n, const Digits& d);

struct BadDigit {
  int64_t index = -1;  // flat index of the first digit >= its radix (lowest index, then factor)
  int factor = -1;
};

// joint[e] = row-major combination of the digits at e. The caller checks that the output type
// holds prod radix - 1.
template <typename Out>
BadDigit join_digits(const Digits& d, int64_t n, Out* joint);

}  // namespace compmech
