"""Seeded random processes for tests and benchmarks."""
from __future__ import annotations

import numpy as np

from ..process import GHMM, HMM
from .._validate import ParameterError
from ._checks import dirichlet_params, finite, positive_int, seed as _seed
from ._registry import register


@register
def random_hmm(num_states: int = 3, vocab_size: int = 2, seed: int = 0, concentration: float = 1.0,
               sparsity: float = 0.0) -> HMM:
    """Random HMM: each state's joint (token, next state) row is Dirichlet(concentration);
    ``sparsity`` is the chance that an entry is zeroed first (each state keeps a transition to
    state ``(i + 1) mod S``, so the chain stays irreducible)."""
    S = positive_int("num_states", num_states)
    V = positive_int("vocab_size", vocab_size)
    concentration, sparsity = dirichlet_params(concentration, sparsity)
    rng = np.random.default_rng(_seed(seed))
    rows = rng.dirichlet(np.full(V * S, concentration), size=S)  # (S, V*S), outcome x*S + j
    if sparsity:
        mask = rng.random(rows.shape) >= sparsity
        # keep one transition i -> (i + 1) mod S per state: a cycle makes the chain irreducible,
        # so the stationary distribution stays unique
        mask[np.arange(S), rng.integers(0, V, size=S) * S + (np.arange(S) + 1) % S] = True
        rows = rows * mask
        rows /= rows.sum(axis=1, keepdims=True)
    T = rows.reshape(S, V, S).transpose(1, 0, 2)
    return HMM(np.ascontiguousarray(T), name="random_hmm")


@register
def random_ghmm_like(num_states: int = 3, vocab_size: int = 2, seed: int = 0, mixing: float = 0.5) -> GHMM:
    """A GHMM with negative entries that generates exactly the same process as
    ``random_hmm(num_states, vocab_size, seed)``: ``T'[x] = A^-1 T[x] A`` for a random
    well-conditioned ``A = I + mixing * R``. Useful for testing GHMM code against an HMM."""
    mixing = finite("mixing", mixing)
    hmm = random_hmm(num_states, vocab_size, seed)
    S = hmm.num_states
    rng = np.random.default_rng([seed, 1])
    with np.errstate(over="ignore"):
        A = np.eye(S) + mixing * rng.standard_normal((S, S)) / np.sqrt(S)
    if not np.isfinite(A).all():
        raise ParameterError(f"mixing={mixing!r} is too large: I + mixing * R overflows float64")
    # Halve the perturbation until A is well conditioned; 1100 halvings take any finite float
    # below 1e-300, so the loop is bounded.
    for _ in range(1100):
        if np.linalg.cond(A) <= 50:
            break
        A = np.eye(S) + 0.5 * (A - np.eye(S))
    Ainv = np.linalg.inv(A)
    T = np.einsum("ab,xbc,cd->xad", Ainv, hmm.T, A)
    return GHMM(T, name="random_ghmm_like")
