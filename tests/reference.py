"""Plain numpy float64 reference implementations the compiled kernels are tested against.

Deliberately naive: explicit time loops, no shared code with compmech's kernels."""
from __future__ import annotations

import itertools

import numpy as np


def ref_beliefs(T, w, init, tokens, zero_tol=0.0):
    """Beliefs (B, L, S) after each prefix and log-probabilities (B,); NaN/-inf once a row
    hits a zero-probability token."""
    tokens = np.atleast_2d(np.asarray(tokens, dtype=np.int64))
    B, L = tokens.shape
    S = T.shape[1]
    eta = np.tile(np.asarray(init, dtype=np.float64), (B, 1))
    out = np.empty((B, L, S))
    logp = np.zeros(B)
    for t in range(L):
        nxt = np.einsum("bi,bij->bj", eta, T[tokens[:, t]])
        norm = nxt @ w
        with np.errstate(divide="ignore", invalid="ignore"):
            bad = ~(norm > zero_tol)
            norm = np.where(bad, np.nan, norm)
            eta = nxt / norm[:, None]
            logp = np.where(np.isnan(logp) | bad, np.nan, logp + np.log(norm))
        out[:, t] = eta
    return out, np.where(np.isnan(logp), -np.inf, logp)


def ref_sequence_prob(T, w, init, seq):
    v = np.asarray(init, dtype=np.float64)
    for x in seq:
        v = v @ T[x]
    return float(v @ w)


def ref_msp_level(T, w, init, depth, zero_tol=0.0):
    """All sequences of length `depth` with positive probability, lexicographic, with
    probabilities and beliefs (brute force over V**depth)."""
    V, S = T.shape[0], T.shape[1]
    seqs, probs, beliefs = [], [], []
    for seq in itertools.product(range(V), repeat=depth):
        v = np.asarray(init, dtype=np.float64)
        ok = True
        for x in seq:
            nv = v @ T[x]
            p = nv @ w
            if not p > zero_tol:
                ok = False
                break
            v = nv
        if not ok:
            continue
        p = v @ w
        seqs.append(seq)
        probs.append(p)
        beliefs.append(v / p)
    return (np.array(seqs, dtype=np.int64).reshape(-1, depth), np.array(probs),
            np.array(beliefs).reshape(-1, S))


def stationary(T):
    M = T.sum(0)
    vals, vecs = np.linalg.eig(M.T)
    k = int(np.argmin(np.abs(vals - 1)))
    v = np.real(vecs[:, k])
    return v / v.sum()
