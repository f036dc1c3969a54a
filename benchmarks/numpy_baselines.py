"""The obvious vectorised numpy implementations (time loop, batch vectorised): the baselines
compmech's kernels are compared against."""
from __future__ import annotations

import numpy as np


def beliefs_numpy(T, init, tokens):
    B, L = tokens.shape
    S = T.shape[1]
    out = np.empty((B, L, S), dtype=np.float32)
    eta = np.tile(init, (B, 1))
    for t in range(L):
        nxt = np.einsum("bi,bij->bj", eta, T[tokens[:, t]])
        eta = nxt / nxt.sum(axis=1, keepdims=True)
        out[:, t] = eta
    return out


def sample_numpy(T, init, B, L, seed):
    V, S = T.shape[0], T.shape[1]
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(T.transpose(1, 0, 2).reshape(S, V * S), axis=1)  # outcome x * S + j
    state = (rng.random(B)[:, None] > np.cumsum(init)[None, :]).sum(1)
    tokens = np.empty((B, L), dtype=np.uint8)
    for t in range(L):
        o = (rng.random(B)[:, None] > cdf[state]).sum(1)
        o = np.minimum(o, V * S - 1)
        tokens[:, t] = o // S
        state = o % S
    return tokens


def msp_numpy(T, init, depth):
    """Level-by-level tree expansion; returns the number of nodes."""
    beliefs, probs, n = init[None, :], np.ones(1), 0
    for _ in range(depth):
        child = np.einsum("ms,xst->mxt", beliefs, T)  # (M, V, S)
        cond = child.sum(axis=2)
        keep = cond > 0
        probs = (probs[:, None] * cond)[keep]
        beliefs = child[keep] / cond[keep][:, None]
        n += probs.size
    return n
