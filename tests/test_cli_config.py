"""The CLI trains exactly the configuration that was asked for: the demo's documented defaults,
a TOML/JSON file (including its [model] table), --set overrides and --resume. The training
call is intercepted, so these tests are instant and check the parsed configuration itself."""
import importlib
import importlib.util
import json
import sys

import pytest

torch = pytest.importorskip("torch")

import compmech.train  # noqa: E402
from compmech.cli import build_parser, main  # noqa: E402
from compmech.model import ModelConfig  # noqa: E402


class _Stop(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    """Replace compmech.train.train (wherever a compmech module bound it) with a recorder that
    stops the command before any training."""
    seen = {}
    real = compmech.train.train

    def fake(cfg, run_dir=None, **kw):
        seen.update(cfg=cfg, run_dir=run_dir, kw=kw)
        raise _Stop

    build_parser()  # imports every command module
    for extra in ("compmech.experiment",):  # modules a command may import lazily
        if importlib.util.find_spec(extra) is not None:
            importlib.import_module(extra)
    for name, mod in list(sys.modules.items()):
        if name.startswith("compmech") and getattr(mod, "train", None) is real:
            monkeypatch.setattr(mod, "train", fake)

    def run(argv):
        try:
            main(argv)
        except _Stop:
            pass
        assert "cfg" in seen, f"{argv} did not reach training"
        return seen["cfg"], seen["kw"]

    return run


def test_demo_defaults_are_the_documented_experiment(captured, tmp_path):
    cfg, kw = captured(["demo", "--out", str(tmp_path / "d"), "--no-progress"])
    # README: Mess3 (x = 0.05, alpha = 0.85), 10 M predicted tokens, next-token-distribution
    # targets, AdamW lr 3e-3, batch 512, warmup 2 % + cosine, exact-mode batches, context 10
    assert cfg.process == "mess3" and cfg.process_params == {"x": 0.05, "alpha": 0.85}
    assert cfg.tokens == 10_000_000 and cfg.targets == "distribution" and cfg.data == "exact"
    assert cfg.optimizer == "adamw" and cfg.lr == 3e-3 and cfg.batch_size == 512
    assert cfg.schedule == "cosine" and cfg.warmup == 0.02 and cfg.ctx == 10 and not cfg.bos
    assert cfg.snapshots > 0 and cfg.eval_every > 0
    # the original work's transformer: 4 layers, d_model 64, one head of d_head 8, d_mlp 256, ReLU, LayerNorm
    m = cfg.model_config()
    assert m == ModelConfig(vocab_size=3, ctx=10, arch="transformer", n_layers=4, d_model=64, n_heads=1, d_head=8,
                            d_mlp=256, act="relu", layernorm=True)
    assert kw.get("resume", False) is False


def test_demo_rrxor_and_overrides(captured, tmp_path):
    cfg, _ = captured(["demo", "--process", "rrxor", "--out", str(tmp_path / "r"), "--tokens", "2e5",
                       "--set", "targets=tokens", "--set", "model.n_layers=2", "--lr", "0.01"])
    assert cfg.process == "rrxor" and cfg.tokens == 200_000 and cfg.targets == "tokens" and cfg.lr == 0.01
    assert cfg.model_config().n_layers == 2 and cfg.model_config().d_model == 64


@pytest.mark.parametrize("command", ["demo", "train"])
def test_resume_flag_reaches_the_trainer(captured, tmp_path, command):
    _, kw = captured([command, "--out", str(tmp_path / "x"), "--resume", "--no-progress"])
    assert kw.get("resume") is True
    _, kw = captured([command, "--out", str(tmp_path / "y"), "--no-progress"])
    assert kw.get("resume", False) is False


def test_toml_config_with_model_table(captured, tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('process = "golden_mean"\nctx = 6\ntokens = 4800\nbatch_size = 16\nlr = 0.004\n'
                 'targets = "distribution"\n'
                 '[process_params]\np = 0.3\n'
                 '[model]\nn_layers = 3\nd_model = 24\nd_head = 6\nd_mlp = 40\nact = "gelu"\n')
    cfg, _ = captured(["train", "--config", str(p), "--out", str(tmp_path / "r"), "--set", "seed=5"])
    assert cfg.process == "golden_mean" and cfg.process_params == {"p": 0.3}
    assert (cfg.ctx, cfg.tokens, cfg.batch_size, cfg.lr, cfg.seed) == (6, 4800, 16, 0.004, 5)
    assert cfg.targets == "distribution"
    m = cfg.model_config()
    assert (m.n_layers, m.d_model, m.d_head, m.d_mlp, m.act, m.ctx, m.vocab_size) == (3, 24, 6, 40, "gelu", 6, 2)


def test_json_config_and_set_overrides_nested_fields(captured, tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"model": {"d_model": 32, "n_layers": 1}, "ema": 0.99}))
    cfg, _ = captured(["train", "--config", str(p), "--out", str(tmp_path / "r"),
                       "--set", "model.d_model=48", "--set", "bos=true", "--process", "even", "-p", "p=0.4"])
    assert cfg.model == {"d_model": 48, "n_layers": 1} and cfg.ema == 0.99 and cfg.bos is True
    assert cfg.process == "even" and cfg.process_params == {"p": 0.4}
    assert cfg.model_config().vocab_size == 3 and cfg.model_config().out_vocab_size == 2
