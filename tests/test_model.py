import pytest

torch = pytest.importorskip("torch")

from compmech.model import ModelConfig, RecurrentModel, Transformer, build_model, hook_names  # noqa: E402


def tiny(**kw):
    base = dict(vocab_size=3, ctx=6, n_layers=2, d_model=16, d_head=4, d_mlp=32)
    base.update(kw)
    return ModelConfig(**base)


def test_defaults_are_the_original_architecture():
    cfg = ModelConfig()
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.act, cfg.ctx) == (4, 64, 1, 8, 256, "relu", 10)
    m = build_model(cfg)
    assert isinstance(m, Transformer)
    # embedding 3x64 + pos 10x64 + 4 blocks + final LN + unembed
    per_block = 2 * 2 * 64 + (64 * 24 + 24) + (8 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64)
    assert sum(p.numel() for p in m.parameters()) == 3 * 64 + 10 * 64 + 4 * per_block + 2 * 64 + 64 * 3 + 3


@pytest.mark.parametrize("arch", ["transformer", "gru", "lstm"])
def test_cache_names_and_shapes(arch):
    cfg = tiny(arch=arch)
    m = build_model(cfg)
    x = torch.randint(0, 3, (5, 6))
    logits, cache = m(x, return_cache=True)
    assert logits.shape == (5, 6, 3)
    assert set(cache) == set(hook_names(cfg))
    for v in cache.values():
        assert v.shape == (5, 6, 16)
    # names filter
    _, c2 = m(x, return_cache=True, names=["blocks.1.hook_resid_post"])
    assert list(c2) == ["blocks.1.hook_resid_post"]
    assert torch.equal(c2["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_post"])
    # plain call equals cached call
    assert torch.allclose(m(x), logits)


def test_residual_stream_bookkeeping():
    m = build_model(tiny())
    x = torch.randint(0, 3, (4, 6))
    logits, c = m(x, return_cache=True)
    assert torch.allclose(c["hook_embed"] + c["hook_pos_embed"], c["blocks.0.hook_resid_pre"])
    assert torch.equal(c["blocks.0.hook_resid_post"], c["blocks.1.hook_resid_pre"])
    assert torch.allclose(m.ln_final(c["blocks.1.hook_resid_post"]), c["ln_final.hook_normalized"])
    assert torch.allclose(m.unembed(c["ln_final.hook_normalized"]), logits)


@pytest.mark.parametrize("arch", ["transformer", "gru", "lstm"])
def test_causal(arch):
    torch.manual_seed(0)
    m = build_model(tiny(arch=arch))
    x = torch.randint(0, 3, (8, 6))
    y = x.clone()
    y[:, 4:] = (y[:, 4:] + 1) % 3
    _, cx = m(x, return_cache=True)
    _, cy = m(y, return_cache=True)
    for name in cx:
        assert torch.allclose(cx[name][:, :4], cy[name][:, :4], atol=1e-6), name
        if name != "hook_pos_embed":
            assert not torch.allclose(cx[name][:, 4:], cy[name][:, 4:]), name


def test_shorter_inputs_match_prefix():
    m = build_model(tiny())
    x = torch.randint(0, 3, (3, 6))
    assert torch.allclose(m(x[:, :3]), m(x)[:, :3], atol=1e-6)


def test_bad_inputs():
    m = build_model(tiny())
    with pytest.raises(ValueError, match="exceeds the model context"):
        m(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(TypeError, match="integers"):
        m(torch.zeros(2, 3))
    with pytest.raises(TypeError):
        m([[0, 1]])
    with pytest.raises(ValueError, match="d_model"):
        ModelConfig(d_model=0)
    with pytest.raises(ValueError, match="arch"):
        ModelConfig(arch="mamba")
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"d_model": 8, "bogus": 1})


def test_config_roundtrip_and_bos_vocab():
    cfg = tiny(vocab_size=4, out_vocab_size=3)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    m = build_model(cfg.to_dict())
    assert m(torch.full((2, 6), 3)).shape == (2, 6, 3)
    assert isinstance(build_model(tiny(arch="gru")), RecurrentModel)
