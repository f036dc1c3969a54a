// Bindings for the deduplicated mixed-state graph (compmech.msp). Registered into _core.
// Every argument is checked (dtype, shape, contiguity, finiteness, ranges) before the kernel
// sees it; the GIL is released around the search.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <vector>

#include "binding_checks.hpp"
#include "cpu/msp_graph.hpp"

namespace py = pybind11;
using namespace compmech;

namespace {

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  if (!v.empty()) std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

py::dict msp_graph(const py::array& T, const py::object& w, const py::array& initial, int64_t max_depth,
                   int64_t max_states, double tol, double zero_tol) {
  const ProcessView p = view_process(T, w, zero_tol);
  const py::ssize_t S = p.S;
  const double* init = f64_data(initial, "initial", {S});
  if (max_depth < -1) value_error("max_depth must be >= 0 (or -1 for unbounded), got " + std::to_string(max_depth));
  if (max_states < 1 || max_states > 2147483647LL)
    value_error("max_states must be in [1, 2^31 - 1], got " + std::to_string(max_states));
  if (!(tol > 0.0) || !(tol < 1.0)) value_error("tol must be in (0, 1), got " + std::to_string(tol));
  MSPGraph g;
  {
    py::gil_scoped_release release;
    g = msp_graph_cpu(p, init, max_depth, max_states, tol);
  }
  const py::ssize_t K = static_cast<py::ssize_t>(g.depth.size());
  const py::ssize_t E = static_cast<py::ssize_t>(g.src.size());
  py::dict out;
  out["beliefs"] = to_array(g.beliefs, {K, S});
  out["depth"] = to_array(g.depth, {K});
  out["expanded"] = to_array(g.expanded, {K});
  out["src"] = to_array(g.src, {E});
  out["dst"] = to_array(g.dst, {E});
  out["token"] = to_array(g.token, {E});
  out["prob"] = to_array(g.prob, {E});
  out["dist"] = to_array(g.dist, {E});
  out["hit_max_states"] = g.hit_max_states;
  out["merges"] = g.merges;
  return out;
}

}  // namespace

void register_graph(py::module_& m) {
  m.def("msp_graph", &msp_graph, py::arg("T"), py::arg("w"), py::arg("initial"), py::arg("max_depth"),
        py::arg("max_states"), py::arg("tol"), py::arg("zero_tol"),
        "Breadth-first deduplicated mixed-state graph; returns a dict of arrays (see compmech.msp).");
}
