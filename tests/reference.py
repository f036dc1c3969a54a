"""Plain numpy float64 reference implementations the library is tested against.

Deliberately naive and independent: explicit time loops and brute-force enumeration, and every
derived quantity (the stationary distribution, the GHMM normaliser ``w``, the zero-probability
tolerance, the mixed-state graph, the Cesaro limit and the Drazin inverse) computed here with
this module's own linear algebra from the transition array ``T`` alone. Nothing is read from a
compmech object except ``T`` (the tests pass ``proc.T``)."""
from __future__ import annotations

import itertools

import numpy as np

# The documented contract (README): for GHMMs a conditional probability below 1e-12 counts as
# zero; for HMMs only an exact zero does. Stated here, not read from the library.
GHMM_ZERO_TOL = 1e-12


def is_hmm(T) -> bool:
    T = np.asarray(T, dtype=np.float64)
    return bool(T.min() >= 0) and np.allclose(T.sum(axis=(0, 2)), 1.0, atol=1e-8)


def zero_tol(T) -> float:
    return 0.0 if is_hmm(T) else GHMM_ZERO_TOL


def _null_vectors(A, tol=1e-8):
    """Orthonormal basis (columns) of the numerical null space of a square ``A`` (by SVD)."""
    _, s, vt = np.linalg.svd(A)
    k = int(np.sum(s <= tol * max(1.0, s[0])))
    return vt[len(s) - k:].T


def ref_w(T) -> np.ndarray:
    """Right eigenvector of ``M = sum_x T[x]`` for eigenvalue 1 (all ones for an HMM), scaled to
    mean 1: sequence probabilities are ``init @ T[x1] ... T[xn] @ w``."""
    T = np.asarray(T, dtype=np.float64)
    S = T.shape[1]
    if is_hmm(T):
        return np.ones(S)
    N = _null_vectors(T.sum(0) - np.eye(S))
    if N.shape[1] != 1:
        raise ValueError(f"reference: eigenvalue 1 of sum_x T[x] has {N.shape[1]} right eigenvectors")
    w = N[:, 0]
    return w / w.mean() if abs(w.mean()) > 1e-9 else w / w[np.argmax(np.abs(w))]


def ref_stationary(T, w=None) -> np.ndarray:
    """The unique left eigenvector of ``sum_x T[x]`` for eigenvalue 1, normalised to
    ``pi @ w = 1``; raises if it is not unique (non-ergodic: pass an initial belief instead)."""
    T = np.asarray(T, dtype=np.float64)
    w = ref_w(T) if w is None else w
    N = _null_vectors(T.sum(0).T - np.eye(T.shape[1]))
    if N.shape[1] != 1:
        raise ValueError(f"reference: the stationary distribution is not unique ({N.shape[1]} solutions)")
    pi = N[:, 0]
    return pi / (pi @ w)


def ref_beliefs(T, tokens, init=None, w=None, tol=None):
    """Beliefs (B, L, S) after each prefix (normalised so ``belief @ w = 1``) and
    log-probabilities (B,); NaN beliefs / -inf log-probability once a row hits a token whose
    conditional probability is not above the zero tolerance."""
    T = np.asarray(T, dtype=np.float64)
    w = ref_w(T) if w is None else np.asarray(w, dtype=np.float64)
    init = ref_stationary(T, w) if init is None else np.asarray(init, dtype=np.float64)
    tol = zero_tol(T) if tol is None else tol
    tokens = np.atleast_2d(np.asarray(tokens, dtype=np.int64))
    B, L = tokens.shape
    S = T.shape[1]
    eta = np.tile(init / (init @ w), (B, 1))
    out = np.empty((B, L, S))
    logp = np.zeros(B)
    for t in range(L):
        nxt = np.einsum("bi,bij->bj", eta, T[tokens[:, t]])
        norm = nxt @ w
        with np.errstate(divide="ignore", invalid="ignore"):
            bad = ~(norm > tol)
            norm = np.where(bad, np.nan, norm)
            eta = nxt / norm[:, None]
            logp = np.where(np.isnan(logp) | bad, np.nan, logp + np.log(norm))
        out[:, t] = eta
    return out, np.where(np.isnan(logp), -np.inf, logp)


def ref_sequence_prob(T, seq, init=None) -> float:
    T = np.asarray(T, dtype=np.float64)
    w = ref_w(T)
    v = ref_stationary(T, w) if init is None else np.asarray(init, dtype=np.float64) / (np.asarray(init) @ w)
    for x in seq:
        v = v @ T[x]
    return float(v @ w)


def ref_msp_level(T, depth, init=None, tol=None):
    """All sequences of length ``depth`` with positive probability, lexicographic, with
    probabilities and beliefs (brute force over V**depth, a sequence at a time)."""
    T = np.asarray(T, dtype=np.float64)
    w = ref_w(T)
    init = ref_stationary(T, w) if init is None else np.asarray(init, dtype=np.float64) / (np.asarray(init) @ w)
    tol = zero_tol(T) if tol is None else tol
    V, S = T.shape[0], T.shape[1]
    seqs, probs, beliefs = [], [], []
    for seq in itertools.product(range(V), repeat=depth):
        v = init
        ok = True
        for x in seq:
            nv = v @ T[x]
            if not (nv @ w) > tol * (v @ w):  # conditional probability of x
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


def next_token_dist(T, belief, w=None) -> np.ndarray:
    """P(next token = x | belief), shape (..., V)."""
    T = np.asarray(T, dtype=np.float64)
    w = ref_w(T) if w is None else w
    Tw = np.einsum("xij,j->ix", T, w)  # (S, V)
    return np.asarray(belief) @ Tw


def _H_bits(q) -> np.ndarray:
    q = np.clip(q, 0.0, None)
    q = q / q.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(q > 0, q * np.log2(q), 0.0).sum(axis=-1)


def ref_myopic_entropy(T, L: int) -> np.ndarray:
    """h_mu(l) = H[X_{l-1} | X_{0:l-1}] in bits, l = 1..L, by enumerating every word of length
    l-1 (a whole level at a time, vectorised), from the stationary distribution."""
    T = np.asarray(T, dtype=np.float64)
    w = ref_w(T)
    V = T.shape[0]
    v = ref_stationary(T, w)[None, :]  # unnormalised forward vectors, one per word
    out = []
    for _ in range(L):
        p = v @ w
        keep = p > 0
        v, p = v[keep], p[keep]
        q = np.einsum("bi,xij,j->bx", v, T, w) / p[:, None]
        out.append(float(p @ _H_bits(q)))
        v = np.einsum("bi,xij->bxj", v, T).reshape(-1, T.shape[1])
    return np.array(out)


def geometric_limit(seq):
    """Aitken limit of a geometrically converging sequence and the sum of its remaining
    differences: ``(limit, tail)`` with ``tail = sum_{k > n} (seq_k - limit)`` extrapolated."""
    d = np.diff(seq)
    r = d[-1] / d[-2]
    limit = seq[-1] + d[-1] * r / (1 - r)
    tail = (seq[-1] - limit) * r / (1 - r)
    return float(limit), float(tail)


def ref_msp_graph(T, max_states=2000, decimals=10):
    """Mixed-state graph by breadth-first search from the stationary distribution, merging
    beliefs equal after rounding to ``decimals``. Returns ``(W (K, K) state-to-state transition
    matrix, h (K,) next-token entropy in bits, beliefs (K, S))``; raises if more than
    ``max_states`` mixed states appear (an infinite MSP)."""
    T = np.asarray(T, dtype=np.float64)
    w = ref_w(T)
    tol = zero_tol(T)
    start = ref_stationary(T, w)
    index = {tuple(np.round(start, decimals)): 0}
    beliefs, edges, queue = [start], [], [0]
    while queue:
        k = queue.pop(0)
        b = beliefs[k]
        for x in range(T.shape[0]):
            nv = b @ T[x]
            p = nv @ w
            if not p > tol:
                continue
            nb = nv / p
            key = tuple(np.round(nb, decimals))
            if key not in index:
                if len(beliefs) >= max_states:
                    raise ValueError("reference: more than max_states mixed states")
                index[key] = len(beliefs)
                beliefs.append(nb)
                queue.append(index[key])
            edges.append((k, index[key], p))
    K = len(beliefs)
    W = np.zeros((K, K))
    for s, d, p in edges:
        W[s, d] += p
    B = np.array(beliefs)
    return W, _H_bits(next_token_dist(T, B, w)), B


def cesaro_limit(W) -> np.ndarray:
    """``W^inf = lim (1/n) sum_k W^k`` of a stochastic matrix: the spectral projector onto the
    eigenvalue 1 (semisimple for stochastic matrices), from the right and left null spaces of
    ``W - I``; no class structure needed."""
    K = W.shape[0]
    R = _null_vectors(W - np.eye(K), tol=1e-10)
    Lt = _null_vectors(W.T - np.eye(K), tol=1e-10)
    return R @ np.linalg.solve(Lt.T @ R, Lt.T)


def ref_drazin_measures(W, h):
    """Excess entropy and transient information from the dense Drazin inverse:
    ``E = e_0 (I - W)^D h`` and ``T = e_0 [(I - W + W^inf)^-2 - W^inf] h``, i.e.
    ``sum_n d_n`` and ``sum_n (n + 1) d_n`` with ``d_n = e_0 (W^n - W^inf) h``."""
    K = W.shape[0]
    P = cesaro_limit(W)
    Z = np.linalg.inv(np.eye(K) - W + P)
    return float((Z - P)[0] @ h), float((Z @ Z - P)[0] @ h), float(P[0] @ h)


def quantum_instrument_ghmm_T(d: int, V: int, seed: int, kraus: int = 1) -> np.ndarray:
    """A genuinely quasi-probabilistic GHMM: a random quantum instrument on real d x d density
    matrices (``V`` outcomes, ``kraus`` Kraus operators each, jointly an isometry) written in an
    orthonormal basis of real symmetric matrices (S = d(d+1)/2 coordinates). Its entries are
    negative and it is not a similarity transform of a small HMM (a qubit/qutrit measurement
    process generally needs infinitely many HMM states)."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((V * kraus * d, d))
    u, _, vt = np.linalg.svd(G, full_matrices=False)
    K = (u @ vt).reshape(V, kraus, d, d)  # sum_{x,k} K^T K = I
    basis = []
    for i in range(d):
        for j in range(i, d):
            B = np.zeros((d, d))
            if i == j:
                B[i, i] = 1.0
            else:
                B[i, j] = B[j, i] = 1 / np.sqrt(2)
            basis.append(B)
    basis = np.array(basis)  # (S, d, d), orthonormal under tr(A B)
    # rho = sum_i r_i B_i; Phi_x(rho) = sum_k K rho K^T; r'_j = tr(B_j Phi_x(rho)) = r @ T[x]
    phi = np.einsum("xkab,ibc,xkdc->xiad", K, basis, K)  # Phi_x(B_i)
    return np.einsum("xiad,jad->xij", phi, basis)
