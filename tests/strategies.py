"""Hypothesis strategies for random processes, shared by the property tests (conftest.py only
holds fixtures)."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

import compmech as cm
from reference import quantum_instrument_ghmm_T


def _quasi(draw, max_states, max_vocab):
    """Genuinely quasi-probabilistic GHMMs: the published families with random parameters and
    random real quantum instruments (negative entries, no small equivalent HMM)."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    options = []
    if max_states >= 3 and max_vocab >= 4:
        options.append("tom")
    if max_states >= 3 and max_vocab >= 3:
        options.append("post")
    if max_states >= 4 and max_vocab >= 2:
        options.append("fanizza")
    d_max = max(d for d in range(1, 12) if d * (d + 1) // 2 <= max_states)
    if d_max >= 2 and max_vocab >= 2:
        options.append("instrument")
    if not options:
        return cm.processes.random_ghmm_like(min(max_states, 3), min(max_vocab, 2), seed)
    kind = draw(st.sampled_from(options))
    if kind == "tom":
        return cm.processes.tom_quantum(alpha=float(rng.uniform(0.2, 3)), beta=float(rng.uniform(0.2, 8)))
    if kind == "post":
        return cm.processes.post_quantum(log_alpha=float(rng.uniform(0.2, 1.5)), beta=float(rng.uniform(0.1, 0.9)))
    if kind == "fanizza":
        # lam <= 0.5: from about lam = 0.65 on, some alphas give words of negative probability
        # (e.g. alpha = 1.3, lam = 0.8: the length-2 words' probabilities sum to 1.10 over the
        # positive ones), which is not a process at all; 0 < lam < 1 is necessary, not sufficient
        return cm.processes.fanizza(alpha=float(rng.uniform(0, 2 * math.pi)), lam=float(rng.uniform(0.1, 0.5)))
    d = draw(st.integers(2, d_max))
    V = draw(st.integers(2, max_vocab))
    return cm.GHMM(quantum_instrument_ghmm_T(d, V, seed, kraus=draw(st.integers(1, 2))), name="instrument")


def near_deterministic_hmm(S, V, seed, eps=1e-4):
    """Almost every (token, next state) choice nearly certain: Dirichlet(0.02) rows (mostly one
    entry near 1) blended with ``eps`` of a dense random HMM, which keeps the chain irreducible
    with a spectral gap of order ``eps``."""
    sharp = cm.processes.random_hmm(S, V, seed, concentration=0.02).T
    dense = cm.processes.random_hmm(S, V, seed + 1).T
    return cm.HMM((1 - eps) * sharp + eps * dense, name="near_deterministic")


@st.composite
def random_processes(draw, max_states=12, max_vocab=8, ghmm=None, ergodic=True):
    """Random processes of several kinds:

    - HMMs, dense, sparse (up to 90 % zeros) or near-deterministic (see
      :func:`near_deterministic_hmm`);
    - GHMMs: similarity transforms of HMMs (same process, negative entries) and genuinely
      quasi-probabilistic ones (tom_quantum, post_quantum, fanizza with random parameters,
      random quantum instruments);
    - with ``ergodic=False`` also non-ergodic mixtures of two HMMs (no unique stationary
      distribution: callers pass an initial belief, or use ``.stationary``, the mixture's own).
    """
    S = draw(st.integers(1, max_states))
    V = draw(st.integers(1, max_vocab))
    seed = draw(st.integers(0, 2**31 - 1))
    as_ghmm = draw(st.booleans()) if ghmm is None else ghmm
    if as_ghmm:
        if draw(st.booleans()):
            return _quasi(draw, max_states, max_vocab)
        return cm.processes.random_ghmm_like(S, V, seed)
    kind = draw(st.sampled_from(["dense", "sparse", "near_deterministic"]
                                + (["mixture"] if not ergodic and max_states >= 2 else [])))
    if kind == "dense":
        return cm.processes.random_hmm(S, V, seed)
    if kind == "sparse":
        return cm.processes.random_hmm(S, V, seed, sparsity=draw(st.sampled_from([0.3, 0.6, 0.9])))
    if kind == "near_deterministic":
        return near_deterministic_hmm(S, V, seed, eps=draw(st.sampled_from([1e-6, 1e-4, 1e-2])))
    S1 = draw(st.integers(1, max_states - 1))
    a = cm.processes.random_hmm(S1, V, seed)
    b = cm.processes.random_hmm(draw(st.integers(1, max_states - S1)), V, seed + 1, sparsity=0.5)
    wt = draw(st.floats(0.1, 0.9))
    return cm.processes.mixture([a, b], [wt, 1 - wt])
