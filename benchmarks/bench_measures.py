"""Benchmarks for the mixed-state graph (cm.msp) and the exact measures (cm.measures).

Each benchmark times compmech with pytest-benchmark and a plain numpy baseline in the same run
(same machine, same moment), and reports the ratio in ``extra_info`` and on stdout:

    pytest benchmarks/bench_measures.py --benchmark-only -s

Baselines: a level-synchronous numpy BFS with dict deduplication of rounded beliefs (for
cm.msp); block-entropy enumeration of all words (what libraries do today) for h_mu(L) and E;
a numpy forward loop for the Monte Carlo entropy rate.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import compmech as cm
from compmech import measures as M
from compmech.bench.baselines import msp_graph_numpy


def _best_of(fn, repeat=3):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# Baseline: level-synchronous BFS with dict deduplication (shared with ``compmech bench``).
numpy_msp_bfs = msp_graph_numpy


def _report(benchmark, name, ours, base, unit_count=None, unit="states"):
    ratio = base / ours
    benchmark.extra_info.update({"baseline_s": base, "compmech_s": ours, "speedup": ratio})
    rate = f", {unit_count / ours:,.0f} {unit}/s" if unit_count else ""
    print(f"\n[{name}] compmech {ours * 1e3:.2f} ms vs numpy baseline {base * 1e3:.2f} ms: {ratio:.1f}x{rate}")


@pytest.mark.parametrize("n_states", [200_000])
def test_msp_mess3_states_per_second(benchmark, n_states):
    proc = cm.processes.mess3()
    g = benchmark.pedantic(lambda: cm.msp(proc, max_states=n_states), rounds=3, iterations=1)
    ours = benchmark.stats.stats.min
    base, ref = _best_of(lambda: numpy_msp_bfs(proc, n_states), repeat=1)
    assert abs(len(ref) - g.num_states) <= 3  # same graph size (up to the cut inside a level)
    _report(benchmark, f"msp mess3 {g.num_states} states", ours, base, g.num_states)


def test_msp_rrxor_complete(benchmark):
    proc = cm.processes.rrxor()
    g = benchmark(lambda: cm.msp(proc))
    assert g.num_states == 36 and g.is_complete
    ours = benchmark.stats.stats.min
    base, ref = _best_of(lambda: numpy_msp_bfs(proc, 10_000))
    assert len(ref) == 36
    _report(benchmark, "msp rrxor (36 states, complete)", ours, base, 36)


def enumerate_block_entropies(proc, L):
    """Baseline: H(1..L) by enumerating every word (probabilities by matrix products)."""
    w = proc.stationary[None, :]
    out = []
    for _ in range(L):
        w = np.einsum("ns,xsj->nxj", w, proc.T).reshape(-1, proc.num_states)
        p = w.sum(axis=1)
        w = w[p > 0]
        p = p[p > 0]
        out.append(float(-(p * np.log2(p)).sum()))
    return np.array(out)


@pytest.mark.parametrize("name", ["golden_mean", "rrxor"])
def test_block_entropy_vs_enumeration(benchmark, name):
    proc = cm.processes.get(name)
    L = 18
    a = M._analyse(proc)  # the graph is built once; the benchmark times the measure itself
    ours_vals = benchmark(lambda: M.block_entropy(a, L))
    ours = benchmark.stats.stats.min
    base, ref = _best_of(lambda: enumerate_block_entropies(proc, L), repeat=1)
    np.testing.assert_allclose(np.asarray(ours_vals)[1:], ref, atol=1e-9)
    _report(benchmark, f"block entropy H(1..{L}) {name}", ours, base)


@pytest.mark.parametrize("name", ["golden_mean", "rrxor", "even"])
def test_excess_entropy_exact(benchmark, name):
    """Exact E from a fresh process (graph + closed form) vs the enumeration estimate
    H(L) - L h_mu at L = 18, which is still biased for infinite-Markov-order processes."""
    proc = cm.processes.get(name)
    E = benchmark(lambda: float(M.excess_entropy(proc)))
    ours = benchmark.stats.stats.min
    base, Hs = _best_of(lambda: enumerate_block_entropies(proc, 18), repeat=1)
    hm = float(M.entropy_rate(proc))
    approx = Hs[-1] - 18 * hm
    benchmark.extra_info["enumeration_bias_bits"] = approx - E
    _report(benchmark, f"excess entropy {name} (exact {E:.6f}, enumeration L=18 gives {approx:.6f})", ours, base)


def test_myopic_entropy_ten_thousand(benchmark):
    proc = cm.processes.rrxor()
    a = M._analyse(proc)
    m = benchmark(lambda: M.myopic_entropy(a, 10_000))
    assert m.exact and abs(m.value[-1] - 2 / 3) < 1e-12
    print(f"\n[h_mu(L), L = 1..10^4, rrxor] {benchmark.stats.stats.min * 1e3:.1f} ms "
          f"(enumeration would need 2^10000 words)")


def numpy_smb(proc, B, L, seed=0):
    """Baseline: numpy forward loop over positions accumulating -log2 P(x_t | belief); returns
    the per-row entropy-rate estimates."""
    toks = cm.sample(proc, B, L, seed=seed).astype(np.int64)
    eta = np.tile(proc.stationary, (B, 1))
    tot = np.zeros(B)
    for t in range(L):
        v = np.einsum("bs,bsj->bj", eta, proc.T[toks[:, t]])
        p = v.sum(axis=1)
        tot -= np.log2(p)
        eta = v / p[:, None]
    return tot / L


def test_entropy_rate_mess3_monte_carlo(benchmark):
    """Time to the same error bar: the baseline's -log P estimator has a much larger variance
    than compmech's Rao-Blackwellised one, so it needs (se_base / se_ours)^2 times the tokens."""
    proc = cm.processes.mess3()
    tokens = 1 << 22
    est = benchmark.pedantic(lambda: M._smb_entropy_rate(proc, max_tokens=tokens), rounds=2, iterations=1)
    ours = benchmark.stats.stats.min
    B, L = 512, 1024
    base, rows = _best_of(lambda: numpy_smb(proc, B, L), repeat=1)
    se_base = rows.std(ddof=1) / np.sqrt(B)
    base_same_tokens = base * tokens / (B * L)
    base_same_error = base * (se_base / est[1]) ** 2
    benchmark.extra_info["speedup_same_tokens"] = base_same_tokens / ours
    print(f"\n  SMB mess3: {est[0]:.6f} ± {est[1]:.1e} bits over {est[2]:.3g} tokens; "
          f"numpy -log P baseline {rows.mean():.4f} ± {se_base:.1e} over {B * L:.3g} tokens")
    print(f"  same tokens: {base_same_tokens / ours:.1f}x")
    _report(benchmark, "entropy rate mess3 (Monte Carlo), time to the same error bar", ours, base_same_error,
            est[2], "tokens")
