"""The experiment figures draw the numbers they are given: axes data against the inputs, and
saved images that are not blank."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")

import compmech as cm  # noqa: E402
from compmech.data import PrefixSet  # noqa: E402
from compmech.plot import experiment as ex  # noqa: E402
from compmech.plot.simplex import simplex_coords  # noqa: E402
from compmech.probe import probe_activations  # noqa: E402
from image_checks import assert_png_has_content  # noqa: E402


@pytest.fixture(scope="module")
def report():
    rng = np.random.default_rng(0)
    ps = PrefixSet.build(cm.processes.mess3(), 5)
    acts = {"embed": rng.standard_normal((len(ps), 4)),
            "blocks.0.hook_resid_post": ps.beliefs @ rng.standard_normal((3, 8)) + 0.02 * rng.standard_normal((len(ps), 8))}
    return probe_activations(acts, ps, shuffles=3, cv_folds=3)


def _scatter_offsets(ax):
    from matplotlib.collections import PathCollection

    return np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])


def _same_points(a, b):
    """Equal as sets of rows (plots may reorder points, e.g. by weight)."""
    a = a[np.lexsort(a.T[::-1])]
    b = b[np.lexsort(b.T[::-1])]
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_geometry_panels_plot_truth_and_predictions(report, tmp_path):
    fig = ex.geometry_panels(report)
    truth_ax, probe_ax = fig.axes[:2]
    _same_points(_scatter_offsets(truth_ax), simplex_coords(report.beliefs))
    pred = report.predictions[report.final_layer]["prob"]
    _same_points(_scatter_offsets(probe_ax), simplex_coords(pred))
    assert f"{report.layers[report.final_layer]['prob']['r2']:.4f}" in probe_ax.get_title()
    paths = ex.save(fig, tmp_path / "geometry")
    assert_png_has_content(next(p for p in paths if p.endswith(".png")), min_ink=0.02)
    plt.close("all")


def test_loss_vs_optimal_draws_the_given_curves(tmp_path):
    ev = {"loss": [1.10, 0.95, 0.91, 0.90], "optimal": [1.0986, 0.94, 0.905, 0.899]}
    ax = ex.loss_vs_optimal(ev)
    ys = {tuple(np.round(l.get_ydata(), 12)) for l in ax.get_lines()}
    assert tuple(ev["loss"]) in ys and tuple(ev["optimal"]) in ys
    bars = [p.get_height() for a in ax.figure.axes if a is not ax for p in a.patches]
    np.testing.assert_allclose(bars, 100 * (np.array(ev["loss"]) / ev["optimal"] - 1), rtol=1e-12)
    ax.figure.savefig(tmp_path / "l.png")
    assert_png_has_content(tmp_path / "l.png")
    plt.close("all")


def test_probe_errors_and_layer_fits_bars(report):
    ax = ex.probe_errors(report)
    m = report.layers[report.final_layer]["uniform"]
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [m["mse"], m["cv_mse"], m["shuffle_mse_mean"]])
    ax = ex.layer_fits(report)
    heights = [p.get_height() for p in ax.patches]
    names = list(report.layers)
    r2 = [report.layers[n]["prob"]["r2"] for n in names]
    cv = [report.layers[n]["prob"]["cv_r2"] for n in names]
    np.testing.assert_allclose(heights, r2 + cv)
    plt.close("all")


def test_training_curve_plots_the_history():
    hist = [{"step": s, "tokens": 100 * s, "loss": 1.2 / s} for s in range(1, 20)]
    ax = ex.training_curve(hist, optimal_mean=0.5, probe_points=[(100, 1e-2), (1900, 1e-3)])
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [r["tokens"] for r in hist])
    np.testing.assert_allclose(line.get_ydata(), [r["loss"] for r in hist])
    assert any(np.allclose(l.get_ydata(), 0.5) for l in ax.get_lines()[1:])
    twin = [a for a in ax.figure.axes if a is not ax][0]
    np.testing.assert_allclose(twin.get_lines()[0].get_ydata(), [1e-2, 1e-3])
    plt.close("all")
