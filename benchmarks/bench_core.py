"""Core kernels vs the obvious numpy code, on Mess3 (x=0.05, alpha=0.85) and a generic S=12, V=4
random HMM. Run: pytest benchmarks/bench_core.py"""
import numpy as np
import pytest

import compmech as cm
from numpy_baselines import beliefs_numpy, msp_numpy, sample_numpy

B, L = 65536, 256
B_NP, L_NP = 65536, 16  # numpy baselines on fewer steps (per-step cost is constant)
DEPTH, DEPTH_NP = 16, 13

MESS3 = cm.processes.mess3(0.05, 0.85)
GENERIC = cm.processes.random_hmm(12, 4, seed=0)


@pytest.fixture(scope="module")
def mess3_tokens():
    return cm.sample(MESS3, B, L, seed=0)


@pytest.fixture(scope="module")
def generic_tokens():
    return cm.sample(GENERIC, B, L, seed=0)


def test_beliefs_mess3(benchmark, throughput, mess3_tokens):
    benchmark.pedantic(cm.beliefs, args=(MESS3, mess3_tokens), rounds=7, warmup_rounds=1)
    throughput("beliefs mess3", B * L, "updates")


def test_beliefs_mess3_into_buffer(benchmark, throughput, mess3_tokens):
    """Steady state of a training loop: the output buffer is reused, so no page faults."""
    buf = np.empty((B, L, 3), np.float32)
    benchmark.pedantic(cm.beliefs, args=(MESS3, mess3_tokens), kwargs=dict(out=buf), rounds=7, warmup_rounds=1)
    throughput("beliefs mess3", B * L, "updates")


def test_log_prob_mess3(benchmark, throughput, mess3_tokens):
    benchmark.pedantic(cm.log_prob, args=(MESS3, mess3_tokens), rounds=7, warmup_rounds=1)
    throughput("beliefs mess3", B * L, "updates")


def test_beliefs_mess3_log_prob(benchmark, throughput, mess3_tokens):
    benchmark.pedantic(cm.beliefs, args=(MESS3, mess3_tokens), kwargs=dict(return_log_prob=True), rounds=7,
                       warmup_rounds=1)
    throughput("beliefs mess3", B * L, "updates")


def test_beliefs_mess3_numpy(benchmark, throughput, mess3_tokens):
    tok = mess3_tokens[:B_NP, :L_NP]
    benchmark.pedantic(beliefs_numpy, args=(MESS3.T, MESS3.stationary, tok), rounds=3)
    throughput("beliefs mess3", B_NP * L_NP, "updates", baseline=True)


def test_beliefs_generic_s12(benchmark, throughput, generic_tokens):
    benchmark.pedantic(cm.beliefs, args=(GENERIC, generic_tokens), rounds=3, warmup_rounds=1)
    throughput("beliefs S=12 V=4", B * L, "updates")


def test_beliefs_generic_s12_numpy(benchmark, throughput, generic_tokens):
    tok = generic_tokens[:B_NP, :L_NP]
    benchmark.pedantic(beliefs_numpy, args=(GENERIC.T, GENERIC.stationary, tok), rounds=3)
    throughput("beliefs S=12 V=4", B_NP * L_NP, "updates", baseline=True)


def test_sample_mess3(benchmark, throughput):
    benchmark.pedantic(cm.sample, args=(MESS3, B, L), kwargs=dict(seed=1), rounds=7, warmup_rounds=1)
    throughput("sample mess3", B * L, "tokens")


def test_sample_mess3_numpy(benchmark, throughput):
    benchmark.pedantic(sample_numpy, args=(MESS3.T, MESS3.stationary, B_NP, L_NP, 1), rounds=3)
    throughput("sample mess3", B_NP * L_NP, "tokens", baseline=True)


def test_sample_generic_s12(benchmark, throughput):
    benchmark.pedantic(cm.sample, args=(GENERIC, B, L), kwargs=dict(seed=1), rounds=3, warmup_rounds=1)
    throughput("sample S=12 V=4", B * L, "tokens")


def test_sample_generic_s12_numpy(benchmark, throughput):
    benchmark.pedantic(sample_numpy, args=(GENERIC.T, GENERIC.stationary, B_NP, L_NP, 1), rounds=3)
    throughput("sample S=12 V=4", B_NP * L_NP, "tokens", baseline=True)


def _nodes(depth, V=3):
    return sum(V**d for d in range(1, depth + 1))


def test_msp_tree_mess3_depth16_f32(benchmark, throughput):
    benchmark.pedantic(cm.msp_tree, args=(MESS3, DEPTH), kwargs=dict(dtype=np.float32), rounds=3)
    throughput("msp tree mess3", _nodes(DEPTH), "nodes")


def test_msp_tree_mess3_depth16_f64(benchmark, throughput):
    benchmark.pedantic(cm.msp_tree, args=(MESS3, DEPTH), rounds=3)
    throughput("msp tree mess3", _nodes(DEPTH), "nodes")


def test_msp_tree_mess3_depth13_f64(benchmark, throughput):
    """Same depth as the numpy baseline: 2.4 M nodes, no multi-GB allocation."""
    benchmark.pedantic(cm.msp_tree, args=(MESS3, DEPTH_NP), rounds=5, warmup_rounds=1)
    throughput("msp tree mess3", _nodes(DEPTH_NP), "nodes")


def test_msp_tree_mess3_numpy(benchmark, throughput):
    benchmark.pedantic(msp_numpy, args=(MESS3.T, MESS3.stationary, DEPTH_NP), rounds=3)
    throughput("msp tree mess3", _nodes(DEPTH_NP), "nodes", baseline=True)


def test_msp_tree_generic_depth8(benchmark, throughput):
    benchmark.pedantic(cm.msp_tree, args=(GENERIC, 9), rounds=3)
    throughput("msp tree S=12 V=4", _nodes(9, 4), "nodes")


def test_msp_tree_generic_numpy(benchmark, throughput):
    benchmark.pedantic(msp_numpy, args=(GENERIC.T, GENERIC.stationary, 8), rounds=3)
    throughput("msp tree S=12 V=4", _nodes(8, 4), "nodes", baseline=True)
