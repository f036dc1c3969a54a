"""Library of named processes: ``get(name, **params)``, ``names()``, and one function each.

Every constructor validates its parameters and returns a :class:`compmech.HMM` or
:class:`compmech.GHMM` named after itself. ``T[x, i, j] = P(emit x, go to j | in i)``.

- standard: ``coin``, ``golden_mean``, ``even``, ``sns``, ``zero_one_random``, ``rrxor``, ``mess3``
- more: ``leaky_rrxor``, ``matching_parens``, ``random_epsilon_machine``
- random: ``random_hmm``, ``random_ghmm_like``
- GHMMs (quasi-probabilities): ``tom_quantum``, ``post_quantum``, ``fanizza``
- composites: ``mixture``, ``product``, ``with_bos``
"""
from __future__ import annotations

from ._registry import describe, get, names, register
from .standard import coin, even, golden_mean, mess3, rrxor, sns, zero_one_random
from .random import random_ghmm_like, random_hmm
from .more import leaky_rrxor, matching_parens, random_epsilon_machine
from .ghmm import fanizza, post_quantum, tom_quantum
from .composite import BOSGHMM, BOSHMM, MixtureGHMM, MixtureHMM, mixture, product, with_bos

__all__ = ["get", "names", "register", "describe", "coin", "even", "golden_mean", "mess3", "rrxor",
           "sns", "zero_one_random", "random_hmm", "random_ghmm_like", "leaky_rrxor", "matching_parens",
           "random_epsilon_machine", "tom_quantum", "post_quantum", "fanizza", "mixture", "product",
           "with_bos", "MixtureHMM", "MixtureGHMM", "BOSHMM", "BOSGHMM"]
