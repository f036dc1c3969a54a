"""Timing: every implementation of every case, median of repeated calls, one process, one run
(so ratios compare numbers measured moments apart on the same machine)."""
from __future__ import annotations

import gc
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass

import compmech as cm

#: Rounds per measurement: (min rounds, max rounds, seconds after which no more rounds start).
ROUNDS = {"tiny": (1, 2, 0.0), "quick": (1, 3, 0.05), "full": (3, 7, 0.3)}


@dataclass
class Measurement:
    case: str
    workload: str
    process: str
    size: dict
    unit: str
    items: float
    impl: str
    kind: str
    device: str
    threads: int | None
    times_s: list
    bound_bytes: int | None = None
    note: str = ""
    error: str | None = None
    wall_s: float = 0.0  # whole measurement: setup, warm-up, every thread count and round

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times_s) if self.times_s else None

    @property
    def rate(self) -> float | None:
        """Work units per second at the median time."""
        m = self.median_s
        return self.items / m if m else None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["median_s"], d["rate"] = self.median_s, self.rate
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Measurement":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@contextmanager
def threads_for(n: int | None):
    """compmech, torch and BLAS threads set to ``n`` (``None``: all usable cores)."""
    import torch

    from .workloads import _usable_cores

    n = n or _usable_cores()
    old_cm, old_torch = cm.get_num_threads(), torch.get_num_threads()
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=n)
    except Exception:  # threadpoolctl missing: BLAS keeps its own setting
        pass
    cm.set_num_threads(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        cm.set_num_threads(old_cm)
        torch.set_num_threads(old_torch)
        if limiter is not None:
            limiter.restore_original_limits()


def _sync(device: str):
    if device != "cpu":
        import torch

        torch.cuda.synchronize()


MIN_ROUND_S = 2e-3  # calls faster than this are repeated within a round (timer resolution, jitter)


def time_calls(fn, device: str, mode: str) -> list:
    """Seconds per call, one entry per round: one warm-up call, then at least ``min`` rounds,
    at most ``max``, none started after ``budget`` seconds of timed work (a warm-up much slower
    than the budget cuts quick runs to one round). A round repeats a fast call until it lasts
    ``MIN_ROUND_S``."""
    lo, hi, budget = ROUNDS[mode]
    t0 = time.perf_counter()
    fn()
    _sync(device)
    warm = time.perf_counter() - t0
    if warm > max(budget, 1e-9) * 4 and mode != "full":
        hi = 1
    inner = max(1, min(10_000, int(MIN_ROUND_S / max(warm, 1e-7)) + 1)) if warm < MIN_ROUND_S else 1
    times = []
    while len(times) < lo or (len(times) < hi and sum(times) * inner < budget):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync(device)
        times.append((time.perf_counter() - t0) / inner)
    return times


def measure(case, impl, mode: str) -> Measurement:
    """Time ``impl`` on ``case``; a failing implementation is recorded with its error (one
    line), never raised, so one broken baseline does not lose the rest of the run."""
    t_start = time.perf_counter()
    d = case.prepare()
    m = Measurement(case=case.key, workload=case.workload, process=case.process, size=dict(case.size),
                    unit=case.unit, items=float(d["items"]), impl=impl.label, kind=impl.kind, device=impl.device,
                    threads=impl.threads, times_s=[], bound_bytes=d.get("bound_bytes"), note=impl.note)
    try:
        # a baseline runs at each thread count of its sweep and keeps its best: an oversubscribed
        # OpenMP team can be 100x slower than one thread, which would flatter compmech
        best = None
        for n in impl.sweep or [impl.threads]:
            with threads_for(n):
                fn = impl.make(d)
                times = time_calls(fn, impl.device, mode)
                fn = None
            if best is None or statistics.median(times) < statistics.median(best[1]):
                best = (n, times)
        m.threads, m.times_s = best[0] if impl.sweep else impl.threads, best[1]
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded in the table/JSON as this cell's error
        m.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    finally:
        fn = None
        m.wall_s = time.perf_counter() - t_start
    return m


def run_cases(cases, mode: str, *, done=None, progress: bool = True, on_result=None) -> tuple[list, bool]:
    """Measure every implementation of every case. ``done``: measurements to reuse (resume),
    matched by (case key, implementation label). ``on_result(measurements)`` is called after
    each new measurement (the command saves JSON there). Returns ``(measurements,
    interrupted)``; Ctrl-C stops the run and returns what was measured."""
    from tqdm import tqdm

    done = {(m.case, m.impl): m for m in (done or []) if m.error is None}
    results = []
    total = sum(len(c.impls) for c in cases)
    bar = tqdm(total=total, disable=not progress, unit="run", dynamic_ncols=True, leave=False)
    interrupted = False
    try:
        for case in cases:
            for impl in case.impls:
                bar.set_description(f"{case.workload} {case.process} {case.size_label} {impl.label}"[:60])
                prev = done.get((case.key, impl.label))
                if prev is not None:
                    results.append(prev)
                else:
                    results.append(measure(case, impl, mode))
                    if on_result is not None:
                        on_result(results)
                bar.update(1)
            case.release()
            gc.collect()  # free the case's arrays (and any GPU buffers) before the next one
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return results, interrupted
