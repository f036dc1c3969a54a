"""Parameter checks shared by process constructors."""
from __future__ import annotations

import math


def prob(name: str, value, *, open_low=False, open_high=False) -> float:
    """A probability in [0, 1] (optionally open at either end)."""
    v = float(value)
    lo_ok = v > 0 if open_low else v >= 0
    hi_ok = v < 1 if open_high else v <= 1
    if not (math.isfinite(v) and lo_ok and hi_ok):
        lo = "(0" if open_low else "[0"
        hi = "1)" if open_high else "1]"
        raise ValueError(f"{name} must be in {lo}, {hi}, got {value!r}")
    return v


def positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def dirichlet_params(concentration, sparsity) -> tuple[float, float]:
    """Parameters of the random-process generators: concentration > 0, sparsity in [0, 1)."""
    if not concentration > 0:
        raise ValueError(f"concentration must be > 0, got {concentration}")
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return float(concentration), float(sparsity)
