"""What the benchmark ran on: CPU model, SIMD level, threads, GPU, library versions, and the
environment variables that change the numpy baseline."""
from __future__ import annotations

import importlib.metadata
import os
import platform

import compmech as cm

from .workloads import _usable_cores, cuda_available

#: Variables that make OpenBLAS pretend to be another CPU; the bench must run without them.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

_LIBS = ("compmech-hmm", "numpy", "torch", "jax", "jaxlib", "scipy", "scikit-learn", "transformer-lens")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_simd() -> list[str]:
    """The CPU's widest vector extensions (from /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [s for s in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl")
                            if s in flags]
    except OSError:
        pass
    return []


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in _LIBS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def gpu_info() -> list[dict]:
    if not cuda_available():
        return []
    import torch

    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"name": p.name, "memory_GiB": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
    return out


def machine_info() -> dict:
    build = cm.build_info()
    return {
        "cpu": cpu_model(),
        "cpu_simd_flags": cpu_simd(),
        "compmech_simd": build.get("simd"),
        "compmech_build": build,
        "threads": _usable_cores(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "gpus": gpu_info(),
        "versions": versions(),
        "blas_env": {k: os.environ.get(k) for k in BLAS_ENV},
    }


def blas_env_warning() -> str | None:
    """A one-line warning when OpenBLAS is told to pretend to be another CPU (slower numpy)."""
    bad = [k for k in BLAS_ENV if os.environ.get(k)]
    if not bad:
        return None
    return (f"{' and '.join(bad)} set: the numpy baseline may not use this CPU's kernels; "
            f"run `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE compmech bench ...`")
