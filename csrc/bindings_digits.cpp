// Bindings for the mixed-radix token digits of product processes (csrc/cpu/digits.hpp): argument
// checks, output allocation, GIL release. Bad values are reported back, not raised, so that the
// Python layer words the message (it knows the process and the argument's name).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "binding_checks.hpp"
#include "cpu/digits.hpp"

namespace py = pybind11;
using namespace compmech;

namespace {

// prod(radices), refusing radices outside [1, 65536] and products of 2^64 or more.
uint64_t checked_product(const std::vector<int64_t>& radices) {
  if (radices.empty()) value_error("radices must not be empty");
  uint64_t total = 1;
  for (int64_t r : radices) {
    if (r < 1 || r > 65536) value_error("radices must be in [1, 65536], got " + std::to_string(r));
    if (total > UINT64_MAX / static_cast<uint64_t>(r)) value_error("the product of the radices must be < 2^64");
    total *= static_cast<uint64_t>(r);
  }
  return total;
}

py::array digit_array(const std::vector<py::ssize_t>& shape, int64_t radix) {
  if (radix > 256) return py::array_t<uint16_t>(shape);
  return py::array_t<uint8_t>(shape);
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

template <typename Tok>
int64_t split_typed(const py::array& tokens, const Digits& d) {
  const Tok* x = static_cast<const Tok*>(tokens.data());
  py::gil_scoped_release release;
  return split_digits(x, static_cast<int64_t>(tokens.size()), d);
}

// (list of digit arrays shaped like tokens — only factor `which`'s when which >= 0 — or None; flat
// index of the first joint value outside [0, prod radices), -1 if none)
py::tuple split_digits_py(const py::array& tokens, const std::vector<int64_t>& radices, int which) {
  checked_product(radices);
  if (which < -1 || which >= static_cast<int>(radices.size()))
    value_error("which must be -1 or a factor index below " + std::to_string(radices.size()));
  if (!(tokens.flags() & py::array::c_style)) value_error("tokens must be C-contiguous");
  const auto shape = shape_of(tokens);
  Digits d;
  d.radix = radices;
  py::list parts;
  for (size_t i = 0; i < radices.size(); ++i) {
    if (which >= 0 && static_cast<int>(i) != which) {
      d.data.push_back(nullptr);
      continue;
    }
    py::array a = digit_array(shape, radices[i]);
    d.data.push_back(a.mutable_data());
    parts.append(a);
  }
  const auto dt = tokens.dtype();
  int64_t bad;
  if (dt.equal(py::dtype::of<uint8_t>())) bad = split_typed<uint8_t>(tokens, d);
  else if (dt.equal(py::dtype::of<uint16_t>())) bad = split_typed<uint16_t>(tokens, d);
  else if (dt.equal(py::dtype::of<uint32_t>())) bad = split_typed<uint32_t>(tokens, d);
  else if (dt.equal(py::dtype::of<uint64_t>())) bad = split_typed<uint64_t>(tokens, d);
  else if (dt.equal(py::dtype::of<int8_t>())) bad = split_typed<int8_t>(tokens, d);
  else if (dt.equal(py::dtype::of<int16_t>())) bad = split_typed<int16_t>(tokens, d);
  else if (dt.equal(py::dtype::of<int32_t>())) bad = split_typed<int32_t>(tokens, d);
  else if (dt.equal(py::dtype::of<int64_t>())) bad = split_typed<int64_t>(tokens, d);
  else type_error("tokens must be an integer array, got dtype " + py::str(dt).cast<std::string>());
  if (bad >= 0) return py::make_tuple(py::none(), bad);
  return py::make_tuple(parts, int64_t(-1));
}

template <typename Out>
BadDigit join_typed(const Digits& d, int64_t n, py::array& out) {
  Out* o = static_cast<Out*>(out.mutable_data());
  py::gil_scoped_release release;
  return join_digits(d, n, o);
}

// (joint array of `dtype`; flat index and factor of the first digit outside its radix, -1 if none)
py::tuple join_digits_py(const std::vector<py::array>& parts, const std::vector<int64_t>& radices,
                         const std::string& dtype) {
  const uint64_t total = checked_product(radices);
  if (parts.size() != radices.size()) value_error("parts and radices must have the same length");
  const auto shape = shape_of(parts[0]);
  Digits d;
  d.radix = radices;
  for (size_t i = 0; i < parts.size(); ++i) {
    const py::array& p = parts[i];
    const std::string name = "parts[" + std::to_string(i) + "]";
    if (!p.dtype().equal(radices[i] > 256 ? py::dtype::of<uint16_t>() : py::dtype::of<uint8_t>()))
      type_error(name + " must be " + (radices[i] > 256 ? "uint16" : "uint8") + " for radix " + std::to_string(radices[i]));
    if (shape_of(p) != shape) value_error(name + " must have the shape of parts[0]");
    if (!(p.flags() & py::array::c_style)) value_error(name + " must be C-contiguous");
    d.data.push_back(const_cast<void*>(p.data()));  // read only
  }
  const int64_t n = static_cast<int64_t>(parts[0].size());
  uint64_t max_out;
  py::array out;
  if (dtype == "uint8") out = py::array_t<uint8_t>(shape), max_out = UINT8_MAX;
  else if (dtype == "uint16") out = py::array_t<uint16_t>(shape), max_out = UINT16_MAX;
  else if (dtype == "uint32") out = py::array_t<uint32_t>(shape), max_out = UINT32_MAX;
  else if (dtype == "uint64") out = py::array_t<uint64_t>(shape), max_out = UINT64_MAX;
  else type_error("dtype must be 'uint8', 'uint16', 'uint32' or 'uint64', got '" + dtype + "'");
  if (total - 1 > max_out) value_error("dtype " + dtype + " cannot hold joint values up to " + std::to_string(total - 1));
  BadDigit bad;
  if (dtype == "uint8") bad = join_typed<uint8_t>(d, n, out);
  else if (dtype == "uint16") bad = join_typed<uint16_t>(d, n, out);
  else if (dtype == "uint32") bad = join_typed<uint32_t>(d, n, out);
  else bad = join_typed<uint64_t>(d, n, out);
  return py::make_tuple(out, bad.index, bad.factor);
}

}  // namespace

void register_digits(py::module_& m) {
  m.def("split_digits", &split_digits_py, py::arg("tokens"), py::arg("radices"), py::arg("which") = -1);
  m.def("join_digits", &join_digits_py, py::arg("parts"), py::arg("radices"), py::arg("dtype"));
}
