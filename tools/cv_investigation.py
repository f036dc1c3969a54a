"""Reproduce the numbers behind the README's account of the mixture's CV/in-sample ratio.

    python tools/cv_investigation.py runs/mixture            # a finished `compmech experiment mixture`
    python tools/cv_investigation.py runs/mess3              # the demo's run, for contrast

Prints, for the run's final residual stream and the probability-weighted probe:
0. :func:`compmech.cv_diagnosis.diagnose_cv`'s headline numbers (also for a `compmech demo` run,
   whose metrics.json has no diagnosis),
1. the CV ratio with folds by the first g tokens for every g (g = context: CV by single input),
2. the probe on the top-k principal components of the activations (fewer features),
3. the CV ratio and the share of its excess from the three heaviest-excess subtrees at each
   training snapshot,
4. from the beliefs alone (no model), the mean distance from the rows of the subtrees that
   start with a run of one symbol (000, 111, ...) to the nearest training belief of the same
   length, against the other subtrees' — for the run's process and for the demo's Mess3,
5. the same at *any* length, and the held-out rows' CV/in-sample ratio by that distance,
6. the CV excess by prefix length under both weightings (the demo's target is the unweighted one).
Everything is deterministic; about a minute on one core.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def _final(model):
    from compmech.probe import default_layers

    return [n for n in default_layers(model) if n.endswith("hook_resid_post")][-1]


def _acts(model, ps, layer):
    from compmech.probe import collect_activations

    return collect_activations(model, ps, [layer])[layer]


def summary(X, ps):
    from compmech.cv_diagnosis import diagnose_cv

    d = diagnose_cv(X, ps)
    h, pdp, n = d["held_out_distance"], d["position_dependence"], d["ridge"]["nested"]
    print(f"0. CV/in-sample {d['cv_mse'] / d['in_sample_mse']:.3f}; n_eff {d['n_eff']:.0f} rows for {d['features']} "
          f"features; top 3 subtrees ({', '.join(r['subtree'] for r in d['by_subtree'][:3])}) carry "
          f"{d['top3_excess_share']:.0%} of the excess; same-length belief distance {h['same_length_top3']:.4f} vs "
          f"{h['same_length_rest']:.4f}; Mahalanobis^2 {h['mahalanobis2_top3']:.0f} vs {h['mahalanobis2_rest']:.0f}; "
          f"nested-CV ridge {n['cv_ratio']:.3f} (alphas {n['alpha_per_fold']}); activation distance^2 of the same "
          f"belief at adjacent lengths {pdp['adjacent']['activation_distance2']:.4f} ({pdp['adjacent']['pairs']} pairs) "
          f"vs at one length {pdp['same']['activation_distance2']:.4f} ({pdp['same']['pairs']} pairs): "
          f"{pdp['ratio']:.1f}x")


def by_group_depth(X, ps, layer):
    from compmech.probe_analysis import cv_ratio_by_group_depth

    n_in = ps.inputs.shape[1] - (1 if ps.bos else 0)
    out = cv_ratio_by_group_depth({layer: X}, ps, range(1, n_in + 1), layer=layer)
    print("1. CV/in-sample by the first g tokens: " + ", ".join(f"g={g} {v['cv_ratio']:.3f}" for g, v in out.items()))


def pca_path(X, ps, ks=(4, 8, 16, 32, 48)):
    from compmech.probe import probe_activations

    keep = ps.length >= 1
    w = ps.weights("prob")[keep]
    Xk = np.asarray(X, np.float64)[keep]
    Xc = Xk - (w / w.sum()) @ Xk
    ev, V = np.linalg.eigh((Xc * w[:, None]).T @ Xc)
    V = V[:, ::-1]
    full = np.zeros((len(ps), X.shape[1]))
    print("2. probe on the top-k principal components (prob-weighted): k, in-sample MSE, CV MSE, ratio")
    for k in (*ks, X.shape[1]):
        full[keep, :k] = Xc @ V[:, :k]
        r = probe_activations({"x": full[:, :k].copy()}, ps, shuffles=0, weightings=("prob",), concat=[]).layers["x"]["prob"]
        print(f"   {k:3d}  {r['mse']:.3e}  {r['cv_mse']:.3e}  {r['cv_ratio']:.3f}")


def snapshots(run_dir, ps, layer):
    from compmech.cv_diagnosis import diagnose_cv
    from compmech.train import load_model

    print("3. over training: tokens, CV/in-sample, share of the excess from the top 3 subtrees (which)")
    for p in sorted((run_dir / "checkpoints").glob("step_*.pt"))[-3:]:  # the last one is the final model
        model, cfg, ck = load_model(p)
        d = diagnose_cv(_acts(model, ps, layer), ps, alphas=(0.0,))
        tokens = int(p.stem.split("_")[1]) * cfg.batch_size * cfg.ctx
        print(f"   {tokens:>11,}  {d['cv_mse'] / d['in_sample_mse']:.3f}  {d['top3_excess_share']:.2f} "
              f"({', '.join(r['subtree'] for r in d['by_subtree'][:3])})")


def any_length_neighbours(X, ps, bins=(0, 1e-3, 3e-3, 1e-2, 3e-2, np.inf)):
    """CV/in-sample of held-out rows binned by the distance to the nearest training belief at
    *any* length: the runs-of-one-symbol subtrees against the rest."""
    from scipy.spatial import cKDTree

    keep = ps.length >= 1
    Y, lk, V, g = ps.beliefs[keep], ps.length[keep], ps.process.vocab_size, ps.group_depth
    w, M, e_in, e_cv = _row_cv(X, ps, "prob")
    dist = np.full(len(Y), np.nan)
    for f in range(M.shape[1]):
        ho = (M[:, f] == 1) & (lk >= g)
        dist[ho] = cKDTree(Y[M[:, f] == 0]).query(Y[ho])[0]
    runs = np.isin(ps.group[keep], [sum(s * V ** i for i in range(g)) for s in range(V)]) & (lk >= g)
    print("5. held-out rows by the nearest training belief at any length: mean distance, then CV/in-sample per bin")
    for label, sel in (("runs of one symbol", runs), ("other subtrees", ~runs & (lk >= g))):
        cells = []
        for lo, hi in zip(bins[:-1], bins[1:]):
            s = sel & (dist >= lo) & (dist < hi)
            if s.any():
                cells.append(f"[{lo:g}, {hi:g}) {w[s].sum() / w[sel].sum():.2f} of the mass: {(w[s] @ e_cv[s]) / (w[s] @ e_in[s]):.2f}")
        print(f"   {label}: {w[sel] @ dist[sel] / w[sel].sum():.4f}; " + "; ".join(cells))


def _row_cv(X, ps, weighting):
    """Per-row in-sample and CV squared errors of the probe (the probe's own folds), with the rows' weights."""
    from compmech.cv_diagnosis import _fit, _fold_moments, _row_errors

    keep = ps.length >= 1
    Y = ps.beliefs[keep]
    w = ps.weights(weighting)[keep]
    M = ps.fold_membership(5, 0, weighting)[keep]
    Xc, fm = _fold_moments(np.asarray(X, np.float64)[keep], Y, w, M)
    e_in, e_cv = _row_errors(Xc, Y, _fit(fm, 1e-10, 0.0)), np.zeros(len(Y))
    for f in range(M.shape[1]):
        e_cv += M[:, f] * _row_errors(Xc, Y, _fit([m for j, m in enumerate(fm) if j != f], 1e-10, 0.0))
    return w, M, e_in, e_cv


def by_length(X, ps):
    """Where along the prefix the CV excess sits, under each weighting."""
    lk = ps.length[ps.length >= 1]
    print("6. by prefix length: share of the CV excess / CV-in-sample of the rows of that length")
    for wn in ("prob", "uniform"):
        w, _, e_in, e_cv = _row_cv(X, ps, wn)
        ex = w * (e_cv - e_in)
        print(f"   {wn:7s} (all {(w @ e_cv) / (w @ e_in):.3f}): " + "  ".join(
            f"{d}: {ex[lk == d].sum() / ex.sum():.2f}/{(w[lk == d] @ e_cv[lk == d]) / (w[lk == d] @ e_in[lk == d]):.2f}"
            for d in np.unique(lk)))


def run_distances(proc, label, ctx):
    from compmech.cv_diagnosis import held_out_distance
    from compmech.data import PrefixSet

    ps = PrefixSet.build(proc, ctx)
    keep = ps.length >= 1
    M = ps.fold_membership(5, 0, "prob")[keep]
    dist = held_out_distance(ps, M, keep)
    w, lk, g, V = ps.probs[keep], ps.length[keep], ps.group_depth, proc.vocab_size
    runs = np.isin(ps.group[keep], [sum(s * V ** i for i in range(g)) for s in range(V)])
    print(f"4. {label}: each run-of-one-symbol subtree holds {ps.probs[(ps.length == g)][0]:.3f} of the mass; "
          "same-length nearest training belief by length (runs | other subtrees)")
    for d in range(g, ctx + 1):
        a, b = runs & (lk == d), ~runs & (lk == d)
        print(f"   {d:2d}  {w[a] @ dist[a] / w[a].sum():.4f} | {w[b] @ dist[b] / w[b].sum():.4f}")


def main(run_dir):
    from compmech.data import PrefixSet
    from compmech.processes import get
    from compmech.train import load_model

    run_dir = Path(run_dir)
    model, cfg, _ = load_model(run_dir / "checkpoint.pt")
    proc = cfg.make_process()
    ps = PrefixSet.build(proc, cfg.ctx, bos=cfg.bos)
    layer = _final(model)
    X = _acts(model, ps, layer)
    print(f"{run_dir}: {proc.name}, ctx {cfg.ctx}, layer {layer}, {len(ps):,} prefixes")
    summary(X, ps)
    by_group_depth(X, ps, layer)
    pca_path(X, ps)
    snapshots(run_dir, ps, layer)
    run_distances(proc, proc.name or "process", cfg.ctx)
    run_distances(get("mess3", x=0.05, alpha=0.85), "demo's Mess3", cfg.ctx)
    any_length_neighbours(X, ps)
    by_length(X, ps)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/cv_investigation.py RUN_DIR")
    main(sys.argv[1])
