"""TransformerLens interop: a HookedTransformer built from a config (no download) trains on
compmech's data sources, converts to and from compmech's transformer with identical outputs,
and gives the same probe metrics as compmech's model with the same weights (to 1e-6)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

tl = pytest.importorskip("transformer_lens")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:  # TransformerLens >= 4 removed HookedTransformer
        pytest.skip("this TransformerLens has no HookedTransformer (needs < 4)", allow_module_level=True)

import compmech as cm  # noqa: E402
from compmech.data import ExactSource, PrefixSet  # noqa: E402
from compmech.interop.transformer_lens import (from_hooked_transformer, hooked_config,  # noqa: E402
                                               model_config_from_tl, to_hooked_transformer)
from compmech.loaders import StreamDataset  # noqa: E402
from compmech.model import ModelConfig, build_model  # noqa: E402
from compmech.probe import collect_activations, probe_activations, probe_model  # noqa: E402
from compmech.train import evaluate  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROC = cm.processes.mess3(0.05, 0.85)
CTX = 6
TL_CFG = dict(n_layers=2, d_model=32, n_ctx=CTX, d_head=8, n_heads=2, d_mlp=64, d_vocab=3, act_fn="relu",
              normalization_type="LN", default_prepend_bos=False)
RESID = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_{k}" for i in range(2) for k in ("mid", "post")]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """A 2-layer d_model-32 model gains nothing from threads, and an OpenMP team on a busy
    2-core machine can make each step 20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(model, batches, steps, lr=3e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _, (x, y) in zip(range(steps), batches):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def trained():
    """A HookedTransformer built from its config, trained 300 steps on ExactSource batches."""
    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(**TL_CFG), move_to_device=False)
    before = evaluate(model, PROC, ctx=CTX)["worst_ratio"]
    src = ExactSource(PROC, CTX, 64, seed=0, background=False)
    it = src.batches(0)
    _train(model, it, 300)
    it.close()
    return model, before


def test_hooked_transformer_learns_from_compmech_data(trained):
    model, before = trained
    after = evaluate(model, PROC, ctx=CTX)
    assert after["worst_ratio"] < 1.03 < before  # exact per-position loss against the optimum
    assert after["mean_loss"] < 1.02 * after["mean_optimal"]


def test_hooked_transformer_trains_from_the_torch_loader():
    torch.manual_seed(1)
    model = HookedTransformer(HookedTransformerConfig(**TL_CFG), move_to_device=False)
    before = evaluate(model, PROC, ctx=CTX)["mean_loss"]
    loader = torch.utils.data.DataLoader(StreamDataset(PROC, CTX, 64, seed=0, steps=150), batch_size=None)
    _train(model, ((b["inputs"], b["targets"]) for b in loader), 150)
    after = evaluate(model, PROC, ctx=CTX)
    assert after["mean_loss"] < before and after["worst_ratio"] < 1.1


def test_converted_model_has_the_same_logits_and_activations(trained):
    tl_model, _ = trained
    model = from_hooked_transformer(tl_model)
    x = torch.from_numpy(cm.sample(PROC, 64, CTX, seed=3)).long()
    with torch.no_grad():
        logits, cache = model(x, return_cache=True)
        tl_logits, tl_cache = tl_model.run_with_cache(x)
    torch.testing.assert_close(logits, tl_logits, rtol=0, atol=2e-5)
    for n in RESID + ["hook_embed", "hook_pos_embed"]:
        torch.testing.assert_close(cache[n], tl_cache[n], rtol=0, atol=2e-5)
    # TransformerLens's ln_final.hook_normalized is before the affine map; compmech's after it
    ln = tl_model.ln_final
    torch.testing.assert_close(cache["ln_final.hook_normalized"], tl_cache["ln_final.hook_normalized"] * ln.w + ln.b,
                               rtol=0, atol=2e-5)


def _max_rel_diff(a, b):
    assert set(a.layers) == set(b.layers)
    worst, n_cmp = 0.0, 0
    for n in a.layers:
        for wn in ("uniform", "prob"):
            for k, v in a.layers[n][wn].items():
                w = b.layers[n][wn][k]
                if isinstance(v, float) and np.isfinite(v):
                    worst = max(worst, abs(v - w) / max(1.0, abs(v)))
                    n_cmp += 1
    assert n_cmp > 100
    return worst


NAMES = RESID + ["ln_final.hook_normalized"]  # TransformerLens's own hook names


def test_probe_metrics_agree_with_compmech_model_float64(trained):
    """Same weights in float64: every probe metric (R², MSE, CV, shuffle control, per layer and
    concatenated, both weightings) agrees to 1e-6. The activations are computed in float64 and
    handed to the probe in float32 by both paths."""
    tl32, _ = trained
    model = from_hooked_transformer(tl32).double()
    tl_model = to_hooked_transformer(model)
    ps = PrefixSet.build(PROC, CTX)
    a = probe_model(tl_model, PROC, prefixes=ps, names=NAMES, cv_folds=3, shuffles=3)
    # compmech's KV-cached prefix-tree forward keeps float32 keys/values: run the plain forward
    acts = collect_activations(model, ps, NAMES, tree=False)
    b = probe_activations(acts, ps, cv_folds=3, shuffles=3)
    assert set(NAMES) <= set(a.layers)
    assert _max_rel_diff(a, b) <= 1e-6
    assert a.summary()["r2_weighted"] > 0.9  # the trained model does represent the beliefs


def test_probe_metrics_agree_with_compmech_model_float32(trained):
    """The trained float32 models through probe_model as they are: float32 rounding differs
    between the two implementations (~1e-7 per activation), so metrics agree to 1e-5."""
    tl_model, _ = trained
    model = from_hooked_transformer(tl_model)
    ps = PrefixSet.build(PROC, CTX)
    kw = dict(prefixes=ps, names=NAMES, cv_folds=3, shuffles=3)
    assert _max_rel_diff(probe_model(tl_model, PROC, **kw), probe_model(model, PROC, **kw)) <= 1e-5


def test_round_trip_is_exact_and_outputs_match_in_float64():
    cfg = ModelConfig(vocab_size=4, ctx=5, out_vocab_size=3, n_layers=2, d_model=16, n_heads=2, d_head=4, d_mlp=24,
                      act="gelu")
    torch.manual_seed(0)
    model = build_model(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    tl_model = to_hooked_transformer(model)
    assert tl_model.cfg.dtype == torch.float64 and tl_model.cfg.d_vocab_out == 3
    x = torch.randint(0, 4, (7, 5))
    torch.testing.assert_close(model(x), tl_model(x), rtol=0, atol=1e-12)
    back = from_hooked_transformer(tl_model)
    assert back.cfg == cfg
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_hooked_config_mirrors_model_config():
    cfg = ModelConfig(vocab_size=5, ctx=7, n_layers=3, d_model=24, n_heads=3, d_head=6, d_mlp=40, layernorm=False)
    h = hooked_config(cfg)
    assert (h.n_layers, h.d_model, h.n_ctx, h.d_head, h.n_heads, h.d_mlp, h.d_vocab) == (3, 24, 7, 6, 3, 40, 5)
    assert h.normalization_type is None and h.act_fn == "relu"
    assert model_config_from_tl(h) == cfg


@pytest.mark.parametrize("cfg, msg", [
    (ModelConfig(arch="gru"), "only transformers"),
    (ModelConfig(act="tanh"), "no TransformerLens equivalent"),
])
def test_unconvertible_models_are_refused(cfg, msg):
    with pytest.raises(ValueError, match=msg):
        to_hooked_transformer(build_model(cfg))


def test_unconvertible_hooked_transformers_are_refused():
    h = HookedTransformerConfig(**{**TL_CFG, "normalization_type": "RMS", "act_fn": "gelu_new"})
    with pytest.raises(ValueError, match="normalization_type='RMS'.*|act_fn='gelu_new'"):
        model_config_from_tl(h)
