"""Figures (matplotlib is imported only when this package is used)."""
from .simplex import simplex

__all__ = ["simplex"]
from . import experiment  # noqa: E402,F401  (figures of the belief-geometry experiment)
from .msp_graph import msp_graph  # noqa: E402
from .simplex import pca_coords, simplex_coords  # noqa: E402

__all__ += ["msp_graph", "simplex_coords", "pca_coords"]
