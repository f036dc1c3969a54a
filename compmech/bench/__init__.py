"""``compmech bench``: how fast compmech is on this machine, against the code researchers
write today (numpy, torch, JAX) and against the machine's own memory bound, all measured in the
same run.

    from compmech.bench import run
    result = run(suite="core", quick=True)       # BenchResult
    print(result.table())
    result.save_json("bench.json"); result.plot("bench.png")

Workloads (:mod:`.workloads`) are shared with the pytest-benchmark files in ``benchmarks/``;
baselines live in :mod:`.baselines`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["run", "BenchResult"]


@dataclass
class BenchResult:
    measurements: list
    machine: dict
    command: dict
    interrupted: bool = False
    elapsed_s: float = 0.0
    warnings: list = field(default_factory=list)

    def ratios(self) -> list:
        from .report import ratios

        return ratios(self.measurements)

    def table(self) -> str:
        from .report import table

        return table(self.measurements)

    def to_json(self) -> dict:
        from .report import to_json

        return to_json(self.measurements, machine=self.machine, command=self.command,
                       interrupted=self.interrupted, elapsed_s=self.elapsed_s)

    def save_json(self, path):
        from .report import write_json

        write_json(path, self.to_json())

    def plot(self, path):
        from .report import plot

        return plot(self.measurements, path)


def resolve_devices(device: str) -> list:
    """``"auto"``: the CPU, plus CUDA when torch sees a GPU; ``"cpu"``; ``"cuda"`` (GPU
    implementations only; an error without a GPU)."""
    from .workloads import cuda_available

    if device == "auto":
        return ["cpu"] + (["cuda"] if cuda_available() else [])
    if device == "cpu":
        return ["cpu"]
    if device == "cuda":
        if not cuda_available():
            raise ValueError("--device cuda: torch sees no CUDA GPU (torch.cuda.is_available() is False)")
        return ["cuda"]
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


def run(suite: str = "all", *, device: str = "auto", quick: bool = False, mode: str | None = None, threads=None,
        use_jax: bool | None = None, processes=None, workloads=None, progress: bool = False, resume_from=None,
        on_result=None) -> BenchResult:
    """Run the benchmark. ``mode``: ``"full"`` (default), ``"quick"`` (``quick=True``; under a
    minute on 2 cores) or ``"tiny"`` (tests). ``resume_from``: measurements (or a loaded JSON
    document) to reuse instead of re-measuring. ``on_result(BenchResult)`` is called after every
    new measurement (for incremental saving). Ctrl-C ends the run early with
    ``interrupted=True`` and everything measured so far."""
    from .machine import blas_env_warning, machine_info
    from .runner import Measurement, run_cases
    from .workloads import cases

    mode = mode or ("quick" if quick else "full")
    devs = resolve_devices(device)
    cs = cases(suite, mode, devs, threads=threads, use_jax=use_jax, processes=processes, workloads=workloads)
    command = {"suite": suite, "device": device, "devices": devs, "mode": mode,
               "threads": sorted({i.threads for c in cs for i in c.impls if i.threads}),
               "processes": sorted({c.process for c in cs}), "workloads": list(dict.fromkeys(c.workload for c in cs))}
    done = None
    if resume_from is not None:
        rows = resume_from.get("results", []) if isinstance(resume_from, dict) else resume_from
        done = [r if isinstance(r, Measurement) else Measurement.from_dict(r) for r in rows]
    res = BenchResult([], machine_info(), command)
    w = blas_env_warning()
    if w:
        res.warnings.append(w)
    t0 = time.perf_counter()

    def saved(ms):
        res.measurements, res.elapsed_s = list(ms), time.perf_counter() - t0
        if on_result is not None:
            on_result(res)

    res.measurements, res.interrupted = run_cases(cs, mode, done=done, progress=progress, on_result=saved)
    res.elapsed_s = time.perf_counter() - t0
    return res
