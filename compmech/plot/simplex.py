"""Belief geometry in the probability simplex."""
from __future__ import annotations

import numpy as np

# Vertices of the 2-simplex (equilateral triangle) in the plane.
_TRIANGLE = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])


def simplex_coords(beliefs) -> np.ndarray:
    """Barycentric → planar coordinates for S=3 beliefs ``(N, 3)`` → ``(N, 2)``."""
    b = np.asarray(beliefs, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 3:
        raise ValueError(f"simplex_coords needs beliefs of shape (N, 3), got {b.shape}")
    return b @ _TRIANGLE


def belief_colors(beliefs) -> np.ndarray:
    """RGB colour of each belief (first three components, clipped to [0, 1])."""
    b = np.clip(np.asarray(beliefs, dtype=np.float64)[:, :3], 0, 1)
    if b.shape[1] < 3:
        b = np.pad(b, ((0, 0), (0, 3 - b.shape[1])))
    return b / np.maximum(b.max(axis=1, keepdims=True), 1e-12)


def simplex(beliefs, weights=None, ax=None, s=None, **scatter_kw):
    """Scatter beliefs ``(N, S)`` coloured by belief (RGB).

    S=3: the 2-simplex (triangle). Other S: the first two principal components (PCA)
    of the beliefs. ``weights`` (e.g. probabilities) scale the marker sizes. Returns the axes.
    """
    import matplotlib.pyplot as plt

    b = np.asarray(beliefs, dtype=np.float64)
    if b.ndim != 2:
        raise ValueError(f"beliefs must be (N, S), got shape {b.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    if b.shape[1] == 3:
        xy = simplex_coords(b)
        tri = np.vstack([_TRIANGLE, _TRIANGLE[:1]])
        ax.plot(tri[:, 0], tri[:, 1], color="0.6", lw=0.8)
    else:
        centred = b - b.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T if vt.shape[0] >= 2 else np.pad(centred @ vt[:1].T, ((0, 0), (0, 1)))
    if s is None:
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            s = 0.5 + 40 * np.sqrt(w / w.max()) if w.max() > 0 else 1.0
        else:
            s = 1.0
    ax.scatter(xy[:, 0], xy[:, 1], c=belief_colors(b), s=s, linewidths=0, **scatter_kw)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
