// Bindings for the deduplicated mixed-state graph (compmech.msp). Registered into _core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

void register_graph(py::module_& m) {}
