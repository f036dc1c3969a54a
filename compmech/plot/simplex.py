"""Belief geometry in the probability simplex.

S = 3: the 2-simplex (equilateral triangle), points coloured RGB by belief.
S = 4: the 3-simplex (regular tetrahedron) on 3-D axes, points coloured by mixing one colour
per vertex (:func:`tetrahedron_colors`). Other S: principal components of the beliefs (2-D, or 3-D with ``dims=3``).
"""
from __future__ import annotations

import numpy as np

# Vertices of the 2-simplex (equilateral triangle) in the plane.
_TRIANGLE = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
# Vertices of the 3-simplex (regular tetrahedron, unit edges) in space.
_TETRAHEDRON = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, np.sqrt(3) / 2, 0.0],
                         [0.5, np.sqrt(3) / 6, np.sqrt(2.0 / 3.0)]])
# Vertex colours for S = 4 (red, green, blue, gold).
_VERTEX_RGB4 = np.array([[0.9, 0.1, 0.1], [0.1, 0.7, 0.2], [0.15, 0.3, 0.95], [0.95, 0.75, 0.05]])


def _as_beliefs(beliefs) -> np.ndarray:
    b = np.asarray(beliefs, dtype=np.float64)
    if b.ndim != 2 or b.shape[0] == 0:
        raise ValueError(f"beliefs must be a non-empty (N, S) array, got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError("beliefs contain a non-finite value")
    return b


def simplex_coords(beliefs) -> np.ndarray:
    """Barycentric → Cartesian: ``(N, 3)`` → ``(N, 2)`` (triangle) or ``(N, 4)`` → ``(N, 3)``
    (tetrahedron)."""
    b = np.asarray(beliefs, dtype=np.float64)
    if b.ndim == 2 and b.shape[1] == 3:
        return b @ _TRIANGLE
    if b.ndim == 2 and b.shape[1] == 4:
        return b @ _TETRAHEDRON
    raise ValueError(f"simplex_coords needs beliefs of shape (N, 3) or (N, 4), got {b.shape}")


def pca_coords(beliefs, dims: int = 2) -> np.ndarray:
    """Projection of beliefs ``(N, S)`` on their first ``dims`` principal axes ``(N, dims)``
    (zero-padded when the beliefs span fewer dimensions)."""
    b = _as_beliefs(beliefs)
    centred = b - b.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:dims].T
    if xy.shape[1] < dims:
        xy = np.pad(xy, ((0, 0), (0, dims - xy.shape[1])))
    return xy


def belief_colors(beliefs) -> np.ndarray:
    """RGB colour of each belief: the first three components (clipped to [0, 1], scaled so
    the largest is 1)."""
    b = np.clip(np.asarray(beliefs, dtype=np.float64)[:, :3], 0, 1)
    if b.shape[1] < 3:
        b = np.pad(b, ((0, 0), (0, 3 - b.shape[1])))
    return b / np.maximum(b.max(axis=1, keepdims=True), 1e-12)


def tetrahedron_colors(beliefs) -> np.ndarray:
    """RGB colour of S = 4 beliefs: a mix of four vertex colours (red, green, blue, gold)
    weighted by the belief, so each vertex of the tetrahedron has its own colour."""
    b = np.clip(np.asarray(beliefs, dtype=np.float64), 0, None)
    tot = np.maximum(b.sum(axis=1, keepdims=True), 1e-12)
    return np.clip((b / tot) @ _VERTEX_RGB4, 0, 1)


def _sizes(weights, n, s):
    if s is not None:
        return s
    if weights is None:
        return 1.0
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), one per belief, got {w.shape}")
    return 0.5 + 40 * np.sqrt(w / w.max()) if w.max() > 0 else 1.0


def simplex(beliefs, weights=None, ax=None, s=None, dims: int | None = None, **scatter_kw):
    """Scatter beliefs ``(N, S)`` coloured by belief.

    S=3: the 2-simplex (triangle). S=4: the 3-simplex (tetrahedron) on 3-D axes. Other S: the
    first two (``dims=3``: three) principal components of the beliefs. ``weights`` (e.g.
    probabilities, ``(N,)``) scale the marker sizes. A passed ``ax`` must be 3-D for the
    tetrahedron and for ``dims=3``. Returns the axes.
    """
    import matplotlib.pyplot as plt

    b = _as_beliefs(beliefs)
    S = b.shape[1]
    three_d = S == 4 if dims is None else dims == 3
    if dims not in (None, 2, 3):
        raise ValueError(f"dims must be 2, 3 or None, got {dims!r}")
    if ax is None:
        fig = plt.figure(figsize=(5, 5))
        ax = fig.add_subplot(projection="3d" if three_d else None)
    elif three_d and getattr(ax, "name", "") != "3d":
        raise ValueError("this view is 3-D: pass axes made with projection='3d' (or dims=2 for a PCA view)")
    size = _sizes(weights, b.shape[0], s)
    colors = tetrahedron_colors(b) if S == 4 else belief_colors(b)
    if S == 3 and not three_d:
        xy = simplex_coords(b)
        tri = np.vstack([_TRIANGLE, _TRIANGLE[:1]])
        ax.plot(tri[:, 0], tri[:, 1], color="0.6", lw=0.8)
        ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=size, linewidths=0, **scatter_kw)
        ax.set_aspect("equal")
    elif S == 4 and three_d:
        xyz = simplex_coords(b)
        for i in range(4):
            for j in range(i + 1, 4):
                seg = _TETRAHEDRON[[i, j]]
                ax.plot(seg[:, 0], seg[:, 1], seg[:, 2], color="0.6", lw=0.8)
        ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=colors, s=size, linewidths=0, depthshade=False, **scatter_kw)
        ax.set_box_aspect((1, 1, 1))
    else:
        xy = pca_coords(b, 3 if three_d else 2)
        if three_d:
            ax.scatter(xy[:, 0], xy[:, 1], xy[:, 2], c=colors, s=size, linewidths=0, **scatter_kw)
        else:
            ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=size, linewidths=0, **scatter_kw)
            ax.set_aspect("equal")
    ax.set_axis_off()
    return ax
