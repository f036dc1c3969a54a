// Private sampling hooks, registered into _core: choosing the CPU sampling path (tests and
// benchmarks check that every path gives the same tokens) and the alias draw itself on given
// words (tests check it against exact integer arithmetic).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "compmech/kernels.hpp"
#include "cpu/sample_paths.hpp"

namespace py = pybind11;
using namespace compmech;

namespace {

const char* const kPathNames[] = {"auto", "scalar", "packed", "avx512", "avx2"};
constexpr int kNumPaths = 5;

SamplePath path_of(const std::string& name) {
  for (int i = 0; i < kNumPaths; ++i)
    if (name == kPathNames[i]) return static_cast<SamplePath>(i);
  throw py::value_error("sampling path must be one of auto, scalar, packed, avx512, avx2; got " + name);
}

// (exact outcome, fast outcome, decided) for each pair of words, drawn from one alias table.
py::tuple alias_draw_words(const py::array_t<uint64_t, py::array::c_style>& thresh,
                           const py::array_t<uint32_t, py::array::c_style>& alias,
                           const py::array_t<uint32_t, py::array::c_style>& hi,
                           const py::array_t<uint32_t, py::array::c_style>& lo) {
  const py::ssize_t K = thresh.size(), n = hi.size();
  if (K < 1 || alias.size() != K || lo.size() != n) throw py::value_error("alias_draw_words: mismatched sizes");
  for (py::ssize_t k = 0; k < K; ++k)
    if (alias.data()[k] >= static_cast<uint32_t>(K)) throw py::value_error("alias_draw_words: alias out of range");
  py::array_t<uint32_t> exact(n), fast(n);
  py::array_t<bool> decided(n);
  for (py::ssize_t i = 0; i < n; ++i) {
    uint32_t o;
    decided.mutable_data()[i] = alias_draw_fast(hi.data()[i], static_cast<uint32_t>(K), thresh.data(), alias.data(), o);
    fast.mutable_data()[i] = o;
    exact.mutable_data()[i] = alias_draw64(hi.data()[i], lo.data()[i], static_cast<uint32_t>(K), thresh.data(), alias.data());
  }
  return py::make_tuple(exact, fast, decided);
}

}  // namespace

void register_sample(py::module_& m) {
  m.def(
      "set_sample_path",
      [](const std::string& name) {
        const SamplePath p = path_of(name);
        if (!sample_path_available(p)) throw py::value_error("sampling path " + name + " is not built on this machine");
        return std::string(kPathNames[static_cast<int>(set_sample_path(p))]);
      },
      py::arg("name"), "Private: force a CPU sampling path ('auto' restores the default); returns the previous one.");
  m.def(
      "sample_paths", [] {
        py::list out;
        for (int i = 0; i < kNumPaths; ++i)
          if (sample_path_available(static_cast<SamplePath>(i))) out.append(kPathNames[i]);
        return out;
      },
      "Private: the CPU sampling paths built on this machine.");
  m.def("alias_draw_words", &alias_draw_words, py::arg("thresh"), py::arg("alias"), py::arg("hi"), py::arg("lo"));
}
