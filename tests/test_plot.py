"""Figures: simplex (triangle / tetrahedron / PCA) and the mixed-state graph drawing."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import compmech as cm  # noqa: E402
from compmech.plot.simplex import belief_colors, pca_coords, simplex_coords, tetrahedron_colors  # noqa: E402
from image_checks import assert_png_has_content  # noqa: E402


def _points(ax):
    from matplotlib.collections import PathCollection

    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def test_triangle_coordinates_and_colours():
    xy = simplex_coords(np.eye(3))
    np.testing.assert_allclose(np.linalg.norm(xy[0] - xy[1]), 1.0)
    np.testing.assert_allclose(np.linalg.norm(xy[1] - xy[2]), 1.0)
    np.testing.assert_allclose(simplex_coords(np.full((1, 3), 1 / 3)), [xy.mean(axis=0)])
    np.testing.assert_allclose(belief_colors(np.eye(3)), np.eye(3))


def test_tetrahedron_coordinates_are_regular():
    v = simplex_coords(np.eye(4))
    d = np.linalg.norm(v[:, None] - v[None], axis=-1)
    np.testing.assert_allclose(d[~np.eye(4, dtype=bool)], 1.0, atol=1e-12)
    c = tetrahedron_colors(np.vstack([np.eye(4), np.full((1, 4), 0.25)]))
    assert c.shape == (5, 3) and np.all((0 <= c) & (c <= 1))
    assert len({tuple(r) for r in np.round(c[:4], 6)}) == 4  # one colour per vertex


def test_simplex_views():
    tree = cm.msp_tree(cm.processes.mess3(), 5)
    b = np.concatenate([l.beliefs for l in tree.levels])
    w = np.concatenate([l.probs for l in tree.levels])
    ax = cm.plot.simplex(b, weights=w)
    assert _points(ax) == len(b) and ax.name != "3d"
    plt.close("all")
    b4 = cm.msp_tree(cm.processes.random_hmm(4, 2, seed=1), 6).level(6).beliefs
    ax = cm.plot.simplex(b4)
    assert ax.name == "3d"
    plt.close("all")
    b5 = cm.msp_tree(cm.processes.rrxor(), 6).level(6).beliefs
    ax = cm.plot.simplex(b5)
    assert _points(ax) == len(b5) and ax.name != "3d"
    ax = cm.plot.simplex(b5, dims=3)
    assert ax.name == "3d"
    plt.close("all")
    assert pca_coords(b5, 3).shape == (len(b5), 3)
    _, ax2 = plt.subplots()
    with pytest.raises(ValueError, match="3-D"):
        cm.plot.simplex(b4, ax=ax2)
    with pytest.raises(ValueError, match="weights"):
        cm.plot.simplex(b, weights=w[:3])
    with pytest.raises(ValueError, match="non-empty"):
        cm.plot.simplex(np.zeros((0, 3)))
    plt.close("all")


@pytest.mark.parametrize("layout", ["belief", "spring"])
def test_msp_graph_drawing(tmp_path, layout):
    g = cm.msp(cm.processes.rrxor())
    ax = cm.plot.msp_graph(g, layout=layout)
    assert _points(ax) == g.num_states
    from matplotlib.collections import LineCollection

    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert sum(len(c.get_segments()) for c in lines) == int((g.src != g.dst).sum())
    # node positions: the simplex projection of the beliefs (belief layout)
    if layout == "belief":
        from compmech.probe import project

        pts = np.concatenate([c.get_offsets() for c in ax.collections if c.__class__.__name__ == "PathCollection"])
        want = project(g.beliefs)[:, :2]
        key = lambda a: a[np.lexsort(np.round(a, 9).T[::-1])]  # noqa: E731
        np.testing.assert_allclose(key(np.asarray(pts)), key(want), atol=1e-9)
    ax.figure.savefig(tmp_path / "g.png")
    assert_png_has_content(tmp_path / "g.png")
    plt.close("all")
    with pytest.raises(ValueError, match="layout"):
        cm.plot.msp_graph(g, layout="circle")
    plt.close("all")


def test_msp_graph_drawing_of_a_truncated_pca_graph():
    g = cm.msp(cm.processes.random_hmm(5, 2, seed=0), max_depth=6)
    ax = cm.plot.msp_graph(g)
    assert _points(ax) == g.num_states and "truncated" in ax.get_title()
    plt.close("all")
