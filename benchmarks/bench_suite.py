"""The ``compmech bench`` workloads under pytest-benchmark: every implementation of every case
of the quick suite (same definitions as the command: compmech.bench.workloads), with the
throughput table of conftest.py (ratio to the numpy baseline of the same case, same run).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/bench_suite.py
    COMPMECH_BENCH_MODE=full ... for the full sizes
"""
import os

import pytest

from compmech.bench.runner import threads_for
from compmech.bench.workloads import cases, cuda_available

MODE = os.environ.get("COMPMECH_BENCH_MODE", "quick")
CASES = cases("all", MODE, ["cpu"] + (["cuda"] if cuda_available() else []))
PARAMS = [pytest.param(c, i, id=f"{c.key}|{i.label}".replace(" ", "_")) for c in CASES for i in c.impls]


@pytest.mark.parametrize("case,impl", PARAMS)
def test_workload(benchmark, throughput, case, impl):
    d = case.prepare()
    with threads_for(impl.threads):
        fn = impl.make(d)
        if impl.device != "cpu":
            import torch

            run = fn

            def fn():
                run()
                torch.cuda.synchronize()

        benchmark.pedantic(fn, rounds=3, warmup_rounds=1, iterations=1)
    throughput(case.key, d["items"], case.unit, baseline=impl.kind == "numpy")
