// Bindings for the streaming MSP reductions (compmech.scale): argument checks, GIL release,
// fixed-point sums handed back as (n, 3) uint64 limb arrays (unit 2^-128, two's complement).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "binding_checks.hpp"
#include "cpu/msp_reduce.hpp"

namespace py = pybind11;
using namespace compmech;

namespace {

py::array_t<uint64_t> limbs(const std::vector<ExactSum>& sums) {
  py::array_t<uint64_t> a({static_cast<py::ssize_t>(sums.size()), py::ssize_t(3)});
  uint64_t* d = a.mutable_data();
  for (size_t i = 0; i < sums.size(); ++i)
    for (int j = 0; j < 3; ++j) d[i * 3 + j] = sums[i].limb[j];
  return a;
}

py::tuple msp_entropy_sums_py(const py::array& T, const py::object& w, const py::array& roots,
                              const py::array& root_probs, int depth, double min_prob, double zero_tol,
                              bool include_roots) {
  const ProcessView p = view_process(T, w, zero_tol);
  const double* rb = f64_data(roots, "roots", {-1, p.S});
  const int64_t R = roots.shape(0);
  const double* rp = f64_data(root_probs, "root_probs", {R});
  for (int64_t r = 0; r < R; ++r)
    if (!(rp[r] >= 0.0 && rp[r] <= 1.0)) value_error("root_probs must be in [0, 1] (entry " + std::to_string(r) + ")");
  if (depth < 0 || depth > 4096) value_error("depth must be in [0, 4096], got " + std::to_string(depth));
  if (!(min_prob >= 0.0) || !std::isfinite(min_prob)) value_error("min_prob must be a finite number >= 0");
  EntropyTotals tot;
  {
    py::gil_scoped_release release;
    msp_entropy_sums(p, rb, rp, R, depth, min_prob, include_roots, tot);
  }
  if (!tot.ok) value_error("a probability or entropy term left the exact-sum range (|x| < 2^62)");
  py::array_t<uint64_t> counts(static_cast<py::ssize_t>(tot.count.size()));
  for (size_t i = 0; i < tot.count.size(); ++i) counts.mutable_data()[i] = tot.count[i];
  return py::make_tuple(counts, limbs(tot.prob), limbs(tot.ent));
}

py::array_t<uint64_t> exact_bin_sums_py(const py::array& values, const py::array_t<int64_t, py::array::c_style>& bins,
                                        int64_t nbins) {
  const int64_t n = values.ndim() == 1 ? values.shape(0) : -1;
  const double* v = f64_data(values, "values", {n});
  if (bins.ndim() != 1 || bins.shape(0) != n) value_error("bins must be a 1-d int64 array as long as values");
  if (nbins < 0) value_error("nbins must be >= 0");
  const int64_t* b = bins.data();
  for (int64_t i = 0; i < n; ++i)
    if (b[i] < 0 || b[i] >= nbins) value_error("bins[" + std::to_string(i) + "] out of range [0, nbins)");
  std::vector<ExactSum> sums(static_cast<size_t>(nbins));
  bool ok;
  {
    py::gil_scoped_release release;
    ok = exact_bin_sums(v, b, n, sums.data());
  }
  if (!ok) value_error("values must satisfy |x| < 2^62 for an exact sum");
  return limbs(sums);
}

}  // namespace

void register_scale(py::module_& m) {
  m.def("msp_entropy_sums", &msp_entropy_sums_py, py::arg("T"), py::arg("w"), py::arg("roots"),
        py::arg("root_probs"), py::arg("depth"), py::arg("min_prob"), py::arg("zero_tol"),
        py::arg("include_roots"));
  m.def("exact_bin_sums", &exact_bin_sums_py, py::arg("values"), py::arg("bins"), py::arg("nbins"));
}
