"""Probe and trainer throughput (pytest-benchmark). Run: ``pytest benchmarks/bench_probe.py``.

* ``test_full_probe``: all 3**10 Mess3 inputs x 10 positions through the original 4-layer
  d_model-64 transformer, then every probe fit (10 layers + concatenation, 2 weightings, 5-fold
  CV, 10 shuffles). Target: <= 10 s on a quiet 2-core CPU.
* ``test_probe_fits_vs_sklearn``: the fits alone against a baseline measured in the same run:
  scikit-learn ``LinearRegression`` refit per layer / fold / shuffle (the straightforward way),
  on the same deduplicated rows with the same sample weights. The ratio is printed.
* ``test_train_step``: tokens per second of the training step (batch 512, context 10).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import compmech as cm  # noqa: E402
from compmech.data import PrefixSet  # noqa: E402
from compmech.model import ModelConfig, build_model  # noqa: E402
from compmech.probe import collect_activations, default_layers, probe_activations, probe_model  # noqa: E402
from compmech.train import TrainConfig, _make_optimizer, _step_fn, default_threads  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(default_threads())
    proc = cm.processes.mess3()
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    ps = PrefixSet.build(proc, 10)
    return proc, model, ps


def test_full_probe(benchmark, setup):
    proc, model, ps = setup
    rep = benchmark.pedantic(lambda: probe_model(model, proc, prefixes=ps, shuffles=10, cv_folds=5),
                             rounds=2, iterations=1, warmup_rounds=0)
    t = rep.timing
    print(f"\nfull probe: {t['total_s']:.2f} s ({t['activations_s']:.2f} s activations for {t['inputs']:,} inputs, "
          f"{t['fit_s']:.2f} s for {len(rep.layers)} designs x 2 weightings x (fit + 5-fold CV + 10 shuffles))")
    benchmark.extra_info.update({k: v for k, v in t.items() if isinstance(v, (int, float))})
    assert len(rep.layers) == 11


def _sklearn_baseline(acts, ps, folds=5, shuffles=10):
    from sklearn.linear_model import LinearRegression

    Y = ps.beliefs
    M = ps.fold_membership(folds, 0)
    fold = M.argmax(1)
    designs = dict(acts)
    designs["concat"] = np.concatenate([acts[n] for n in acts if n == "embed" or n.endswith("resid_post")], 1)
    for wn in ("uniform", "prob"):
        w = ps.weights(wn)
        for X in designs.values():
            LinearRegression().fit(X, Y, sample_weight=w)
            for f in range(folds):
                tr = fold != f
                LinearRegression().fit(X[tr], Y[tr], sample_weight=w[tr])
            for i in range(shuffles):
                perm = np.random.default_rng(i).permutation(len(Y))
                LinearRegression().fit(X, Y[perm], sample_weight=w)


def test_probe_fits_vs_sklearn(benchmark, setup):
    proc, model, ps = setup
    acts = collect_activations(model, ps, default_layers(model))
    t0 = time.perf_counter()
    _sklearn_baseline(acts, ps)
    base = time.perf_counter() - t0
    benchmark.pedantic(lambda: probe_activations(acts, ps), rounds=2, iterations=1)
    ours = benchmark.stats.stats.min
    print(f"\nprobe fits: compmech {ours:.2f} s vs scikit-learn refits {base:.2f} s -> {base / ours:.1f}x faster")
    benchmark.extra_info.update({"sklearn_s": base, "speedup": base / ours})


def test_train_step(benchmark):
    torch.set_num_threads(default_threads())
    cfg = TrainConfig(batch_size=512)
    torch.manual_seed(0)
    model = build_model(cfg.model_config())
    opt = _make_optimizer(cfg, model, "cpu")
    step = _step_fn(model, opt, cfg, 3)
    seq = torch.from_numpy(cm.sample(cm.processes.mess3(), 512, 11, seed=0)).long()
    x, y = seq[:, :-1], seq[:, 1:]
    for _ in range(3):
        step(x, y)
    benchmark.pedantic(lambda: step(x, y), rounds=30, iterations=1)
    tps = cfg.tokens_per_step / benchmark.stats.stats.median
    print(f"\ntraining step: {benchmark.stats.stats.median * 1e3:.1f} ms median, {tps:,.0f} tokens/s "
          f"({torch.get_num_threads()} threads)")
    benchmark.extra_info["tokens_per_s"] = tps
