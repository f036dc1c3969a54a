"""Cost of the periodic checkpoints against the training step, measured in the same run.
Run: ``pytest benchmarks/bench_checkpoint.py -s``.

The demo's model (4 layers, d_model 64) with its AdamW state is checkpointed atomically
(temporary file, fsync, rename). The printed ratio says how many training steps one checkpoint
costs, and the overhead at the default interval (``save_seconds = 60``) is that cost over a
minute of training: it must stay far below the run-to-run noise of tokens/s (~1 %)."""
from __future__ import annotations

import statistics
import time

import pytest

torch = pytest.importorskip("torch")

from compmech import experiment  # noqa: E402
from compmech.data import make_source  # noqa: E402
from compmech.model import build_model  # noqa: E402
from compmech.train import _make_optimizer, _step_fn, default_threads, save_checkpoint  # noqa: E402


def _median_time(fn, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def test_checkpoint_cost_vs_training_step(tmp_path):
    cfg = experiment.default_config("mess3")
    torch.set_num_threads(default_threads())
    proc = cfg.make_process()
    torch.manual_seed(0)
    model = build_model(cfg.model_config(proc))
    opt = _make_optimizer(cfg, model, "cpu")
    step = _step_fn(model, opt, cfg, proc.vocab_size)
    batches = make_source(cfg.data, proc, cfg.ctx, cfg.batch_size, seed=0, background=False,
                          soft_targets=cfg.targets == "distribution").batches(0)
    for _ in range(3):  # warm-up
        step(*next(batches))
    t_step = _median_time(lambda: step(*next(batches)), 8)
    path = tmp_path / "checkpoint.pt"
    extra = {"acc_loss": 0.0, "acc_count": 0}
    t_ck = _median_time(lambda: save_checkpoint(path, model, cfg, step=1, optimizer=opt, extra=extra), 7)
    overhead = t_ck / cfg.save_seconds
    print(f"\ntraining step {t_step * 1e3:.1f} ms, checkpoint {t_ck * 1e3:.1f} ms ({path.stat().st_size / 1e6:.2f} MB) "
          f"= {t_ck / t_step:.2f} steps; overhead at one checkpoint per {cfg.save_seconds:g} s: {overhead:.3%}")
    assert overhead < 0.01
