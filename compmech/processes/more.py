"""More named processes: leaky RRXOR, bounded-depth matching brackets and random unifilar
machines (epsilon-machines)."""
from __future__ import annotations

import numpy as np

from .._validate import ParameterError
from ..process import HMM
from ._checks import dirichlet_params, positive_int, prob, seed as _seed
from ._registry import register
from .standard import rrxor


@register
def leaky_rrxor(p1: float = 0.5, p2: float = 0.5, eps: float = 0.05) -> HMM:
    """Leaky RRXOR: ``(1 - eps) * rrxor(p1, p2).T + (eps / 10) * ones((2, 5, 5))``.

    Every transition becomes possible with a small probability, so no word is forbidden and
    the mixed-state presentation is infinite for ``eps > 0`` (``eps = 0`` is RRXOR itself)."""
    eps = prob("eps", eps)
    T = (1 - eps) * rrxor(p1, p2).T + (eps / 10.0) * np.ones((2, 5, 5))
    return HMM(T, name="leaky_rrxor")


@register
def matching_parens(open_probs=(0.5, 0.5, 0.5)) -> HMM:
    """Bounded-depth matching brackets. Tokens: 0 = ``(``, 1 = ``)``; the hidden state is
    the nesting depth ``d = 0 .. D`` with ``D = len(open_probs) + 1``.

    At depth 0 the process always opens; at depth ``1 <= d <= D - 1`` it opens with probability
    ``open_probs[d - 1]`` and closes otherwise; at depth ``D`` it must close. Every emitted
    string is a concatenation of balanced bracket words of depth at most ``D``. The depth is
    a function of the past (the machine is unifilar), so it is its own epsilon-machine when the
    probabilities at different depths differ."""
    try:
        ps = np.atleast_1d(np.asarray(open_probs, dtype=np.float64))
    except (TypeError, ValueError):
        raise ParameterError(f"open_probs must be a non-empty sequence of probabilities, got {open_probs!r}") from None
    if ps.ndim != 1 or ps.size < 1:
        raise ParameterError(f"open_probs must be a non-empty sequence of probabilities, got {open_probs!r}")
    ps = np.array([prob(f"open_probs[{i}]", v) for i, v in enumerate(ps)])
    D = ps.size + 1
    T = np.zeros((2, D + 1, D + 1))
    T[0, 0, 1] = 1.0
    for d in range(1, D):
        T[0, d, d + 1] = ps[d - 1]
        T[1, d, d - 1] = 1.0 - ps[d - 1]
    T[1, D, D - 1] = 1.0
    return HMM(T, name="matching_parens")


@register
def random_epsilon_machine(num_states: int = 4, vocab_size: int = 2, seed: int = 0,
                           concentration: float = 1.0, sparsity: float = 0.0) -> HMM:
    """Random unifilar HMM (a random epsilon-machine): from each state every allowed token
    leads to one next state, drawn uniformly; emission probabilities per state are
    Dirichlet(``concentration``) over its allowed tokens. ``sparsity`` is the chance that a
    token is forbidden in a state (each state keeps at least one). Strong
    connectivity is guaranteed by routing one allowed token of state ``i`` to ``i + 1``
    (cyclically) in a random relabelling of the states. With continuous random emission
    probabilities the machine is minimal with probability one (a minimal unifilar presentation
    of its own process), so ``epsilon_machine`` of it has ``num_states`` states."""
    S = positive_int("num_states", num_states)
    V = positive_int("vocab_size", vocab_size)
    concentration, sparsity = dirichlet_params(concentration, sparsity)
    rng = np.random.default_rng([_seed(seed), 2])
    allowed = rng.random((S, V)) >= sparsity
    keep = rng.integers(0, V, size=S)
    allowed[np.arange(S), keep] = True
    dest = rng.integers(0, S, size=(S, V))
    order = rng.permutation(S)
    for k in range(S):  # a Hamiltonian cycle through the states keeps the machine irreducible
        i, nxt = order[k], order[(k + 1) % S]
        dest[i, keep[i]] = nxt
    T = np.zeros((V, S, S))
    for i in range(S):
        toks = np.flatnonzero(allowed[i])
        p = rng.dirichlet(np.full(toks.size, concentration))
        T[toks, i, dest[i, toks]] = p
    return HMM(T, name="random_epsilon_machine")
