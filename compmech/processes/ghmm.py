"""Generalised HMMs with quasi-probability (negative) entries, as used by Riechers, Elliott &
Shai (2025), "Neural networks leverage nominally quantum and post-quantum representations",
arXiv:2507.07432."""
from __future__ import annotations

import math

import numpy as np

from ..process import GHMM
from .._validate import ParameterError
from ._checks import finite as _finite, real
from ._registry import register


#: exp(log_alpha) must stay a finite float64.
_MAX_LOG = math.log(np.finfo(np.float64).max)


@register
def tom_quantum(alpha: float = 1.0, beta: float = math.sqrt(51)) -> GHMM:
    """Four-token, three-state GHMM of a qutrit measured in a fixed basis set ("Tom quantum",
    arXiv:2507.07432; used there with alpha=1, beta=sqrt(51)). With ``g = 1/(4(a^2+b^2))``,
    ``c = 1/4``, ``m = (a^2-b^2) g``, ``o = 2ab g``: T0=[[c,0,o],[0,m,0],[o,0,c]],
    T1=[[c,0,-o],[0,m,0],[-o,0,c]], T2=[[c,o,0],[o,c,0],[0,0,m]], T3=[[c,-o,0],[-o,c,0],[0,0,m]]."""
    a = _finite("alpha", alpha)
    b = _finite("beta", beta)
    if a * a + b * b == 0:
        raise ParameterError("alpha and beta must not both be 0")
    if not math.isfinite(a * a + b * b):
        raise ParameterError(f"alpha**2 + beta**2 overflows float64 (alpha={alpha!r}, beta={beta!r}); "
                             f"only their ratio matters, so scale both down")
    g = 1.0 / (4.0 * (a * a + b * b))
    c, m, o = 0.25, (a * a - b * b) * g, 2 * a * b * g
    T = np.array([
        [[c, 0, o], [0, m, 0], [o, 0, c]],
        [[c, 0, -o], [0, m, 0], [-o, 0, c]],
        [[c, o, 0], [o, c, 0], [0, 0, m]],
        [[c, -o, 0], [-o, c, 0], [0, 0, m]],
    ])
    return GHMM(T, name="tom_quantum")


@register
def post_quantum(log_alpha: float = 1.0, beta: float = 0.5) -> GHMM:
    """Three-token, three-state post-quantum GHMM (arXiv:2507.07432; used there with
    log_alpha=1, beta=0.5). ``alpha = exp(log_alpha)``; needs ``alpha > 1 > beta > 0`` and
    ``alpha + beta != 2``. T0 = outer([1,1,0], [1,-1,-1]), T1 = [[a,0,0],[0,1,0],[0,ln a,1]],
    T2 the same with beta; all divided by the spectral radius of their sum."""
    la = real(log_alpha, "log_alpha", low=0.0, high=_MAX_LOG, open_low=True)  # alpha > 1, finite
    b = real(beta, "beta", low=0.0, high=1.0, open_low=True, open_high=True)
    a = math.exp(la)
    if abs(a + b - 2) < 1e-12:
        raise ParameterError(f"post_quantum needs alpha + beta != 2, got alpha={a!r}, beta={b!r}")
    T0 = np.outer([1.0, 1.0, 0.0], [1.0, -1.0, -1.0])
    T1 = np.array([[a, 0, 0], [0, 1, 0], [0, math.log(a), 1]])
    T2 = np.array([[b, 0, 0], [0, 1, 0], [0, math.log(b), 1]])
    T = np.stack([T0, T1, T2])
    rho = np.max(np.abs(np.linalg.eigvals(T.sum(0))))
    return GHMM(T / rho, name="post_quantum")


#: Run lengths ``k`` over which :func:`fanizza` checks its word probabilities. The conditionals
#: along a run of 1s are quasi-periodic in ``k`` (a rotation by ``alpha``), so a violation shows
#: within a few hundred steps unless alpha is within ~1e-3 of a rational multiple of 2 pi; a
#: word with a longer run has probability of order lam**4096 (1e-634 at lam = 0.7).
FANIZZA_CHECKED_RUNS = 4096


def _fanizza_T(al: float, lam: float) -> np.ndarray:
    cs, sn = math.cos(al), math.sin(al)
    den = 1 - 2 * lam * cs + lam * lam
    a = (1 - lam * cs + lam * sn) / den
    b = (1 - lam * cs - lam * sn) / den
    pi0 = np.array([1 - (2 / (1 - lam) - a - b) / 4, 1 / (2 * (1 - lam)), -a / 4, -b / 4])
    w = np.array([1.0, 1 - lam, 1 + lam * (sn - cs), 1 - lam * (sn + cs)])
    T0 = np.outer(w, pi0)
    T1 = lam * np.array([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, cs, -sn], [0, 0, sn, cs]])
    return np.stack([T0, T1])


def _fanizza_checked(al: float, lam: float):
    """``(GHMM, None)`` when every word of fanizza(al, lam) with runs of 1s shorter than
    FANIZZA_CHECKED_RUNS has probability >= 0, else ``(None, why)`` (the shortest negative
    conditional word probability). T0 has rank one, so every word factorises into runs ``1^k 0``
    started either from the stationary belief or from the belief after a 0: checking
    ``P(x | 1^k)`` and ``P(x | 0 1^k)`` for x in {0, 1} checks every word."""
    try:
        g = GHMM(_fanizza_T(al, lam), name="fanizza")
    except ValueError as exc:  # T.sum(0) without a simple, real, positive top eigenvalue
        return None, str(exc)
    T, w = g.T, g.w
    eta = g.stationary
    after0 = eta @ T[0]
    k = np.arange(FANIZZA_CHECKED_RUNS)
    c, s = np.cos(k * al), np.sin(k * al)
    Tw = T @ w  # (2, S): P(x | belief) numerators
    found = []
    for label, v0 in (("", eta), ("0", after0)):
        # v0 T1^k up to a positive factor: T1 is lam/scale times diag(0, 1) (+) rotation(alpha)
        V = np.zeros((k.size, 4))
        V[:, 1] = v0[1]
        V[:, 2] = v0[2] * c + v0[3] * s
        V[:, 3] = -v0[2] * s + v0[3] * c
        V[0] = v0
        den = V @ w
        num = V @ Tw.T  # (K, 2)
        scale = np.abs(V) @ np.abs(w)
        bad = np.minimum(num.min(1), den) < -1e-12 * scale
        if bad.any():
            i = int(np.argmax(bad))
            x = int(np.argmin(num[i]))
            val = float(num[i, x] / den[i]) if den[i] > 0 else float(den[i] / scale[i])
            past = label + "1" * i if i <= 8 else f"{label}1^{i}"
            found.append((i + len(label), f"P({x} | {past or 'nothing'}) = {val:.4g}" if den[i] > 0
                          else f"P({past}) <= 0"))
    return (None, min(found)[1]) if found else (g, None)


@register
def fanizza(alpha: float = 2000.0, lam: float = 0.49) -> GHMM:
    """Fanizza et al.'s two-token, four-state GHMM with no finite HMM presentation (used in
    arXiv:2507.07432 with alpha=2000, lam=0.49). With
    ``a = (1 - lam cos(alpha) + lam sin(alpha)) / (1 - 2 lam cos(alpha) + lam^2)`` and ``b`` the same
    with ``-lam sin(alpha)``: ``pi0 = [1 - (2/(1-lam) - a - b)/4, 1/(2(1-lam)), -a/4, -b/4]``,
    ``w = [1, 1-lam, 1+lam(sin-cos), 1-lam(sin+cos)]``, ``T0 = outer(w, pi0)``,
    ``T1 = lam [[0,0,0,0],[0,1,0,0],[0,0,cos,-sin],[0,0,sin,cos]]``. Needs ``0 < lam < 1`` and
    parameters that give non-negative word probabilities (for alpha=2000, lam up to about 0.6247;
    a ParameterError names the first negative probability and the largest valid lam below)."""
    al = _finite("alpha", alpha)
    lam = real(lam, "lam", low=0.0, high=1.0, open_low=True, open_high=True)
    g, worst = _fanizza_checked(al, lam)
    if worst is not None:
        lo, hi = 0.0, lam  # bisect for the edge of validity below lam (lam -> 0 is i.i.d.-like, valid)
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _fanizza_checked(al, mid)[1] is None else (lo, mid)
        raise ParameterError(f"fanizza(alpha={alpha!r}, lam={lam!r}) is not a process: negative word "
                             f"probabilities ({worst}); with this alpha use lam <= {math.floor(lo * 1e4) / 1e4:.4f}")
    return g
