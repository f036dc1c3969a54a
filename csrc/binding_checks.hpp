// Argument checks shared by the binding files: every array is checked (dtype, shape,
// contiguity, finiteness) before a kernel touches it, with messages that name the argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <vector>

#include "cpu/launchers.hpp"

namespace compmech {
namespace py = pybind11;

[[noreturn]] inline void value_error(const std::string& msg) { throw py::value_error(msg); }
[[noreturn]] inline void type_error(const std::string& msg) { throw py::type_error(msg); }

// Data pointer of a C-contiguous float64 array of the given shape (an extent of -1 matches
// any size) whose entries are all finite (not checked with finite=false: data this library made).
inline const double* f64_data(const py::array& a, const char* name, std::vector<py::ssize_t> shape,
                              bool finite = true) {
  if (!a.dtype().equal(py::dtype::of<double>())) type_error(std::string(name) + " must be a float64 array");
  if (a.ndim() != static_cast<py::ssize_t>(shape.size()))
    value_error(std::string(name) + " must have " + std::to_string(shape.size()) + " dimensions, got " +
                std::to_string(a.ndim()));
  for (size_t d = 0; d < shape.size(); ++d)
    if (shape[d] >= 0 && a.shape(d) != shape[d])
      value_error(std::string(name) + ": dimension " + std::to_string(d) + " must be " + std::to_string(shape[d]) +
                  ", got " + std::to_string(a.shape(d)));
  if (!(a.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
  const double* p = static_cast<const double*>(a.data());
  const py::ssize_t n = finite ? a.size() : 0;
  for (py::ssize_t k = 0; k < n; ++k)
    if (!std::isfinite(p[k]))
      value_error(std::string(name) + " contains a non-finite value at flat index " + std::to_string(k));
  return p;
}

// Checked view of a process handed to the extension: T (V, S, S) float64, w (S,) or None.
inline ProcessView view_process(const py::array& T, const py::object& w, double zero_tol) {
  if (T.ndim() != 3) value_error("T must have shape (V, S, S), got ndim " + std::to_string(T.ndim()));
  const py::ssize_t V = T.shape(0), S = T.shape(1);
  if (V < 1 || V > 65535) value_error("T: vocabulary size V must be in [1, 65535], got " + std::to_string(V));
  if (S < 1 || S > (1 << 24)) value_error("T: number of states S must be in [1, 2^24], got " + std::to_string(S));
  ProcessView p{};
  p.T = f64_data(T, "T", {V, S, S});
  p.w = w.is_none() ? nullptr : f64_data(w.cast<py::array>(), "w", {S});
  p.V = static_cast<int>(V);
  p.S = static_cast<int>(S);
  if (!(zero_tol >= 0.0) || !std::isfinite(zero_tol)) value_error("zero_tol must be a finite number >= 0");
  p.zero_tol = zero_tol;
  return p;
}

}  // namespace compmech
