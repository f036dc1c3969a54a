"""compmech.cv_diagnosis: every number against a plain numpy float64 computation on random
processes, plus the behaviours each diagnostic exists to detect (overfitting that ridge
cures, a position-dependent representation)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compmech import cv_diagnosis as cd
from compmech.data import PrefixSet
from compmech.probe import probe_activations
from compmech.processes import get
from compmech.processes.random import random_hmm


def _ridge_ref(X, Y, w, alpha):
    """Weighted affine ridge in plain numpy: centre by the weighted mean, add alpha * mean eigenvalue."""
    w = w / w.sum()
    mx, my = w @ X, w @ Y
    G = (X - mx).T @ ((X - mx) * w[:, None])
    G = G + alpha * np.trace(G) / len(G) * np.eye(len(G))
    C = np.linalg.pinv(G, rcond=1e-12, hermitian=True) @ ((X - mx).T @ ((Y - my) * w[:, None]))
    return C, my - mx @ C


def _sse(X, Y, w, Cb):
    return float(w @ ((X @ Cb[0] + Cb[1] - Y) ** 2).sum(1))


def _setup(seed, S=3, V=2, ctx=5, D=6, noise=0.05):
    proc = random_hmm(S, V, seed=seed)
    ps = PrefixSet.build(proc, ctx)
    rng = np.random.default_rng(seed)
    X = ps.beliefs @ rng.normal(size=(S, D)) + noise * rng.normal(size=(len(ps), D))
    return ps, X


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), S=st.integers(2, 4), V=st.integers(2, 3))
def test_ridge_path_matches_numpy_per_fold_and_nested(seed, S, V):
    ps, X = _setup(seed, S, V, ctx=4)
    keep = ps.length >= 1
    X, Y = X[keep], ps.beliefs[keep]
    w = ps.weights("prob")[keep]
    w = w / w.sum()
    M = ps.fold_membership(5, 0, "prob")[keep]
    k, alphas = M.shape[1], (0.0, 1e-3, 1e-1)
    out = cd.ridge_path(X, Y, w, M, alphas)
    for i, a in enumerate(alphas):
        assert out["in_sample_mse"][i] == pytest.approx(_sse(X, Y, w, _ridge_ref(X, Y, w, a)) / S, rel=1e-7)
        cv = sum(_sse(X, Y, w * M[:, f], _ridge_ref(X, Y, w * (1 - M[:, f]), a)) for f in range(k)) / S
        assert out["cv_mse"][i] == pytest.approx(cv, rel=1e-7)
    nested = 0.0
    for f in range(k):
        inner = [j for j in range(k) if j != f]
        tr = lambda drop: w * (1 - M[:, drop].sum(1))  # noqa: E731
        scores = [sum(_sse(X, Y, w * M[:, j], _ridge_ref(X, Y, tr([f, j]), a)) for j in inner) for a in alphas]
        a = alphas[int(np.argmin(scores))]
        assert out["nested"]["alpha_per_fold"][f] == a
        nested += _sse(X, Y, w * M[:, f], _ridge_ref(X, Y, tr([f]), a))
    assert out["nested"]["cv_mse"] == pytest.approx(nested / S, rel=1e-7)


def test_diagnose_cv_reproduces_the_probe_and_its_parts_add_up():
    ps, X = _setup(3, S=3, V=3, ctx=5)
    d = cd.diagnose_cv(X, ps, seed=2)
    ref = probe_activations({"x": X}, ps, shuffles=0, seed=2, concat=[]).layers["x"]["prob"]
    assert d["in_sample_mse"] == pytest.approx(ref["mse"], rel=1e-9)
    assert d["cv_mse"] == pytest.approx(ref["cv_mse"], rel=1e-9)
    assert d["ridge"]["cv_mse"][0] == pytest.approx(ref["cv_mse"], rel=1e-9)
    # every subtree listed; excess shares of the subtrees and the shared short prefixes sum to one
    assert len(d["by_subtree"]) == 3 ** ps.group_depth
    assert sum(r["excess_share"] for r in d["by_subtree"]) + d["shared_rows_excess_share"] == pytest.approx(1.0)
    shares = [r["excess_share"] for r in d["by_subtree"]]
    assert shares == sorted(shares, reverse=True)
    assert d["top3_excess_share"] == pytest.approx(sum(shares[:3]))
    # per length: masses and excess shares sum to one; the lengths are every prefix length
    bl = d["by_length"]
    assert [r["length"] for r in bl] == list(range(1, 6))
    assert sum(r["mass"] for r in bl) == pytest.approx(1.0) and sum(r["excess_share"] for r in bl) == pytest.approx(1.0)
    keep = ps.length >= 1
    Xk, Yk, lk, w = X[keep], ps.beliefs[keep], ps.length[keep], ps.weights("prob")[keep]
    M = ps.fold_membership(5, 2, "prob")[keep]
    row_err = lambda Cb: ((Xk @ Cb[0] + Cb[1] - Yk) ** 2).sum(1)  # noqa: E731
    e_in = row_err(_ridge_ref(Xk, Yk, w, 0.0))
    e_cv = sum(M[:, f] * row_err(_ridge_ref(Xk, Yk, w * (1 - M[:, f]), 0.0)) for f in range(M.shape[1]))
    for r in bl:
        s = lk == r["length"]
        assert r["cv_ratio"] == pytest.approx((w[s] @ e_cv[s]) / (w[s] @ e_in[s]), rel=1e-7)
    w = ps.weights("prob")[ps.length >= 1]
    assert d["n_eff"] == pytest.approx(1 / np.sum((w / w.sum()) ** 2))
    assert d["features"] == X.shape[1] + 1 and len(cd.diagnose_cv(X, ps, top=4)["by_subtree"]) == 4
    with pytest.raises(ValueError, match="one row per prefix"):
        cd.diagnose_cv(X[:-1], ps)
    with pytest.raises(ValueError, match="ridge strengths"):
        cd.diagnose_cv(X, ps, alphas=(-1.0,))


def test_held_out_distance_and_mahalanobis_against_brute_force():
    ps, X = _setup(5, S=3, V=2, ctx=6)
    keep = ps.length >= 1
    M = ps.fold_membership(5, 0, "prob")[keep]
    Y, lk = ps.beliefs[keep], ps.length[keep]
    dist = cd.held_out_distance(ps, M, keep)
    for r in range(len(Y)):
        if lk[r] < ps.group_depth:
            assert np.isnan(dist[r])
            continue
        f = int(np.argmax(M[r]))
        tr = (M[:, f] == 0) & (lk == lk[r])
        assert dist[r] == pytest.approx(np.sqrt(((Y[tr] - Y[r]) ** 2).sum(1)).min(), abs=1e-12)
    # Mahalanobis: the training rows' own weighted mean squared distance is the rank (= D here)
    from compmech.cv_diagnosis import _fold_moments, _mahalanobis2

    w = ps.weights("prob")[keep]
    Xc, fm = _fold_moments(X[keep], Y, w / w.sum(), M)
    wt = (w / w.sum()) * (1 - M[:, 0])
    m2 = _mahalanobis2(Xc, fm[1:], 1e-12)
    assert float(wt @ m2 / wt.sum()) == pytest.approx(X.shape[1], rel=1e-8)


def test_ridge_cures_overfitting_and_nested_cv_finds_it():
    """Few distinct rows, many noisy features: the plain probe overfits, and the nested-CV ridge
    probe has a clearly lower held-out error (what the diagnostic exists to detect)."""
    proc = get("mess3")
    ps = PrefixSet.build(proc, 3)
    rng = np.random.default_rng(0)
    X = ps.beliefs @ rng.normal(size=(3, 30)) + 0.3 * rng.normal(size=(len(ps), 30))
    r = cd.diagnose_cv(X, ps)["ridge"]
    assert r["nested"]["cv_mse"] < 0.8 * r["cv_mse"][0]
    assert all(a > 0 for a in r["nested"]["alpha_per_fold"])


def test_position_dependence_detects_a_position_code():
    """A representation that is the belief plus i.i.d. noise gives a ratio near 1; adding a
    position-dependent offset multiplies the activation distance across positions."""
    proc = get("mess3")
    ps = PrefixSet.build(proc, 7)
    keep = ps.length >= 1
    Y, lk = ps.beliefs[keep], ps.length[keep]
    rng = np.random.default_rng(1)
    base = Y @ rng.normal(size=(3, 8)) + 0.01 * rng.normal(size=(len(Y), 8))
    flat = cd.position_dependence(base, Y, lk, radius=5e-3)
    assert flat["same"]["pairs"] > 100 and flat["adjacent"]["pairs"] > 100
    assert 0.7 < flat["ratio"] < 1.4
    coded = cd.position_dependence(base + 0.05 * lk[:, None] * rng.normal(size=8), Y, lk, radius=5e-3)
    assert coded["ratio"] > 5
    assert coded["same"]["activation_distance2"] == pytest.approx(flat["same"]["activation_distance2"])
    assert coded["same"]["from_belief"] < coded["same"]["activation_distance2"]


def test_position_dependence_pairs_a_row_never_with_itself():
    """Duplicate beliefs (a renewal process reaches the same belief from many prefixes): every
    same-length pair joins two different rows, so noise in the activations shows up."""
    rng = np.random.default_rng(0)
    B = rng.dirichlet(np.ones(3), size=40)
    Y = np.repeat(B, 2, axis=0)  # every belief twice, at one length
    X = rng.normal(size=(len(Y), 4))
    out = cd.position_dependence(X, Y, np.ones(len(Y), int))
    ref = ((X[0::2] - X[1::2]) ** 2).sum(1).mean()  # each row's partner is its duplicate
    assert out["same"]["pairs"] == len(Y)
    assert out["same"]["activation_distance2"] == pytest.approx(ref, rel=1e-12)
