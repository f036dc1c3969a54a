// pybind11 bindings: argument checks, output allocation, GIL release. No arithmetic here.
// Every array handed in is checked (dtype, shape, contiguity, finiteness, token range) before
// a kernel touches it; failures raise ValueError/TypeError naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "binding_checks.hpp"
#include "compmech/alias.hpp"
#include "compmech/kernels.hpp"
#include "cpu/launchers.hpp"
#include "cpu/parallel.hpp"

namespace py = pybind11;
using namespace compmech;

void register_graph(py::module_& m);  // bindings_graph.cpp
void register_sample(py::module_& m);  // bindings_sample.cpp
void register_scale(py::module_& m);  // bindings_scale.cpp
void register_digits(py::module_& m);  // bindings_digits.cpp

namespace {

template <typename F>
bool all_finite(const F* p, py::ssize_t n) {
  for (py::ssize_t k = 0; k < n; ++k)
    if (!std::isfinite(p[k])) return false;
  return true;
}


enum class FloatKind { f32, f64 };
FloatKind float_kind(const std::string& dtype) {
  if (dtype == "float32") return FloatKind::f32;
  if (dtype == "float64") return FloatKind::f64;
  type_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

// A caller-provided output array: float32/float64, C-contiguous, writeable, shape (B, L, S).
void check_out(const py::array& out, int64_t B, int64_t L, int S) {
  if (!out.dtype().equal(py::dtype::of<float>()) && !out.dtype().equal(py::dtype::of<double>()))
    type_error("out must be a float32 or float64 array");
  if (out.ndim() != 3 || out.shape(0) != B || out.shape(1) != L || out.shape(2) != S)
    value_error("out must have shape (" + std::to_string(B) + ", " + std::to_string(L) + ", " + std::to_string(S) + ")");
  if (!(out.flags() & py::array::c_style)) value_error("out must be C-contiguous");
  if (!out.writeable()) value_error("out must be writeable");
}

// Data errors are reported, not raised: the Python layer words every message (compmech/_errors.py).
// Returns (beliefs or None, logp or None, first zero-probability flat index, first
// out-of-vocabulary flat index), -1 where there is none; an out-of-vocabulary token skips the kernel.
template <typename Tok>
py::tuple beliefs_typed(const ProcessView& p, const double* init, const py::array& tokens, py::object dtype,
                        bool want_logp, py::object out_arg) {
  const int64_t B = tokens.shape(0), L = tokens.shape(1);
  const Tok* tok = static_cast<const Tok*>(tokens.data());
  ZeroProb bad;
  {
    py::gil_scoped_release release;
    bad = find_bad_token(tok, B, L, p.V);
  }
  const auto flat = [L](const ZeroProb& z) { return z.row >= 0 ? z.row * L + z.pos : int64_t(-1); };
  if (bad.row >= 0) return py::make_tuple(py::none(), py::none(), int64_t(-1), flat(bad));
  py::object out = py::none(), logp = py::none();
  double* lp = nullptr;
  if (want_logp) {
    auto a = py::array_t<double>(B);
    lp = a.mutable_data();
    logp = a;
  }
  auto run = [&](auto* ptr) {
    py::gil_scoped_release release;
    return beliefs_cpu(p, init, tok, B, L, ptr, lp);
  };
  ZeroProb zero;
  if (!out_arg.is_none()) {
    py::array a = out_arg.cast<py::array>();
    check_out(a, B, L, p.S);
    zero = a.dtype().equal(py::dtype::of<float>()) ? run(static_cast<float*>(a.mutable_data()))
                                                 : run(static_cast<double*>(a.mutable_data()));
    out = a;
  } else if (dtype.is_none()) {
    zero = run(static_cast<float*>(nullptr));
  } else if (float_kind(dtype.cast<std::string>()) == FloatKind::f32) {
    auto a = py::array_t<float>({B, L, static_cast<int64_t>(p.S)});
    zero = run(a.mutable_data());
    out = a;
  } else {
    auto a = py::array_t<double>({B, L, static_cast<int64_t>(p.S)});
    zero = run(a.mutable_data());
    out = a;
  }
  return py::make_tuple(out, logp, flat(zero), int64_t(-1));
}

py::tuple beliefs(const py::array& T, const py::object& w, const py::array& initial, const py::array& tokens,
                  py::object dtype, bool want_logp, double zero_tol, py::object out) {
  const ProcessView p = view_process(T, w, zero_tol);
  const double* init = f64_data(initial, "initial", {p.S});
  if (tokens.ndim() != 2) value_error("tokens must have shape (B, L), got ndim " + std::to_string(tokens.ndim()));
  if (!(tokens.flags() & py::array::c_style)) value_error("tokens must be C-contiguous");
  const auto dt = tokens.dtype();
  if (dt.equal(py::dtype::of<uint8_t>())) return beliefs_typed<uint8_t>(p, init, tokens, dtype, want_logp, out);
  if (dt.equal(py::dtype::of<uint16_t>())) return beliefs_typed<uint16_t>(p, init, tokens, dtype, want_logp, out);
  if (dt.equal(py::dtype::of<int32_t>())) return beliefs_typed<int32_t>(p, init, tokens, dtype, want_logp, out);
  if (dt.equal(py::dtype::of<int64_t>())) return beliefs_typed<int64_t>(p, init, tokens, dtype, want_logp, out);
  type_error("tokens must be uint8, uint16, int32 or int64 at the extension boundary");
}

void check_sizes(int64_t B, int64_t L) {
  if (B < 0) value_error("batch must be >= 0, got " + std::to_string(B));
  if (L < 0) value_error("length must be >= 0, got " + std::to_string(L));
  if (L >= (int64_t(1) << 34)) value_error("length must be < 2^34 (the RNG counter's range)");
}

template <typename Tok, typename St>
py::tuple sample_hmm_typed(const ProcessView& p, const double* init, int64_t B, int64_t L, uint64_t seed, uint64_t row0,
                           bool want_states) {
  auto tokens = py::array_t<Tok>({B, L});
  py::object states = py::none();
  St* st = nullptr;
  if (want_states) {
    auto a = py::array_t<St>({B, L + 1});
    st = a.mutable_data();
    states = a;
  }
  Tok* tk = tokens.mutable_data();
  {
    py::gil_scoped_release release;
    sample_hmm_cpu<Tok, St>(p, init, B, L, seed, row0, tk, st);
  }
  return py::make_tuple(tokens, states);
}

template <typename Tok>
py::tuple sample_hmm_tok(const ProcessView& p, const double* init, int64_t B, int64_t L, uint64_t seed, uint64_t row0,
                         bool want_states) {
  if (p.S <= 256) return sample_hmm_typed<Tok, uint8_t>(p, init, B, L, seed, row0, want_states);
  if (p.S <= 65536) return sample_hmm_typed<Tok, uint16_t>(p, init, B, L, seed, row0, want_states);
  return sample_hmm_typed<Tok, uint32_t>(p, init, B, L, seed, row0, want_states);
}

py::tuple sample_hmm(const py::array& T, const py::array& initial, int64_t B, int64_t L, uint64_t seed, uint64_t row0,
                     bool want_states) {
  const ProcessView p = view_process(T, py::none(), 0.0);
  const double* init = f64_data(initial, "initial", {p.S});
  check_sizes(B, L);
  for (int i = 0; i < p.S; ++i)
    if (init[i] < 0) value_error("initial must be non-negative for hidden-state sampling");
  for (int64_t k = 0; k < int64_t(p.V) * p.S * p.S; ++k)
    if (p.T[k] < 0) value_error("T must be non-negative for hidden-state sampling (use a GHMM for quasi-probabilities)");
  if (static_cast<int64_t>(p.V) * p.S > 0xFFFFFFFFLL) value_error("V * S must be < 2^32 for hidden-state sampling");
  if (p.V <= 256) return sample_hmm_tok<uint8_t>(p, init, B, L, seed, row0, want_states);
  return sample_hmm_tok<uint16_t>(p, init, B, L, seed, row0, want_states);
}

// The alias tables hidden-state sampling draws from (the same ones sample_hmm builds), for the
// CUDA sampler to upload: (packed uint64 (S, V*S) or None, thresh uint64, alias uint32 (S, V*S),
// initial thresh uint64, alias uint32 (S,)).
py::tuple hmm_sample_tables(const py::array& T, const py::array& initial) {
  const ProcessView p = view_process(T, py::none(), 0.0);
  const double* init = f64_data(initial, "initial", {p.S});
  const HmmTables h = build_hmm_tables(p.T, init, p.V, p.S);
  const auto copy = [](const auto& v, std::vector<py::ssize_t> shape) {
    using E = typename std::decay_t<decltype(v)>::value_type;
    py::array_t<E> a(shape);
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
  };
  const py::ssize_t S = p.S, K = static_cast<py::ssize_t>(h.trans.K);
  py::object packed = h.packed.empty() ? py::object(py::none()) : py::object(copy(h.packed, {S, K}));
  return py::make_tuple(packed, copy(h.trans.thresh, {S, K}), copy(h.trans.alias, {S, K}), copy(h.init.thresh, {S}),
                        copy(h.init.alias, {S}));
}

// Tw[x, i] = (T[x] w)_i as the GHMM sampler computes it (the CUDA sampler uploads this array,
// so both draw from the same bits).
py::array_t<double> token_weights_array(const py::array& T, const py::object& w) {
  const ProcessView p = view_process(T, w, 0.0);
  py::array_t<double> out({static_cast<py::ssize_t>(p.V), static_cast<py::ssize_t>(p.S)});
  token_weights(p.T, p.w, p.V, p.S, out.mutable_data());
  return out;
}

template <typename Tok, typename Out>
py::tuple sample_ghmm_typed(const ProcessView& p, const double* init, int64_t B, int64_t L, uint64_t seed, uint64_t row0,
                            bool want_beliefs) {
  auto tokens = py::array_t<Tok>({B, L});
  py::object beliefs = py::none();
  Out* bp = nullptr;
  if (want_beliefs) {
    auto a = py::array_t<Out>({B, L, static_cast<int64_t>(p.S)});
    bp = a.mutable_data();
    beliefs = a;
  }
  Tok* tk = tokens.mutable_data();
  ZeroProb bad;
  {
    py::gil_scoped_release release;
    bad = sample_ghmm_cpu<Tok, Out>(p, init, B, L, seed, row0, tk, bp);
  }
  // (tokens, beliefs, flat index where no token had positive probability or -1): reported, not raised
  return py::make_tuple(tokens, beliefs, bad.row >= 0 ? bad.row * L + bad.pos : int64_t(-1));
}

py::tuple sample_ghmm(const py::array& T, const py::object& w, const py::array& initial, int64_t B, int64_t L,
                      uint64_t seed, uint64_t row0, py::object dtype, double zero_tol) {
  const ProcessView p = view_process(T, w, zero_tol);
  const double* init = f64_data(initial, "initial", {p.S});
  check_sizes(B, L);
  const bool want = !dtype.is_none();
  const bool f64 = want && float_kind(dtype.cast<std::string>()) == FloatKind::f64;
  if (p.V <= 256)
    return f64 ? sample_ghmm_typed<uint8_t, double>(p, init, B, L, seed, row0, want)
               : sample_ghmm_typed<uint8_t, float>(p, init, B, L, seed, row0, want);
  return f64 ? sample_ghmm_typed<uint16_t, double>(p, init, B, L, seed, row0, want)
             : sample_ghmm_typed<uint16_t, float>(p, init, B, L, seed, row0, want);
}

template <typename Out, typename Tok>
py::object msp_level_typed(const ProcessView& p, const py::array& parents, const double* pp, double min_prob,
                          bool expect_full) {
  const int64_t P = parents.shape(0);
  const int64_t S = p.S;
  const Out* pb = static_cast<const Out*>(parents.data());
  if (P > std::numeric_limits<int32_t>::max())
    value_error("msp level too large (" + std::to_string(P) + " parents): use compmech.msp_level_chunks");
  if (expect_full) {
    // Optimistic single pass at fixed offsets, beliefs and probs only: (beliefs, probs, None,
    // None), the lineage being implicit; None if a child was dropped (redo by counting,
    // compmech/_backend.py).
    auto beliefs = py::array_t<Out>({P * p.V, S});
    auto probs = py::array_t<double>(P * p.V);
    Out* b = beliefs.mutable_data();
    double* pr = probs.mutable_data();
    bool full;
    {
      py::gil_scoped_release release;
      full = msp_fill_full<Out>(p, pb, pp, P, min_prob, b, pr);
    }
    if (!full) return py::none();
    return py::make_tuple(beliefs, probs, py::none(), py::none());
  }
  constexpr int64_t chunk = 2048;
  const int64_t n_chunks = (P + chunk - 1) / chunk;
  std::vector<int64_t> offsets(static_cast<size_t>(n_chunks) + 1, 0);
  {
    py::gil_scoped_release release;
    msp_count<Out>(p, pb, pp, P, min_prob, chunk, offsets.data() + 1);
  }
  for (int64_t c = 0; c < n_chunks; ++c) offsets[c + 1] += offsets[c];
  const int64_t M = offsets[static_cast<size_t>(n_chunks)];
  auto beliefs = py::array_t<Out>({M, S});
  auto probs = py::array_t<double>(M);
  auto parent = py::array_t<int32_t>(M);
  auto token = py::array_t<Tok>(M);
  Out* b = beliefs.mutable_data();
  double* pr = probs.mutable_data();
  int32_t* pa = parent.mutable_data();
  Tok* tk = token.mutable_data();
  {
    py::gil_scoped_release release;
    msp_fill<Out, Tok>(p, pb, pp, P, min_prob, chunk, offsets.data(), b, pr, pa, tk);
  }
  return py::make_tuple(beliefs, probs, parent, token);
}

// trusted: the parents are a level this library computed (or an initial belief it checked),
// so the O(P) input checks (single-threaded passes over the parents) are skipped.
py::object msp_level(const py::array& T, const py::object& w, const py::array& parents, const py::array& parent_probs,
                    double min_prob, double zero_tol, bool expect_full, bool trusted) {
  const ProcessView p = view_process(T, w, zero_tol);
  if (parents.ndim() != 2 || parents.shape(1) != p.S)
    value_error("parent beliefs must have shape (P, S) with S = " + std::to_string(p.S));
  if (!(parents.flags() & py::array::c_style)) value_error("parent beliefs must be C-contiguous");
  const double* pp = f64_data(parent_probs, "parent probabilities", {parents.shape(0)}, !trusted);
  if (!trusted) {
    for (py::ssize_t k = 0; k < parents.shape(0); ++k)
      if (!(pp[k] >= 0.0)) value_error("parent probabilities must be >= 0 (entry " + std::to_string(k) + ")");
    const bool finite = parents.dtype().equal(py::dtype::of<float>())
                            ? all_finite(static_cast<const float*>(parents.data()), parents.size())
                            : parents.dtype().equal(py::dtype::of<double>())
                                  ? all_finite(static_cast<const double*>(parents.data()), parents.size())
                                  : true;
    if (!finite) value_error("parent beliefs contain a non-finite value");
  }
  if (!(min_prob >= 0.0) || !std::isfinite(min_prob)) value_error("min_prob must be a finite number >= 0");
  const bool small_v = p.V <= 256;
  if (parents.dtype().equal(py::dtype::of<float>()))
    return small_v ? msp_level_typed<float, uint8_t>(p, parents, pp, min_prob, expect_full)
                   : msp_level_typed<float, uint16_t>(p, parents, pp, min_prob, expect_full);
  if (parents.dtype().equal(py::dtype::of<double>()))
    return small_v ? msp_level_typed<double, uint8_t>(p, parents, pp, min_prob, expect_full)
                   : msp_level_typed<double, uint16_t>(p, parents, pp, min_prob, expect_full);
  type_error("parent beliefs must be float32 or float64");
}

// Python runs signal handlers only in the main thread: calls made from other threads (e.g. a
// background sampler) are never polled, so they never wait for the GIL here.
unsigned long g_main_thread = 0;

// Runs on the thread that entered the extension, with the GIL released: takes the GIL and lets
// Python run its signal handlers. A pending Ctrl-C leaves KeyboardInterrupt set on this thread.
bool python_interrupted() {
  if (PyThread_get_thread_ident() != g_main_thread) return false;
#if PY_VERSION_HEX >= 0x030D0000
  if (Py_IsFinalizing()) return false;
#else
  if (_Py_IsFinalizing()) return false;
#endif
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}

py::dict build_info() {
  py::dict d;
  d["native"] = static_cast<bool>(COMPMECH_NATIVE_BUILD);
  d["cuda"] = static_cast<bool>(COMPMECH_CUDA_BUILD);
#if defined(__AVX512F__)
  d["simd"] = "avx512";
#elif defined(__AVX2__)
  d["simd"] = "avx2";
#elif defined(__SSE2__)
  d["simd"] = "sse2";
#else
  d["simd"] = "none";
#endif
  d["compiler"] = __VERSION__;
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "compmech compiled core (CPU kernels). Use the wrappers in compmech, not this module directly.";
  m.def("beliefs", &beliefs, py::arg("T"), py::arg("w"), py::arg("initial"), py::arg("tokens"), py::arg("dtype"),
        py::arg("want_logp"), py::arg("zero_tol"), py::arg("out") = py::none());
  m.def("sample_hmm", &sample_hmm, py::arg("T"), py::arg("initial"), py::arg("batch"), py::arg("length"),
        py::arg("seed"), py::arg("row0"), py::arg("want_states"));
  m.def("hmm_sample_tables", &hmm_sample_tables, py::arg("T"), py::arg("initial"));
  m.def("token_weights", &token_weights_array, py::arg("T"), py::arg("w"));
  m.def("sample_ghmm", &sample_ghmm, py::arg("T"), py::arg("w"), py::arg("initial"), py::arg("batch"),
        py::arg("length"), py::arg("seed"), py::arg("row0"), py::arg("dtype"), py::arg("zero_tol"));
  m.def("msp_level", &msp_level, py::arg("T"), py::arg("w"), py::arg("parents"), py::arg("parent_probs"),
        py::arg("min_prob"), py::arg("zero_tol"), py::arg("expect_full") = false, py::arg("trusted") = false);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &num_threads);
  m.def("build_info", &build_info);
  register_graph(m);
  register_sample(m);
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  set_interrupt_check(&python_interrupted);
  py::register_exception_translator([](std::exception_ptr e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const Interrupted&) {
      // the signal handler's exception (KeyboardInterrupt) is already set, unless the check was
      // triggered some other way
      if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
    }
  });
  register_scale(m);
  register_digits(m);
}
