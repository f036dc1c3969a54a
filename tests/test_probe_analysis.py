"""compmech.probe_analysis: sampled prefixes, factor / component / GHMM targets, subspace
geometry — each against a plain numpy computation."""
import math

import numpy as np
import pytest

import compmech as cm
from compmech import probe_analysis as pa
from compmech.data import PrefixSet
from compmech.process import GHMM
from compmech.processes import get, mixture, product


def _prefix_tokens(ps, r):
    off = 1 if ps.bos else 0
    return tuple(ps.inputs[ps.seq_index[r], off:off + ps.length[r]].tolist())


@pytest.mark.parametrize("bos", [False, True])
def test_sampled_prefixes_match_counts_and_exact_beliefs(bos):
    proc = get("mess3")
    ctx, n, seed = 5, 3000, 3
    ps = pa.sampled_prefixes(proc, ctx, n, seed=seed, bos=bos)
    n_in = ctx - 1 if bos else ctx
    seqs = cm.sample(proc, n, n_in, seed=seed)
    exact = PrefixSet.build(proc, ctx, bos=bos)
    exact_rows = {_prefix_tokens(exact, r): r for r in range(len(exact))}
    keys = [_prefix_tokens(ps, r) for r in range(len(ps))]
    assert len(set(keys)) == len(keys)  # deduplicated
    for r, key in enumerate(keys):
        d = len(key)
        count = int((seqs[:, :d] == np.array(key, dtype=seqs.dtype)).all(1).sum()) if d else n
        assert ps.multiplicity[r] == count and ps.probs[r] == pytest.approx(count / n)
        np.testing.assert_allclose(ps.beliefs[r], exact.beliefs[exact_rows[key]], atol=1e-12)
        np.testing.assert_allclose(ps.next_probs[r], exact.next_probs[exact_rows[key]], atol=1e-12)
        assert ps.position[r] == (d if bos else d - 1)
        if ps.parent[r] >= 0:
            assert keys[ps.parent[r]] == key[:-1] and ps.token[r] == key[-1]
        else:
            assert d == (0 if bos else 1)
    # every distinct sampled prefix is present; each length's probabilities sum to one
    distinct = {tuple(s[:d].tolist()) for s in seqs for d in range(1, n_in + 1)}
    assert distinct | ({()} if bos else set()) == set(keys)
    for d in range(0 if bos else 1, n_in + 1):
        assert ps.probs[ps.length == d].sum() == pytest.approx(1.0)
    # CV folds split inputs: every row's membership sums to one
    M = ps.fold_membership(5, 0)
    np.testing.assert_allclose(M.sum(1), 1.0)


def test_choose_prefixes_by_size_and_records_mode():
    ps, info = pa.choose_prefixes(get("mess3"), 6)
    assert info["mode"] == "exhaustive" and info["rows"] == len(ps) == sum(3 ** d for d in range(1, 7))
    prod = product(["mess3", {"name": "mess3", "x": 0.15, "alpha": 0.6}])
    ps, info = pa.choose_prefixes(prod, 6, n_sequences=500, seed=1)
    assert info["mode"] == "sampled" and info["possible_inputs"] == 9 ** 6 and info["sequences"] == 500
    assert info["distinct_sequences"] == ps.inputs.shape[0] <= 500
    with pytest.raises(ValueError, match="mode"):
        pa.choose_prefixes(prod, 3, mode="nope")


def test_sampled_and_exhaustive_probes_agree_on_mess3():
    """Same model, same metrics: the probability-weighted probe MSE of 10**5 sampled sequences
    agrees with the exhaustive probe's within a few percent (issue 13)."""
    torch = pytest.importorskip("torch")
    from compmech.model import ModelConfig, Transformer
    from compmech.probe import collect_activations, probe_activations

    torch.manual_seed(0)
    ctx = 8
    model = Transformer(ModelConfig(vocab_size=3, ctx=ctx, n_layers=1, d_model=16, n_heads=2, d_head=4, d_mlp=32))
    name = "blocks.0.hook_resid_post"
    proc = get("mess3")
    res = {}
    for mode in ("exhaustive", "sampled"):
        ps, info = pa.choose_prefixes(proc, ctx, mode=mode, n_sequences=100_000, seed=5)
        acts = collect_activations(model, ps, [name])
        res[mode] = probe_activations(acts, ps, cv_folds=5, shuffles=2, concat=[]).layers[name]["prob"]
    ex, sa = res["exhaustive"], res["sampled"]
    assert sa["mse"] == pytest.approx(ex["mse"], rel=0.05)
    assert sa["r2"] == pytest.approx(ex["r2"], abs=0.01)
    assert sa["cv_mse"] == pytest.approx(ex["cv_mse"], rel=0.05)


def test_factor_beliefs_are_marginals_of_the_joint_belief():
    a, b = get("mess3"), get("mess3", x=0.15, alpha=0.6)
    prod = product([a, b])
    ps = PrefixSet.build(prod, 3)
    fa, fb = pa.factor_beliefs(ps, [a, b])
    joint = ps.beliefs.reshape(len(ps), 3, 3)
    np.testing.assert_allclose(fa, joint.sum(2), atol=1e-12)
    np.testing.assert_allclose(fb, joint.sum(1), atol=1e-12)
    x = np.array([[0, 4, 8, 5]])
    t0, t1 = pa.factor_tokens(x, [3, 3])
    np.testing.assert_array_equal(t0, [[0, 1, 2, 1]])
    np.testing.assert_array_equal(t1, [[0, 1, 2, 2]])
    t = pa.factor_tokens(np.array([23]), [2, 3, 4])  # 23 = (1*3 + 2)*4 + 3
    assert [int(v[0]) for v in t] == [1, 2, 3]
    with pytest.raises(ValueError, match="multiply"):
        pa.factor_beliefs(ps, [a])


def test_component_posterior_is_bayes_and_within_beliefs_are_the_components():
    comps = [get("mess3"), get("mess3", x=0.15, alpha=0.6), get("mess3", x=0.3, alpha=0.95)]
    wts = np.array([0.5, 0.3, 0.2])
    mix = mixture(comps, wts)
    ps = PrefixSet.build(mix, 4)
    post = pa.component_posterior(ps.beliefs, comps)
    within = pa.within_component_beliefs(ps.beliefs, comps)
    for r in range(0, len(ps), 7):
        toks = np.array([_prefix_tokens(ps, r)])
        lp = np.array([float(cm.log_prob(c, toks)[0]) for c in comps])
        bayes = wts * np.exp(lp)
        np.testing.assert_allclose(post[r], bayes / bayes.sum(), atol=1e-12)
        for k, c in enumerate(comps):
            np.testing.assert_allclose(within[k][r], cm.beliefs(c, toks, dtype=np.float64)[0, -1], atol=1e-12)
    assert [sl.start for sl in pa.component_blocks(comps)] == [0, 3, 6]


def test_within_component_belief_undefined_where_component_impossible():
    comps = [get("rrxor"), get("rrxor", p1=0.3)]
    b = np.zeros((1, 10))
    b[0, :5] = 0.2
    with pytest.raises(ValueError, match="component 1"):
        pa.within_component_beliefs(b, comps)


def test_ghmm_targets_w_normalised_and_classical_when_it_exists():
    tq = get("tom_quantum")
    ps = PrefixSet.build(tq, 3)
    y = pa.ghmm_targets(ps)
    np.testing.assert_allclose(y["ghmm"] @ tq.w, 1.0, atol=1e-12)
    assert y["classical"] is None  # negative entries: no HMM on the same states
    # A rescaled Mess3 (G[x] = D^-1 T[x] D, w = 1/d) is a GHMM whose classical beliefs are Mess3's.
    m = get("mess3")
    d = np.array([1.0, 2.0, 0.5])
    G = GHMM(m.T / d[None, :, None] * d[None, None, :])
    y = pa.ghmm_targets(PrefixSet.build(G, 3))
    ref = PrefixSet.build(m, 3).beliefs
    np.testing.assert_allclose(y["classical"], ref, atol=1e-10)
    np.testing.assert_allclose(y["ghmm"] @ G.w, 1.0, atol=1e-12)


def test_principal_angles_match_scipy():
    from scipy.linalg import subspace_angles

    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
    np.testing.assert_allclose(pa.principal_angles(A, B), np.sort(np.degrees(subspace_angles(A, B))), atol=1e-8)
    Q = np.linalg.qr(rng.normal(size=(10, 4)))[0]
    np.testing.assert_allclose(pa.principal_angles(Q[:, :2], Q[:, 2:]), [90.0, 90.0], atol=1e-8)
    np.testing.assert_allclose(pa.principal_angles(Q[:, :2], Q[:, :2] @ [[1, 2], [3, 4]]), [0.0, 0.0], atol=1e-5)
    # a probe onto a simplex has a null direction (columns sum to ~0): it is not counted
    C = rng.normal(size=(8, 3))
    C -= C.mean(1, keepdims=True)
    assert pa.probe_subspace(C).shape == (8, 2)


def test_effective_dimension_against_numpy_pca():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(500, 2)) * [3.0, 1.0]
    X = Z @ rng.normal(size=(2, 6)) + 1e-3 * rng.normal(size=(500, 6))
    d = pa.effective_dimension(X)
    ev = np.sort(np.linalg.eigvalsh(np.cov(X.T)))[::-1]
    np.testing.assert_allclose(d["cumulative"], np.cumsum(ev) / ev.sum(), atol=1e-10)
    assert d["dims"] == 2 and pa.effective_dimension(X, threshold=0.5)["dims"] == 1
    w = rng.random(500)
    dw = pa.effective_dimension(X, w)
    mu = w @ X / w.sum()
    evw = np.sort(np.linalg.eigvalsh(((X - mu) * w[:, None]).T @ (X - mu)))[::-1]
    np.testing.assert_allclose(dw["cumulative"], np.cumsum(evw) / evw.sum(), atol=1e-10)


def test_probe_targets_recovers_a_planted_linear_code():
    a, b = get("mess3"), get("mess3", x=0.15, alpha=0.6)
    ps = PrefixSet.build(product([a, b]), 3)
    fa, fb = pa.factor_beliefs(ps, [a, b])
    rng = np.random.default_rng(2)
    Wa, Wb = rng.normal(size=(3, 12)), rng.normal(size=(3, 12))
    acts = {"x": fa @ Wa + fb @ Wb + 1e-4 * rng.normal(size=(len(ps), 12))}
    ra = pa.probe_targets(acts, ps, fa, shuffles=2, concat=[])
    assert ra.layers["x"]["prob"]["r2"] > 0.999 and ra.layers["x"]["prob"]["shuffle_ratio"] > 100
    np.testing.assert_allclose(ra.beliefs, fa)
    with pytest.raises(ValueError, match="targets"):
        pa.probe_targets(acts, ps, fa[:-1])


@pytest.mark.parametrize("sampled", [False, True])
def test_cv_ratio_by_group_depth_default_is_the_probes_and_finer_splits_regroup(sampled):
    """At the probe's own group depth the diagnostic reproduces the probe's CV; other depths
    deal the inputs by their first g tokens (V**g subtrees when every prefix occurs); the
    in-sample fit does not depend on the split."""
    from compmech.probe import probe_activations

    proc = get("mess3")
    ps = pa.sampled_prefixes(proc, 5, 2000, seed=1) if sampled else PrefixSet.build(proc, 5)
    rng = np.random.default_rng(0)
    acts = {"x": ps.beliefs @ rng.normal(size=(3, 6)) + 0.05 * rng.normal(size=(len(ps), 6))}
    g0 = ps.group_depth
    out = pa.cv_ratio_by_group_depth(acts, ps, [g0, g0 + 1, 5], layer="x", seed=3)
    ref = probe_activations(acts, ps, shuffles=0, seed=3, concat=[]).layers["x"]["prob"]
    assert out[g0]["cv_ratio"] == pytest.approx(ref["cv_ratio"], rel=1e-12)
    assert len({round(v["mse"], 15) for v in out.values()}) == 1
    assert all(v["cv_ratio"] > 1 for v in out.values())
    if not sampled:
        assert [out[g]["groups"] for g in (g0, g0 + 1, 5)] == [3 ** g0, 3 ** (g0 + 1), 3 ** 5]
    with pytest.raises(ValueError, match="group depths"):
        pa.cv_ratio_by_group_depth(acts, ps, [6], layer="x")


def test_component_losses_decompose_the_mixture_optimum():
    """Per-component losses: the component's own myopic entropy equals that component's exact
    optimum; the pi-weighted Bayes-optimal losses are the mixture's optimum; the mixture's own
    predictive scores exactly its Bayes-optimal loss on every component."""
    comps = [get("mess3"), get("mess3", x=0.15, alpha=0.6), get("mess3", x=0.3, alpha=0.95)]
    mix = mixture(comps, weights=[0.5, 0.3, 0.2])
    ctx = 5
    ps = PrefixSet.build(mix, ctx)
    exact = np.log(np.clip(ps.next_probs, 1e-300, None))
    out = pa.component_losses(exact, ps, comps)
    for c, o in zip(comps, out):
        np.testing.assert_allclose(o["myopic_entropy"], PrefixSet.build(c, ctx).optimal_loss(), rtol=1e-10)
        np.testing.assert_allclose(o["loss"], o["bayes_optimal"], rtol=1e-12)
        assert all(b >= h - 1e-12 for b, h in zip(o["bayes_optimal"], o["myopic_entropy"]))
    mixed = sum(w * np.array(o["bayes_optimal"]) for w, o in zip([0.5, 0.3, 0.2], out))
    np.testing.assert_allclose(mixed, ps.optimal_loss(), rtol=1e-10)
    uniform = np.full_like(exact, -np.log(3))
    assert all(np.allclose(o["loss"], np.log(3)) for o in pa.component_losses(uniform, ps, comps))
    with pytest.raises(ValueError, match="mixture"):
        pa.component_losses(exact, PrefixSet.build(comps[0], ctx), comps)
