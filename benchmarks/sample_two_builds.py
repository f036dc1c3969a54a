"""cm.sample's kernel (compmech._core.sample_hmm, which cm.sample calls after its argument checks)
from two builds of the extension loaded in one process and called alternately, each call checked
against the first build's tokens: Mess3, B=65536, L=256. Prints medians of wall time and of the
process's CPU time (all threads) per call, and the load average before and after.

Build each extension out of tree, e.g. the code an AVX2-only machine gets:
  git archive <commit> | tar -x -C /tmp/src_a
  cmake -S /tmp/src_a -B /tmp/build_a -DCOMPMECH_NATIVE=OFF -DCOMPMECH_CUDA=OFF \\
      -DCMAKE_CXX_FLAGS=-march=x86-64-v3 -Dpybind11_DIR=$(python -c "import pybind11; print(pybind11.get_cmake_dir())")
  make -C /tmp/build_a _core
then: python benchmarks/sample_two_builds.py /tmp/build_a/_core*.so /tmp/build_b/_core*.so [calls] [threads]
"""
import importlib.util
import sys
import time

import numpy as np

import compmech as cm


def load(name, path):
    """The extension at `path` as module `name`._core (its init symbol stays PyInit__core)."""
    spec = importlib.util.spec_from_file_location(f"{name}._core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(path_a, path_b, calls=25, threads=2):
    mods = {"a": load("build_a", path_a), "b": load("build_b", path_b)}
    for m in mods.values():
        m.set_num_threads(threads)
    proc = cm.processes.mess3()
    T, init = np.ascontiguousarray(proc.T), np.ascontiguousarray(proc.check_initial(None))
    B, L = 65536, 256
    ref = mods["a"].sample_hmm(T, init, B, L, 5, 0, False)[0]  # (tokens, states=None)
    wall = {k: [] for k in mods}
    cpu = {k: [] for k in mods}
    print("load average:", open("/proc/loadavg").read().strip())
    for _ in range(calls):
        for k, m in mods.items():
            c0, t0 = time.process_time(), time.perf_counter()
            out = m.sample_hmm(T, init, B, L, 5, 0, False)[0]
            t1, c1 = time.perf_counter(), time.process_time()
            if not np.array_equal(out, ref):
                sys.exit(f"build {k}: tokens differ from build a's")
            wall[k].append(t1 - t0)
            cpu[k].append(c1 - c0)
            del out
    print("load average:", open("/proc/loadavg").read().strip())
    n = B * L
    for k, path in (("a", path_a), ("b", path_b)):
        w, c = np.median(wall[k]), np.median(cpu[k])
        print(f"{k} ({path}): median {w * 1e3:.2f} ms = {n / w / 1e9:.2f} G tokens/s (best {n / min(wall[k]) / 1e9:.2f}); "
              f"CPU time {c * 1e3:.2f} ms = {n / c / 1e9:.2f} G tokens per CPU-second")
    print(f"median wall time b / a: {np.median(wall['b']) / np.median(wall['a']):.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(x) for x in sys.argv[3:5]))
