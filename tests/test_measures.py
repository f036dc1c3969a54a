"""cm.measures: exact values on finite mixed-state presentations, checked against published
and analytic values, and against independent routes (tree enumeration, propagation, dense
Drazin inverse, Monte Carlo); estimates with error bars on infinite ones."""
import math

import numpy as np
import pytest

import compmech as cm
from compmech import measures as M
from compmech import processes as P
from compmech.process import GHMM, HMM
from reference import (geometric_limit, quantum_instrument_ghmm_T, ref_drazin_measures, ref_msp_graph,
                       ref_myopic_entropy)


def H(*p):
    p = np.asarray(p, dtype=float)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def tree_myopic(proc, L):
    """h_mu(l), l = 1..L, by enumerating every word (the compiled MSP tree; no graph)."""
    tree = cm.msp_tree(proc, L - 1)
    out = []
    for d in range(L):
        lvl = tree.level(d)
        q = np.clip(lvl.next_token_probs, 0, None)
        q /= q.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(q > 0, q * np.log2(q), 0).sum(axis=1)
        out.append(float(lvl.probs @ h))
    return np.array(out)


# ---- published / analytic values ------------------------------------------------------------

def test_golden_mean_values():
    # Crutchfield & Feldman, "Regularities unseen, randomness observed", Chaos 13, 25 (2003):
    # golden mean process h_mu = 2/3 bit, E = 0.2516 bits, C_mu = 0.9183 bits. Analytically
    # (p = 1/2): pi = (2/3, 1/3), h_mu = pi_A H(1/2), C_mu = H(1/3); Markov order 1 so
    # E = H(X_0) - h_mu = H(1/3) - 2/3; T = E (h_mu(L) = h_mu from L = 2); chi = C_mu - E = 2/3.
    s = M.summary(P.golden_mean())
    assert float(s["entropy_rate"]) == pytest.approx(2 / 3, abs=1e-12)
    assert float(s["statistical_complexity"]) == pytest.approx(H(1 / 3, 2 / 3), abs=1e-12)
    assert float(s["excess_entropy"]) == pytest.approx(H(1 / 3, 2 / 3) - 2 / 3, abs=1e-12)
    assert float(s["excess_entropy"]) == pytest.approx(0.2516, abs=1e-4)
    assert float(s["crypticity"]) == pytest.approx(2 / 3, abs=1e-12)
    assert float(s["transient_information"]) == pytest.approx(H(1 / 3, 2 / 3) - 2 / 3, abs=1e-12)
    # S = U(0) + U(1) + ... = C_mu + 0 (one symbol synchronises)
    assert float(s["synchronization_information"]) == pytest.approx(H(1 / 3, 2 / 3), abs=1e-12)
    assert float(s["markov_order"]) == 1 and float(s["cryptic_order"]) == 1
    assert all(m.exact for m in s.measures.values())


def test_even_process_values():
    # Crutchfield & Feldman (2003) and Crutchfield, Ellison & Riechers, "Exact complexity"
    # (arXiv:1309.3792): the even process has h_mu = 2/3 bit, E = C_mu = log2(3) - 2/3 =
    # 0.9183 bits (chi = 0) and infinite Markov order (the run 1^n never synchronises).
    s = M.summary(P.even())
    assert float(s["entropy_rate"]) == pytest.approx(2 / 3, abs=1e-12)
    assert float(s["excess_entropy"]) == pytest.approx(math.log2(3) - 2 / 3, abs=1e-12)
    assert float(s["statistical_complexity"]) == pytest.approx(math.log2(3) - 2 / 3, abs=1e-12)
    assert float(s["crypticity"]) == 0.0
    assert float(s["markov_order"]) == math.inf
    assert float(s["cryptic_order"]) == 0


def test_zero_one_random_values():
    # Crutchfield & Feldman (2003): Z1R has h_mu = 1/3 bit and E = C_mu = log2 3 bits (the phase
    # is the only stored information, and the future reveals it). Every length-3 word fixes
    # the phase ({010, 011}, {100, 110}, {001, 101}), "10" does not: Markov order 3.
    s = M.summary(P.zero_one_random())
    assert float(s["entropy_rate"]) == pytest.approx(1 / 3, abs=1e-12)
    assert float(s["excess_entropy"]) == pytest.approx(math.log2(3), abs=1e-12)
    assert float(s["statistical_complexity"]) == pytest.approx(math.log2(3), abs=1e-12)
    assert float(s["markov_order"]) == 3 and float(s["cryptic_order"]) == 0


def test_rrxor_values():
    # RRXOR (Crutchfield & Feldman 2003): two fair bits and their XOR, so h_mu = 2/3 bit; the
    # 5 causal states have pi = (1/3, 1/6, 1/6, 1/6, 1/6) and C_mu = 2.2516 bits; the future
    # determines the current state (chi = 0, so E = C_mu); 0000... never synchronises (R = inf).
    s = M.summary(P.rrxor())
    assert float(s["entropy_rate"]) == pytest.approx(2 / 3, abs=1e-12)
    c = H(1 / 3, *[1 / 6] * 4)
    assert float(s["statistical_complexity"]) == pytest.approx(c, abs=1e-12)
    assert float(s["statistical_complexity"]) == pytest.approx(2.2516, abs=1e-4)
    assert float(s["excess_entropy"]) == pytest.approx(c, abs=1e-10)
    assert float(s["markov_order"]) == math.inf
    assert s.msp_states == 36


def test_sns_entropy_rate_matches_the_renewal_formula():
    # SNS (p = q = 1/2) is a renewal process: after each 1 it is in state A, and the number of
    # 0s before the next 1 is n >= 1 with P(n) = n / 2^(n+1) (mean 3). For renewal processes
    # h_mu = H[interval] / E[interval length] (Marzen & Crutchfield, "Informational and causal
    # architecture of discrete-time renewal processes", Entropy 17, 4891 (2015)).
    n = np.arange(1, 200)
    pn = n / 2.0 ** (n + 1)
    exact = H(*pn) / float((pn * (n + 1)).sum())
    m = M.entropy_rate(P.sns(), max_tokens=1 << 20)
    assert not m.exact and m.error > 0
    assert "infinite" in m.note
    assert abs(float(m) - exact) < 5 * m.error + 1e-4


def test_sns_rate_and_excess_entropy_from_converged_exact_terms():
    # SNS h_mu(L) converges to round-off within the explored depth: the rate is the renewal
    # value to ~1e-12, and E is the sum of exact terms (cross-checked against tree enumeration
    # with the independent renewal h_mu).
    n = np.arange(1, 400)
    pn = n / 2.0 ** (n + 1)
    h_renewal = H(*pn) / float((pn * (n + 1)).sum())
    m = M.entropy_rate(P.sns(), max_tokens=1 << 19)
    assert not m.exact and m.error < 1e-9
    assert float(m) == pytest.approx(h_renewal, abs=1e-10)
    E = M.excess_entropy(P.sns(), max_tokens=1 << 19)
    partial = float((tree_myopic(P.sns(), 20) - h_renewal).sum())
    assert float(E) == pytest.approx(partial, abs=1e-4)
    assert E.error < 1e-6


MESS3_H = 1.144717  # bits; published for Mess3 (x = 0.05, alpha = 0.85), quoted to 1e-6
MESS3_E = 0.570870


@pytest.fixture(scope="module")
def mess3_reference():
    """h_mu(L), L = 1..13, by brute-force enumeration in the reference (3^12 words), with the
    reference's own geometric extrapolation of h_mu and of the tail of E (converged to ~1e-9:
    one level deeper changes E by 8e-10)."""
    hL = ref_myopic_entropy(P.mess3().T, 13)
    h, tail_h = geometric_limit(hL)
    return hL, h, float((hL - h).sum()) + tail_h


def test_mess3_published_values_against_the_independent_reference(mess3_reference):
    # h_mu = 1.144717 bits and E = 0.570870 bits for Mess3 (x = 0.05, alpha = 0.85): the values
    # quoted in the belief-geometry literature (Shai et al. 2024, "Transformers represent belief
    # state geometry in their residual stream") and in compmech's README; the reference
    # reproduces them from scratch to ~1e-6.
    hL, h, E = mess3_reference
    assert hL[0] == pytest.approx(math.log2(3), abs=1e-12)  # symmetric: uniform first token
    assert np.all(np.diff(hL) < 0)
    assert h == pytest.approx(MESS3_H, abs=2e-6)
    assert E == pytest.approx(MESS3_E, abs=2e-6)


def test_mess3_library_values_are_pinned(mess3_reference):
    _, h_ref, E_ref = mess3_reference
    h = M.entropy_rate(P.mess3(), max_tokens=1 << 20)
    E = M.excess_entropy(P.mess3(), max_tokens=1 << 20)
    assert not h.exact and not E.exact
    assert float(h) == pytest.approx(MESS3_H, abs=1e-5) and h.error < 1e-5
    assert float(E) == pytest.approx(MESS3_E, abs=1e-5) and E.error < 1e-5
    # the error bars are honest: the estimates lie within 2 sigma of the converged reference
    # (both are deterministic here -- exact h_mu(L) plus extrapolation -- and sit at ~0.2 sigma;
    # dropping the last exact term of the sum, 5.6e-7 bits, moves E to 2.8 sigma)
    assert abs(float(h) - h_ref) < 2 * h.error and abs(float(E) - E_ref) < 2 * E.error
    # the exact h_mu(L) the estimate is built from are the reference's, term by term
    np.testing.assert_allclose(np.asarray(M.myopic_entropy(P.mess3(), 12, max_states=300_000, tol=1e-13)),
                               mess3_reference[0][:12], atol=1e-11)


def test_monte_carlo_continuation_of_the_excess_entropy_sum():
    """With the graph truncated after the first level nearly all of E comes from the Monte
    Carlo continuation of the sum: the estimate must agree with the exact value within a few of
    its standard errors, and those must be small compared with the value."""
    E = M.excess_entropy(P.mess3(), max_states=4, max_tokens=1 << 22, seed=5)
    assert not E.exact and "Monte Carlo" in E.method, E.method
    assert 0 < E.error < 0.02 * MESS3_E
    assert abs(float(E) - MESS3_E) < 4 * E.error
    # what the exact first term alone gives falls far short: the continuation carries the value
    assert (math.log2(3) - MESS3_H) < MESS3_E - 10 * E.error


def test_mess3_entropy_rate_estimates_agree():
    # Infinite MSP: the SMB estimate must agree with the geometric limit of the exact h_mu(L),
    # and the reported value (whichever route is more precise) with both.
    proc = P.mess3()
    hL = M.myopic_entropy(proc, 11)
    assert hL.exact
    ext, err = M._extrapolate_rate(np.asarray(hL))
    assert err < 1e-5
    smb, se, n = M._smb_entropy_rate(proc, max_tokens=1 << 21)
    assert 0 < se < 5e-4 and n > 1e6
    assert abs(smb - ext) < 5 * se
    m = M.entropy_rate(proc, max_tokens=1 << 21)
    assert not m.exact and 0 < m.error <= se and "infinite" in m.note
    assert abs(float(m) - ext) < 5 * m.error + 1e-9 and abs(float(m) - smb) < 5 * se
    # the extrapolation against an exact value one level deeper (3^11 words)
    deep = M.myopic_entropy(proc, 12, max_states=300_000, tol=1e-13)
    assert deep.exact
    assert abs(float(np.asarray(deep)[-1]) - ext) < abs(float(np.asarray(hL)[-1]) - ext)
    # h_mu(L) is exact up to the explored depth, Monte Carlo (with error bars) beyond
    g = M.myopic_entropy(proc, 14, max_states=3**9)
    assert not g.exact
    k = int(np.flatnonzero(np.asarray(g.error) > 0)[0])
    np.testing.assert_allclose(np.asarray(g)[:k], np.asarray(hL)[:k], atol=1e-12)
    assert np.all(np.abs(np.asarray(g)[k:] - ext) < 6 * np.asarray(g.error)[k:] + 1e-4)
    E = M.excess_entropy(proc, max_tokens=1 << 20)
    assert not E.exact and E.error < 1e-3
    assert M.statistical_complexity(proc).exact is False
    assert math.isnan(float(M.statistical_complexity(proc)))


def test_quasi_probabilistic_ghmm_estimates_against_the_reference():
    """A random real quantum instrument (negative entries, w != 1, infinite MSP): the entropy
    rate and the Monte Carlo h_mu(L) beyond the explored depth agree with brute-force
    enumeration in the reference within a few standard errors."""
    proc = GHMM(quantum_instrument_ghmm_T(2, 2, seed=1))
    assert proc.T.min() < 0 and not np.allclose(proc.w, proc.w[0])
    hL = ref_myopic_entropy(proc.T, 16)
    h_ref, _ = geometric_limit(hL)
    m = M.entropy_rate(proc, max_tokens=1 << 18)
    assert not m.exact and 0 < m.error < 1e-3
    assert abs(float(m) - h_ref) < 4 * m.error + 1e-5  # + the reference's extrapolation error
    g = M.myopic_entropy(proc, 14, max_states=50)
    err = np.asarray(g.error)
    mc = err > 0
    assert mc.sum() >= 3 and np.all(err[mc] < 2e-3)
    np.testing.assert_allclose(np.asarray(g)[~mc], hL[:14][~mc], atol=1e-10)
    assert np.all(np.abs(np.asarray(g)[mc] - hL[:14][mc]) < 5 * err[mc])


# ---- independent routes ---------------------------------------------------------------------

FINITE = [P.golden_mean(0.3), P.even(0.4), P.rrxor(), P.zero_one_random(0.3),
          P.random_epsilon_machine(6, 2, seed=11, sparsity=0.5), P.random_epsilon_machine(5, 3, seed=9, sparsity=0.5),
          P.leaky_rrxor(eps=0.0)]


@pytest.mark.parametrize("proc", FINITE, ids=lambda p: p.name)
def test_myopic_entropy_graph_vs_tree(proc):
    L = 9
    m = M.myopic_entropy(proc, L)
    assert m.exact
    np.testing.assert_allclose(np.asarray(m), tree_myopic(proc, L), atol=1e-11)
    b = M.block_entropy(proc, L)
    np.testing.assert_allclose(np.asarray(b), np.concatenate([[0], np.cumsum(tree_myopic(proc, L))]), atol=1e-10)


@pytest.mark.parametrize("proc", [P.mess3(), P.random_hmm(4, 3, seed=1), P.tom_quantum(), P.post_quantum()],
                         ids=lambda p: p.name)
def test_myopic_entropy_on_infinite_msps_is_exact_to_the_explored_depth(proc):
    m = M.myopic_entropy(proc, 7)
    assert m.exact
    np.testing.assert_allclose(np.asarray(m), tree_myopic(proc, 7), atol=1e-10)


@pytest.mark.parametrize("proc", FINITE, ids=lambda p: p.name)
def test_closed_forms_vs_propagation_and_dense_drazin(proc):
    a = M._analyse(proc)
    assert a.finite
    E = float(M.excess_entropy(a))
    T = float(M.transient_information(a))
    hm = float(M.entropy_rate(a))
    L = 3000
    hL = a.propagate(a.h, L)
    assert hL[-1] == pytest.approx(hm, abs=1e-12)
    # E = sum (h_mu(L) - h_mu), T = sum_{L>=0} (E + h_mu L - H(L)): direct sums
    assert E == pytest.approx(float((hL - hm).sum()), abs=1e-9)
    HL = np.concatenate([[0.0], np.cumsum(hL)])
    assert T == pytest.approx(float((E + hm * np.arange(L + 1) - HL).sum()), abs=1e-7)
    # dense Drazin inverse of the reference's own mixed-state graph (own BFS, own Cesaro limit)
    W, h, _ = ref_msp_graph(proc.T)
    E2, T2, h2 = ref_drazin_measures(W, h)
    assert W.shape[0] == a.graph.num_states
    assert hm == pytest.approx(h2, abs=1e-10)
    assert E == pytest.approx(E2, abs=1e-10) and T == pytest.approx(T2, abs=1e-9)
    # S = sum_L U(L) with U the causal-state uncertainty
    U = M.state_uncertainty(a, L)
    S = M.synchronization_information(a)
    assert float(U.value[0]) == pytest.approx(float(M.statistical_complexity(a)), abs=1e-12)
    assert np.all(np.diff(U.value) <= 1e-12)
    if math.isfinite(float(S)):
        assert float(S) == pytest.approx(float(np.sum(U.value)), abs=1e-7)
    # S - T = sum_L H[S_L | X_{0:inf}] >= 0; equality iff chi = 0
    if math.isfinite(float(S)):
        assert float(S) - T >= -1e-9
        if float(M.crypticity(a)) == 0:
            assert float(S) == pytest.approx(T, abs=1e-8)
    # Markov order: h_mu(L) = h_mu from L = R + 1 on (and not before)
    R = float(M.markov_order(a))
    if math.isfinite(R):
        R = int(R)
        assert np.all(np.abs(hL[R:] - hm) < 1e-12)
        if R > 0:
            assert hL[R - 1] - hm > 1e-9
    else:  # some word of length 12 leaves the observer unsure of the causal state
        em = cm.epsilon_machine(proc)
        lvl = cm.msp_tree(em, 12).level(12)
        assert np.any(lvl.beliefs.max(axis=1) < 1 - 1e-9)
    k = float(M.cryptic_order(a))
    assert k <= R


def test_unifilar_presentations_give_exact_rate_and_complexity_even_with_infinite_msp():
    proc = P.random_epsilon_machine(5, 2, seed=3)  # does not synchronise exactly: infinite MSP
    assert not cm.msp(proc, max_states=5000).is_complete
    pi = proc.stationary
    q = proc.T.sum(axis=2).T  # (S, V) next-token distribution per state
    h = float(pi @ [H(*row) for row in q])
    m = M.entropy_rate(proc)
    assert m.exact and float(m) == pytest.approx(h, abs=1e-12)
    c = M.statistical_complexity(proc)
    assert c.exact and float(c) == pytest.approx(H(*pi), abs=1e-12)
    # the Monte Carlo route agrees with the exact value
    est = M._smb_entropy_rate(proc, max_tokens=1 << 19)
    assert abs(est[0] - h) < 5 * est[1]


def test_myopic_entropy_to_ten_thousand():
    proc = P.rrxor()
    m = M.myopic_entropy(proc, 10**4)
    assert m.value.shape == (10**4,)
    assert m.value[-1] == pytest.approx(2 / 3, abs=1e-12)
    assert np.all(np.diff(m.value) <= 1e-12)  # non-increasing for a stationary process
    np.testing.assert_allclose(m.value[:8], ref_myopic_entropy(proc.T, 8), atol=1e-12)


def _relabel(proc, seed):
    rng = np.random.default_rng(seed)
    ps, px = rng.permutation(proc.num_states), rng.permutation(proc.vocab_size)
    T = np.ascontiguousarray(proc.T[px][:, ps][:, :, ps])
    return HMM(T, name=proc.name)


@pytest.mark.parametrize("proc", [P.rrxor(), P.random_epsilon_machine(6, 2, seed=11, sparsity=0.5),
                                  P.zero_one_random(0.3)],
                         ids=lambda p: p.name)
def test_invariance_under_relabelling_states_and_tokens(proc):
    a, b = M.summary(proc), M.summary(_relabel(proc, 11))
    for k in a.measures:
        assert float(b[k]) == pytest.approx(float(a[k]), abs=1e-9), k
    np.testing.assert_allclose(np.asarray(M.myopic_entropy(_relabel(proc, 5), 12)),
                               np.asarray(M.myopic_entropy(proc, 12)), atol=1e-12)


def test_ghmm_presentation_gives_the_same_measures():
    # A similarity transform T' = A^-1 T A (negative entries) generates the same process.
    base = P.golden_mean(0.3)
    A = np.array([[1.0, 0.4], [-0.3, 1.2]])
    T = np.einsum("ab,xbc,cd->xad", np.linalg.inv(A), base.T, A)
    g = GHMM(T)
    assert g.T.min() < 0
    a, b = M.summary(base), M.summary(g)
    for k in a.measures:
        assert float(b[k]) == pytest.approx(float(a[k]), abs=1e-9), k


def test_mixture_and_product_identities():
    gm, z1r = P.golden_mean(), P.zero_one_random()
    T = np.zeros((4, 3, 3))
    T[2:] = z1r.T  # Z1R on tokens 2, 3: the first token reveals the component
    w = np.array([0.3, 0.7])
    mix = P.mixture([gm, HMM(T)], w)
    s_mix, s_gm, s_z = M.summary(mix), M.summary(gm), M.summary(z1r)
    # E and C_mu of a mixture of distinguishable ergodic components: sum w_i X_i + H(w)
    for k in ("excess_entropy", "statistical_complexity"):
        assert float(s_mix[k]) == pytest.approx(w @ [float(s_gm[k]), float(s_z[k])] + H(*w), abs=1e-10), k
    assert float(s_mix["entropy_rate"]) == pytest.approx(w @ [2 / 3, 1 / 3], abs=1e-12)
    # independent factors: h_mu, E and C_mu add
    prod = P.product([gm, P.even()])
    s_p, s_e = M.summary(prod), M.summary(P.even())
    for k in ("entropy_rate", "excess_entropy", "statistical_complexity"):
        assert float(s_p[k]) == pytest.approx(float(s_gm[k]) + float(s_e[k]), abs=1e-10), k


def test_measures_are_of_the_stationary_process():
    # with_bos defaults to starting at BOS; measures still describe the stationary process
    base = P.rrxor()
    a, b = M.summary(base), M.summary(P.with_bos(base))
    for k in a.measures:
        assert float(b[k]) == pytest.approx(float(a[k]), abs=1e-10), k


def test_epsilon_machine_minimises():
    gm = P.golden_mean(0.3)
    # split state A into two identical copies: a non-minimal unifilar presentation
    T = np.zeros((2, 3, 3))
    T[0, 0, 0], T[0, 0, 1] = 0.7 / 2, 0.7 / 2   # A1 -0-> A1 / A2
    T[0, 1, 0], T[0, 1, 1] = 0.7 / 2, 0.7 / 2   # A2 the same
    T[1, 0, 2] = T[1, 1, 2] = 0.3               # A -1-> B
    T[0, 2, 0] = T[0, 2, 1] = 0.5               # B -0-> A1 / A2
    big = HMM(T)
    em = cm.epsilon_machine(big)  # not unifilar: goes through the MSP
    assert em.num_states == 2
    ref = cm.epsilon_machine(gm)
    np.testing.assert_allclose(np.sort(em.stationary), np.sort(ref.stationary), atol=1e-12)
    assert float(M.statistical_complexity(big)) == pytest.approx(float(M.statistical_complexity(gm)), abs=1e-12)
    # a unifilar but redundant machine: two copies of the golden mean cycle
    U = np.zeros((2, 4, 4))
    U[0, 0, 2], U[1, 0, 1], U[0, 1, 2] = 0.7, 0.3, 1.0
    U[0, 2, 0], U[1, 2, 3], U[0, 3, 0] = 0.7, 0.3, 1.0
    em2 = cm.epsilon_machine(HMM(U))
    assert em2.num_states == 2 and em2.state_map.tolist() == [0, 1, 0, 1]
    # a random epsilon-machine is already minimal
    r = P.random_epsilon_machine(6, 2, seed=9)
    assert cm.epsilon_machine(r).num_states == 6
    with pytest.raises(ValueError, match="not finite"):
        cm.epsilon_machine(P.mess3(), max_states=1000)


def test_measure_objects_and_errors():
    m = M.entropy_rate(P.coin(0.5))
    assert float(m) == 1.0 and m.exact and m.units == "bits" and str(m) == "1 bits"
    b = M.block_entropy(P.coin(0.25), 4)
    np.testing.assert_allclose(np.asarray(b), np.arange(5) * H(0.25, 0.75))
    assert M.block_entropy(P.coin(), 0).value.tolist() == [0.0]
    with pytest.raises(ValueError, match="L must be"):
        M.myopic_entropy(P.coin(), 0)
    with pytest.raises(ValueError, match="L must be"):
        M.state_uncertainty(P.coin(), -1)
    s = M.summary(P.golden_mean())
    text = s.table()
    for k in ("entropy_rate", "excess_entropy", "statistical_complexity", "markov_order"):
        assert k in text
    sm = M.summary(P.mess3(), max_tokens=1 << 18)
    assert "truncated" in sm.table() and "±" in sm.table()


def test_cli_measures(capsys):
    from compmech.cli import main

    assert main(["measures", "golden_mean", "-p", "p=0.5"]) == 0
    out = capsys.readouterr().out
    assert "excess_entropy" in out and "0.251629" in out and "exact" in out
    assert main(["measures", "rrxor", "--json", "--myopic", "4"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["msp_states"] == 36 and data["measures"]["statistical_complexity"]["exact"]
    assert data["measures"]["markov_order"]["value"] == "inf"
    assert len(data["myopic_entropy"]["value"]) == 4
    assert main(["measures", "mess3", "--tokens", "200000"]) == 0
    out = capsys.readouterr().out
    assert "±" in out and "n/a" in out
    assert main(["measures", "golden_mean", "-p", "p=2"]) == 2
    assert "p must be" in capsys.readouterr().err


def test_cli_msp_draws(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    from compmech.cli import main

    for name, draw in [("rrxor", "graph"), ("random_hmm", "beliefs")]:
        out = tmp_path / f"{name}.png"
        args = ["msp", name, "--depth", "6", "--out", str(out), "--draw", draw]
        if name == "random_hmm":
            args += ["-p", "num_states=4"]  # S = 4: tetrahedron
        assert main(args) == 0
        assert out.stat().st_size > 1000
    text = capsys.readouterr().out
    assert "finite: 36 mixed states" in text


def test_epsilon_machine_refuses_a_graph_closed_only_by_merging():
    """The SNS's beliefs converge without repeating: its MSP "closes" only because beliefs 1e-9
    apart are merged (31,623 states). epsilon_machine used to take that as the machine: a dense
    solve of the 31,623-state class (22 GB, 17 CPU-minutes) and a 15 GB transition array. At
    tol=1e-6 the same happens at a size a test can afford; it must be refused as infinite, as
    the measures already treat it."""
    sns = P.get("sns")
    g = cm.msp(sns, tol=1e-6)
    assert g.is_complete and g.max_merge_distance > 1e-11
    with pytest.raises(ValueError, match="closes only by merging beliefs"):
        cm.epsilon_machine(sns, tol=1e-6)
    assert np.isnan(float(M.statistical_complexity(sns, tol=1e-6)))  # "unavailable", as before


def test_stationary_of_a_large_recurrent_class_is_sparse():
    """Classes above DENSE_CLASS_LIMIT states are solved by a sparse LU (no dense copy, no
    dense border row); it agrees with the dense least-squares solution."""
    import scipy.sparse as sp

    from compmech.msp_graph import DENSE_CLASS_LIMIT, _stationary_of, class_stationary

    n = DENSE_CLASS_LIMIT + 300
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(n), 3)  # a ring (irreducible) plus two random jumps per state
    cols = np.stack([(np.arange(n) + 1) % n, rng.integers(0, n, n), rng.integers(0, n, n)], 1).ravel()
    P_ = sp.csr_matrix((rng.random(3 * n) + 0.1, (rows, cols)), shape=(n, n))
    P_ = sp.diags(1 / np.asarray(P_.sum(1)).ravel()) @ P_
    pi = class_stationary(P_.tocsr())
    np.testing.assert_allclose(pi, _stationary_of(P_.toarray()), rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(pi @ P_.toarray(), pi, atol=1e-14)


# ---- recurrent classes above DENSE_CLASS_LIMIT: the bordered sparse LU ------------------------

def _counting_csr():
    """A csr_matrix that counts its dense conversions."""
    import scipy.sparse as sp

    class Counting(sp.csr_matrix):
        calls = 0

        def toarray(self, *a, **k):
            type(self).calls += 1
            return super().toarray(*a, **k)

    return Counting


def _random_ergodic(n, seed):
    """An irreducible, aperiodic sparse stochastic matrix: a ring, a self-loop on every tenth
    state and two random jumps per state, weights spread over three decades."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n), 3)
    cols = np.stack([(np.arange(n) + 1) % n, rng.integers(0, n, n), rng.integers(0, n, n)], 1).ravel()
    cols[3 * np.arange(0, n, 10) + 1] = np.arange(0, n, 10)
    P_ = sp.csr_matrix((10.0 ** rng.uniform(-3, 0, 3 * n), (rows, cols)), shape=(n, n))
    return (sp.diags(1 / np.asarray(P_.sum(1)).ravel()) @ P_).tocsr()


def test_small_class_is_converted_to_dense_once():
    Counting = _counting_csr()
    Z = M._fundamental(Counting(_random_ergodic(300, 1)))
    assert Z.lu is None and Counting.calls == 1  # was 2: the stationary solve converted it again


def test_fundamental_of_a_large_recurrent_class_matches_dense():
    """Z = (I - P + 1 pi)^-1 of a 2,500-state class through the bordered sparse LU (never a
    dense copy) against numpy float64 dense solves of the same matrix."""
    from compmech.msp_graph import DENSE_CLASS_LIMIT

    n = 2500
    assert n > DENSE_CLASS_LIMIT
    P_ = _random_ergodic(n, 0)
    Counting = _counting_csr()
    Z = M._fundamental(Counting(P_))
    assert Z.lu is not None and Counting.calls == 0
    Pd = P_.toarray()
    pi = np.linalg.solve((np.eye(n) - Pd + 1.0).T, np.ones(n))  # pi (I - P + 1 1^T) = 1^T
    # normwise: pi spans 8 decades and a dense solve is accurate only relative to max(pi) (the
    # sparse one matched GTH, a subtraction-free elimination, to 1.4e-13 componentwise)
    np.testing.assert_allclose(Z.pi, pi, rtol=0, atol=1e-11 * pi.max())
    assert np.abs(Z.pi @ Pd - Z.pi).max() < 1e-15 * n
    A = np.eye(n) - Pd + np.outer(np.ones(n), pi)
    V = np.random.default_rng(2).standard_normal((n, 3))
    ref = np.linalg.solve(A, V)
    scale = np.abs(ref).max()
    assert np.abs(Z @ V[:, 0] - ref[:, 0]).max() < 1e-11 * scale
    assert np.abs(Z @ V - ref).max() < 1e-11 * scale
    # its defining identities: Z 1 = 1, pi Z v = pi v, (I - P) Z v = v - (pi v) 1
    np.testing.assert_allclose(Z @ np.ones(n), 1.0, rtol=1e-11)
    x = Z @ V[:, 1]
    # as accurate as the solve itself (1e-11 normwise, above): 1.05e-12 relative was seen with
    # a Zen 3 build's BLAS, 1e-12 passed with Zen 4's
    assert abs(pi @ x - pi @ V[:, 1]) < 1e-11 * np.abs(V[:, 1]).max()
    np.testing.assert_allclose(x - Pd @ x, V[:, 1] - pi @ V[:, 1], atol=1e-11 * scale)


@pytest.mark.parametrize("a,b", [(1.0, 0.0), (0.3, 0.3), (0.6, 0.1)])
def test_fundamental_of_a_large_cycle_has_the_known_answer(a, b):
    """Walk on a cycle of 2,500 states (step +1 w.p. a, -1 w.p. b; a = 1: periodic, period
    2,500): P is circulant, pi uniform, and Z v = F^-1 (F v / lambda) with the eigenvalues
    lambda_k = 1 - (1-a-b) - a w^k - b w^-k of I - P (1 for k = 0, where pi 1 takes over)."""
    import scipy.sparse as sp

    n = 2500
    i = np.arange(n)
    P_ = sp.csr_matrix((np.r_[np.full(n, 1 - a - b), np.full(n, a), np.full(n, b)],
                        (np.r_[i, i, i], np.r_[i, (i + 1) % n, (i - 1) % n])), shape=(n, n))
    P_.eliminate_zeros()
    Z = M._fundamental(P_)
    np.testing.assert_allclose(Z.pi, 1 / n, rtol=1e-9)
    v = np.random.default_rng(3).standard_normal(n)
    w = np.exp(2j * np.pi * i / n)
    lam = 1 - (1 - a - b) - a * w - b * np.conj(w)
    lam[0] = 1.0
    ref = np.real(np.fft.ifft(np.fft.fft(v) / lam))
    # cond(I - P + 1 pi) grows like n^2 on a cycle: 1e-9 is round-off, not slack
    np.testing.assert_allclose(Z @ v, ref, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("start_recurrent", [False, True])
def test_series_closed_forms_with_a_large_class_match_dense(start_recurrent):
    """The excess-entropy-type sums of _Analysis.series on a graph with transient states that
    drain into a 2,500-state class and a 4-state class, against the dense Drazin route (W^inf
    from dense absorption probabilities and class stationaries, then dense solves)."""
    import types

    import scipy.sparse as sp

    rng = np.random.default_rng(4)
    nb, nc, nt = 2500, 4, 0 if start_recurrent else 12
    big = _random_ergodic(nb, 5)
    small = _random_ergodic(nc, 6).toarray()
    K = nt + nb + nc
    W = np.zeros((K, K))
    B, C = slice(nt, nt + nb), slice(nt + nb, K)
    W[B, B] = big.toarray()
    W[C, C] = small
    for s in range(nt):  # transient: forward within the transient block, into both classes
        tgt = np.r_[rng.integers(s + 1, nt, 2) if s + 1 < nt else [], rng.integers(nt, K, 2), nt + nb]
        W[s, tgt.astype(int)] += rng.random(len(tgt)) + 0.1
        W[s] /= W[s].sum()
    rec = np.arange(K) >= nt
    classes = [np.arange(nt, nt + nb), np.arange(nt + nb, K)] if nt else [np.arange(nb)]
    if start_recurrent:  # the start is in the large class: one class, no transient part
        W, K = W[B, B], nb
    graph = types.SimpleNamespace(recurrent=rec[:K] if nt else np.ones(K, bool), recurrent_classes=classes,
                                  transition_matrix=lambda sparse=True: sp.csr_matrix(W) if sparse else W)
    a = M._Analysis(None, graph)
    h = rng.random(K)
    S1, S2, lim = a.series(h)
    # dense reference
    Winf = np.zeros((K, K))
    t = np.arange(nt)
    absorb = np.linalg.solve(np.eye(nt) - W[np.ix_(t, t)], np.eye(nt)) if nt else None
    for cls in classes:
        Pc = W[np.ix_(cls, cls)]
        m = len(cls)
        pic = np.linalg.solve((np.eye(m) - Pc + 1.0).T, np.ones(m))
        Winf[np.ix_(cls, cls)] = pic
        if nt:
            Winf[np.ix_(t, cls)] = (absorb @ W[np.ix_(t, cls)].sum(axis=1))[:, None] * pic
    Mt = (np.eye(K) - W + Winf).T
    e0 = np.zeros(K)
    e0[0] = 1.0
    a0 = np.linalg.solve(Mt, e0)      # e_0 (I - W + W^inf)^-1
    a1 = np.linalg.solve(Mt, a0)      # e_0 (I - W + W^inf)^-2
    E, T, L = a0 @ h - Winf[0] @ h, a1 @ h - Winf[0] @ h, Winf[0] @ h
    assert lim == pytest.approx(L, rel=1e-11)
    assert S1 == pytest.approx(E, rel=1e-9, abs=1e-9)
    assert S2 == pytest.approx(T, rel=1e-9, abs=1e-9)
