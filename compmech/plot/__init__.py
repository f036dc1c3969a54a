"""Figures (matplotlib is imported only when this package is used)."""
from .simplex import simplex

__all__ = ["simplex"]
