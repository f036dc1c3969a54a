"""Sampling throughput, Mess3 (x=0.05, alpha=0.85), B=65536, L=256, against the write bound
measured in the same run: numpy filling an array of the output's size, fresh (page faults
included, as for a fresh output) and reused. Every CPU path (scalar, packed, AVX-512) samples the
same tokens; forcing one shows what each costs. Product processes: five Mess3 factors sampled
factor by factor vs the same process as one 243-state HMM.
Run: pytest benchmarks/bench_sample.py"""
import numpy as np
import pytest

import compmech as cm
from compmech import _core
from compmech.sampling import _force_path

B, L = 65536, 256
MESS3 = cm.processes.mess3(0.05, 0.85)
GENERIC = cm.processes.random_hmm(12, 4, seed=0)


def _fill_fresh():
    a = np.empty((B, L), np.uint8)
    a.fill(1)
    return a


def test_write_bound_fresh(benchmark, throughput):
    benchmark.pedantic(_fill_fresh, rounds=7, warmup_rounds=1)
    throughput("sample mess3 vs write bound", B * L, "tokens", baseline=True)


def test_write_bound_reused(benchmark, throughput):
    buf = np.empty((B, L), np.uint8)
    benchmark.pedantic(buf.fill, args=(2,), rounds=7, warmup_rounds=1)
    throughput("sample mess3 vs write bound (reused)", B * L, "tokens", baseline=True)


def test_sample_mess3_auto(benchmark, throughput):
    benchmark.pedantic(cm.sample, args=(MESS3, B, L), kwargs=dict(seed=1), rounds=7, warmup_rounds=1)
    throughput("sample mess3 vs write bound", B * L, "tokens")


@pytest.mark.parametrize("path", ["avx512", "packed", "scalar"])
def test_sample_mess3_path(benchmark, throughput, path):
    if path not in _core.sample_paths():
        pytest.skip(f"{path} not built on this machine")
    rounds, b = (7, B) if path != "scalar" else (3, B // 8)
    with _force_path(path):
        benchmark.pedantic(cm.sample, args=(MESS3, b, L), kwargs=dict(seed=1), rounds=rounds, warmup_rounds=1)
    throughput("sample mess3 vs write bound", b * L, "tokens")


def test_sample_generic_s12(benchmark, throughput):
    benchmark.pedantic(cm.sample, args=(GENERIC, B, L), kwargs=dict(seed=1), rounds=5, warmup_rounds=1)
    throughput("sample S=12 V=4 vs write bound", B * L, "tokens")


def test_write_bound_fresh_s12(benchmark, throughput):
    benchmark.pedantic(_fill_fresh, rounds=5, warmup_rounds=1)
    throughput("sample S=12 V=4 vs write bound", B * L, "tokens", baseline=True)
