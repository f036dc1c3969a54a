"""Epsilon-machines: the minimal unifilar presentation of a process (its recurrent causal
states), from the mixed-state graph or by minimising a given unifilar HMM."""
from __future__ import annotations

import numpy as np

from .process import HMM, as_process

#: Probabilities within this (absolute) are treated as equal when merging states.
PROB_TOL = 1e-8


class EpsilonMachine(HMM):
    """A unifilar HMM whose states are causal states. ``.stationary`` is the causal-state
    distribution of the process it came from (for a non-ergodic process: the mixture over its
    recurrent classes, weighted by how often each is reached). Extra attributes:

    - ``beliefs``: ``(S, S_orig)`` for each causal state, a representative belief over the
      original process's states (``None`` when built by minimising a unifilar HMM).
    - ``state_map``: ``(n,)`` causal-state index of each source state (mixed state of the MSP's
      recurrent part, or state of the unifilar HMM that was minimised).
    - ``source_states``: indices of those source states.
    """

    def __init__(self, T, stationary, *, beliefs=None, state_map=None, source_states=None, name=None):
        super().__init__(T, name=name)
        self._pi = np.asarray(stationary, dtype=np.float64)
        self.beliefs = beliefs
        self.state_map = state_map
        self.source_states = source_states

    def _compute_stationary(self) -> np.ndarray:
        return self._pi.copy()


def unifilar_successors(T: np.ndarray, zero_tol: float = 0.0):
    """``(succ (S, V) int, prob (S, V))`` for a unifilar ``T``; ``succ = -1`` where a token is
    impossible. Raises ValueError naming a (state, token) with two successors."""
    V, S, _ = T.shape
    pos = T > zero_tol
    counts = pos.sum(axis=2)  # (V, S)
    if np.any(counts > 1):
        x, i = np.argwhere(counts > 1)[0]
        raise ValueError(f"not unifilar: from state {i}, token {x} leads to {int(counts[x, i])} states")
    succ = np.where(counts.T > 0, pos.argmax(axis=2).T, -1)
    prob = T.sum(axis=2).T
    prob = np.where(succ >= 0, prob, 0.0)
    return succ, prob


def is_unifilar(process) -> bool:
    proc = as_process(process)
    if proc.is_generalized and not proc.has_hmm_form:
        return False
    return bool(np.all((proc.T > 0).sum(axis=2) <= 1))


def minimize_unifilar(succ: np.ndarray, prob: np.ndarray, prob_tol: float = PROB_TOL) -> np.ndarray:
    """Coarsest partition of the states of a unifilar machine into predictively equivalent
    classes (Moore-style refinement: same P(x) for every x, and equivalent successors).
    Returns ``(n,)`` class labels numbered in order of first appearance."""
    n, V = succ.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    q = np.round(prob / prob_tol).astype(np.int64)
    _, labels = np.unique(q, axis=0, return_inverse=True)
    labels = labels.ravel()
    while True:
        nxt = np.where(succ >= 0, labels[np.maximum(succ, 0)], -1)
        sig = np.concatenate([labels[:, None], nxt], axis=1)
        _, new = np.unique(sig, axis=0, return_inverse=True)
        new = new.ravel()
        if new.max() == labels.max():
            labels = new
            break
        labels = new
    # renumber by first appearance
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels]


def _build(succ, prob, labels, weights, name, beliefs=None, source_states=None):
    C = int(labels.max()) + 1
    V = succ.shape[1]
    rep = np.array([np.flatnonzero(labels == c)[0] for c in range(C)])
    T = np.zeros((V, C, C))
    for c, r in enumerate(rep):
        for x in range(V):
            if succ[r, x] >= 0:
                T[x, c, labels[succ[r, x]]] = prob[r, x]
    pi = np.bincount(labels, weights=weights, minlength=C)
    pi = pi / pi.sum()
    return EpsilonMachine(T, pi, beliefs=None if beliefs is None else beliefs[rep], state_map=labels,
                          source_states=source_states, name=name)


def epsilon_machine(process, *, max_states: int = 100_000, tol: float = 1e-9) -> EpsilonMachine:
    """Minimal unifilar presentation (epsilon-machine) of ``process``.

    If ``process`` is a unifilar HMM (or a non-negative GHMM, taken as its equivalent HMM,
    :meth:`~compmech.Process.to_hmm`) it is minimised directly (states with zero stationary
    probability dropped, predictively equivalent states merged). Otherwise the mixed-state
    graph ``cm.msp(process, max_states=max_states, tol=tol)`` is built from the stationary
    distribution; it must be complete (a finite MSP), and its recurrent part, minimised, is the
    epsilon-machine. Raises ValueError when the MSP is infinite (or larger than ``max_states``).
    """
    from .msp_graph import EXACT_MERGE_TOL, msp

    proc = as_process(process)
    label = f"epsilon_machine({proc.name or 'process'})"
    if is_unifilar(proc):
        proc = proc.to_hmm()  # a non-negative GHMM (w != 1): the same machine rescaled by w
        succ, prob = unifilar_successors(proc.T)
        pi = proc.stationary
        keep = np.flatnonzero(pi > 1e-14)
        remap = -np.ones(proc.num_states, dtype=np.int64)
        remap[keep] = np.arange(keep.size)
        s = succ[keep]
        s = np.where(s >= 0, remap[np.maximum(s, 0)], -1)
        if np.any((s < 0) & (succ[keep] >= 0)):
            raise ValueError("stationary support is not closed under transitions")  # pragma: no cover
        labels = minimize_unifilar(s, prob[keep])
        return _build(s, prob[keep], labels, pi[keep], label, source_states=keep)
    g = msp(proc, max_states=max_states, tol=tol, initial=proc.stationary)
    if not g.is_complete:
        raise ValueError(f"epsilon_machine: the mixed-state graph of {proc!r} is not finite within "
                         f"max_states={max_states} (it has {int(g.frontier.sum())} unexplored states); "
                         f"its epsilon-machine is infinite or larger than that")
    if g.max_merge_distance > EXACT_MERGE_TOL:  # e.g. the SNS: its beliefs converge, never repeat
        raise ValueError(f"epsilon_machine: the mixed-state graph of {proc!r} closes only by merging beliefs "
                         f"{g.max_merge_distance:.1e} apart (tol={tol:g}; exact repeats are within "
                         f"{EXACT_MERGE_TOL:g}): its epsilon-machine is infinite ({g.num_states} states before "
                         f"merging closed it)")
    rec = np.flatnonzero(g.recurrent)
    remap = -np.ones(g.num_states, dtype=np.int64)
    remap[rec] = np.arange(rec.size)
    V = proc.vocab_size
    succ = -np.ones((rec.size, V), dtype=np.int64)
    prob = np.zeros((rec.size, V))
    sel = g.recurrent[g.src]
    succ[remap[g.src[sel]], g.token[sel]] = remap[g.dst[sel]]
    prob[remap[g.src[sel]], g.token[sel]] = g.prob[sel]
    labels = minimize_unifilar(succ, prob)
    weights = g.stationary[rec]
    return _build(succ, prob, labels, weights, label, beliefs=g.beliefs[rec], source_states=rec)
