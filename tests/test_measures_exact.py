"""Silent wrong answers in the measures: Monte Carlo parts start where the exact parts start,
and an estimate is never reported exact (exactness and errors propagate)."""
import math

import numpy as np
import pytest

import compmech as cm

M = cm.measures
P = cm.processes


def test_myopic_entropy_of_with_bos_beyond_the_exact_depth():
    # The exact part propagates from the stationary belief; the Monte Carlo part must too
    # (sampling from the BOS state shifted the values by one position: 22 sigma at L = 4).
    p = P.mess3(0.02, 0.9)
    ref = M.myopic_entropy(p, 6, max_states=200_000)
    assert ref.exact
    m = M.myopic_entropy(P.with_bos(p), 6, max_states=20)
    assert not m.exact
    mc = np.asarray(m.error) > 0
    assert mc[3:].all()
    z = (m.value[mc] - ref.value[mc]) / np.asarray(m.error)[mc]
    assert np.all(np.abs(z) < 5), z
    b = M.block_entropy(P.with_bos(p), 6, max_states=20)
    assert not b.exact and abs(b.value[-1] - np.sum(ref.value)) < 5 * b.error[-1]


def test_entropy_rate_of_with_bos_matches_the_process():
    p = P.mess3(0.02, 0.9)
    a = M.entropy_rate(p, max_states=20, max_tokens=1 << 18)
    b = M.entropy_rate(P.with_bos(p), max_states=20, max_tokens=1 << 18)
    assert not a.exact and not b.exact
    assert abs(float(a) - float(b)) < 5 * math.hypot(a.error, b.error)


def test_crypticity_of_an_estimate_is_an_estimate():
    # mixture of two coins: C_mu = 1 bit exactly (unifilar), E only estimated, true chi = 0
    mix = P.mixture([P.coin(0.2), P.coin(0.7)])
    C, E = M.statistical_complexity(mix), M.excess_entropy(mix)
    assert C.exact and not E.exact
    chi = M.crypticity(mix)
    assert not chi.exact
    assert chi.error == pytest.approx(math.hypot(C.error, E.error)) and chi.error > 0
    assert abs(float(chi)) < 3 * chi.error  # covers the true value 0
    s = M.summary(mix, max_tokens=1 << 18)
    assert not s["crypticity"].exact and s["crypticity"].error > 0
    assert "±" in s.table().split("crypticity")[1].splitlines()[0]


def test_exact_crypticity_stays_exact():
    chi = M.crypticity(P.even())
    assert chi.exact and chi.error == 0
    assert float(chi) == pytest.approx(float(M.statistical_complexity(P.even())) - float(M.excess_entropy(P.even())))


def test_every_summary_measure_is_exact_or_carries_an_error():
    for proc in (P.mixture([P.coin(0.2), P.coin(0.7)]), P.sns(), P.golden_mean()):
        s = M.summary(proc, max_tokens=1 << 17)
        for name, m in s.measures.items():
            v = float(m.value)
            assert m.exact or not math.isfinite(v) or float(m.error) > 0, (proc.name, name, m)
