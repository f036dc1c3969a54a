"""Process models: HMMs with labelled transition matrices and generalised HMMs (GHMMs).

``T[x, i, j] = P(emit x, go to j | in i)``, shape ``(V, S, S)``, stored as read-only float64.
"""
from __future__ import annotations

import numpy as np

#: Tolerance on each row sum of ``T.sum(0)`` for an HMM (absolute).
ROW_SUM_TOL = 1e-8
#: Tolerance on an initial belief's normalisation (sum for HMMs, ``initial @ w`` for GHMMs).
INITIAL_TOL = 1e-6
#: Closed classes up to this size get the GTH stationary vector (O(S^3) Python-level updates;
#: 0.4 s at 500 states); larger ones a least-squares solve.
GTH_MAX_STATES = 500
#: A unique stationary vector comes from the SVD null vector when the second-smallest singular
#: value of ``M - I`` is at least this (relative): error <= ~1e-16 / gap. Below it, GTH.
MIN_SPECTRAL_GAP = 1e-4
#: For GHMMs, P(x | belief) <= this counts as zero (quasi-probabilities carry round-off).
GHMM_ZERO_TOL = 1e-12


def _as_transition_array(T, name: str) -> np.ndarray:
    arr = np.asarray(T.detach().cpu().numpy() if hasattr(T, "detach") else T)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: T must be a real numeric array, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float64, copy=True, order="C")
    if arr.ndim != 3:
        raise ValueError(f"{name}: T must have shape (V, S, S), got shape {arr.shape}")
    V, S, S2 = arr.shape
    if V < 1 or S < 1:
        raise ValueError(f"{name}: T needs V >= 1 and S >= 1, got shape {arr.shape}")
    if S != S2:
        raise ValueError(f"{name}: T must have shape (V, S, S), got shape {arr.shape} (last two differ)")
    if V > 65535:
        raise ValueError(f"{name}: vocabulary size {V} exceeds the supported maximum 65535")
    bad = ~np.isfinite(arr)
    if bad.any():
        x, i, j = np.argwhere(bad)[0]
        raise ValueError(f"{name}: T[{x}, {i}, {j}] = {arr[x, i, j]} is not finite")
    return arr


def closed_classes(M: np.ndarray) -> list[np.ndarray]:
    """Closed communicating classes of the support graph of ``M`` (``i -> j`` where
    ``M[i, j] != 0``): its strongly connected components with no edge leaving them, each a
    sorted index array. A chain has a unique stationary distribution iff there is one."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    A = csr_matrix(M != 0)
    n, labels = connected_components(A, directed=True, connection="strong")
    src, dst = A.nonzero()
    leaves = np.zeros(n, bool)
    leaves[labels[src][labels[src] != labels[dst]]] = True
    return [np.flatnonzero(labels == c) for c in range(n) if not leaves[c]]


def stationary_gth(P: np.ndarray) -> np.ndarray:
    """Stationary distribution of an irreducible stochastic matrix by the Grassmann-Taksar-Heyman
    state reduction: no subtractions, so every entry is accurate to a few ulps relative even
    when the chain mixes very slowly (switching probabilities of 1e-10 or less), where an
    eigen- or least-squares solver loses ~1e-16 / (switching probability)."""
    A = np.array(P, dtype=np.float64)
    n = A.shape[0]
    for k in range(n - 1, 0, -1):
        s = A[k, :k].sum()  # = 1 - A[k, k] for a stochastic row, computed without cancellation
        A[:k, k] /= s
        A[:k, :k] += np.outer(A[:k, k], A[k, :k])
    pi = np.zeros(n)
    pi[0] = 1.0
    for k in range(1, n):
        pi[k] = pi[:k] @ A[:k, k]
    return pi / pi.sum()


def _null_left_vectors(M: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Orthonormal basis (k, S) of {v : v (M - I) = 0}."""
    A = (M - np.eye(M.shape[0])).T
    _, s, vh = np.linalg.svd(A)
    scale = max(1.0, s[0] if s.size else 1.0)
    rank = int(np.sum(s > tol * scale))
    return vh[rank:]


class Process:
    """Shared behaviour of :class:`HMM` and :class:`GHMM`. Not instantiated directly."""

    is_generalized: bool = False

    def __init__(self, T: np.ndarray, name: str | None):
        T.setflags(write=False)
        self._T = T
        self.name = name
        self._stationary = None
        self._token_weights = None

    @property
    def T(self) -> np.ndarray:
        """Labelled transition matrices ``(V, S, S)``, float64, read-only."""
        return self._T

    @property
    def vocab_size(self) -> int:
        return int(self._T.shape[0])

    @property
    def num_states(self) -> int:
        return int(self._T.shape[1])

    @property
    def transition_matrix(self) -> np.ndarray:
        """Token-marginalised state transition matrix ``T.sum(0)``, shape ``(S, S)``."""
        return self._T.sum(axis=0)

    @property
    def w(self) -> np.ndarray:  # overridden by GHMM
        return np.ones(self.num_states)

    @property
    def token_weights(self) -> np.ndarray:
        """``Tw[x, i] = (T[x] @ w)_i``, ``(V, S)`` float64, read-only, computed once: for an HMM
        ``P(x | state i)``, and ``P(x | belief) = belief @ Tw[x]`` (``belief @ w == 1``). The
        numbers the samplers draw from (one definition in the compiled core); every other
        use of ``T @ w`` reads this."""
        if self._token_weights is None:
            from . import _core

            tw = _core.token_weights(self._T, self.w if self.is_generalized else None)
            tw.setflags(write=False)
            self._token_weights = tw
        return self._token_weights

    def next_token_probs(self, beliefs) -> np.ndarray:
        """``P(x | belief)`` for beliefs ``(..., S)``: ``(..., V)`` float64 (``beliefs @ Tw.T``;
        GHMM round-off may leave tiny negative values, which callers clip where it matters)."""
        return np.asarray(beliefs, dtype=np.float64) @ self.token_weights.T

    def most_negative_token(self, initial: np.ndarray, prefix) -> tuple[int, float] | None:
        """After walking the tokens ``prefix`` from ``initial`` (with the compiled beliefs
        kernel, so the belief has the bits every kernel computes), the token with the most
        negative probability and that probability, when it is negative beyond round-off (the
        rule of the kernels' ``negative_token_prob``); else ``None``. A state of a GHMM never has
        one: this tells a vector outside the process's states from an impossible token."""
        from . import _backend

        eta = np.asarray(initial, dtype=np.float64)
        prefix = np.ascontiguousarray(prefix, dtype=np.int64).reshape(1, -1)
        chunk = max(1, (1 << 22) // self.num_states)  # bounded memory for any prefix length
        for k in range(0, prefix.shape[1], chunk):
            b = _backend.CPU.beliefs(self, prefix[:, k:k + chunk], eta, "float64", False)[0]
            eta = b[0, -1]
        p = self.next_token_probs(eta)
        slack = self.zero_tol * np.maximum(1.0, np.abs(self.token_weights * eta).sum(axis=1))
        x = int(np.argmin(p + slack))
        return (x, float(p[x])) if p[x] < -slack[x] else None

    @property
    def stationary(self) -> np.ndarray:
        """Stationary distribution ``pi`` with ``pi @ T.sum(0) == pi`` (and ``pi @ w == 1``), float64.

        Raises ValueError when it is not unique (a non-ergodic process): pass ``initial``
        explicitly to the functions that need a starting belief.
        """
        if self._stationary is None:
            self._stationary = self._compute_stationary()
            self._stationary.setflags(write=False)
        return self._stationary

    def _compute_stationary(self) -> np.ndarray:
        if self.has_hmm_form:
            return self._stationary_from_structure()
        basis = _null_left_vectors(self.transition_matrix)
        if basis.shape[0] != 1:
            raise ValueError(
                f"{self._label()}: the stationary distribution is not unique (eigenvalue 1 has "
                f"{basis.shape[0]} independent left eigenvectors: the process is not ergodic); "
                f"pass an explicit `initial` belief")
        return self._normalise_stationary(basis[0])

    def _normalise_stationary(self, v: np.ndarray) -> np.ndarray:
        norm = v @ self.w
        if abs(norm) < 1e-12:
            raise ValueError(f"{self._label()}: stationary vector is orthogonal to w; cannot normalise")
        v = v / norm
        if not self.is_generalized:  # eigen-solver round-off (~1e-17) must not make it a non-distribution
            v = np.where(v < 0, 0.0, v)
            v = v / v.sum()
        return v

    def _stationary_from_structure(self) -> np.ndarray:
        """Stationary vector of a process with an HMM form: unique iff the support graph of the
        (w-rescaled, stochastic) transition matrix has one closed class; computed on that
        class by GTH state reduction, then mapped back (``pi_i / w_i``, so ``pi @ w == 1``)."""
        w = self.w
        P = self.transition_matrix * w[None, :] / w[:, None]
        classes = closed_classes(P)
        if len(classes) != 1:
            raise ValueError(
                f"{self._label()}: the stationary distribution is not unique (the transition graph has "
                f"{len(classes)} closed communicating classes: the process is not ergodic); "
                f"pass an explicit `initial` belief")
        # A fast-mixing chain keeps the eigen-solver's vector (accurate to ~1e-16 / gap); a slowly
        # mixing one (small gap) gets GTH on its closed class, accurate whatever the gap.
        M = self.transition_matrix
        _, sv, vh = np.linalg.svd((M - np.eye(M.shape[0])).T)
        scale = max(1.0, sv[0])
        c = classes[0]
        if sv.size == 1 or (sv[-1] <= 1e-9 * scale and sv[-2] >= MIN_SPECTRAL_GAP * scale):
            v = np.zeros_like(vh[-1])
            v[c] = vh[-1][c]  # states outside the closed class are transient: exactly 0, not round-off
            return self._normalise_stationary(v)
        Pc = P[np.ix_(c, c)]
        Pc = Pc / Pc.sum(axis=1, keepdims=True)
        if c.size > GTH_MAX_STATES:  # GTH is O(n^3) Python-level updates: least squares instead
            B = np.vstack([(Pc - np.eye(c.size)).T, np.ones((1, c.size))])
            rhs = np.zeros(c.size + 1)
            rhs[-1] = 1.0
            pc = np.clip(np.linalg.lstsq(B, rhs, rcond=None)[0], 0, None)
        else:
            pc = stationary_gth(Pc)
        pi = np.zeros(self.num_states)
        pi[c] = pc
        pi = pi / w
        return pi / (pi @ w)

    @property
    def has_hmm_form(self) -> bool:
        """True when ``T >= 0`` and ``w > 0``: the process is then an HMM up to the diagonal
        similarity by ``w`` (:meth:`to_hmm`)."""
        if "_hmm_form" not in self.__dict__:
            self._hmm_form = bool(np.all(self._T >= 0) and np.all(self.w > 0))
        return self._hmm_form

    def to_hmm(self) -> "HMM":
        """An :class:`HMM` generating the same process, with the same states: ``self`` for an
        HMM; for a GHMM with non-negative ``T`` and positive ``w`` (e.g. a rescaled HMM
        presentation), ``T'[x] = D^-1 T[x] D`` with ``D = diag(w)`` (beliefs map as
        ``eta'_i = eta_i w_i``). Raises ValueError for a GHMM with negative entries or a
        non-positive ``w``, which have no HMM presentation on the same states."""
        if not self.is_generalized:
            return self
        if not self.has_hmm_form:
            what = "negative entries in T" if np.any(self._T < 0) else "a right eigenvector w with non-positive entries"
            raise ValueError(f"{self._label()} has {what}: it has no HMM presentation on the same states "
                             f"(this operation needs one)")
        w = self.w
        T = self._T * w[None, None, :] / w[None, :, None]
        T = T / T.sum(axis=(0, 2))[None, :, None]  # remove round-off from the eigenvector
        return HMM(T, name=self.name)

    def check_initial(self, initial) -> np.ndarray:
        """Validate a starting belief (length S, finite, normalised); default: the stationary one."""
        if initial is None:
            return np.ascontiguousarray(self.stationary, dtype=np.float64)
        from ._arrays import to_numpy

        arr = to_numpy(initial, "initial")
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"initial must be a real numeric vector, got dtype {arr.dtype}")
        eta = np.array(arr, dtype=np.float64)
        if eta.shape != (self.num_states,):
            raise ValueError(f"initial must be a vector of length {self.num_states} (the number of states), "
                             f"got shape {eta.shape}")
        if not np.all(np.isfinite(eta)):
            raise ValueError("initial contains a non-finite value")
        return self._normalise_initial(eta)

    def _normalise_initial(self, eta: np.ndarray) -> np.ndarray:
        if np.any(eta < 0):
            raise ValueError(f"initial must be a probability distribution: entry {int(np.argmax(eta < 0))} "
                             f"is negative ({eta[eta < 0][0]})")
        total = eta.sum()
        if abs(total - 1.0) > INITIAL_TOL:
            raise ValueError(f"initial must be a probability distribution: it sums to {total}, not 1")
        return np.ascontiguousarray(eta / total)

    @property
    def zero_tol(self) -> float:
        return 0.0

    def _label(self) -> str:
        return f"{type(self).__name__}({self.name!r})" if self.name else type(self).__name__

    def __repr__(self) -> str:
        return f"{self._label()}(V={self.vocab_size}, S={self.num_states})"


class HMM(Process):
    """Hidden Markov model with labelled transition matrices ``T`` of shape ``(V, S, S)``.

    Validation: 3-D, finite, non-negative, and every row of ``T.sum(0)`` sums to 1 within
    ``ROW_SUM_TOL`` (1e-8, absolute); rows are then renormalised exactly.
    """

    is_generalized = False

    def __init__(self, T, *, name: str | None = None):
        arr = _as_transition_array(T, name or "HMM")
        if np.any(arr < 0):
            x, i, j = np.argwhere(arr < 0)[0]
            raise ValueError(f"HMM: T[{x}, {i}, {j}] = {arr[x, i, j]} is negative "
                             f"(use compmech.GHMM for quasi-probabilities)")
        sums = arr.sum(axis=(0, 2))
        off = np.abs(sums - 1.0) > ROW_SUM_TOL
        if off.any():
            i = int(np.argmax(off))
            raise ValueError(f"HMM: row {i} of T.sum(0) sums to {float(sums[i])!r}, not 1 (tolerance {ROW_SUM_TOL})")
        arr /= sums[None, :, None]
        super().__init__(arr, name)


class GHMM(Process):
    """Generalised HMM: like :class:`HMM` but entries may be negative.

    Normalisation uses the right eigenvector ``w`` of ``T.sum(0)`` for eigenvalue 1:
    ``P(x | eta) = eta T[x] w / (eta w)``. If the spectral radius of ``T.sum(0)`` is not 1,
    ``T`` is divided by it (recorded in ``.scale``); the largest-modulus eigenvalue must be
    real and positive, and simple. ``w`` is the all-ones vector when ``T.sum(0)`` is
    row-stochastic (so every HMM is a GHMM with ``w = 1``); otherwise it is scaled so that
    ``mean(w) = 1`` (sign chosen positive), and ``stationary @ w == 1``.
    """

    is_generalized = True

    def __init__(self, T, *, name: str | None = None):
        arr = _as_transition_array(T, name or "GHMM")
        M = arr.sum(axis=0)
        if np.allclose(M.sum(axis=1), 1.0, rtol=0, atol=1e-12):
            rho = 1.0  # row-stochastic (every HMM): w = ones, even for periodic chains
        else:
            # Periodic processes have several eigenvalues on the spectral circle: pick the real
            # positive one among them, whatever order the eigen-solver returns them in.
            eig = np.linalg.eigvals(M)
            radius = np.abs(eig).max()
            top = eig[np.abs(eig) >= radius * (1 - 1e-9)]
            real_pos = top[(np.abs(top.imag) <= 1e-9 * radius) & (top.real > 0)]
            if radius <= 0 or real_pos.size == 0:
                raise ValueError(f"GHMM: T.sum(0) has no real positive eigenvalue of largest modulus "
                                 f"(largest-modulus eigenvalues: {np.round(top, 12)})")
            rho = float(real_pos.real.max())
        self.scale = float(rho)
        if abs(self.scale - 1.0) > 1e-12:
            arr = arr / self.scale
            M = M / self.scale
        ones = np.ones(M.shape[0])
        if np.allclose(M @ ones, ones, rtol=0, atol=1e-12):
            w = ones
        else:
            A = M - np.eye(M.shape[0])
            _, s, vh = np.linalg.svd(A)
            rank = int(np.sum(s > 1e-9 * max(1.0, s[0])))
            if M.shape[0] - rank != 1:
                raise ValueError(f"GHMM: eigenvalue 1 of T.sum(0) is not simple ({M.shape[0] - rank} right eigenvectors)")
            w = vh[-1]
            w = w / w.mean() if abs(w.mean()) > 1e-12 else w / (np.sign(w[np.argmax(np.abs(w))]) * np.abs(w).max())
        w = np.ascontiguousarray(w, dtype=np.float64)
        w.setflags(write=False)
        self._w = w
        super().__init__(arr, name)

    @property
    def w(self) -> np.ndarray:
        """Right eigenvector of ``T.sum(0)`` for eigenvalue 1, float64 ``(S,)``."""
        return self._w

    @property
    def zero_tol(self) -> float:
        return GHMM_ZERO_TOL

    def _normalise_initial(self, eta: np.ndarray) -> np.ndarray:
        total = eta @ self._w
        if abs(total - 1.0) > INITIAL_TOL:
            raise ValueError(f"initial must be normalised so that initial @ w == 1; got {total}")
        eta = eta / total
        # Only a state of the GHMM gives every word a probability in [0, 1]; the kernels would
        # treat a negative one as zero and return the rest (probabilities above 1, such tokens sampled).
        p = self.next_token_probs(eta)
        if p.min() < -GHMM_ZERO_TOL:
            x = int(np.argmin(p))
            raise ValueError(f"initial is not a state of this GHMM: it gives token {x} the negative "
                             f"probability {float(p[x]):.6g}")
        return np.ascontiguousarray(eta)


def as_process(process) -> Process:
    """The process itself if it is an HMM/GHMM; TypeError otherwise."""
    if isinstance(process, Process):
        return process
    raise TypeError(f"expected a compmech.HMM or compmech.GHMM, got {type(process).__name__}")
