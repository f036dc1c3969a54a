"""Valid inputs that used to be refused: non-negative GHMMs with w != 1, slowly mixing ergodic
chains, mixtures with GHMM components."""
import numpy as np
import pytest

import compmech as cm

P = cm.processes
M = cm.measures


def _ref_prob(p, seq, init=None):
    v = (p.stationary if init is None else np.asarray(init, float)).copy()
    for x in seq:
        if x >= p.vocab_size:
            return 0.0
        v = v @ p.T[x]
    return float(v @ p.w)


def _rescaled(hmm, d):
    D = np.diag(d)
    return cm.GHMM(np.einsum("ab,xbc,cd->xad", np.linalg.inv(D), hmm.T, D))


@pytest.mark.parametrize("make", [P.golden_mean, P.even, P.rrxor])
def test_nonnegative_ghmm_with_w_not_one_is_handled_as_its_hmm(make):
    hmm = make()
    g = _rescaled(hmm, np.linspace(1.0, 2.0, hmm.num_states))
    assert g.is_generalized and not np.allclose(g.w, 1) and g.has_hmm_form
    h = g.to_hmm()
    assert isinstance(h, cm.HMM)
    np.testing.assert_allclose(h.T, hmm.T, atol=1e-12)
    em, em_ref = cm.epsilon_machine(g), cm.epsilon_machine(hmm)
    assert em.num_states == em_ref.num_states
    for name in ("statistical_complexity", "markov_order", "entropy_rate", "excess_entropy", "crypticity"):
        a, b = getattr(M, name)(g), getattr(M, name)(hmm)
        assert a.exact and float(a) == pytest.approx(float(b), abs=1e-10), name
    s = M.summary(g)
    assert s["statistical_complexity"].exact


def test_to_hmm_says_what_is_unsupported():
    with pytest.raises(ValueError, match="negative entries.*no HMM presentation"):
        P.post_quantum().to_hmm()
    assert P.mess3().to_hmm() is not None and not P.random_ghmm_like().has_hmm_form


def _two_state(a, b):
    """Switch 0 -> 1 with probability a, 1 -> 0 with b; token = the state moved to."""
    T = np.zeros((2, 2, 2))
    T[0, 0, 0], T[1, 0, 1] = 1 - a, a
    T[0, 1, 0], T[1, 1, 1] = b, 1 - b
    return cm.HMM(T)


@pytest.mark.parametrize("eps", [1e-4, 1e-8, 1e-10, 1e-13])
def test_slowly_mixing_chains_are_ergodic_with_an_accurate_stationary_vector(eps):
    p = _two_state(eps, 3 * eps)
    pi = p.stationary  # used to be "not unique" below 1e-9, with error ~1e-16/eps above
    np.testing.assert_allclose(pi, [0.75, 0.25], rtol=1e-14)
    # three states in a slow cycle, with a transient state feeding it
    T = np.zeros((1, 4, 4))
    T[0, 0] = [1 - eps, eps, 0, 0]
    T[0, 1] = [0, 1 - 2 * eps, 2 * eps, 0]
    T[0, 2] = [4 * eps, 0, 1 - 4 * eps, 0]
    T[0, 3] = [0.5, 0.5, 0, 0]  # transient
    pi = cm.HMM(T).stationary
    ref = np.array([1 / eps, 1 / (2 * eps), 1 / (4 * eps), 0])
    np.testing.assert_allclose(pi, ref / ref.sum(), rtol=1e-13, atol=0)


def test_non_ergodic_still_detected_by_structure():
    p = _two_state(0.0, 0.0)
    with pytest.raises(ValueError, match="not unique.*2 closed"):
        p.stationary
    T = np.zeros((1, 3, 3))
    T[0, 0, 0] = 1.0
    T[0, 1, 1] = 1.0
    T[0, 2] = [0.5, 0.5, 0]
    with pytest.raises(ValueError, match="not ergodic"):
        cm.HMM(T).stationary


def test_mixture_of_ghmms():
    f, c, g = P.fanizza(), P.coin(0.3), P.post_quantum()
    mix = P.mixture([f, c, g], [0.5, 0.2, 0.3])
    assert isinstance(mix, P.MixtureGHMM) and mix.vocab_size == 3 and mix.num_states == 8
    assert mix.stationary @ mix.w == pytest.approx(1.0)
    toks = cm.sample(mix, 16, 8, seed=0)
    ref = [np.log(0.5 * _ref_prob(f, s) + 0.2 * _ref_prob(c, s) + 0.3 * _ref_prob(g, s)) for s in toks]
    np.testing.assert_allclose(cm.log_prob(mix, toks), ref, rtol=1e-12, atol=1e-12)
    lvl = cm.msp_tree(mix, 3).level(3)
    assert lvl.probs.sum() == pytest.approx(1.0, abs=1e-12)
    m = M.myopic_entropy(mix, 3)
    assert np.all(np.isfinite(np.asarray(m)))
