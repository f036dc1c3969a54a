"""Checks that a saved figure shows something (not a blank or single-colour canvas)."""
from __future__ import annotations

import numpy as np


def assert_png_has_content(path, min_ink: float = 0.005, min_colours: int = 3):
    """The PNG at ``path`` has at least ``min_ink`` of its pixels away from the background
    (its most common colour) and at least ``min_colours`` distinct colours among them."""
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50, f"{path}: image shape {img.shape}"
    rgb = np.round(img[..., :3] * 255).astype(np.int32).reshape(-1, 3)
    codes = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    values, counts = np.unique(codes, return_counts=True)
    background = values[np.argmax(counts)]
    ink = float(np.mean(codes != background))
    assert ink >= min_ink, f"{path}: only {ink:.4f} of the pixels differ from the background"
    assert len(values) >= min_colours, f"{path}: {len(values)} colours"
    return ink
