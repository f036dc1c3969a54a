"""Standard small processes of computational mechanics."""
from __future__ import annotations

import numpy as np

from .._validate import ParameterError
from ..process import HMM
from ._checks import prob
from ._registry import register


@register
def coin(p: float = 0.5) -> HMM:
    """Biased coin (IID), S=1: token 0 with probability p."""
    p = prob("p", p)
    return HMM(np.array([[[p]], [[1 - p]]]), name="coin")


@register
def golden_mean(p: float = 0.5) -> HMM:
    """Golden mean process (no two consecutive 1s): from state A emit 1 with probability p."""
    p = prob("p", p, open_low=True, open_high=True)
    T = np.zeros((2, 2, 2))
    T[0] = [[1 - p, 0], [1, 0]]
    T[1] = [[0, p], [0, 0]]
    return HMM(T, name="golden_mean")


@register
def even(p: float = 0.5) -> HMM:
    """Even process (1s come in even-length runs): from state A emit 1 with probability p."""
    p = prob("p", p, open_low=True, open_high=True)
    T = np.zeros((2, 2, 2))
    T[0] = [[1 - p, 0], [0, 0]]
    T[1] = [[0, p], [1, 0]]
    return HMM(T, name="even")


@register
def sns(p: float = 0.5, q: float = 0.5) -> HMM:
    """Simple nonunifilar source (Crutchfield 1994)."""
    p = prob("p", p)
    q = prob("q", q, open_low=True)
    T = np.zeros((2, 2, 2))
    T[0] = [[1 - p, p], [0, 1 - q]]
    T[1] = [[0, 0], [q, 0]]
    return HMM(T, name="sns")


@register
def zero_one_random(p: float = 0.5) -> HMM:
    """Zero-one-random (Z1R): emits 0, 1, then a random bit (1 with probability p), repeating."""
    p = prob("p", p)
    T = np.zeros((2, 3, 3))
    T[0] = [[0, 1, 0], [0, 0, 0], [1 - p, 0, 0]]
    T[1] = [[0, 0, 0], [0, 0, 1], [p, 0, 0]]
    return HMM(T, name="zero_one_random")


@register
def rrxor(p1: float = 0.5, p2: float = 0.5) -> HMM:
    """Random-random-XOR: two random bits then their XOR. States S, 0, 1, T, F (S=5, V=2);
    the MSP has 36 distinct beliefs (Shai et al. 2024)."""
    p1 = prob("p1", p1)
    p2 = prob("p2", p2)
    S_, Z, O, Tt, F = range(5)
    T = np.zeros((2, 5, 5))
    T[0, S_, Z] = p1
    T[1, S_, O] = 1 - p1
    T[0, Z, F] = p2
    T[1, Z, Tt] = 1 - p2
    T[0, O, Tt] = p2
    T[1, O, F] = 1 - p2
    T[1, Tt, S_] = 1.0
    T[0, F, S_] = 1.0
    return HMM(T, name="rrxor")


@register
def mess3(x: float = 0.05, alpha: float = 0.85) -> HMM:
    """Mess3 (Marzen & Crutchfield 2017; Shai et al. 2024 use x=0.05, alpha=0.85): three states,
    three tokens, ``T[k, i, j] = (alpha if j == k else (1-alpha)/2) * (1-2x if i == j else x)``.
    Its mixed-state presentation is an infinite fractal in the 2-simplex."""
    x = prob("x", x)
    if x > 0.5:
        raise ParameterError(f"x must be in [0, 0.5], got {x}")
    alpha = prob("alpha", alpha)
    emit = np.full((3, 3), (1 - alpha) / 2)  # emit[k, j]
    np.fill_diagonal(emit, alpha)
    move = np.full((3, 3), x)
    np.fill_diagonal(move, 1 - 2 * x)
    T = emit[:, None, :] * move[None, :, :]
    return HMM(T, name="mess3")
