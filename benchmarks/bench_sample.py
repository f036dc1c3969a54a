"""Sampling throughput, Mess3 (x=0.05, alpha=0.85), B=65536, L=256, against the write bound
measured in the same run: numpy filling an array of the output's size, fresh (page faults
included, as for a fresh output) and reused. Every CPU path (scalar, packed, AVX-512) samples the
same tokens; forcing one shows what each costs (avx2: the register-table path of machines
without AVX-512). Product processes: five Mess3 factors run
factor by factor (beliefs, log_prob, sample) against five separate Mess3 calls (the baseline:
splitting and joining the joint tokens is the only extra) and against the same process as one
243-state HMM.
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


@pytest.mark.parametrize("path", ["avx512", "avx2", "packed", "scalar"])
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


# ---- product processes: five Mess3 factors (243 joint states and tokens) --------------------------
PRODUCT = cm.processes.product([MESS3] * 5)
JOINT = cm.HMM(PRODUCT.T)  # the same process without its factors: one 243-state propagation
B_P, L_P = 8192, 256
B_J, L_J = 64, 64  # the joint propagation is ~10^3 times slower per token


@pytest.fixture(scope="module")
def product_tokens():
    return cm.sample(PRODUCT, B_P, L_P, seed=0)


def test_product_beliefs_factors(benchmark, throughput, product_tokens):
    benchmark.pedantic(cm.beliefs, args=(PRODUCT, product_tokens), kwargs=dict(factors=True), rounds=5,
                       warmup_rounds=1)
    throughput("beliefs 5 x mess3 (joint tokens)", B_P * L_P, "tokens")


def test_product_beliefs_five_mess3_calls(benchmark, throughput, product_tokens):
    """Baseline: five separate Mess3 propagations over the same number of tokens."""
    tok = cm.sample(MESS3, B_P, L_P, seed=0)
    benchmark.pedantic(lambda: [cm.beliefs(MESS3, tok) for _ in range(5)], rounds=5, warmup_rounds=1)
    throughput("beliefs 5 x mess3 (joint tokens)", B_P * L_P, "tokens", baseline=True)


def test_product_log_prob(benchmark, throughput, product_tokens):
    benchmark.pedantic(cm.log_prob, args=(PRODUCT, product_tokens), rounds=5, warmup_rounds=1)
    throughput("log_prob 5 x mess3 (joint tokens)", B_P * L_P, "tokens")


def test_product_log_prob_five_mess3_calls(benchmark, throughput, product_tokens):
    """Baseline: five separate Mess3 log-probabilities over the same number of tokens."""
    tok = cm.sample(MESS3, B_P, L_P, seed=0)
    benchmark.pedantic(lambda: [cm.log_prob(MESS3, tok) for _ in range(5)], rounds=5, warmup_rounds=1)
    throughput("log_prob 5 x mess3 (joint tokens)", B_P * L_P, "tokens", baseline=True)


def test_product_beliefs_joint_243_states(benchmark, throughput, product_tokens):
    tok = product_tokens[:B_J, :L_J]
    benchmark.pedantic(cm.beliefs, args=(JOINT, tok), rounds=3, warmup_rounds=1)
    throughput("beliefs 5 x mess3 (joint tokens)", B_J * L_J, "tokens")


def test_product_sample(benchmark, throughput):
    benchmark.pedantic(cm.sample, args=(PRODUCT, B_P, L_P), kwargs=dict(seed=1), rounds=5, warmup_rounds=1)
    throughput("sample 5 x mess3 (joint tokens)", B_P * L_P, "tokens")


def test_product_sample_five_mess3_calls(benchmark, throughput):
    benchmark.pedantic(lambda: [cm.sample(MESS3, B_P, L_P, seed=i) for i in range(5)], rounds=5, warmup_rounds=1)
    throughput("sample 5 x mess3 (joint tokens)", B_P * L_P, "tokens", baseline=True)


def _cpu_time_table(repeats=5):
    """Tokens per CPU-second of one thread (medians), next to the reused-buffer fill: on a shared
    machine, wall-clock medians mostly measure the other jobs; CPU time of one thread does not."""
    import time

    cm.set_num_threads(1)
    rows = []

    def med(fn):
        ts = []
        for _ in range(repeats):
            t = time.process_time()
            fn()
            ts.append(time.process_time() - t)
        return float(np.median(ts))

    buf = np.empty((B, L), np.uint8)
    fill = med(lambda: buf.fill(3))
    for path in ["avx512", "avx2", "packed", "scalar"]:
        if path in _core.sample_paths():
            b = B if path != "scalar" else B // 8
            with _force_path(path):
                rows.append((f"mess3 {path}", b * L / med(lambda: cm.sample(MESS3, b, L, seed=1))))
    rows.append(("S=12 V=4 (packed)", B * L / med(lambda: cm.sample(GENERIC, B, L, seed=1))))
    print(f"one thread, CPU time, B={B} L={L}; reused-buffer fill {B * L / fill / 1e9:.1f} G tokens/s")
    for name, rate in rows:
        print(f"  {name:<20} {rate / 1e9:6.2f} G tokens per CPU-second")
    cm.set_num_threads(None)


if __name__ == "__main__":
    _cpu_time_table()
