"""The probe's headline numbers against hand computations over every (input, position) row, and
collect_activations on a TransformerLens-shaped stand-in (identity hook modules under
TransformerLens's hook names, no forward_tree), read through forward hooks."""
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import compmech as cm  # noqa: E402
from compmech.data import PrefixSet  # noqa: E402
from compmech.model import ModelConfig, build_model  # noqa: E402
from compmech.probe import collect_activations, probe_activations, probe_model  # noqa: E402
from reference import ref_beliefs, ref_sequence_prob  # noqa: E402


def _fit(X, Y, w):
    """Weighted affine least squares (numpy lstsq on sqrt(w)-scaled rows); predictions."""
    A = np.hstack([X, np.ones((len(X), 1))])
    s = np.sqrt(w)[:, None]
    sol = np.linalg.lstsq(A * s, Y * s, rcond=None)[0]
    return A @ sol


def _mse(Y, P, w):
    return float(w @ ((Y - P) ** 2).mean(1) / w.sum())


def _r2(Y, P, w):
    mu = w @ Y / w.sum()
    return 1 - float(w @ ((Y - P) ** 2).sum(1)) / float(w @ ((Y - mu) ** 2).sum(1))


def test_summary_numbers_equal_hand_computations_over_all_input_positions():
    """Over all V**ctx inputs x ctx positions: "mse" is the unweighted fit's mean squared error
    (every row once), "r2_weighted" the fit weighted by input probability (summed over a
    prefix's extensions this is the prefix probability), and the cross terms likewise."""
    proc = cm.processes.random_hmm(3, 3, seed=4)  # asymmetric: the weightings differ
    ctx = 4
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=3, ctx=ctx, n_layers=1, d_model=8, d_head=4, d_mlp=16))
    name = "blocks.0.hook_resid_post"
    rep = probe_model(model, proc, names=[name], shuffles=0, cv_folds=2)
    s = rep.summary(name)

    inputs = np.array(list(itertools.product(range(3), repeat=ctx)))
    with torch.no_grad():
        _, cache = model(torch.from_numpy(inputs), return_cache=True, names=[name])
    X = cache[name].double().numpy().reshape(-1, 8)
    Y = ref_beliefs(proc.T, inputs)[0].reshape(-1, 3)
    p_in = np.array([ref_sequence_prob(proc.T, s_) for s_ in inputs])
    w_unif = np.ones(len(X))
    w_prob = np.repeat(p_in, ctx)
    P_unif, P_prob = _fit(X, Y, w_unif), _fit(X, Y, w_prob)
    assert abs(_r2(Y, P_prob, w_prob) - _r2(Y, P_unif, w_unif)) > 1e-3  # the test can tell them apart
    assert abs(_mse(Y, P_prob, w_prob) - _mse(Y, P_unif, w_unif)) > 1e-4
    assert s["mse"] == pytest.approx(_mse(Y, P_unif, w_unif), rel=1e-6)
    assert s["r2_uniform"] == pytest.approx(_r2(Y, P_unif, w_unif), rel=1e-6)
    assert s["r2_weighted"] == pytest.approx(_r2(Y, P_prob, w_prob), rel=1e-6)
    assert s["mse_weighted"] == pytest.approx(_mse(Y, P_prob, w_prob), rel=1e-6)
    # the fits scored under the other weighting
    lay = rep.layers[name]
    assert lay["uniform"]["mse_prob"] == pytest.approx(_mse(Y, P_unif, w_prob), rel=1e-6)
    assert lay["prob"]["mse_uniform"] == pytest.approx(_mse(Y, P_prob, w_unif), rel=1e-6)


def test_shuffle_ratio_of_the_summary_is_shuffled_over_in_sample_mse():
    rng = np.random.default_rng(0)
    ps = PrefixSet.build(cm.processes.mess3(), 5)
    acts = {"blocks.0.hook_resid_post": ps.beliefs @ rng.standard_normal((3, 6)) + 0.05 * rng.standard_normal((len(ps), 6))}
    rep = probe_activations(acts, ps, shuffles=4, cv_folds=3)
    s = rep.summary()
    u = rep.layers["blocks.0.hook_resid_post"]["uniform"]
    assert s["shuffle_ratio"] == pytest.approx(u["shuffle_mse_mean"] / u["mse"], rel=1e-9)
    assert s["cv_ratio"] == pytest.approx(u["cv_mse"] / u["mse"], rel=1e-9)
    assert s["shuffle_ratio"] > 10 and 1 <= s["cv_ratio"] < 1.5


class _Hook(torch.nn.Identity):
    """TransformerLens's HookPoint is an identity module: activations are read by forward hooks."""


class FakeHookedTransformer(torch.nn.Module):
    """TransformerLens-shaped stand-in: identity hook modules under TransformerLens's names
    (``hook_embed``, ``hook_pos_embed``, ``blocks.{i}.hook_resid_pre/mid/post``) and no
    ``forward_tree``, where (as in TransformerLens) ``blocks.0.hook_resid_pre = hook_embed +
    hook_pos_embed``."""

    def __init__(self, V=3, ctx=4, d=6, n_layers=2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W_E = torch.nn.Parameter(torch.randn(V, d, generator=g))
        self.W_pos = torch.nn.Parameter(torch.randn(ctx, d, generator=g))
        self.W = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(d, d, generator=g) / d) for _ in range(n_layers))
        self.W_U = torch.nn.Parameter(torch.randn(d, V, generator=g))
        self.hook_embed, self.hook_pos_embed = _Hook(), _Hook()
        self.blocks = torch.nn.ModuleList(torch.nn.ModuleDict({k: _Hook() for k in ("hook_resid_pre", "hook_resid_mid",
                                                                                     "hook_resid_post")})
                                          for _ in range(n_layers))

    def _run(self, tokens):
        L = tokens.shape[1]
        c = {"hook_embed": self.hook_embed(self.W_E[tokens]),
             "hook_pos_embed": self.hook_pos_embed(self.W_pos[:L].expand(tokens.shape[0], L, -1))}
        x = c["hook_embed"] + c["hook_pos_embed"]
        for i, (W, blk) in enumerate(zip(self.W, self.blocks)):
            x = c[f"blocks.{i}.hook_resid_pre"] = blk["hook_resid_pre"](x)
            x = x + torch.cumsum(x, 1) @ W  # causal mixing
            x = c[f"blocks.{i}.hook_resid_mid"] = blk["hook_resid_mid"](x)
            x = x + torch.tanh(x @ W)
            x = c[f"blocks.{i}.hook_resid_post"] = blk["hook_resid_post"](x)
        return x @ self.W_U, c

    def forward(self, tokens):
        return self._run(tokens)[0]


def test_transformer_lens_style_model_reads_the_named_hooks():
    fake = FakeHookedTransformer()
    ps = PrefixSet.build(cm.processes.mess3(), 4)
    names = ["embed", "blocks.0.hook_resid_mid", "blocks.1.hook_resid_post"]
    acts = collect_activations(fake, ps, names, batch_size=10)  # several batches
    with torch.no_grad():
        _, full = fake._run(torch.from_numpy(ps.inputs))
    # "embed" is the residual stream entering block 0: token + position embedding
    np.testing.assert_allclose(acts["embed"], ps.gather(full["blocks.0.hook_resid_pre"].numpy()), atol=1e-6)
    emb = fake.W_E.detach().numpy()[ps.token] + fake.W_pos.detach().numpy()[ps.position]
    np.testing.assert_allclose(acts["embed"], emb, atol=1e-6)
    for n in names[1:]:
        np.testing.assert_allclose(acts[n], ps.gather(full[n].numpy()), atol=1e-6, err_msg=n)


def test_report_without_shuffles_has_a_summary_and_table():
    # found by the hand-computation test: summary() and table() raised KeyError for shuffles=0
    ps = PrefixSet.build(cm.processes.mess3(), 4)
    acts = {"blocks.0.hook_resid_post": np.random.default_rng(1).standard_normal((len(ps), 4))}
    rep = probe_activations(acts, ps, shuffles=0, cv_folds=2)
    s = rep.summary()
    assert s["shuffle_ratio"] is None and np.isfinite(s["mse"])
    assert "n/a" in rep.table()
