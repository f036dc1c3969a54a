"""Parameter checks shared by process constructors (thin names over :mod:`compmech._validate`)."""
from __future__ import annotations

from .._validate import integer, probability, real


def prob(name: str, value, *, open_low=False, open_high=False) -> float:
    """A probability in [0, 1] (optionally open at either end)."""
    return probability(value, name, open_low=open_low, open_high=open_high)


def positive_int(name: str, value, minimum: int = 1) -> int:
    return integer(value, name, minimum=minimum)


def finite(name: str, value) -> float:
    return real(value, name)


def seed(value) -> int:
    """A generator seed: an integer >= 0 (numpy's ``default_rng`` accepts any size)."""
    return integer(value, "seed", minimum=0)


def dirichlet_params(concentration, sparsity) -> tuple[float, float]:
    """Parameters of the random-process generators: concentration > 0, sparsity in [0, 1)."""
    return (real(concentration, "concentration", low=0.0, open_low=True),
            probability(sparsity, "sparsity", open_high=True))
