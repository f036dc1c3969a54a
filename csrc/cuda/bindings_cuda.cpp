// pybind11 module compmech._cuda: thin entry points taking device pointers as integers (from
// torch tensors' data_ptr(), so there is no compile-time dependency on torch's C++ ABI) and
// torch's current stream as an integer. Arguments are checked in compmech/_cuda_ops.py; here
// only the type names are parsed. The GIL is released while launching.
#include <pybind11/pybind11.h>

#include <string>

#include "launch.hpp"

namespace py = pybind11;
using namespace compmech::cuda;

namespace {

IntType int_type(const std::string& s) {
  if (s == "uint8") return IntType::u8;
  if (s == "uint16") return IntType::u16;
  if (s == "uint32") return IntType::u32;
  if (s == "int32") return IntType::i32;
  if (s == "int64") return IntType::i64;
  throw py::type_error("unsupported integer dtype for the CUDA kernels: " + s);
}

FloatType float_type(const std::string& s) {
  if (s == "float32") return FloatType::f32;
  if (s == "float64") return FloatType::f64;
  throw py::type_error("dtype must be float32 or float64, got " + s);
}

template <typename T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// S is checked by the launchers (require_states); the message users see is compmech/_errors.py's.
DevProcess process(uintptr_t T, uintptr_t w, int V, int S, double zero_tol) {
  return DevProcess{ptr<const double>(T), ptr<const double>(w), V, S, zero_tol};
}

}  // namespace

#ifndef COMPMECH_CUDA_MODULE
#define COMPMECH_CUDA_MODULE _cuda
#endif

PYBIND11_MODULE(COMPMECH_CUDA_MODULE, m) {
  m.doc() = "compmech CUDA kernels (device pointers in, asynchronous launches). Use the compmech wrappers.";
  m.attr("max_states") = kMaxStates;
  m.def("device_count", &device_count, "Visible CUDA devices; raises RuntimeError with the CUDA error text.");
  m.def("runtime_version", &runtime_version);
  m.def("debug_mode", &debug_mode, "Whether COMPMECH_CUDA_DEBUG=1 makes every launch synchronise and check.");
  m.def(
      "beliefs_plan",
      [](int device, int V, int S, int out_bytes) {
        const BeliefsPlan pl = beliefs_plan(device, V, S, out_bytes);
        py::dict d;
        d["tile"] = pl.TT;
        d["staged"] = pl.stage_out;
        d["table_shared"] = pl.t_shared;
        d["smem"] = pl.smem;
        d["registers"] = pl.regs;
        d["blocks_per_sm"] = pl.blocks_per_sm;
        return d;
      },
      py::arg("device"), py::arg("V"), py::arg("S"), py::arg("out_bytes"),
      "Launch layout of the beliefs kernel for a process on a device (out_bytes 0, 4 or 8).");
  m.def(
      "beliefs",
      [](int device, uintptr_t stream, uintptr_t T, uintptr_t w, int V, int S, double zero_tol, uintptr_t init,
         uintptr_t tokens, const std::string& tok_type, int64_t B, int64_t L, uintptr_t out,
         const std::string& out_type, uintptr_t logp, uintptr_t flags) {
        const DevProcess p = process(T, w, V, S, zero_tol);
        const IntType tt = int_type(tok_type);
        const FloatType ot = float_type(out_type);
        py::gil_scoped_release release;
        beliefs(Launch{device, stream}, p, ptr<const double>(init), ptr<const void>(tokens), tt, B, L, ptr<void>(out),
                ot, ptr<double>(logp), ptr<unsigned long long>(flags));
      },
      py::arg("device"), py::arg("stream"), py::arg("T"), py::arg("w"), py::arg("V"), py::arg("S"),
      py::arg("zero_tol"), py::arg("initial"), py::arg("tokens"), py::arg("tok_type"), py::arg("B"), py::arg("L"),
      py::arg("out"), py::arg("out_type"), py::arg("logp"), py::arg("flags"));
  m.def(
      "sample_hmm",
      [](int device, uintptr_t stream, int V, int S, uintptr_t packed, uintptr_t thresh, uintptr_t alias,
         uintptr_t init_thresh, uintptr_t init_alias, int64_t B, int64_t L, uint64_t seed, uint64_t row0,
         uintptr_t tokens, const std::string& tok_type, uintptr_t states, const std::string& st_type) {
        const DevHmmTables h{V, S, ptr<const uint64_t>(packed), ptr<const uint64_t>(thresh),
                             ptr<const uint32_t>(alias), ptr<const uint64_t>(init_thresh),
                             ptr<const uint32_t>(init_alias)};
        const IntType tt = int_type(tok_type), st = int_type(st_type);
        py::gil_scoped_release release;
        sample_hmm(Launch{device, stream}, h, B, L, seed, row0, ptr<void>(tokens), tt, ptr<void>(states), st);
      },
      py::arg("device"), py::arg("stream"), py::arg("V"), py::arg("S"), py::arg("packed"), py::arg("thresh"),
      py::arg("alias"), py::arg("init_thresh"), py::arg("init_alias"), py::arg("B"), py::arg("L"), py::arg("seed"),
      py::arg("row0"), py::arg("tokens"), py::arg("tok_type"), py::arg("states"), py::arg("st_type"));
  m.def(
      "sample_ghmm",
      [](int device, uintptr_t stream, uintptr_t T, uintptr_t w, int V, int S, double zero_tol, uintptr_t Tw,
         uintptr_t init, int64_t B, int64_t L, uint64_t seed, uint64_t row0, uintptr_t tokens,
         const std::string& tok_type, uintptr_t beliefs, const std::string& out_type, uintptr_t flags) {
        const DevProcess p = process(T, w, V, S, zero_tol);
        const IntType tt = int_type(tok_type);
        const FloatType ot = float_type(out_type);
        py::gil_scoped_release release;
        sample_ghmm(Launch{device, stream}, p, ptr<const double>(Tw), ptr<const double>(init), B, L, seed, row0,
                    ptr<void>(tokens), tt, ptr<void>(beliefs), ot, ptr<unsigned long long>(flags));
      },
      py::arg("device"), py::arg("stream"), py::arg("T"), py::arg("w"), py::arg("V"), py::arg("S"),
      py::arg("zero_tol"), py::arg("Tw"), py::arg("initial"), py::arg("B"), py::arg("L"), py::arg("seed"),
      py::arg("row0"), py::arg("tokens"), py::arg("tok_type"), py::arg("beliefs"), py::arg("out_type"),
      py::arg("flags"));
  m.def(
      "msp_keep",
      [](int device, uintptr_t stream, uintptr_t T, uintptr_t w, int V, int S, double zero_tol, uintptr_t parents,
         const std::string& type, uintptr_t pprobs, int64_t P, double min_prob, uintptr_t keep) {
        const DevProcess p = process(T, w, V, S, zero_tol);
        const FloatType ft = float_type(type);
        py::gil_scoped_release release;
        msp_keep(Launch{device, stream}, p, ptr<const void>(parents), ft, ptr<const double>(pprobs), P, min_prob,
                 ptr<int32_t>(keep));
      },
      py::arg("device"), py::arg("stream"), py::arg("T"), py::arg("w"), py::arg("V"), py::arg("S"),
      py::arg("zero_tol"), py::arg("parents"), py::arg("type"), py::arg("parent_probs"), py::arg("P"),
      py::arg("min_prob"), py::arg("keep"));
  m.def(
      "msp_fill",
      [](int device, uintptr_t stream, uintptr_t T, uintptr_t w, int V, int S, double zero_tol, uintptr_t parents,
         const std::string& type, uintptr_t pprobs, int64_t P, double min_prob, uintptr_t keep, uintptr_t offsets,
         uintptr_t beliefs, uintptr_t probs, uintptr_t parent, uintptr_t token, const std::string& tok_type,
         uintptr_t dropped) {
        const DevProcess p = process(T, w, V, S, zero_tol);
        const FloatType ft = float_type(type);
        const IntType tt = int_type(tok_type);
        py::gil_scoped_release release;
        msp_fill(Launch{device, stream}, p, ptr<const void>(parents), ft, ptr<const double>(pprobs), P, min_prob,
                 ptr<const int32_t>(keep), ptr<const int64_t>(offsets), ptr<void>(beliefs), ptr<double>(probs), ptr<int32_t>(parent),
                 ptr<void>(token), tt, ptr<unsigned long long>(dropped));
      },
      py::arg("device"), py::arg("stream"), py::arg("T"), py::arg("w"), py::arg("V"), py::arg("S"),
      py::arg("zero_tol"), py::arg("parents"), py::arg("type"), py::arg("parent_probs"), py::arg("P"),
      py::arg("min_prob"), py::arg("keep"), py::arg("offsets"), py::arg("beliefs"), py::arg("probs"), py::arg("parent"),
      py::arg("token"), py::arg("tok_type"), py::arg("dropped"));
}
