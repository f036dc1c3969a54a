"""One forward pass: hook points are identity modules named by ``named_modules()``, and the
prefix-tree walk (``Transformer.forward_tree``) runs the model's own layers."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import compmech as cm  # noqa: E402
from compmech.data import PrefixSet  # noqa: E402
from compmech.model import HookPoint, ModelConfig, Transformer, build_model, hook_names  # noqa: E402
from compmech.probe import collect_activations, probe_model, tree_forward  # noqa: E402


def tiny(**kw):
    base = dict(vocab_size=3, ctx=5, n_layers=2, d_model=16, n_heads=2, d_head=4, d_mlp=32)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("arch", ["transformer", "gru", "lstm"])
@pytest.mark.parametrize("layernorm", [True, False])
def test_hook_points_are_named_modules(arch, layernorm):
    cfg = tiny(arch=arch, layernorm=layernorm)
    m = build_model(cfg)
    points = [n for n, mod in m.named_modules() if isinstance(mod, HookPoint)]
    assert points == hook_names(cfg)
    assert list(m.hook_dict) == points
    assert all("hook" not in k for k in m.state_dict())  # checkpoints unchanged


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_forward_hooks_on_hook_points_see_the_cache(arch):
    torch.manual_seed(0)
    m = build_model(tiny(arch=arch))
    x = torch.randint(0, 3, (4, 5))
    seen = {}
    h = m.hook_dict["blocks.1.hook_resid_post"].register_forward_hook(lambda mod, i, o: seen.setdefault("x", o))
    _, cache = m(x, return_cache=True)
    h.remove()
    assert torch.equal(seen["x"], cache["blocks.1.hook_resid_post"])


def _tree_vs_full(model, ps, names):
    model.eval()
    tree, logits = tree_forward(model, ps, names, return_logits=True)
    full = collect_activations(model, ps, names, tree=False)
    with torch.no_grad():
        ref = model(torch.from_numpy(ps.inputs)).numpy()
    for n in names:
        np.testing.assert_allclose(tree[n], full[n], atol=2e-6, err_msg=n)
    np.testing.assert_allclose(logits, ps.gather(ref), atol=2e-6)


def test_tree_walk_follows_interventions_on_hook_points():
    # An intervention through a hook point changes the tree walk exactly as the full forward:
    # the walk runs the model's own modules, not a copy of them.
    torch.manual_seed(2)
    model = build_model(tiny())
    model.hook_dict["blocks.0.hook_resid_mid"].register_forward_hook(lambda mod, i, o: 0.5 * o)
    ps = PrefixSet.build(cm.processes.mess3(), 5)
    _tree_vs_full(model, ps, ["embed", "blocks.0.hook_resid_mid", "blocks.1.hook_resid_post"])


def test_tree_walk_follows_a_changed_module():
    # Swapping the MLP activation (or any module) changes both paths the same way.
    torch.manual_seed(3)
    model = build_model(tiny(act="gelu"))
    for blk in model.blocks:
        blk.ln2 = torch.nn.Dropout(0.5)  # identity in eval mode, but a different module
        blk.act = torch.tanh
    ps = PrefixSet.build(cm.processes.mess3(), 5)
    _tree_vs_full(model, ps, ["blocks.1.hook_resid_post", "ln_final.hook_normalized"])


def test_subclass_outside_compmech_uses_tree_and_names():
    # No module-name sniffing: a subclass defined elsewhere gets the tree walk and the "embed" alias.
    class MyTransformer(Transformer):
        pass

    torch.manual_seed(4)
    model = MyTransformer(tiny())
    ps = PrefixSet.build(cm.processes.mess3(), 5)
    acts = collect_activations(model, ps, ["embed", "blocks.1.hook_resid_post"])
    full = collect_activations(model, ps, ["embed", "blocks.1.hook_resid_post"], tree=False)
    for n in acts:
        np.testing.assert_allclose(acts[n], full[n], atol=2e-6)
    rep = probe_model(model, cm.processes.mess3(), shuffles=2)
    assert "embed" in rep.layers


def test_forward_tree_direct_and_errors():
    torch.manual_seed(5)
    model = build_model(tiny()).eval()
    ps = PrefixSet.build(cm.processes.mess3(), 4)
    logits, acts = model.forward_tree(ps.token, ps.parent, ps.position, ["hook_embed"])
    assert logits.shape == (len(ps), 3) and acts["hook_embed"].shape == (len(ps), 16)
    with pytest.raises(ValueError, match="unknown activation"):
        model.forward_tree(ps.token, ps.parent, ps.position, ["nope"])
    with pytest.raises(ValueError, match="positions must be in"):
        model.forward_tree(ps.token, ps.parent, ps.position + 5)
    bad_parent = ps.parent.copy()
    bad_parent[ps.position == 2] = np.flatnonzero(ps.position == 0)[0]
    with pytest.raises(ValueError, match="parent"):
        model.forward_tree(ps.token, bad_parent, ps.position)


def test_forward_tree_runs_a_float64_model():
    """The tree walk's key/value cache follows the model's precision (a .double() model works)."""
    import numpy as np
    import torch

    import compmech as cm
    from compmech.data import PrefixSet
    from compmech.model import ModelConfig, build_model
    from compmech.probe import collect_activations

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=3, ctx=4, d_model=8, n_heads=1, d_head=8, d_mlp=16, n_layers=1)).double()
    ps = PrefixSet.build(cm.processes.mess3(), 4)
    names = ["blocks.0.hook_resid_post"]
    tree = collect_activations(model, ps, names)
    full = collect_activations(model, ps, names, tree=False)
    np.testing.assert_allclose(tree[names[0]], full[names[0]], atol=1e-6)
