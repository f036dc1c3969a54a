"""Figures of the belief-geometry experiment (the original work's main panels).

All functions take an optional ``ax``/``fig`` and return the figure or axes; :func:`save`
writes PNG and PDF side by side. Points are coloured by their *true* belief (RGB = first three
belief components), so the probe projection can be compared point by point with the ground truth.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .simplex import _TRIANGLE, belief_colors

__all__ = ["geometry_panels", "belief_projection", "emergence", "loss_vs_optimal", "training_curve",
           "probe_errors", "layer_fits", "main_figure", "save"]


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg") and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _has_display() -> bool:
    import os

    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _coords(points, truth):
    """Planar (S=3: simplex) or 3-D (S>3: PCA axes of the true beliefs) coordinates."""
    from ..probe import project

    return project(points, ref=truth)


def _sizes(weights, n):
    if weights is None:
        return np.full(n, 1.0)
    w = np.asarray(weights, np.float64)
    return 0.3 + 12 * np.sqrt(w / w.max()) if w.max() > 0 else np.full(n, 1.0)


def belief_projection(points, truth, *, weights=None, ax=None, title=None, order_by_weight=True, s=None):
    """Scatter ``points (R, S)`` (true or predicted beliefs) coloured by ``truth (R, S)``.
    S = 3 draws the 2-simplex; larger S a 3-D view on the principal axes of ``truth``."""
    plt = _plt()
    P = np.asarray(points, np.float64)
    Tr = np.asarray(truth, np.float64)
    xy = _coords(P, Tr)
    col = belief_colors(Tr)
    size = _sizes(weights, len(P)) if s is None else np.broadcast_to(s, (len(P),))
    idx = np.argsort(size) if order_by_weight else np.arange(len(P))
    three_d = xy.shape[1] == 3
    if ax is None:
        fig = plt.figure(figsize=(5, 5))
        ax = fig.add_subplot(111, projection="3d" if three_d else None)
    if three_d:
        ax.scatter(xy[idx, 0], xy[idx, 1], xy[idx, 2], c=col[idx], s=size[idx], linewidths=0, depthshade=False,
                   rasterized=len(P) > 500)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.view_init(elev=22, azim=-60)
    else:
        tri = np.vstack([_TRIANGLE, _TRIANGLE[:1]])
        ax.plot(tri[:, 0], tri[:, 1], color="0.7", lw=0.6, zorder=0)
        ax.scatter(xy[idx, 0], xy[idx, 1], c=col[idx], s=size[idx], linewidths=0, rasterized=len(P) > 500)
        ax.set_aspect("equal")
        ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def geometry_panels(report, *, layer=None, weighting="prob", fig=None, suptitle=None):
    """Ground-truth belief geometry beside the probe's projection of ``layer``."""
    plt = _plt()
    layer = layer or report.final_layer
    three_d = report.beliefs.shape[1] > 3
    if fig is None:
        fig = plt.figure(figsize=(10, 5), dpi=150)
    kw = {"projection": "3d"} if three_d else {}
    a1 = fig.add_subplot(1, 2, 1, **kw)
    a2 = fig.add_subplot(1, 2, 2, **kw)
    w = report.weights[weighting]
    belief_projection(report.beliefs, report.beliefs, weights=w, ax=a1, title="ground truth (MSP beliefs)")
    m = report.layers[layer]
    belief_projection(report.predictions[layer][weighting], report.beliefs, weights=w, ax=a2,
                      title=f"probe of {layer}\nR²={m[weighting]['r2']:.4f}  MSE={m['uniform']['mse']:.2e}")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def emergence(snapshots, *, fig=None, weighting="prob", max_panels=6):
    """Probe projections across training. ``snapshots``: list of ``(tokens, report)`` in
    training order; up to ``max_panels`` log-spaced ones are drawn with their token counts."""
    plt = _plt()
    if len(snapshots) > max_panels:
        pick = np.unique(np.round(np.linspace(0, len(snapshots) - 1, max_panels)).astype(int))
        snapshots = [snapshots[i] for i in pick]
    n = len(snapshots)
    three_d = snapshots[0][1].beliefs.shape[1] > 3
    if fig is None:
        fig = plt.figure(figsize=(2.6 * n, 3.0), dpi=150)
    for i, (tokens, rep) in enumerate(snapshots):
        ax = fig.add_subplot(1, n, i + 1, **({"projection": "3d"} if three_d else {}))
        layer = rep.final_layer
        belief_projection(rep.predictions[layer][weighting], rep.beliefs, weights=rep.weights[weighting], ax=ax,
                          title=f"{_fmt_tokens(tokens)} tokens\nMSE {rep.layers[layer]['uniform']['mse']:.1e}")
    fig.suptitle("emergence of the belief geometry (probe of the final residual stream)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def _fmt_tokens(t):
    t = float(t)
    if t == 0:
        return "0"
    e = int(np.floor(np.log10(t)))
    m = t / 10 ** e
    return f"{m:.1f}e{e}" if e >= 3 else f"{int(t)}"


def loss_vs_optimal(ev: dict, *, ax=None):
    """Per-position cross-entropy of the model (exact, over every context) and the optimum
    (myopic entropy), with the relative excess on a second axis."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5), dpi=150)
    loss, opt = np.asarray(ev["loss"]), np.asarray(ev["optimal"])
    pos = np.arange(len(loss))
    ax.plot(pos, opt, "k-", lw=1.5, label="optimal (myopic entropy)")
    ax.plot(pos, loss, "o", color="C3", ms=4, label="transformer")
    ax.set_xlabel("context position")
    ax.set_ylabel("cross-entropy (nats)")
    ax2 = ax.twinx()
    ax2.bar(pos, 100 * (loss / opt - 1), width=0.5, color="C0", alpha=0.35)
    ax2.set_ylabel("excess over optimum (%)", color="C0")
    ax2.tick_params(axis="y", colors="C0")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    ax.set_title("loss per position vs optimum", fontsize=10)
    return ax


def training_curve(history, *, optimal_mean=None, probe_points=None, probe_label="probe MSE (final layer)", ax=None):
    """Training loss vs tokens (log x); optional mean optimum and probe MSE at snapshots."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5), dpi=150)
    rows = [r for r in history if "loss" in r]
    t = np.array([r["tokens"] for r in rows])
    ax.plot(t, [r["loss"] for r in rows], color="C0", lw=1, label="train loss")
    if optimal_mean is not None:
        ax.axhline(optimal_mean, color="k", ls="--", lw=1, label="optimal (mean over positions)")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("cross-entropy (nats)")
    if probe_points:
        ax2 = ax.twinx()
        pt, pm = zip(*probe_points)
        ax2.plot(pt, pm, "s-", color="C3", ms=3, lw=1, label="probe MSE")
        ax2.set_yscale("log")
        ax2.set_ylabel(probe_label, color="C3")
        ax2.tick_params(axis="y", colors="C3")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("training", fontsize=10)
    return ax


def probe_errors(report, *, layer=None, weighting="uniform", ax=None):
    """Bars: in-sample, cross-validated and shuffled-control MSE (log scale, ± sd)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.5), dpi=150)
    layer = layer or report.final_layer
    m = report.layers[layer][weighting]
    labels, vals, err = ["in-sample", "cross-val."], [m["mse"], m["cv_mse"]], [0.0, 0.0]
    if m.get("shuffle_mse_mean") is not None:
        labels.append("shuffled")
        vals.append(m["shuffle_mse_mean"])
        err.append(m.get("shuffle_mse_sd") or 0.0)
    ax.bar(labels, vals, yerr=err, color=["C2", "C0", "0.6"][:len(vals)], capsize=3)
    ax.set_yscale("log")
    ax.set_ylabel("belief MSE")
    for i, v in enumerate(vals):
        ax.text(i, v * 1.15, f"{v:.1e}", ha="center", fontsize=7)
    ax.set_title(f"probe error ({weighting} weights)", fontsize=10)
    return ax


def layer_fits(report, *, weighting="prob", ax=None):
    """R² of the probe for each layer and for all layers concatenated (bars, with CV R²)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.5), dpi=150)
    names = list(report.layers)
    r2 = [report.layers[n][weighting]["r2"] for n in names]
    cv = [report.layers[n][weighting]["cv_r2"] for n in names]
    short = [n.replace("blocks.", "L").replace(".hook_resid_", " ").replace("ln_final.hook_normalized", "ln_final")
             for n in names]
    x = np.arange(len(names))
    ax.bar(x - 0.2, r2, 0.4, label="in-sample", color="C2")
    ax.bar(x + 0.2, cv, 0.4, label="cross-validated", color="C0")
    ax.set_xticks(x, short, rotation=45, ha="right", fontsize=7)
    lo = min(min(r2), min(cv))
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel(f"R² ({weighting} weights)")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.set_title("belief probe by layer", fontsize=10)
    return ax


def main_figure(report, ev: dict | None = None, *, title=None):
    """Ground truth | probe projection | per-position loss | probe error bars."""
    plt = _plt()
    three_d = report.beliefs.shape[1] > 3
    fig = plt.figure(figsize=(16, 4.2), dpi=150)
    kw = {"projection": "3d"} if three_d else {}
    w = report.weights["prob"]
    layer = report.final_layer
    a = fig.add_subplot(1, 4, 1, **kw)
    belief_projection(report.beliefs, report.beliefs, weights=w, ax=a, title="ground truth (MSP)")
    b = fig.add_subplot(1, 4, 2, **kw)
    m = report.layers[layer]
    belief_projection(report.predictions[layer]["prob"], report.beliefs, weights=w, ax=b,
                      title=f"probe: {layer}\nR²={m['prob']['r2']:.4f}, MSE={m['uniform']['mse']:.2e}")
    if ev is not None:
        loss_vs_optimal(ev, ax=fig.add_subplot(1, 4, 3))
    else:
        layer_fits(report, ax=fig.add_subplot(1, 4, 3))
    probe_errors(report, ax=fig.add_subplot(1, 4, 4))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save(fig, path) -> list[str]:
    """Save ``fig`` as ``path`` with .png and .pdf suffixes; returns the written paths."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in (".png", ".pdf"):
        p = path.with_suffix(ext)
        fig.savefig(p, bbox_inches="tight", dpi=200 if ext == ".png" else None)
        out.append(str(p))
    plt.close(fig)
    return out
