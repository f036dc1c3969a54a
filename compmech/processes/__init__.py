"""Library of named processes: ``get(name, **params)``, ``names()``, and one function each.

Every constructor validates its parameters and returns a :class:`compmech.HMM` or
:class:`compmech.GHMM` named after itself. ``T[x, i, j] = P(emit x, go to j | in i)``.
"""
from __future__ import annotations

from ._registry import describe, get, names, register
from .standard import coin, even, golden_mean, mess3, rrxor, sns, zero_one_random
from .random import random_ghmm_like, random_hmm

__all__ = ["get", "names", "register", "describe", "coin", "even", "golden_mean", "mess3", "rrxor",
           "sns", "zero_one_random", "random_hmm", "random_ghmm_like"]
