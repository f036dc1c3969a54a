"""The follow-up experiments (quantum GHMMs, factored processes, in-context learning from
mixtures), each one :func:`compmech.experiment.run` plus an analysis:

    from compmech import followup
    cfg = followup.default_config("factored", tokens=2_000_000)
    exp = followup.run("factored", cfg, "runs/factored")    # train, probe, analyse, figures, metrics.json
    print(followup.report(exp))

``compmech experiment NAME`` is the command. ``mess3`` and ``rrxor`` are ``compmech demo``
unchanged. The others add to ``metrics.json`` an ``analysis`` block and a ``targets`` block:

* ``tom_quantum``, ``post_quantum``, ``fanizza`` (GHMMs of arXiv:2507.07432): probes onto the
  GHMM belief in its own ``w``-normalised coordinates and, where the GHMM has a classical
  presentation on the same states, onto that one's beliefs; R² of every layer, the best layer
  and all layers concatenated (in-sample and CV); figure ``ghmm_geometry``.
* ``factored`` (arXiv:2602.02385; default Mess3 ⊗ Mess3 with different parameters): per-factor
  and joint belief probes, principal angles between the factors' probe subspaces, and the
  effective dimension of the activations and of the joint probe's predictions against
  ``Σ(S_i - 1)`` and ``∏S_i - 1``.
* ``mixture`` (arXiv:2505.18373; default three Mess3 variants): loss per position against the
  exact optimum and each component's entropy rate, the loss on each component's sequences
  (``component_loss``); probes of the component posterior and of the within-component beliefs.

Every analysis also records ``cv_split``: the final layer's CV/in-sample ratio with the CV
folds split by the first ``g`` tokens for ``g`` from the probe's own depth up (a diagnostic;
the target stays the probe's own split), and ``cv_split.diagnosis``
(:func:`compmech.cv_diagnosis.diagnose_cv`: which held-out subtrees carry the CV excess, how far
their beliefs lie from the training beliefs, a ridge probe chosen by nested CV, and how
position-dependent the representation is), drawn in figure ``cv_diagnosis``.

Processes with too many contexts to enumerate (the product's 9**10) are probed on sampled
prefixes (:func:`compmech.probe_analysis.choose_prefixes`); ``metrics["probe"]["prefixes"]``
records which mode ran.
"""
from __future__ import annotations

import math

import numpy as np

from . import experiment as _ex
from .experiment import _COMMON

__all__ = ["EXPERIMENTS", "FOLLOWUP_TARGETS", "default_config", "run", "report", "analyse"]

_MESS3_A = {"name": "mess3", "x": 0.05, "alpha": 0.85}
_MESS3_B = {"name": "mess3", "x": 0.15, "alpha": 0.6}
_MESS3_C = {"name": "mess3", "x": 0.3, "alpha": 0.95}

# Defaults: the demo's model and trainer; processes with many contexts stream fresh samples.
EXPERIMENTS = {
    "mess3": dict(_ex.DEFAULTS["mess3"]),
    "rrxor": dict(_ex.DEFAULTS["rrxor"]),
    # tom_quantum: beta/alpha = 2, not the paper's sqrt(51). With tan(phi) = beta/alpha a token moves the
    # (u, v) belief coordinates by sin(2 phi) and keeps cos(2 phi) of the other one: sqrt(51) gives
    # sin = 0.27, so P(x | past) stays within 0.25 +- 0.07 and the optimum is 0.1-0.6% below ln 4: a model
    # ignoring its past meets the 1.005 loss target at positions 0-5, so that target tests little
    # (the network still learns the belief at 10 M tokens: README). 2 gives sin = 0.8, cos = -0.6
    # (optimum 8-13% below ln 4). The geometry is as rich as the paper's: for both, the distinct beliefs
    # after d tokens number (3**(d+1) - 1) / 2 (4, 13, 40, ..., 9841 at d = 8), never closing into a
    # finite set, and cos(2 phi) (-3/5 here, -25/26 there) makes 2 phi an irrational multiple of pi.
    # ctx 8: 4**8 inputs, all probed (exhaustive).
    "tom_quantum": {"process": "tom_quantum", "process_params": {"alpha": 1.0, "beta": 2.0},
                    **_COMMON, "ctx": 8, "data": "stream"},
    "post_quantum": {"process": "post_quantum", "process_params": {"log_alpha": 1.0, "beta": 0.5}, **_COMMON},
    # fanizza: ctx 16 (2**16 inputs, all probed), not 10. The process renews at every 0, so a belief
    # is the run of 1s since the last 0; at ctx 10 (1,024 inputs) the long-run beliefs occur at few
    # positions, almost all inside a few CV subtrees (01111, 11111), and the probe's CV/in-sample
    # ratio was 1.69 (README); a longer context shows each belief at many positions and subtrees.
    "fanizza": {"process": "fanizza", "process_params": {"alpha": 2000.0, "lam": 0.49}, **_COMMON, "ctx": 16},
    # factored: 5 M tokens: every target is met with margin (README: 2 M already did), and it leaves
    # headroom in the 6-minute budget (the 5 M command took 156 CPU-seconds with 1 thread)
    "factored": {"process": "product", "process_params": {"processes": [_MESS3_A, _MESS3_B]}, **_COMMON,
                 "tokens": 5_000_000, "data": "stream"},
    "mixture": {"process": "mixture", "process_params": {"processes": [_MESS3_A, _MESS3_B, _MESS3_C]}, **_COMMON},
}
KINDS = {"tom_quantum": "ghmm", "post_quantum": "ghmm", "fanizza": "ghmm", "factored": "factored",
         "mixture": "mixture"}

# Issue 13's targets (every follow-up experiment, plus the experiment's own).
FOLLOWUP_TARGETS = {"loss_ratio_max": 1.005, "shuffle_ratio_min": 10.0, "cv_ratio_max": 1.3,
                    "factor_cv_r2_min": 0.98, "posterior_cv_r2_min": 0.95}


def default_config(name: str, **overrides):
    """The :class:`~compmech.train.TrainConfig` of experiment ``name`` (see :data:`EXPERIMENTS`)."""
    from .train import TrainConfig

    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    return TrainConfig.from_dict({**EXPERIMENTS[name], **overrides})


def kind_of(cfg) -> str | None:
    """Which analysis a config gets: by its process (so a configured mixture or product works too)."""
    return {"product": "factored", "mixture": "mixture"}.get(cfg.process) or (
        "ghmm" if cfg.make_process().is_generalized else None)


def run(name: str, cfg=None, run_dir=None, **kw):
    """Run experiment ``name`` (config ``cfg``, default :func:`default_config`) in ``run_dir``
    (default ``runs/<name>``): :func:`compmech.experiment.run` plus the experiment's analysis."""
    from .train import TrainConfig

    cfg = default_config(name) if cfg is None else cfg
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    kind = kind_of(cfg)
    analysis = None if kind is None else (lambda exp, fig_dir: analyse(exp, fig_dir, kind=kind))
    return _ex.run(cfg, run_dir or f"runs/{name}", analysis=analysis, **kw)


# ---------------------------------------------------------------------------------------------
# Analyses
# ---------------------------------------------------------------------------------------------

def _fit_summary(rep) -> dict:
    """Per-layer probability-weighted R² (in-sample, CV), best single layer by CV R², concat."""
    layers = {n: {"r2": d["prob"]["r2"], "cv_r2": d["prob"]["cv_r2"], "mse": d["prob"]["mse"],
                  "cv_ratio": d["prob"]["cv_ratio"], "shuffle_ratio": d["prob"].get("shuffle_ratio")}
              for n, d in rep.layers.items()}
    singles = [n for n in layers if n != rep.concat_name]
    best = max(singles, key=lambda n: layers[n]["cv_r2"])
    out = {"layers": layers, "final_layer": rep.final_layer, "final": layers[rep.final_layer],
           "best_layer": best, "best": layers[best]}
    if rep.concat_name:
        out["concat"] = layers[rep.concat_name]
    cands = [layers[n]["cv_r2"] for n in layers]
    out["max_cv_r2"] = float(max(cands))
    return out


def _check(v, op, lim):
    return [v, op, lim, bool(v <= lim if op == "<=" else v >= lim)]


def _common_targets(exp) -> dict:
    ev, s, t = exp.metrics["loss"], exp.probe.summary(), FOLLOWUP_TARGETS
    out = {}
    if ev is not None:
        out["worst_loss_ratio"] = _check(ev["worst_ratio"], "<=", t["loss_ratio_max"])
    # The demo's definitions (issue 4: the original work's unweighted fit, every input alike). The
    # prob-weighted ratios (probe.summary's *_weighted, reported beside them) rest on the ~100-200
    # effective rows of a few heavy short prefixes under subtree folds: by them the demo's own
    # Mess3 is at CV/in-sample 1.45 (README, "The mixture's CV ratio").
    out["shuffle_ratio"] = _check(s["shuffle_ratio"], ">=", t["shuffle_ratio_min"])
    out["cv_ratio"] = _check(s["cv_ratio"], "<=", t["cv_ratio_max"])
    return out


def _acts(exp):
    from .probe import collect_activations, default_layers

    model = exp.train.model
    return collect_activations(model, exp.prefixes, default_layers(model))


def _save_geometry(rep, fig_dir, stem, title):
    if fig_dir is None:
        return []
    from .plot import experiment as pe

    return pe.save(pe.geometry_panels(rep, suptitle=title), fig_dir / stem)


def analyse(exp, fig_dir=None, *, kind: str, folds: int = 5, shuffles: int = 10, seed: int = 0) -> dict:
    """The analysis of a finished :class:`compmech.experiment.Experiment`: ``{"metrics",
    "targets", "figures"}`` for ``kind`` ``"ghmm"``, ``"factored"`` or ``"mixture"``."""
    from . import probe_analysis as pa

    if kind not in ("ghmm", "factored", "mixture"):
        raise ValueError(f"unknown analysis kind {kind!r}")
    acts = _acts(exp)
    kw = {"cv_folds": folds, "shuffles": shuffles, "seed": seed}
    proc, ps = exp.prefixes.process, exp.prefixes
    targets = _common_targets(exp)
    if kind == "ghmm":
        ys = pa.ghmm_targets(ps)
        rep = pa.probe_targets(acts, ps, ys["ghmm"], **kw)
        m = {"ghmm": _fit_summary(rep),
             "classical": None if ys["classical"] is None else
             _fit_summary(pa.probe_targets(acts, ps, ys["classical"], **kw)),
             "has_classical_presentation_on_same_states": ys["classical"] is not None,
             "w": proc.w.tolist()}
        figs = [] if fig_dir is None else _ghmm_geometry_figure(rep, m["ghmm"], fig_dir, proc.name or "GHMM")
        out = {"metrics": m, "targets": targets, "figures": figs}
    elif kind == "factored":
        out = _factored(exp, acts, fig_dir, kw, targets)
    else:
        out = _mixture(exp, acts, fig_dir, kw, targets)
    # How the belief probe's CV ratio (a target) depends on the CV split's granularity.
    n_in = ps.inputs.shape[1] - (1 if ps.bos else 0)
    depths = range(ps.group_depth, min(ps.group_depth + 3, n_in) + 1)
    final = exp.probe.final_layer
    from .cv_diagnosis import diagnose_cv

    diag = diagnose_cv(acts[final], ps, folds=folds, seed=seed)
    out["metrics"]["cv_split"] = {"layer": final, "weighting": "prob", "default_group_depth": int(ps.group_depth),
                                  "by_group_depth": pa.cv_ratio_by_group_depth(acts, ps, depths, layer=final,
                                                                               folds=folds, seed=seed),
                                  "diagnosis": diag}
    if fig_dir is not None:
        out["figures"] += _cv_diagnosis_figure(diag, final, fig_dir)
    return out


def _cv_diagnosis_figure(d, layer, fig_dir):
    """Left: every held-out subtree's CV/in-sample ratio against the distance of its
    beliefs to the nearest training belief of the same length (size = mass). Right: in-sample and
    CV error of a ridge probe against its strength, the nested-CV choice marked."""
    from .plot import experiment as pe

    plt = pe._plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=150)
    rows = [r for r in d["by_subtree"] if r["same_length_distance"] is not None]
    if rows:
        x = [r["same_length_distance"] for r in rows]
        a.scatter(x, [r["cv_ratio"] for r in rows], s=[3000 * r["mass"] for r in rows], alpha=0.6, color="C0")
        for r, xi in zip(rows[:3], x):
            a.annotate(r["subtree"], (xi, r["cv_ratio"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ratio = d["cv_mse"] / d["in_sample_mse"]
    a.axhline(ratio, color="C3", ls="--", lw=1, label=f"all rows: {ratio:.3f}")
    a.axhline(1.0, color="0.5", lw=0.8)
    a.margins(x=0.12, y=0.15)  # room for the labels
    a.set_xlabel("held-out beliefs: distance to nearest training\nbelief of the same length (weighted mean)")
    a.set_ylabel("CV / in-sample MSE of the subtree")
    a.set_title(f"the {len(rows)} held-out subtrees (first {d['group_depth']} tokens)", fontsize=8)
    a.legend(frameon=False, fontsize=7)
    r = d["ridge"]
    al = np.array(r["alphas"])
    pos = al > 0
    b.plot(al[pos], np.array(r["in_sample_mse"])[pos], "o-", ms=3, label="in-sample")
    b.plot(al[pos], np.array(r["cv_mse"])[pos], "s-", ms=3, label="CV")
    if (~pos).any():
        b.axhline(r["in_sample_mse"][0], color="C0", ls=":", lw=1, label="no ridge, in-sample")
        b.axhline(r["cv_mse"][0], color="C1", ls=":", lw=1, label="no ridge, CV")
    n = r["nested"]
    b.axhline(n["cv_mse"], color="C3", ls="--", lw=1, label=f"nested-CV ridge, held out (ratio {n['cv_ratio']:.3f})")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("ridge strength (x mean eigenvalue of the Gram matrix)")
    b.set_ylabel("prob-weighted MSE")
    b.set_title(f"{layer}: n_eff {d['n_eff']:.0f} rows, {d['features']} features per target", fontsize=8)
    b.legend(frameon=False, fontsize=6)
    fig.tight_layout()
    return pe.save(fig, fig_dir / "cv_diagnosis")


def _components(cfg):
    from .processes.composite import _component

    return [_component(p) for p in cfg.process_params["processes"]]


def _factored(exp, acts, fig_dir, kw, targets):
    from . import probe_analysis as pa

    ps, factors = exp.prefixes, _components(exp.config)
    ys = pa.factor_beliefs(ps, factors)
    reps = [pa.probe_targets(acts, ps, y, **kw) for y in ys]
    per = [_fit_summary(r) for r in reps]
    S = [f.num_states for f in factors]
    sum_ref, prod_ref = int(sum(s - 1 for s in S)), int(np.prod(S) - 1)
    angles = {}
    for name in reps[0].layers:
        row = {}
        for i in range(len(reps)):
            for j in range(i + 1, len(reps)):
                a = pa.principal_angles(reps[i].coefs[name]["prob"][0], reps[j].coefs[name]["prob"][0])
                row[f"{i}-{j}"] = a.tolist()
        angles[name] = row
    final = exp.probe.final_layer
    w = ps.weights("prob")[ps.length >= 1]
    dim_acts = pa.effective_dimension(acts[final][ps.length >= 1], w)
    dim_pred = pa.effective_dimension(exp.probe.predictions[final]["prob"], exp.probe.weights["prob"])
    # the reference: how many dimensions the true joint beliefs themselves spread over
    dim_true = pa.effective_dimension(exp.probe.beliefs, exp.probe.weights["prob"])
    m = {"factors": [f.name or "factor" for f in factors], "factor_states": S,
         "factor_fits": per, "joint": _fit_summary(exp.probe),
         "principal_angles_deg": angles,
         "effective_dimension": {"layer": final, "activations": dim_acts, "joint_probe_predictions": dim_pred,
                                 "joint_beliefs": dim_true,
                                 "sum_S_minus_1": sum_ref, "prod_S_minus_1": prod_ref}}
    worst = min(p["max_cv_r2"] for p in per)
    targets["factor_cv_r2_min"] = _check(worst, ">=", FOLLOWUP_TARGETS["factor_cv_r2_min"])
    figs = []
    if fig_dir is not None:
        for i, r in enumerate(reps):
            figs += _save_geometry(r, fig_dir, f"factor{i}_geometry", f"factor {i} ({m['factors'][i]}) belief")
        figs += _dimension_figure(m["effective_dimension"], fig_dir)
    return {"metrics": m, "targets": targets, "figures": figs}


def _ghmm_geometry_figure(rep, fit, fig_dir, name):
    """The GHMM belief geometry in its own coordinates beside the probes' projections (best
    layer, all layers): the w-normalised beliefs are affine in S-1 dimensions, drawn on their
    principal axes (2-D for S=3, 3-D for S>3) — not on a simplex, as they are quasi-probabilities."""
    from .plot import experiment as pe

    Y, w = rep.beliefs, rep.weights["prob"]
    if Y.shape[1] < 2:  # a one-state GHMM is i.i.d.: no geometry
        return []
    plt = pe._plt()
    mu = w @ Y
    _, _, vt = np.linalg.svd((Y - mu) * np.sqrt(w)[:, None], full_matrices=False)
    k = min(3, Y.shape[1] - 1)
    axes = vt[:k].T
    xy_true = (Y - mu) @ axes
    ang = np.arctan2(xy_true[:, 1], xy_true[:, 0]) if k >= 2 else np.sign(xy_true[:, 0])
    rad = np.hypot(*xy_true[:, :2].T) if k >= 2 else np.abs(xy_true[:, 0])
    import matplotlib.colors as mc

    col = mc.hsv_to_rgb(np.stack([(ang / (2 * np.pi)) % 1.0, np.clip(rad / max(rad.max(), 1e-12), 0.35, 1), np.full(len(Y), 0.8)], 1))
    size = pe._sizes(w, len(Y))
    order = np.argsort(size)
    panels = [("ground truth (GHMM beliefs, w-normalised)", xy_true)]
    best = fit["best_layer"]
    panels.append((f"probe of {best}\nR²={fit['best']['r2']:.4f} (CV {fit['best']['cv_r2']:.4f})",
                   (rep.predictions[best]["prob"] - mu) @ axes))
    if rep.concat_name:
        c = fit["concat"]
        panels.append((f"probe of all layers\nR²={c['r2']:.4f} (CV {c['cv_r2']:.4f})",
                       (rep.predictions[rep.concat_name]["prob"] - mu) @ axes))
    lo, hi = xy_true.min(0), xy_true.max(0)
    pad = 0.15 * np.maximum(hi - lo, 1e-9)
    lims = list(zip(lo - pad, hi + pad))  # one frame for all panels (the truth's), so they compare
    fig = plt.figure(figsize=(3.6 * len(panels), 3.8), dpi=110)
    for i, (title, xy) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, **({"projection": "3d"} if k == 3 else {}))
        pts = [xy[order, j] for j in range(k)] if k >= 2 else [xy[order, 0], np.zeros(len(xy))]
        ax.scatter(*pts, c=col[order], s=size[order], linewidths=0, rasterized=len(Y) > 500)
        ax.set_xlim(*lims[0])
        if k >= 2:
            ax.set_ylim(*lims[1])
        if k == 3:
            ax.set_zlim(*lims[2])
            ax.view_init(elev=22, azim=-60)
            ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        else:
            ax.set_aspect("equal" if k == 2 else "auto")
            ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{name}: belief geometry on its {k} principal axes and its linear probes", fontsize=10)
    fig.tight_layout()
    return pe.save(fig, fig_dir / "ghmm_geometry")


def _dimension_figure(d, fig_dir):
    from .plot import experiment as pe

    plt = pe._plt()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=150)
    for key, label in (("activations", f"PCA of {d['layer']}"), ("joint_probe_predictions", "joint-belief probe predictions"),
                       ("joint_beliefs", "true joint beliefs")):
        c = d[key]["cumulative"]
        ax.plot(np.arange(1, len(c) + 1), c, "o-", ms=3, label=label)
    ax.axvline(d["sum_S_minus_1"], color="k", ls="--", lw=1, label="Σ(Sᵢ−1)")
    ax.axvline(d["prod_S_minus_1"], color="k", ls=":", lw=1, label="∏Sᵢ−1")
    ax.set_xscale("log")
    ax.set_xlabel("principal components")
    ax.set_ylabel("cumulative explained variance")
    ax.legend(frameon=False, fontsize=7)
    return pe.save(fig, fig_dir / "dimensions")


def _mixture(exp, acts, fig_dir, kw, targets):
    from . import probe_analysis as pa
    from .measures import entropy_rate

    ps, comps = exp.prefixes, _components(exp.config)
    post = pa.component_posterior(ps.beliefs, comps)
    rep_post = pa.probe_targets(acts, ps, post, **kw)
    try:
        within = pa.within_component_beliefs(ps.beliefs, comps)
    except ValueError as exc:  # a prefix impossible under some component: no belief there
        within, why = None, str(exc)
    rates = []
    for c in comps:
        h = entropy_rate(c)
        rates.append({"nats": float(h.value) * math.log(2), "exact": bool(h.exact),
                      "error_nats": float(np.max(h.error)) * math.log(2)})
    if within is not None:
        rep_within = pa.probe_targets(acts, ps, np.concatenate(within, 1), **kw)
        within_sum = _fit_summary(rep_within)
        # Per-component in-sample R² of the joint fit (least squares is separable by output column).
        best = within_sum["best_layer"]
        P, Y, w = rep_within.predictions[best]["prob"], rep_within.beliefs, rep_within.weights["prob"]
        from .probe import _r2

        per_comp = [_r2(Y[:, sl], P[:, sl], w) for sl in pa.component_blocks(comps)]
    else:
        within_sum, per_comp = {"skipped": why}, None
    m = {"components": exp.config.process_params["processes"], "weights": exp.prefixes.process.weights.tolist(),
         "component_entropy_rate": rates, "posterior": _fit_summary(rep_post), "within_component": within_sum,
         "within_component_r2_by_component": per_comp,
         "component_loss": None if within is None else pa.component_losses(_row_log_probs(exp), ps, comps)}
    ev = exp.metrics["loss"]
    if ev is not None:
        m["loss_per_position"] = {"loss": ev["loss"], "optimal": ev["optimal"], "exact": ev.get("exact", True)}
    targets["posterior_cv_r2_min"] = _check(m["posterior"]["max_cv_r2"], ">=", FOLLOWUP_TARGETS["posterior_cv_r2_min"])
    figs = []
    if fig_dir is not None:
        figs += _save_geometry(rep_post, fig_dir, "posterior_geometry", "posterior over components")
        if ev is not None:
            figs += _mixture_loss_figure(ev, rates, fig_dir, m["weights"])
        if m["component_loss"] is not None:
            figs += _component_loss_figure(m["component_loss"], rates, fig_dir)
    return {"metrics": m, "targets": targets, "figures": figs}


def _row_log_probs(exp):
    """The trained model's next-token log-probabilities at every probe prefix."""
    import torch

    from .probe import tree_forward

    _, logits = tree_forward(exp.train.model, exp.prefixes, [], return_logits=True)
    return torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), -1).numpy()


def _component_loss_figure(cl, rates, fig_dir):
    from .plot import experiment as pe

    plt = pe._plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=150)
    for i, (c, r) in enumerate(zip(cl, rates)):
        pos = np.arange(len(c["loss"]))
        ax.plot(pos, c["bayes_optimal"], "-", color=f"C{i}", lw=1.3, label=f"component {i}: optimum without knowing k")
        ax.plot(pos, c["loss"], "o", color=f"C{i}", ms=3.5, label=f"component {i}: transformer")
        ax.axhline(r["nats"], color=f"C{i}", ls="--", lw=0.9, label=f"component {i}: entropy rate")
    ax.set_xlabel("context position")
    ax.set_ylabel("cross-entropy on component k's sequences (nats)")
    ax.legend(frameon=False, fontsize=6, ncol=1, loc="center right")
    return pe.save(fig, fig_dir / "component_loss")


def _mixture_loss_figure(ev, rates, fig_dir, weights=None):
    from .plot import experiment as pe

    plt = pe._plt()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=150)
    pos = np.arange(len(ev["loss"]))
    ax.plot(pos, ev["optimal"], "k-", lw=1.5, label="optimal (mixture myopic entropy)")
    ax.plot(pos, ev["loss"], "o", color="C3", ms=4, label="transformer")
    for i, r in enumerate(rates):
        ax.axhline(r["nats"], color=f"C{i}", ls="--", lw=1, label=f"component {i} entropy rate")
    if weights is not None:  # the optimum's limit as the posterior concentrates on one component
        ax.axhline(float(np.dot(weights, [r["nats"] for r in rates])), color="0.4", ls=":", lw=1.2,
                   label="components' rates, weighted mean (long-context limit)")
    ax.set_xlabel("context position")
    ax.set_ylabel("cross-entropy (nats)")
    ax.legend(frameon=False, fontsize=7, loc="center right")
    return pe.save(fig, fig_dir / "mixture_loss")


def report(exp) -> str:
    """:func:`compmech.experiment.report` plus the analysis lines."""
    lines = [_ex.report(exp)]
    a = exp.metrics.get("analysis")
    if not a:
        return lines[0]
    pi = exp.metrics["probe"]["prefixes"]
    lines.append(f"prefixes  {pi['mode']}" + (f" ({pi['sequences']:,} sequences, {pi['rows']:,} distinct prefixes)"
                                                if pi["mode"] == "sampled" else f" ({pi['rows']:,} prefixes)"))

    def fit(label, f):
        c = f.get("concat") or {}
        lines.append(f"{label:<10s}best layer {f['best_layer']} R² {f['best']['r2']:.4f} (CV {f['best']['cv_r2']:.4f}); "
                     f"concat R² {c.get('r2', float('nan')):.4f} (CV {c.get('cv_r2', float('nan')):.4f})")
    if "ghmm" in a:
        fit("ghmm", a["ghmm"])
        if a["classical"] is None:
            lines.append("classical no HMM presentation on the same states (negative entries or w <= 0)")
        else:
            fit("classical", a["classical"])
    if "factor_fits" in a:
        for i, f in enumerate(a["factor_fits"]):
            fit(f"factor {i}", f)
        d = a["effective_dimension"]
        lines.append(f"dims      95% variance: activations {d['activations']['dims']}, joint probe "
                     f"{d['joint_probe_predictions']['dims']}, true joint beliefs {d['joint_beliefs']['dims']} (Σ(S-1) = {d['sum_S_minus_1']}, ∏S-1 = {d['prod_S_minus_1']})")
        ang = a["principal_angles_deg"].get(exp.probe.final_layer, {})
        for pair, v in ang.items():
            lines.append(f"angles    factors {pair} at {exp.probe.final_layer}: " + ", ".join(f"{x:.1f}°" for x in v))
    if "posterior" in a:
        fit("posterior", a["posterior"])
        if "skipped" in a["within_component"]:
            lines.append(f"within    not probed: {a['within_component']['skipped']}")
        else:
            fit("within", a["within_component"])
        lines.append("rates     component entropy rates (nats): "
                     + ", ".join(f"{r['nats']:.4f}" for r in a["component_entropy_rate"]))
        for i, c in enumerate(a.get("component_loss") or []):
            lines.append(f"comp {i}    loss on its sequences {c['loss'][0]:.4f} -> {c['loss'][-1]:.4f} nats (optimum without "
                         f"knowing the component {c['bayes_optimal'][-1]:.4f}, its own {c['myopic_entropy'][-1]:.4f})")
    if "cv_split" in a:
        c = a["cv_split"]
        lines.append(f"CV split  {c['layer']}, prob-weighted CV/in-sample with folds by the first g tokens: "
                     + ", ".join(f"g={g} ({v['groups']} subtrees) {v['cv_ratio']:.3f}" for g, v in c["by_group_depth"].items()))
        d = c.get("diagnosis")
        if d:
            top, h, n = d["by_subtree"][:3], d["held_out_distance"], d["ridge"]["nested"]
            lines.append(f"CV excess {d['top3_excess_share']:.0%} from subtrees " + ", ".join(
                f"{r['subtree']} ({r['cv_ratio']:.2f}x)" for r in top)
                + f"; their beliefs lie {h['same_length_top3']:.3g} from the nearest training belief of the same length"
                  f" (rest {h['same_length_rest']:.3g}); nested-CV ridge {n['cv_ratio']:.3f};"
                  f" same belief at adjacent positions {d['position_dependence']['ratio'] or float('nan'):.1f}x"
                  " the activation distance at one position")
    return "\n".join(lines)
