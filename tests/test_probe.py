import numpy as np
import pytest

torch = pytest.importorskip("torch")

import compmech as cm  # noqa: E402
from compmech.data import PrefixSet  # noqa: E402
from compmech.model import ModelConfig, build_model  # noqa: E402
from compmech.probe import BeliefProbe, collect_activations, probe_activations, probe_model  # noqa: E402


def _wlstsq(X, Y, w):
    """Reference: weighted affine least squares via numpy lstsq on sqrt(w)-scaled rows."""
    A = np.hstack([X, np.ones((len(X), 1))]) * np.sqrt(w)[:, None]
    sol = np.linalg.lstsq(A, Y * np.sqrt(w)[:, None], rcond=None)[0]
    return sol[:-1], sol[-1]


def test_recovers_exact_affine_map():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 12))
    A, b = rng.standard_normal((12, 3)), rng.standard_normal(3)
    Y = X @ A + b
    p = BeliefProbe().fit(X, Y, sample_weight=rng.random(500))
    np.testing.assert_allclose(p.coef_, A, atol=1e-10)
    np.testing.assert_allclose(p.intercept_, b, atol=1e-10)
    assert p.score(X, Y) == pytest.approx(1.0, abs=1e-12)
    assert p.mse(X, Y) < 1e-20


def test_matches_weighted_lstsq_and_sklearn_on_noisy_data():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 8)) * np.arange(1, 9) + 5.0  # offset and uneven scales
    Y = rng.standard_normal((400, 3))
    w = rng.random(400) ** 3
    p = BeliefProbe().fit(X.astype(np.float32), Y, sample_weight=w)
    c, b = _wlstsq(X.astype(np.float32).astype(np.float64), Y, w)
    np.testing.assert_allclose(p.coef_, c, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(p.intercept_, b, rtol=1e-8, atol=1e-9)
    sk = pytest.importorskip("sklearn.linear_model").LinearRegression().fit(X, Y, sample_weight=w)
    p64 = BeliefProbe().fit(X, Y, sample_weight=w)
    np.testing.assert_allclose(p64.coef_, sk.coef_.T, rtol=1e-7, atol=1e-10)
    from sklearn.metrics import r2_score

    assert p64.score(X, Y, w) == pytest.approx(
        r2_score(Y, sk.predict(X), sample_weight=w, multioutput="variance_weighted"), rel=1e-9)


def test_rank_deficient_and_no_intercept():
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((300, 4))
    X = np.hstack([Z, Z[:, :1] * 2.0, Z - Z.mean(1, keepdims=True)])  # duplicated / dependent columns
    Y = Z @ rng.standard_normal((4, 3)) + 0.3
    p = BeliefProbe().fit(X, Y)
    assert p.score(X, Y) > 1 - 1e-10
    p0 = BeliefProbe(fit_intercept=False).fit(X, Y)
    assert np.all(p0.intercept_ == 0) and p0.score(X, Y) < p.score(X, Y)


def test_input_checks():
    with pytest.raises(ValueError, match="shape"):
        BeliefProbe().fit(np.zeros(5), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="rows"):
        BeliefProbe().fit(np.zeros((5, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        BeliefProbe().fit(np.zeros((5, 2)), np.zeros((5, 3)), sample_weight=-np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        BeliefProbe().fit(np.full((5, 2), np.nan), np.zeros((5, 3)))


@pytest.fixture(scope="module")
def small_set():
    return PrefixSet.build(cm.processes.mess3(), 5, group_depth=1)


def test_report_linear_vs_shuffled_vs_noise(small_set):
    ps = small_set
    rng = np.random.default_rng(3)
    lin = ps.beliefs @ rng.standard_normal((3, 16)) + 0.1
    noise = rng.standard_normal((len(ps), 16))
    rep = probe_activations({"lin": lin.astype(np.float32), "noise": noise}, ps, concat=[], shuffles=4, cv_folds=3)
    L = rep.layers["lin"]
    for wn in ("uniform", "prob"):
        assert L[wn]["r2"] > 1 - 1e-9 and L[wn]["mse"] < 1e-12
        assert L[wn]["shuffle_mse_mean"] > 1e-3 and L[wn]["shuffle_r2_mean"] < 0.2
    N = rep.layers["noise"]
    assert N["prob"]["r2"] < 0.5 and N["uniform"]["shuffle_ratio"] < 1.5
    np.testing.assert_allclose(rep.predictions["lin"]["prob"], ps.beliefs, atol=1e-6)
    coef, icpt = rep.coefs["lin"]["uniform"]
    np.testing.assert_allclose(lin @ coef + icpt, ps.beliefs, atol=1e-6)


def _expanded(ps, acts):
    """All (input, position) rows, as in the original non-deduplicated analysis."""
    N, ctx = ps.inputs.shape
    row_of = {}
    for r in range(len(ps)):
        row_of[tuple(ps.inputs[ps.seq_index[r], :ps.length[r]])] = r
    idx = np.array([[row_of[tuple(ps.inputs[i, :t + 1])] for t in range(ctx)] for i in range(N)])
    return idx  # (N, ctx) -> deduplicated row


@pytest.mark.parametrize("weighting", ["uniform", "prob"])
def test_cv_equals_bruteforce_split_by_input(small_set, weighting):
    ps = small_set
    rng = np.random.default_rng(4)
    acts = np.tanh(ps.beliefs @ rng.standard_normal((3, 6))) + 0.01 * rng.standard_normal((len(ps), 6))
    k = 3
    rep = probe_activations({"a": acts}, ps, concat=[], shuffles=0, cv_folds=k, seed=7, weightings=(weighting,))
    idx = _expanded(ps, acts)
    N, ctx = idx.shape
    seqs = ps.inputs
    # per-(input, position) weight; per-input fold = fold of its subtree (first token)
    if weighting == "uniform":
        w_in = np.ones(N)
    else:
        w_in = np.exp(cm.log_prob(cm.processes.mess3(), seqs))
    W = np.repeat(w_in[:, None], ctx, 1)
    W = W / W.sum()
    M = ps.fold_membership(k, seed=7, kind=weighting)
    fold_of_input = np.array([M[idx[i, -1]].argmax() for i in range(N)])
    X, Y, Wf = acts[idx.ravel()], ps.beliefs[idx.ravel()], W.ravel()
    F = np.repeat(fold_of_input, ctx)
    sse = 0.0
    for f in range(k):
        tr, te = F != f, F == f
        c, b = _wlstsq(X[tr], Y[tr], Wf[tr])
        sse += Wf[te] @ ((Y[te] - X[te] @ c - b) ** 2).sum(1)
    ref_cv = sse / Wf.sum() / 3
    assert rep.layers["a"][weighting]["cv_mse"] == pytest.approx(ref_cv, rel=1e-7)
    # in-sample fit equals the expanded unweighted/weighted fit
    c, b = _wlstsq(X, Y, Wf)
    ref_mse = Wf @ ((Y - X @ c - b) ** 2).sum(1) / Wf.sum() / 3
    assert rep.layers["a"][weighting]["mse"] == pytest.approx(ref_mse, rel=1e-7)


def test_shuffle_control_equals_explicit_refit(small_set):
    ps = small_set
    rng = np.random.default_rng(5)
    acts = ps.beliefs @ rng.standard_normal((3, 5)) + 0.05 * rng.standard_normal((len(ps), 5))
    rep = probe_activations({"a": acts}, ps, concat=[], shuffles=3, seed=11, weightings=("prob",))
    w = ps.weights("prob")
    vals = []
    for i in range(3):  # the report's permutations: default_rng([seed, 1, i])
        Yp = ps.beliefs[np.random.default_rng([11, 1, i]).permutation(len(ps))]
        p = BeliefProbe().fit(acts, Yp, w)
        vals.append(p.mse(acts, Yp, w))
    assert rep.layers["a"]["prob"]["shuffle_mse_mean"] == pytest.approx(np.mean(vals), rel=1e-8)
    assert rep.layers["a"]["prob"]["shuffle_mse_sd"] == pytest.approx(np.std(vals, ddof=1), rel=1e-6)


def test_concatenation_and_sub_blocks(small_set):
    ps = small_set
    rng = np.random.default_rng(6)
    a1 = ps.beliefs[:, :1] @ rng.standard_normal((1, 4)) + 0.01 * rng.standard_normal((len(ps), 4))
    a2 = ps.beliefs[:, 1:2] @ rng.standard_normal((1, 4)) + 0.01 * rng.standard_normal((len(ps), 4))
    rep = probe_activations({"blocks.0.hook_resid_post": a1, "blocks.1.hook_resid_post": a2}, ps, shuffles=2)
    assert rep.concat_name == "concat"
    r = {n: rep.layers[n]["prob"]["r2"] for n in rep.layers}
    assert r["concat"] > 0.999 and r["concat"] > max(r["blocks.0.hook_resid_post"], r["blocks.1.hook_resid_post"]) + 0.05
    # per-layer numbers from the concatenated block equal separate fits
    sep = probe_activations({"x": a1}, ps, concat=[], shuffles=2)
    for key in ("mse", "r2", "cv_mse", "shuffle_mse_mean"):
        assert rep.layers["blocks.0.hook_resid_post"]["uniform"][key] == pytest.approx(sep.layers["x"]["uniform"][key], rel=1e-8)


def test_collect_activations_paths_agree():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=3, ctx=4, n_layers=2, d_model=16, d_head=4, d_mlp=32)
    model = build_model(cfg)
    ps = PrefixSet.build(cm.processes.mess3(), 4)
    acts = collect_activations(model, ps, ["embed", "blocks.1.hook_resid_post", "ln_final.hook_normalized"],
                               batch_size=7)  # several batches
    with torch.no_grad():
        _, cache = model(torch.from_numpy(ps.inputs), return_cache=True)
    for n in ("blocks.1.hook_resid_post", "ln_final.hook_normalized"):
        np.testing.assert_allclose(acts[n], ps.gather(cache[n].numpy()), atol=1e-6)
    np.testing.assert_allclose(acts["embed"], ps.gather(cache["blocks.0.hook_resid_pre"].numpy()), atol=1e-6)

    class Plain(torch.nn.Module):  # any module: captured by forward hooks on named submodules
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    hooked = collect_activations(Plain(model), ps, ["inner.ln_final"])
    np.testing.assert_allclose(hooked["inner.ln_final"], acts["ln_final.hook_normalized"], atol=1e-6)
    with pytest.raises(ValueError, match="no submodules"):
        collect_activations(Plain(model), ps, ["nope"])


def test_probe_model_end_to_end():
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=2, ctx=6, n_layers=2, d_model=16, d_head=4, d_mlp=32))
    rep = probe_model(model, cm.processes.rrxor(), shuffles=2)
    assert set(rep.layers) >= {"embed", "blocks.1.hook_resid_post", "ln_final.hook_normalized", "concat"}
    assert rep.beliefs.shape[1] == 5
    s = rep.summary()
    assert s["layer"] == "blocks.1.hook_resid_post" and 0 <= s["r2_weighted"] <= 1
    assert rep.timing["total_s"] > 0 and rep.timing["rows"] == len(rep.beliefs)
    assert "blocks.0.hook_resid_mid" in rep.table()


@pytest.mark.parametrize("bos", [False, True])
def test_tree_forward_equals_full_forward(bos):
    from compmech.probe import tree_forward

    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=3 + bos, out_vocab_size=3, ctx=6, n_layers=2, n_heads=2, d_head=4, d_model=16,
                      d_mlp=32, act="gelu")
    model = build_model(cfg)
    ps = PrefixSet.build(cm.processes.mess3(), 6, bos=bos)
    names = ["embed", "hook_embed", "blocks.0.hook_resid_mid", "blocks.1.hook_resid_post", "ln_final.hook_normalized"]
    full = collect_activations(model, ps, names, tree=False)
    tree, logits = tree_forward(model, ps, names, return_logits=True)
    for n in names:
        np.testing.assert_allclose(tree[n], full[n], atol=2e-6, err_msg=n)
    with torch.no_grad():
        ref = model(torch.from_numpy(ps.inputs)).numpy()
    np.testing.assert_allclose(logits, ps.gather(ref), atol=2e-6)
    np.testing.assert_allclose(ps.expected_loss(logits, per_row=True), ps.expected_loss(ref), rtol=1e-6)
