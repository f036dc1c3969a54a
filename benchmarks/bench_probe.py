"""Probe and trainer throughput (pytest-benchmark). Run: ``pytest benchmarks/bench_probe.py``.

* ``test_full_probe``: all 3**10 Mess3 inputs x 10 positions through the original 4-layer
  d_model-64 transformer, then every probe fit (10 layers + concatenation, 2 weightings, 5-fold
  CV, 10 shuffles). Target: <= 10 s on a quiet 2-core CPU.
* ``test_probe_fits_vs_sklearn``: the fits alone against a baseline measured in the same run:
  scikit-learn ``LinearRegression`` refit per layer / fold / shuffle (the straightforward way),
  on the same deduplicated rows with the same sample weights. The ratio is printed.
* ``test_train_step``: tokens per second of the training step (batch 512, context 10).
* ``test_probe_memory``: peak RSS of the same full probe, split into collection and fits, as a
  multiple of the activations it holds (227 MB: 10 layers x 88,572 rows x 64 float32), in a fresh
  process; once with glibc's default allocator and once with every large buffer mapped and
  unmapped (``MALLOC_MMAP_THRESHOLD_``), which shows the live peak that reuse of freed heap
  memory otherwise hides. Run: ``pytest benchmarks/bench_probe.py -k memory -s``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
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


_MEMORY_SCRIPT = """
import gc, json, time, torch
import compmech as cm
from compmech.data import PrefixSet
from compmech.model import ModelConfig, build_model
from compmech.probe import collect_activations, default_layers, probe_activations
from compmech.train import default_threads

def rss():
    d = {l.split(":")[0]: int(l.split()[1]) << 10 for l in open("/proc/self/status")
         if l.startswith(("VmRSS", "VmHWM"))}
    return d["VmRSS"], d["VmHWM"]

def phase(fn):
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS
    before, t0 = rss()[0], time.perf_counter()
    out = fn()
    return out, rss()[1] - before, time.perf_counter() - t0

torch.set_num_threads(default_threads())
torch.manual_seed(0)
model = build_model(ModelConfig())
ps = PrefixSet.build(cm.processes.mess3(), 10)
small = PrefixSet.build(cm.processes.mess3(), 4)
probe_activations(collect_activations(model, small), small)  # lazy imports outside the measurement
acts, collect_extra, collect_s = phase(lambda: collect_activations(model, ps, default_layers(model)))
rep, fit_extra, fit_s = phase(lambda: probe_activations(acts, ps, shuffles=10, cv_folds=5))
print(json.dumps({"acts": sum(a.nbytes for a in acts.values()), "collect": collect_extra, "fit": fit_extra,
                  "predictions": sum(p.nbytes for d in rep.predictions.values() for p in d.values()),
                  "collect_s": collect_s, "fit_s": fit_s}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_probe_memory():
    for label, extra_env in (("glibc default", {}),
                             ("MALLOC_MMAP_THRESHOLD_=131072", {"MALLOC_MMAP_THRESHOLD_": "131072"})):
        r = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True,
                           env=dict(os.environ, **extra_env), timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        m = json.loads(r.stdout.splitlines()[-1])
        A = m["acts"]
        print(f"\n{label}: activations {A / 1e6:.0f} MB; collection peak +{m['collect'] / 1e6:.0f} MB = "
              f"{m['collect'] / A:.2f}x the activations ({m['collect_s']:.1f} s); fits peak +{m['fit'] / 1e6:.0f} MB "
              f"= {m['fit'] / A:.2f}x beyond them, of which {m['predictions'] / 1e6:.0f} MB are the report's "
              f"predictions ({m['fit_s']:.1f} s); whole probe peak {(max(m['collect'], A + m['fit'])) / A:.2f}x")
