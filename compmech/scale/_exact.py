"""Exact fixed-point sums from the compiled core: ``(..., 3)`` uint64 limbs, a 192-bit two's
complement integer in units of 2^-128. Limb arrays add exactly (integer addition with carries),
so partial sums merge to the same bits in any order and any sharding."""
from __future__ import annotations

from fractions import Fraction

import numpy as np

_UNIT = 1 << 128
_MOD = 1 << 192


def zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape + (3,), np.uint64)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact sum of two limb arrays of the same shape (wraps modulo 2^192, like the kernel)."""
    a = np.asarray(a, np.uint64)
    b = np.asarray(b, np.uint64)
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), np.uint64)
    with np.errstate(over="ignore"):
        s0 = a[..., 0] + b[..., 0]
        c0 = (s0 < a[..., 0]).astype(np.uint64)
        t1 = a[..., 1] + b[..., 1]
        c1 = (t1 < a[..., 1]).astype(np.uint64)
        s1 = t1 + c0
        c1 |= (s1 < t1).astype(np.uint64)
        out[..., 0] = s0
        out[..., 1] = s1
        out[..., 2] = a[..., 2] + b[..., 2] + c1
    return out


def to_int(limbs) -> int:
    v = int(limbs[0]) | (int(limbs[1]) << 64) | (int(limbs[2]) << 128)
    return v - _MOD if v >> 191 else v


def to_fraction(limbs) -> Fraction:
    return Fraction(to_int(limbs), _UNIT)


def to_float(limbs: np.ndarray) -> np.ndarray:
    """Correctly rounded float64 value(s) of limb array(s) ``(..., 3)``."""
    limbs = np.asarray(limbs, np.uint64)
    flat = limbs.reshape(-1, 3)
    out = np.fromiter((float(to_fraction(l)) for l in flat), np.float64, count=len(flat))
    return out.reshape(limbs.shape[:-1])


def diff_float(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Correctly rounded ``hi - lo`` of exact sums (e.g. h(L) = H(L) - H(L-1))."""
    hi = np.asarray(hi, np.uint64).reshape(-1, 3)
    lo = np.asarray(lo, np.uint64).reshape(-1, 3)
    return np.array([float(Fraction(to_int(a) - to_int(b), _UNIT)) for a, b in zip(hi, lo)])
