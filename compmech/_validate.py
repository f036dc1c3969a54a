"""Validation of scalar parameters, shared by the whole package.

Every check raises :class:`ParameterError`, which is both a ``ValueError`` and a ``TypeError``
(as scikit-learn's ``InvalidParameterError``): callers catch either, and a wrong type (``2.5``
for a count, ``"a"`` for a probability) and a wrong value (``-1``, ``inf``) read the same way.
Messages name the parameter, the allowed range and the value given.
"""
from __future__ import annotations

import math
import operator

import numpy as np

__all__ = ["ParameterError", "integer", "real", "probability", "seed"]


class ParameterError(ValueError, TypeError):
    """A parameter of the wrong type or outside its allowed range."""


def integer(value, name: str, *, minimum: int | None = 0, limit: int | None = None, none_ok: bool = False):
    """A Python ``int`` with ``minimum <= value < limit`` (numpy and torch integer scalars are
    accepted; bools and floats, even integral ones, are not). ``None`` passes if ``none_ok``."""
    if value is None and none_ok:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be an integer, got bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise ParameterError(f"{name} must be an integer{' or None' if none_ok else ''}, "
                             f"got {type(value).__name__} {value!r}") from None
    if minimum is not None and v < minimum:
        raise ParameterError(f"{name} must be >= {minimum}, got {v}")
    if limit is not None and v >= limit:
        bound = f"2**{limit.bit_length() - 1}" if limit & (limit - 1) == 0 else str(limit)
        raise ParameterError(f"{name} must be < {bound}, got {v}")
    return int(v)


def _interval(lo, hi, open_lo, open_hi) -> str:
    return (f"{'(' if open_lo else '['}{'-inf' if lo is None else lo}, "
            f"{'inf' if hi is None else hi}{')' if open_hi else ']'}")


def real(value, name: str, *, low: float | None = None, high: float | None = None, open_low: bool = False,
         open_high: bool = False) -> float:
    """A finite real number (Python float) in the interval given by ``low``/``high`` (either may
    be ``None``), closed unless ``open_low``/``open_high``."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise ParameterError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    bad = ((low is not None and (v <= low if open_low else v < low))
           or (high is not None and (v >= high if open_high else v > high)))
    if bad:
        raise ParameterError(f"{name} must be in {_interval(low, high, open_low, open_high)}, got {value!r}")
    return v


def probability(value, name: str, *, open_low: bool = False, open_high: bool = False) -> float:
    """A probability in [0, 1] (optionally open at either end)."""
    return real(value, name, low=0.0, high=1.0, open_low=open_low, open_high=open_high)


def seed(value, name: str = "seed") -> int:
    """A required integer seed in ``[0, 2**64)``."""
    if value is None:
        raise ParameterError(f"{name} is required (an integer in [0, 2**64)): sampling is reproducible by design")
    return integer(value, name, minimum=0, limit=1 << 64)
