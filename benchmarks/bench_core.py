"""Core kernels vs the obvious numpy code, on Mess3 (x=0.05, alpha=0.85) and a generic S=12, V=4
random HMM, against the write bound measured in the same run, and many-state processes against
numpy's own float64 matrix product. Run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/bench_core.py

(the BLAS variables unset for this command only, so numpy's matrix product runs at its own
best). The summary table reports each kernel as a fraction of the write bound: the time numpy
takes to fill an array of the kernel's output size, fresh (new pages, as a call that allocates
its output pays) and reused (pages already mapped, as a call with ``out=`` pays)."""
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


# ---- write bounds: fill an array of each group's output size ---------------------------------
# (group, items (the group's unit), output shape, dtype)
_OUTPUTS = {
    "beliefs mess3": (B * L, (B, L, 3), np.float32),
    "beliefs S=12 V=4": (B * L, (B, L, 12), np.float32),
    "sample mess3": (B * L, (B, L), np.uint8),
    # depth-16 float32 tree: beliefs (3 x 4 B) + probs (8 B) per node (every level is full, so
    # no parent/token arrays are stored)
    "msp tree mess3": (_nodes(DEPTH), (_nodes(DEPTH) * 20,), np.uint8),
}


def _fill_fresh(shape, dtype):
    np.empty(shape, dtype).fill(0)


@pytest.mark.parametrize("group", sorted(_OUTPUTS))
def test_write_bound_fresh(benchmark, throughput, group):
    items, shape, dtype = _OUTPUTS[group]
    benchmark.pedantic(_fill_fresh, args=(shape, dtype), rounds=7, warmup_rounds=1)
    throughput(group, items, "items", bound="fresh")


@pytest.mark.parametrize("group", sorted(_OUTPUTS))
def test_write_bound_reused(benchmark, throughput, group):
    items, shape, dtype = _OUTPUTS[group]
    buf = np.empty(shape, dtype)
    benchmark.pedantic(buf.fill, args=(0,), rounds=7, warmup_rounds=1)
    throughput(group, items, "items", bound="reused")


# ---- many-state processes vs numpy's float64 matrix product -----------------------------------
# A belief update costs 2 S^2 flops (eta @ T[x] for the row's token); numpy's baseline is the
# dense product (B, S) @ (S, S V) of every row with every token's matrix, in GFLOP/s.
_MANY = [(32, 8), (64, 16), (128, 32)]
_MANY_B, _MANY_L = 8192, 32


@pytest.mark.parametrize("S,V", _MANY, ids=[f"S{s}V{v}" for s, v in _MANY])
def test_beliefs_many_states(benchmark, throughput, S, V):
    proc = cm.processes.random_hmm(S, V, seed=0)
    tokens = cm.sample(proc, _MANY_B, _MANY_L, seed=0)
    out = np.empty((_MANY_B, _MANY_L, S), np.float32)
    benchmark.pedantic(cm.beliefs, args=(proc, tokens), kwargs=dict(out=out), rounds=3, warmup_rounds=1)
    throughput(f"many states S={S} V={V}", 2.0 * S * S * _MANY_B * _MANY_L, "flop")


@pytest.mark.parametrize("S,V", _MANY, ids=[f"S{s}V{v}" for s, v in _MANY])
def test_numpy_matmul_many_states(benchmark, throughput, S, V):
    rng = np.random.default_rng(0)
    eta, T = rng.random((_MANY_B, S)), rng.random((S, S * V))
    out = np.empty((_MANY_B, S * V))
    benchmark.pedantic(np.matmul, args=(eta, T), kwargs=dict(out=out), rounds=5, warmup_rounds=1)
    throughput(f"many states S={S} V={V}", 2.0 * _MANY_B * S * S * V, "flop", baseline=True)


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


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_msp_tree_ten_calls_memory(benchmark, throughput):
    """Ten fresh depth-16 float32 trees in a loop, no gc.collect(): resident memory must stay
    near one tree's size (each tree is freed when the next replaces it). Reported as
    extra_info (peak growth over the first tree, as a fraction of the tree's size)."""
    import gc

    def ten():
        gc.disable()
        try:
            tree = cm.msp_tree(MESS3, DEPTH, dtype=np.float32)
            one = sum(lv.nbytes for lv in tree.levels)
            base, peak = _rss_bytes(), 0
            for _ in range(9):
                tree = cm.msp_tree(MESS3, DEPTH, dtype=np.float32)
                peak = max(peak, _rss_bytes())
            return one, (peak - base) / one
        finally:
            gc.enable()

    one, growth = benchmark.pedantic(ten, rounds=1)
    benchmark.extra_info.update(tree_bytes=one, rss_growth_over_one_tree=growth)
    throughput("msp tree mess3", 10 * _nodes(DEPTH), "nodes")
    print(f"\nten depth-{DEPTH} trees: one tree {one / 1e9:.2f} GB; RSS growth after the first: {growth:+.0%} of one tree")


def _beliefs_cpu_table(repeats=7):
    """Mess3 belief kernels per CPU-second (process time, medians) and wall clock, with 1 and 2
    threads, next to the fill bounds measured in the same run: on a shared machine the CPU time
    is the steadier figure. ``python benchmarks/bench_core.py``."""
    import os
    import time

    tokens = cm.sample(MESS3, B, L, seed=0)
    buf = np.empty((B, L, 3), np.float32)
    cases = [("beliefs out= float32", lambda: cm.beliefs(MESS3, tokens, out=buf)),
             ("log_prob", lambda: cm.log_prob(MESS3, tokens)),
             ("beliefs fresh float32", lambda: cm.beliefs(MESS3, tokens))]
    bounds = [("fill reused (bound)", lambda: buf.fill(0)),
              ("fill fresh (bound)", lambda: _fill_fresh((B, L, 3), np.float32))]

    def med(fn):
        fn()
        cpu, wall = [], []
        for _ in range(repeats):
            c, w = time.process_time(), time.perf_counter()
            fn()
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
        return float(np.median(cpu)), float(np.median(wall))

    print(f"Mess3 B={B} L={L}, simd={cm.build_info()['simd']}, load average {os.getloadavg()[0]:.1f}")
    for name, fn in bounds:  # numpy: one thread
        cpu, wall = med(fn)
        print(f"  numpy     {name:<22} {B * L / cpu / 1e9:5.2f} G/s per CPU-second   wall {B * L / wall / 1e9:5.2f} G/s")
    for threads in (1, 2):
        cm.set_num_threads(threads)
        for name, fn in cases:
            cpu, wall = med(fn)
            print(f"  {threads} thread(s) {name:<22} {B * L / cpu * threads / 1e9:5.2f} G/s per CPU-second x threads"
                  f"   wall {B * L / wall / 1e9:5.2f} G/s")
    cm.set_num_threads(None)


if __name__ == "__main__":
    _beliefs_cpu_table()
