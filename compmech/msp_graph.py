"""Deduplicated mixed-state presentation (MSP) graph: ``cm.msp(process, ...)``.

Breadth-first search from the initial belief in the compiled core; a child belief within
``tol`` (max-norm) of a belief already found is merged into it. The result holds the unique
beliefs, the labelled transitions between them, each state's first-seen depth, and the
transient/recurrent structure. For processes with a finite MSP (golden mean, even, Z1R,
RRXOR, ...) the search ends by itself and ``is_complete`` is True; for infinite ones (Mess3,
SNS, every generic HMM) it stops at ``max_depth``/``max_states`` with ``is_complete`` False.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import _core, _sizes
from ._validate import integer
from .process import HMM, Process, as_process

#: ``max_states`` used when neither ``max_depth`` nor ``max_states`` is given.
DEFAULT_MAX_STATES = 100_000


def _check_limit(value, name, minimum):
    return integer(value, name, minimum=minimum, none_ok=True)


@dataclass(eq=False)
class MSPGraph:
    """Deduplicated mixed-state presentation. State 0 is the initial belief.

    Attributes:
        process: the process it was built from.
        beliefs: ``(K, S)`` float64 unique beliefs (``belief @ process.w == 1``), in BFS order;
            ``beliefs[k]`` is the belief *after* any word that leads from state 0 to state ``k``
            (state 0: the initial belief, before any token).
        depth: ``(K,)`` int32 first-seen depth (length of the shortest word reaching the state).
        expanded: ``(K,)`` bool, True where every out-transition was explored.
        src, token, dst: ``(E,)`` int32 labelled transitions ``src --token--> dst``, sorted by
            ``(src, token)``; at most one per (state, token) (the MSP is unifilar).
        prob: ``(E,)`` float64 ``P(token | belief[src])``; for an expanded state they sum to 1.
        merge_dist: ``(E,)`` max-norm distance between the belief an edge produced and the
            state it was merged into (0 where the edge created the state). Distances near
            round-off (< 1e-11) are exact coincidences; larger ones mean ``tol`` merged
            genuinely different beliefs (e.g. SNS, whose beliefs converge like 1/n).
        tol: the merging tolerance (max-norm).
        is_complete: no unexplored frontier: the graph is the whole MSP (up to ``tol``).
        hit_max_states / max_depth / max_states: why the search stopped, when it did.
    """

    process: Process
    beliefs: np.ndarray
    depth: np.ndarray
    expanded: np.ndarray
    src: np.ndarray
    token: np.ndarray
    dst: np.ndarray
    prob: np.ndarray
    merge_dist: np.ndarray
    tol: float
    max_depth: int | None
    max_states: int
    hit_max_states: bool
    merges: int
    _cache: dict = field(default_factory=dict, repr=False)

    # ---- sizes and flags -------------------------------------------------------------------
    @property
    def num_states(self) -> int:
        return int(self.beliefs.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.src.shape[0])

    @property
    def is_complete(self) -> bool:
        return bool(self.expanded.all())

    @property
    def max_merge_distance(self) -> float:
        """Largest distance at which two beliefs were merged (0.0 when none)."""
        return float(self.merge_dist.max()) if self.merge_dist.size else 0.0

    @property
    def frontier(self) -> np.ndarray:
        """``(K,)`` bool: states whose out-transitions were not explored (empty when complete)."""
        return ~self.expanded

    def __len__(self) -> int:
        return self.num_states

    def __repr__(self) -> str:
        status = "complete" if self.is_complete else (
            f"truncated ({int(self.frontier.sum())} frontier states; "
            + ("max_states reached" if self.hit_max_states else f"max_depth={self.max_depth}") + ")")
        return (f"MSPGraph({self.process!r}, states={self.num_states}, edges={self.num_edges}, "
                f"recurrent={int(self.recurrent.sum())}, {status})")

    # ---- matrices --------------------------------------------------------------------------
    def transition_matrix(self, sparse: bool = True):
        """``(K, K)`` mixed-state transition matrix ``W[i, j] = sum_x P(x | i) [i -x-> j]``
        (scipy CSR by default; dense ndarray with ``sparse=False``). Frontier rows are zero."""
        import scipy.sparse as sp

        K = self.num_states
        W = sp.csr_matrix((self.prob, (self.src, self.dst)), shape=(K, K))
        W.sum_duplicates()
        return W if sparse else W.toarray()

    def token_matrices(self) -> np.ndarray:
        """Dense ``(V, K, K)`` labelled transition matrices of the MSP."""
        V, K = self.process.vocab_size, self.num_states
        T = np.zeros((V, K, K))
        T[self.token, self.src, self.dst] = self.prob
        return T

    @property
    def next_token_probs(self) -> np.ndarray:
        """``(K, V)`` float64 ``P(x | belief)`` for every state (frontier states included)."""
        return self.process.next_token_probs(self.beliefs)

    # ---- structure -------------------------------------------------------------------------
    def _scc(self):
        if "scc" not in self._cache:
            from scipy.sparse.csgraph import connected_components

            n, labels = connected_components(self.transition_matrix(), directed=True, connection="strong")
            self._cache["scc"] = (n, labels)
        return self._cache["scc"]

    @property
    def recurrent(self) -> np.ndarray:
        """``(K,)`` bool: states in a closed strongly connected class of explored states. Exact
        even for a truncated graph (a closed explored class is closed in the full MSP)."""
        if "recurrent" not in self._cache:
            n, labels = self._scc()
            leaves = np.zeros(n, dtype=bool)  # class has an edge to another class
            cross = labels[self.src] != labels[self.dst]
            leaves[labels[self.src[cross]]] = True
            unexplored = np.zeros(n, dtype=bool)
            unexplored[labels[~self.expanded]] = True
            closed = ~leaves & ~unexplored
            self._cache["recurrent"] = closed[labels]
        return self._cache["recurrent"]

    @property
    def transient(self) -> np.ndarray:
        """``(K,)`` bool: states certainly not recurrent. Complete graph: ``~recurrent``.
        Truncated graph: explored states that can reach a recurrent class they are not in;
        the others are undecided (they may lie on a recurrent part not yet explored)."""
        if self.is_complete:
            return ~self.recurrent
        if "transient" not in self._cache:
            import scipy.sparse as sp
            from scipy.sparse.csgraph import breadth_first_order

            K = self.num_states
            rec = np.flatnonzero(self.recurrent)
            rows = np.concatenate([self.dst, np.full(rec.size, K)])
            cols = np.concatenate([self.src, rec])
            R = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(K + 1, K + 1))
            reach = np.zeros(K + 1, dtype=bool)
            reach[breadth_first_order(R, K, directed=True, return_predecessors=False)] = True
            self._cache["transient"] = reach[:K] & ~self.recurrent
        return self._cache["transient"]

    @property
    def recurrent_classes(self) -> list[np.ndarray]:
        """State indices of each closed (recurrent) class, ordered by their smallest state."""
        _, labels = self._scc()
        rec = self.recurrent
        classes = {}
        for k in np.flatnonzero(rec):
            classes.setdefault(labels[k], []).append(k)
        return [np.asarray(v) for v in sorted(classes.values(), key=lambda v: v[0])]

    def _require_complete(self, what: str):
        if not self.is_complete:
            raise ValueError(f"{what} needs a complete MSP, but this one is truncated "
                             f"({int(self.frontier.sum())} frontier states); the process's MSP may be "
                             f"infinite: raise max_states/max_depth or use an estimate")

    @property
    def stationary(self) -> np.ndarray:
        """``(K,)`` long-run (Cesaro-averaged) distribution over mixed states, starting from
        state 0: for each recurrent class, the probability of being absorbed into it times
        its stationary distribution. Needs a complete graph."""
        self._require_complete("MSPGraph.stationary")  # raises ValueError when truncated
        if "stationary" not in self._cache:
            self._cache["stationary"] = _limit_distribution(self)
        return self._cache["stationary"]

    def state_distribution(self, L: int) -> np.ndarray:
        """``(L + 1, K)`` distribution over mixed states after 0..L tokens from state 0
        (exact by propagation; rows lose mass into frontier states of a truncated graph)."""
        L = _check_limit(L, "L", 0)
        Wt = self.transition_matrix().T.tocsr()
        out = np.zeros((L + 1, self.num_states))
        mu = np.zeros(self.num_states)
        mu[0] = 1.0
        out[0] = mu
        for t in range(1, L + 1):
            mu = Wt @ mu
            out[t] = mu
        return out

    # ---- conversions -----------------------------------------------------------------------
    def as_hmm(self, *, name: str | None = None) -> HMM:
        """The MSP as a unifilar HMM over mixed states (state k = belief k). Its stationary
        distribution is not unique when the MSP has transient states; start it from state 0
        (``initial=np.eye(K)[0]``) to reproduce the original process. Needs a complete graph."""
        self._require_complete("as_hmm")
        return HMM(self.token_matrices(), name=name or f"msp({self.process.name or 'process'})")

    def to_networkx(self):
        """``networkx.MultiDiGraph``: nodes ``0..K-1`` with attributes ``belief``, ``depth``,
        ``recurrent``, ``expanded``; one edge per transition, keyed by token, with
        attributes ``token`` and ``prob``."""
        import networkx as nx

        G = nx.MultiDiGraph(process=self.process.name, tol=self.tol, is_complete=self.is_complete)
        rec = self.recurrent
        for k in range(self.num_states):
            G.add_node(k, belief=self.beliefs[k].copy(), depth=int(self.depth[k]),
                       recurrent=bool(rec[k]), expanded=bool(self.expanded[k]))
        for s, x, d, p in zip(self.src.tolist(), self.token.tolist(), self.dst.tolist(), self.prob.tolist()):
            G.add_edge(s, d, key=x, token=x, prob=p)
        return G


def _limit_distribution(g: MSPGraph) -> np.ndarray:
    """Cesaro limit of e_0 W^n for a complete MSP graph."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    K = g.num_states
    W = g.transition_matrix()
    out = np.zeros(K)
    rec = g.recurrent
    trans = np.flatnonzero(~rec)
    for cls in g.recurrent_classes:
        pi_c = class_stationary(W[cls][:, cls])
        if rec[0]:
            absorb = 1.0 if 0 in set(cls.tolist()) else 0.0
        else:
            # a = (I - Q)^-1 R 1_c over transient states; we need the entry of state 0.
            Q = W[trans][:, trans]
            r = np.asarray(W[trans][:, cls].sum(axis=1)).ravel()
            a = spla.spsolve(sp.identity(trans.size, format="csc") - Q.tocsc(), r)
            a = np.atleast_1d(a)
            absorb = float(a[np.searchsorted(trans, 0)])
        out[cls] = absorb * pi_c
    return out


#: Merges of beliefs farther apart than this (max-norm) are approximations, not coincidences:
#: a graph that needed them is not an exact finite MSP (measures, epsilon_machine).
EXACT_MERGE_TOL = 1e-11
#: Recurrent classes up to this size are solved densely; larger ones with a sparse LU.
DENSE_CLASS_LIMIT = 2000


def class_stationary(P) -> np.ndarray:
    """Stationary distribution of an irreducible stochastic matrix ``P`` (scipy sparse, or a dense
    array for a class at most ``DENSE_CLASS_LIMIT`` states, converted once by the caller): dense
    least squares for a small class (a dense solve of a 30,000-state class needs 7 GB per copy and
    O(n^3) time), else a sparse LU of ``(I - P)^T`` with its first equation replaced by ``pi_0 = 1``
    (nonsingular for an irreducible chain; no dense row or column, so the LU stays sparse)."""
    n = P.shape[0]
    if n <= DENSE_CLASS_LIMIT:
        return _stationary_of(P if isinstance(P, np.ndarray) else P.toarray())
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    A = (sp.identity(n, format="csr") - P).T.tolil()
    A[0, :] = 0.0
    A[0, 0] = 1.0
    rhs = np.zeros(n)
    rhs[0] = 1.0
    pi = np.clip(spla.spsolve(A.tocsc(), rhs), 0, None)
    return pi / pi.sum()


def _stationary_of(M: np.ndarray) -> np.ndarray:
    """Stationary distribution of an irreducible stochastic matrix (least squares)."""
    n = M.shape[0]
    A = np.vstack([(M - np.eye(n)).T, np.ones((1, n))])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    pi, *_ = np.linalg.lstsq(A, b, rcond=None)
    pi = np.clip(pi, 0, None)
    return pi / pi.sum()


def msp(process, *, max_depth=None, max_states=None, tol=1e-9, initial=None) -> MSPGraph:
    """Deduplicated mixed-state presentation of ``process``.

    Breadth-first from ``initial`` (default: the stationary distribution), in the compiled
    core. A child belief within ``tol`` (max-norm) of a state already found is merged into the
    earliest such state (whose belief is kept). States at depth ``max_depth`` are not expanded; a state is expanded only if all its
    new children fit within ``max_states`` (the search stops at the first that does not).
    With neither limit given, ``max_states`` defaults to ``DEFAULT_MAX_STATES`` (100000). With
    only ``max_depth``, the search may use what memory is available: when the graph outgrows
    it, a ``MemoryError`` (also a ``ValueError``) names the size reached and the alternatives
    (``max_states``, or streaming with ``cm.scale.msp_reduce``).
    ``result.is_complete`` says whether the whole MSP was found.

    Returns:
        :class:`MSPGraph` with ``beliefs (K, S)``, transitions ``src/token/dst/prob (E,)``,
        ``depth (K,)``, ``recurrent``/``transient`` masks, ``as_hmm()``, ``to_networkx()``.
    """
    proc = as_process(process)
    max_depth = _check_limit(max_depth, "max_depth", 0)
    max_states = _check_limit(max_states, "max_states", 1)
    memory_cap = None
    if max_states is None and max_depth is None:
        max_states = DEFAULT_MAX_STATES
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise TypeError(f"tol must be a number, got {tol!r}") from None
    if not (math.isfinite(tol) and 0 < tol < 1):
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    init = proc.check_initial(initial)
    if max_states is None:
        max_states, memory_cap = _depth_limited_states(proc, init, max_depth)
    w = np.ascontiguousarray(proc.w) if proc.is_generalized else None
    r = _core.msp_graph(np.ascontiguousarray(proc.T), w, init, -1 if max_depth is None else max_depth, max_states, tol, proc.zero_tol)
    if memory_cap is not None and r["hit_max_states"]:
        raise _sizes.TooLargeError(
            f"cm.msp(max_depth={max_depth}) outgrew the memory available at {memory_cap:,} mixed states "
            f"(~{_STATE_BYTES_FACTOR} x {_state_bytes(proc):,} bytes each): pass max_states to truncate the "
            f"search, or {_sizes.STREAMING_HINT}")
    return MSPGraph(process=proc, beliefs=r["beliefs"], depth=r["depth"], expanded=r["expanded"].astype(bool),
                    src=r["src"], token=r["token"], dst=r["dst"], prob=r["prob"],
                    merge_dist=r["dist"], tol=tol, max_depth=max_depth,
                    max_states=max_states, hit_max_states=bool(r["hit_max_states"]), merges=int(r["merges"]))


# Bytes per graph state: its belief, depth/expanded flags, index entries and up to V edges;
# the factor covers the std::vector growth (up to 2x) while the graph is built.
_STATE_BYTES_FACTOR = 2


def _state_bytes(proc: Process) -> int:
    return 8 * proc.num_states + 48 + 28 * proc.vocab_size


def _depth_limited_states(proc: Process, init: np.ndarray, max_depth: int) -> tuple[int, int | None]:
    """``max_states`` for a search limited by depth only: the tree's size bound (a graph has no
    more states than the tree has nodes), capped by memory. Returns (max_states, the memory
    cap when that is what limits it, else None)."""
    bound = 1 + sum(_sizes.msp_level_bounds(proc.T, init, max_depth))
    limit = min(2**31 - 1, bound)
    avail = _sizes.available_bytes()
    if avail is not None:
        cap = max(1, int(avail // (_STATE_BYTES_FACTOR * _state_bytes(proc))))
        if cap < limit:
            return cap, cap
    return int(limit), None
