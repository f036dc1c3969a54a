"""Computational-mechanics measures, in bits.

For a process with a finite mixed-state presentation (MSP) everything is exact, from the
deduplicated graph ``cm.msp(process)`` started at the stationary distribution:

- ``h_mu(L) = e_0 W^(L-1) h`` by propagating the mixed-state distribution (``W`` the MSP
  transition matrix, ``h_k`` the next-token entropy of mixed state ``k``), so ``block_entropy``
  and ``myopic_entropy`` cost ``O(L * edges)`` and no blocks are enumerated;
- ``h_mu = e_0 W^inf h`` with ``W^inf`` the Cesaro limit (absorption into recurrent classes);
- ``E = e_0 (I - W)^D h`` and ``T = e_0 [(I - W + W^inf)^-2 - W^inf] h`` with
  ``(I - W)^D = (I - W + W^inf)^-1 - W^inf`` the Drazin inverse (Crutchfield, Ellison &
  Riechers, "Exact complexity", arXiv:1309.3792; Riechers & Crutchfield, "Spectral simplicity
  of apparent complexity" I/II, Chaos 28, 2018), evaluated blockwise and sparse: ``(I - Q)^-1``
  and ``(I - Q)^-2`` over the transient mixed states, and each recurrent class's fundamental
  matrix ``(I - P_c + 1 pi_c)^-1`` (dense route kept as a test reference);
- ``C_mu``, synchronization information ``S`` and the state uncertainty ``H[S_L | X_{0:L}]``
  from the epsilon-machine (minimised recurrent part of the MSP) and its own MSP;
- Markov order from the epsilon-machine's synchronisation structure (exact, combinatorial),
  cryptic order from ``H[S_L | X_{0:inf}] = U(L) - (E + h_mu L - H(L))``.

For an infinite MSP (Mess3, SNS, generic HMMs and GHMMs) results say so (``exact=False``) and
carry a one-sigma error estimate. ``h_mu(L)`` is exact up to the depth the graph was explored
(Monte Carlo beyond). The entropy rate is a Rao-Blackwellised Shannon-McMillan-Breiman average
of the predictive entropy ``H[X_t | belief_t]`` along long samples (fast compiled kernels; Mess3
to about 1e-4 bits in a second or two), replaced by the limit of the exact ``h_mu(L)`` when
those have converged to round-off or decay geometrically and agree with it. The excess entropy
is the exact partial sum plus a geometric tail, or a Monte Carlo continuation of the sum. A
process given by a unifilar presentation gets an exact ``h_mu`` and ``C_mu`` whatever its MSP.

Every function takes a process (``cm.HMM``/``cm.GHMM``) and returns a :class:`Measure`
(``float(m)`` / ``np.asarray(m)`` give the value). ``summary(process)`` collects them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .epsilon_machine import epsilon_machine
from .msp_graph import (DENSE_CLASS_LIMIT, EXACT_MERGE_TOL, MSPGraph, class_stationary,  # noqa: F401 (public names)
                        msp)
from ._validate import integer, real
from .process import Process, as_process

LN2 = math.log(2.0)
#: Infinite MSPs: at most this many exact h_mu(L) terms enter the excess-entropy estimate.
MAX_PARTIAL_TERMS = 4096
#: MSP size up to which the exact (graph) route is attempted.
DEFAULT_MAX_STATES = 100_000


@dataclass
class Measure:
    """A measured quantity. ``value`` is a float or an array (in ``units``); ``exact`` says it
    comes from a finite MSP (up to floating point); otherwise ``error`` is a one-sigma
    estimate (same shape as ``value``) and ``note`` says how it was obtained."""

    name: str
    value: float | np.ndarray
    exact: bool
    error: float | np.ndarray = 0.0
    units: str = "bits"
    method: str = ""
    note: str = ""

    def __float__(self) -> float:
        return float(self.value)

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.value)
        return a.astype(dtype) if dtype is not None else a

    def __format__(self, spec):
        if np.ndim(self.value) == 0:
            return format(float(self.value), spec or ".6g")
        return str(self)

    def __str__(self) -> str:
        if np.ndim(self.value) == 0:
            v = float(self.value)
            if self.exact or not np.isfinite(v):
                return f"{v:.6g} {self.units}".rstrip()
            return f"{v:.6g} ± {float(self.error):.2g} {self.units}".rstrip()
        return f"{self.name}: {np.asarray(self.value)} ({'exact' if self.exact else 'estimate'})"


# ---------------------------------------------------------------------------------------------
# Shared analysis of a process: its MSP graph and derived vectors, cached per call site.

def _entropy_bits(p: np.ndarray, axis=-1) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return t.sum(axis=axis)


@dataclass(eq=False)
class _Analysis:
    process: Process
    graph: MSPGraph
    cache: dict = field(default_factory=dict)

    @property
    def finite(self) -> bool:
        """Complete graph whose merges were all exact coincidences (finite MSP)."""
        return self.graph.is_complete and self.graph.max_merge_distance <= EXACT_MERGE_TOL

    @property
    def h(self) -> np.ndarray:
        """(K,) next-token entropy of each mixed state, bits."""
        if "h" not in self.cache:
            g = self.graph
            P = np.clip(g.next_token_probs, 0.0, None)  # frontier states: from their beliefs
            P[g.expanded] = 0.0
            P[g.src, g.token] = g.prob  # explored states: the graph's edge probabilities
            self.cache["h"] = _entropy_bits(P / np.maximum(P.sum(axis=1, keepdims=True), 1e-300))
        return self.cache["h"]

    @property
    def exact_depth(self) -> int:
        """h_mu(L) is exact for L <= this (the graph may be truncated deeper)."""
        g = self.graph
        if self.finite:
            return 10**18
        # mass reaches a frontier state, or an approximately merged one, no earlier than its depth
        cut = [int(g.depth[~g.expanded].min())] if not g.is_complete else []
        approx = g.merge_dist > EXACT_MERGE_TOL
        if approx.any():
            cut.append(int(g.depth[g.src[approx]].min()) + 1)
        return min(cut) + 1

    def _mul(self):
        if "mul" not in self.cache:
            g = self.graph
            if g.num_states <= 64:
                W = g.transition_matrix(sparse=False)
                self.cache["mul"] = lambda m: m @ W
            else:
                Wt = g.transition_matrix().T.tocsr()
                self.cache["mul"] = lambda m: Wt @ m
        return self.cache["mul"]

    def iterate(self, vec: np.ndarray, chunk: int = 1024):
        """Yield arrays of consecutive values e_0 W^n vec, n = 0, 1, ..., ``chunk`` at a time."""
        mul = self._mul()
        mu = np.zeros(self.graph.num_states)
        mu[0] = 1.0
        while True:
            out = np.empty(chunk)
            for n in range(chunk):
                out[n] = np.einsum("i,i->", mu, vec)  # not BLAS: no thread spin-up per step
                mu = mul(mu)
            yield out

    def propagate(self, vec: np.ndarray, L: int) -> np.ndarray:
        """[e_0 W^n vec for n = 0..L-1] (the mixed-state distribution propagated on the graph)."""
        return next(self.iterate(vec, L)) if L > 0 else np.zeros(0)

    def limit(self) -> np.ndarray:
        """Cesaro-limit distribution over mixed states from state 0."""
        return self.graph.stationary

    def structure(self):
        """Transient/recurrent blocks of the (complete) graph with LU factors, cached."""
        if "structure" not in self.cache:
            import scipy.sparse as sp
            import scipy.sparse.linalg as spla

            g = self.graph
            W = g.transition_matrix().tocsr()
            rec = g.recurrent
            trans = np.flatnonzero(~rec)
            classes = []
            for cls in g.recurrent_classes:
                Z = _fundamental(W[cls][:, cls])
                pi = Z.pi
                R = W[trans][:, cls].tocsr() if trans.size else None
                classes.append((cls, pi, Z, R))
            lu = None
            if trans.size:
                IQ = (sp.identity(trans.size, format="csc") - W[trans][:, trans]).tocsc()
                lu = spla.splu(IQ)
            self.cache["structure"] = (trans, classes, lu)
        return self.cache["structure"]

    def series(self, vec: np.ndarray):
        """Closed forms for ``d_n = e_0 W^n vec - lim`` (``lim = e_0 W^inf vec``):
        ``(sum_n d_n, sum_n (n + 1) d_n, lim)``. The mixed-state distribution splits into its
        transient part ``e_0 Q^n`` (summed by ``(I - Q)^-1`` and ``(I - Q)^-2``) and, per
        recurrent class ``c`` with stationary ``pi_c`` and fundamental matrix
        ``Z_c = (I - P_c + 1 pi_c)^-1``, the mass flowing in through ``R_c``; ``Z_c`` and
        ``Z_c^2`` sum the recurrent parts (Drazin inverse of ``I - P_c``). Needs a complete graph."""
        trans, classes, lu = self.structure()
        vec = np.asarray(vec, dtype=np.float64)
        S1 = S2 = lim = 0.0
        if self.graph.recurrent[0]:  # the start is already recurrent: one class, no transient part
            for cls, pi, Z, _ in classes:
                pos = np.flatnonzero(cls == 0)
                if pos.size:
                    g = vec[cls] - pi @ vec[cls]
                    Zg = Z @ g
                    return float(Zg[pos[0]]), float((Z @ Zg)[pos[0]]), float(pi @ vec[cls])
        e0 = np.zeros(trans.size)
        e0[0] = 1.0  # state 0 is transient, and the smallest transient index
        tau = lu.solve(e0, trans="T")    # e_0 (I - Q)^-1: expected visits to transient states
        tau2 = lu.solve(tau, trans="T")  # e_0 (I - Q)^-2
        absorbed = np.zeros(trans.size)  # sum_c h_c a_c (absorption-weighted limits)
        for cls, pi, Z, R in classes:
            hc = float(pi @ vec[cls])
            a_c = lu.solve(np.asarray(R.sum(axis=1)).ravel())
            absorbed += hc * a_c
            lim += hc * float(e0 @ a_c)
            g = vec[cls] - hc
            Zg = Z @ g
            in1 = R.T @ tau
            in2 = R.T @ tau2
            S1 += float(in1 @ Zg)
            S2 += float(in2 @ Zg + in1 @ (Z @ Zg))
        gT = vec[trans] - absorbed
        S1 += float(tau @ gT)
        S2 += float(tau2 @ gT)
        return S1, S2, lim


class _fundamental:
    """Fundamental matrix ``Z = (I - P + 1 pi)^-1`` of an irreducible stochastic ``P`` (sparse
    input), applied to vectors: ``Z @ v``. Dense inverse for small classes; for large ones the
    bordered sparse system ``[[I - P, 1], [pi, 0]] [x; c] = [v; pi v]`` (whose ``x`` is ``Z v``)."""

    def __init__(self, P):
        import scipy.sparse as sp
        import scipy.sparse.linalg as spla

        n = P.shape[0]
        self.n = n
        if n <= DENSE_CLASS_LIMIT:
            Pd = P.toarray()  # once: the stationary solve and the inverse share it
            self.pi = class_stationary(Pd)
            self.Z = np.linalg.inv(np.eye(n) - Pd + np.outer(np.ones(n), self.pi))
            self.lu = None
        else:
            self.pi = class_stationary(P)
            IP = (sp.identity(n, format="csr") - P).tocsr()
            ones = sp.csr_matrix(np.ones((n, 1)))
            B = sp.bmat([[IP, ones], [sp.csr_matrix(self.pi[None, :]), None]], format="csc")
            self.lu = spla.splu(B)
            self.Z = None

    def __matmul__(self, v):
        if self.Z is not None:
            return self.Z @ v
        return self.lu.solve(np.concatenate([v, [self.pi @ v]]))[: self.n]


def _dense_drazin_series(a: "_Analysis", vec: np.ndarray):
    """Reference route for tests: ``e_0 (I-W)^D vec`` and ``e_0 [(I-W+W^inf)^-2 - W^inf] vec``
    with dense matrices (``W^inf`` the Cesaro limit). O(K^3)."""
    g = a.graph
    K = g.num_states
    W = g.transition_matrix(sparse=False)
    Winf = np.zeros((K, K))
    # W^inf from absorption probabilities times each class's stationary distribution
    trans, classes, lu = a.structure()
    for cls, pi, _, R in classes:
        Winf[np.ix_(cls, cls)] = pi[None, :]
        if trans.size:
            Winf[np.ix_(trans, cls)] = lu.solve(np.asarray(R.sum(axis=1)).ravel())[:, None] * pi[None, :]
    A = np.linalg.inv(np.eye(K) - W + Winf)
    return float((A - Winf)[0] @ vec), float((A @ A - Winf)[0] @ vec)


def _analyse(process, max_states=DEFAULT_MAX_STATES, tol=1e-9) -> _Analysis:
    if isinstance(process, _Analysis):
        return process
    proc = as_process(process)
    # measures are of the stationary process: start from .stationary even where a process
    # defaults to another initial belief (with_bos)
    return _Analysis(proc, msp(proc, max_states=max_states, tol=tol, initial=proc.stationary))


# ---------------------------------------------------------------------------------------------
# Monte Carlo (infinite MSPs)

def _start(proc: Process) -> np.ndarray:
    """Initial belief of every Monte Carlo run: the stationary one, as for the exact part (the
    MSP of :func:`_analyse`), even where a process defaults to another start (``with_bos``)."""
    return np.ascontiguousarray(proc.stationary, dtype=np.float64)


def _predictive_entropy(proc: Process, bel: np.ndarray) -> np.ndarray:
    """H[X | belief] in bits for beliefs (..., S), computed in the beliefs' precision."""
    Tw = proc.token_weights.T.astype(bel.dtype)  # (S, V)
    P = bel @ Tw
    np.maximum(P, np.finfo(bel.dtype).tiny, out=P)  # GHMM round-off / impossible tokens -> ~0
    P /= P.sum(axis=-1, keepdims=True)
    lp = np.log2(P)
    lp *= P
    return -lp.sum(axis=-1)


def _smb_entropy_rate(proc: Process, *, seed=0, max_tokens=1 << 23, length=2048, burn_in=128, batch=512):
    """Shannon-McMillan-Breiman estimate of h_mu, Rao-Blackwellised: along sampled sequences
    (compiled sampler and belief kernel), average the predictive entropy ``H[X_t | belief_t]``
    (whose expectation is ``h_mu(t + 1)``, as is that of ``-log2 P(x_t | past)``, but with a far
    smaller variance) over positions ``t >= burn_in``. Rows are independent: the standard error
    is ``std(row means) / sqrt(rows)``. Returns ``(mean, stderr, tokens)``."""
    from .beliefs import beliefs
    from .sampling import sample

    n_rows = max(2, max_tokens // length)
    pi = _start(proc)
    per_row = []
    for row in range(0, n_rows, batch):
        b = min(batch, n_rows - row)
        toks = sample(proc, b, length, seed=seed, row_offset=row, initial=pi)
        # float32 beliefs: per-token entropies to ~1e-7 relative, far below the statistical error
        bel = beliefs(proc, toks, initial=pi, dtype=np.float32)[:, burn_in - 1:-1]  # beliefs before x_burn_in..x_{L-1}
        per_row.append(_predictive_entropy(proc, bel).mean(axis=1, dtype=np.float64))
    r = np.concatenate(per_row)
    return float(r.mean()), float(r.std(ddof=1) / math.sqrt(r.size)), int(r.size * (length - burn_in))


def _mc_myopic(proc: Process, L: int, *, seed=1, rows=1 << 14):
    """Monte Carlo h_mu(l), l = 1..L: mean over sampled rows of the predictive entropy
    ``H[X_{l-1} | belief after x_{0:l-1}]`` (Rao-Blackwellised), with standard errors."""
    from .beliefs import beliefs
    from .sampling import sample

    pi = _start(proc)
    s1 = np.zeros(L)
    s2 = np.zeros(L)
    n = 0
    chunk = max(1, min(rows, (1 << 22) // max(L * proc.num_states, 1)))
    while n < rows:
        b = min(chunk, rows - n)
        toks = sample(proc, b, L, seed=seed, row_offset=n, initial=pi)
        bel = beliefs(proc, toks, initial=pi, dtype=np.float64)[:, :-1]  # (b, L-1, S)
        prev = np.concatenate([np.broadcast_to(pi, (b, 1, proc.num_states)), bel], axis=1)
        v = _predictive_entropy(proc, prev)
        s1 += v.sum(0)
        s2 += (v * v).sum(0)
        n += b
    mean = s1 / n
    var = np.maximum(s2 / n - mean**2, 0.0) * n / max(n - 1, 1)
    return mean, np.sqrt(var / n)


# ---------------------------------------------------------------------------------------------
# Public measures

def entropy_rate(process, *, max_states=DEFAULT_MAX_STATES, tol=1e-9, seed=0, max_tokens=1 << 23) -> Measure:
    """Entropy rate ``h_mu`` (bits/token). Exact on a finite MSP (Cesaro limit of the
    mixed-state distribution times next-token entropies); otherwise a (Rao-Blackwellised)
    Shannon-McMillan-Breiman estimate over about ``max_tokens`` sampled tokens with its
    one-sigma standard error (Mess3: about 1e-4 bits with the default 2^23 tokens)."""
    seed, max_tokens = _mc_args(seed, max_tokens)
    a = _analyse(process, max_states, tol)
    if a.finite:
        return Measure("entropy_rate", float(a.limit() @ a.h), True, method="finite MSP, Cesaro limit")
    em = _unifilar_machine(a)
    if em is not None:
        q = em.T.sum(axis=2).T  # (S, V) next-token distribution of each causal state
        return Measure("entropy_rate", float(em.stationary @ _entropy_bits(q)), True,
                       method="unifilar presentation: sum_s pi_s H[X | s]")
    value, err, method, note = _rate_estimate(a, seed, max_tokens)
    return Measure("entropy_rate", value, False, err, method=method, note=note)


def _rate_estimate(a: "_Analysis", seed, max_tokens):
    """h_mu for an infinite MSP: the SMB estimate, or, when the exactly known h_mu(L) decay
    geometrically and their extrapolated limit agrees with SMB (within 4 sigma), that limit
    with its (smaller) error. Returns ``(value, error, method, note)``."""
    key = ("rate", seed, max_tokens)
    if key not in a.cache:
        m, se, n = _smb_entropy_rate(a.process, seed=seed, max_tokens=max_tokens)
        smb_note = f"SMB over {n:.3g} tokens: {m:.6f} ± {se:.1e}"
        out = (m, se, "Shannon-McMillan-Breiman", f"infinite MSP; {smb_note} (one-sigma standard error)")
        Le = min(a.exact_depth, MAX_PARTIAL_TERMS)
        hL = a.propagate(a.h, Le)
        conv = _converged_rate(hL)
        ext = _extrapolate_rate(hL)
        if conv is not None and conv[1] < se and abs(conv[0] - m) < 4 * math.hypot(se, conv[1]):
            out = (conv[0], conv[1], "exact h_mu(L) converged, checked by SMB",
                   f"infinite MSP; exact h_mu(L) constant to round-off by L = {Le}; {smb_note}")
        elif ext is not None and ext[1] < se and abs(ext[0] - m) < 4 * math.hypot(se, ext[1]):
            out = (ext[0], ext[1], "extrapolated exact h_mu(L), checked by SMB",
                   f"infinite MSP; geometric limit of the exact h_mu(L), L <= {Le}; {smb_note}")
        a.cache[key] = out
    return a.cache[key]


def myopic_entropy(process, L: int, *, max_states=DEFAULT_MAX_STATES, tol=1e-9, seed=1) -> Measure:
    """``h_mu(l) = H[X_{l-1} | X_{0:l-1}]`` for ``l = 1..L`` (array ``(L,)``, bits). Exact by
    propagation on a finite MSP; on a truncated one exact up to the explored depth and Monte
    Carlo (with standard errors) beyond."""
    L = _count(L, "L", 1)
    seed, _ = _mc_args(seed)
    a = _analyse(process, max_states, tol)
    if L <= a.exact_depth:
        return Measure("myopic_entropy", a.propagate(a.h, L), True, np.zeros(L), method="MSP propagation")
    Le = a.exact_depth
    val = np.empty(L)
    err = np.zeros(L)
    val[:Le] = a.propagate(a.h, Le)
    mc, se = _mc_myopic(a.process, L, seed=seed)
    val[Le:] = mc[Le:]
    err[Le:] = se[Le:]
    return Measure("myopic_entropy", val, False, err, method="MSP propagation + Monte Carlo",
                   note=f"infinite MSP: exact for L <= {Le}, Monte Carlo beyond")


def block_entropy(process, L: int, **kw) -> Measure:
    """Block entropy ``H(l) = H[X_{0:l}]`` for ``l = 0..L`` (array ``(L + 1,)``, bits)."""
    L = _count(L, "L", 0)
    if L == 0:
        return Measure("block_entropy", np.zeros(1), True, np.zeros(1))
    m = myopic_entropy(process, L, **kw)
    val = np.concatenate([[0.0], np.cumsum(m.value)])
    err = np.concatenate([[0.0], np.sqrt(np.cumsum(np.asarray(m.error) ** 2))])
    return Measure("block_entropy", val, m.exact, err, method=m.method, note=m.note)


def excess_entropy(process, *, max_states=DEFAULT_MAX_STATES, tol=1e-9, seed=0, max_tokens=1 << 23) -> Measure:
    """Excess entropy ``E = sum_{L>=1} (h_mu(L) - h_mu)`` (bits). Exact on a finite MSP via the
    Drazin inverse of ``I - W``. Otherwise an estimate with an error bar: the exactly known
    ``h_mu(L)`` (to the explored depth) minus the estimated rate, then either a geometric tail
    or, while ``h_mu(L)`` is still visibly above ``h_mu``, a Monte Carlo continuation of the sum
    (per-row sums of predictive entropies, about ``max_tokens`` tokens)."""
    seed, max_tokens = _mc_args(seed, max_tokens)
    a = _analyse(process, max_states, tol)
    if a.finite:
        return Measure("excess_entropy", _exact_E(a), True, method="Drazin inverse on the MSP")
    h_star, sig, how, _ = _rate_estimate(a, seed, max_tokens)
    Le = min(a.exact_depth, MAX_PARTIAL_TERMS)
    hL = a.propagate(a.h, Le)  # exact h_mu(1..Le)
    d = hL - h_star
    below = np.flatnonzero(d < max(sig, 1e-13))
    how = how.split(",")[0]
    geometric = _extrapolate_rate(hL) is not None  # the exact terms already decay geometrically
    n = int(below[0]) + 1 if below.size else Le
    tail, tail_err = _geometric_tail(hL[:n], h_star)
    geo = Measure("excess_entropy", float(d[:n].sum()) + tail, False, math.hypot(n * sig, tail_err),
                  method="partial sum + geometric tail",
                  note=f"infinite MSP: sum of exact h_mu(L) - h_mu for L <= {n}, h_mu by {how}; "
                       f"geometric extrapolation beyond")
    if below.size or (geometric and geo.error <= 1e-4):
        return geo
    # h_mu(L) still visibly above h_mu at the explored depth: continue the sum by Monte Carlo
    mc, mc_se, L1, mc_tail = _mc_excess(a.process, Le, h_star, seed=seed + 1, max_tokens=max_tokens)
    err = math.sqrt((L1 * sig) ** 2 + mc_se**2 + mc_tail**2)
    mcm = Measure("excess_entropy", float(d.sum()) + mc, False, err, method="partial sum, exact + Monte Carlo",
                  note=f"infinite MSP: exact h_mu(L) - h_mu for L <= {Le}, Monte Carlo (Rao-Blackwellised) "
                       f"for {Le} < L <= {L1}, h_mu by {how}")
    return mcm if mcm.error < geo.error else geo


def _mc_excess(proc: Process, L0: int, h_star: float, *, seed, max_tokens):
    """Monte Carlo ``sum_{L0 < l <= L1} (h_mu(l) - h_star)`` from per-row sums of predictive
    entropies (rows independent, so the standard error is honest), doubling ``L1`` until the
    excess over the last quarter is insignificant (or ``MAX_PARTIAL_TERMS``). Returns
    ``(sum, stderr, L1, tail_error)``; the tail error assumes the last quarter's excess could
    persist for another quarter of the length (a heuristic, stated in the result's note)."""
    from .beliefs import beliefs
    from .sampling import sample

    pi = _start(proc)

    def run(L1, budget):
        rows = int(max(64, budget // L1))
        sums, last = [], []
        chunk = max(1, (1 << 21) // L1)
        for r0 in range(0, rows, chunk):
            b = min(chunk, rows - r0)
            toks = sample(proc, b, L1, seed=seed, row_offset=r0, initial=pi)
            bel = beliefs(proc, toks, initial=pi, dtype=np.float32)[:, L0 - 1:L1 - 1]  # before tokens L0..L1-1
            H = _predictive_entropy(proc, bel).astype(np.float64) - h_star
            sums.append(H.sum(axis=1))
            last.append(H[:, -max(1, (L1 - L0) // 4):].mean(axis=1))
        sums, last = np.concatenate(sums), np.concatenate(last)
        q, q_se = float(last.mean()), float(last.std(ddof=1) / math.sqrt(rows))
        return float(sums.mean()), float(sums.std(ddof=1) / math.sqrt(rows)), q, q_se

    # pilot runs (1/16 of the budget each) pick the horizon; one full-budget run at it
    L1 = max(2 * L0, L0 + 32)
    while L1 < MAX_PARTIAL_TERMS:
        _, _, q, q_se = run(L1, max_tokens // 16)
        if abs(q) < 2 * q_se:
            break
        L1 *= 2
    L1 = min(L1, MAX_PARTIAL_TERMS)
    total, se, q, q_se = run(L1, max_tokens)
    tail_err = (abs(q) + 2 * q_se) * (L1 - L0) / 4
    return total, se, L1, tail_err


def _converged_rate(hL: np.ndarray):
    """Limit of an h_mu(L) sequence that has converged to round-off (the change over its last
    half is below 1e-12): ``(hL[-1], error)``, else None. Slowly converging sequences (SNS:
    polynomial) still change over a halving and are rejected."""
    if hL.size < 64:
        return None
    change = float(hL[hL.size // 2] - hL[-1])
    if abs(change) <= 1e-12 * max(1.0, abs(float(hL[-1]))):
        return float(hL[-1]), max(abs(change), 1e-13)
    return None


def _extrapolate_rate(hL: np.ndarray):
    """Geometric (Aitken-style) limit of a converging h_mu(L) sequence: ``(limit, error)``, or
    None unless the last differences decay geometrically (the last four ratios within 10% of
    each other, below 0.95, and differences well above round-off). Polynomially converging
    sequences (SNS) are rejected: their ratios creep towards 1."""
    if hL.size < 6:
        return None
    d = -np.diff(hL)[-5:]
    if np.any(d <= 1e-13 * max(abs(hL[-1]), 1.0)):
        return None
    r = d[1:] / d[:-1]
    if not (np.all(r > 0) and np.all(r < 0.95) and np.ptp(r) < 0.1 * r.mean()):
        return None
    est = hL[-1] - d[-1] * r[-1] / (1 - r[-1])
    prev = hL[-2] - d[-2] * r[-2] / (1 - r[-2])
    return float(est), max(abs(est - prev), 1e-15)


def _geometric_tail(hL, hm):
    """Sum over L beyond the given terms of h_mu(L) - h_mu, assuming geometric decay of the
    last differences; ``(tail, error)``."""
    d = hL - hm
    if d.size == 0:
        return 0.0, 0.0
    if d.size < 3 or d[-1] <= 0 or d[-2] <= 0:
        return 0.0, abs(d[-1])
    r = d[-1] / d[-2]
    if not 0 < r < 1:
        return 0.0, abs(d[-1]) * d.size
    tail = d[-1] * r / (1 - r)
    return float(tail), 0.5 * abs(tail)


def _exact_E(a: _Analysis) -> float:
    return a.series(a.h)[0]


def transient_information(process, *, max_states=DEFAULT_MAX_STATES, tol=1e-9) -> Measure:
    """Transient information ``T = sum_{L>=0} [E + h_mu L - H(L)]`` (bits x tokens). Exact on a
    finite MSP (``e_0 [(I - W + W^inf)^-2 - W^inf] h``); not available otherwise."""
    a = _analyse(process, max_states, tol)
    if not a.finite:
        return _unavailable("transient_information", a, "bits")
    return Measure("transient_information", a.series(a.h)[1], True, method="Drazin inverse on the MSP",
                   units="bits·tokens")


def _unavailable(name, a, units, why=None):
    return Measure(name, float("nan"), False, float("nan"), units=units, method="unavailable",
                   note=why or (f"MSP not finite ({a.graph.num_states} states explored): this measure "
                                f"needs the full causal-state structure"))


@dataclass(eq=False)
class _Causal:
    em: object          # EpsilonMachine
    a: _Analysis        # analysis of the epsilon-machine's MSP from its stationary distribution
    u: np.ndarray       # (K,) entropy of each mixed state over causal states, bits


def _unifilar_machine(a: _Analysis):
    """The epsilon-machine of a process given by a unifilar presentation (exact whatever its
    MSP), else None."""
    from .epsilon_machine import is_unifilar

    if "unifilar_em" not in a.cache:
        a.cache["unifilar_em"] = epsilon_machine(a.process) if is_unifilar(a.process) else None
    return a.cache["unifilar_em"]


def _causal(a: _Analysis, max_states, tol) -> _Causal | None:
    if "causal" not in a.cache:
        if not a.finite:
            a.cache["causal"] = None
        else:
            em = epsilon_machine(a.process, max_states=max_states, tol=tol)
            ga = _Analysis(em, msp(em, max_states=max_states, tol=tol, initial=em.stationary))
            a.cache["causal"] = _Causal(em, ga, _entropy_bits(np.clip(ga.graph.beliefs, 0, None)))
    return a.cache["causal"]


def statistical_complexity(process, *, max_states=DEFAULT_MAX_STATES, tol=1e-9) -> Measure:
    """Statistical complexity ``C_mu = H[S]`` over causal states (bits), from the
    epsilon-machine. Needs a finite MSP (for Mess3-like processes it is not finite)."""
    a = _analyse(process, max_states, tol)
    c = _causal(a, max_states, tol)
    em = c.em if c is not None else _unifilar_machine(a)
    if em is None:
        return _unavailable("statistical_complexity", a, "bits")
    return Measure("statistical_complexity", float(_entropy_bits(em.stationary)), True,
                   method=f"epsilon-machine ({em.num_states} causal states)")


def crypticity(process, **kw) -> Measure:
    """Crypticity ``chi = C_mu - E = H[S_0 | X_{0:inf}]`` (bits)."""
    a = _analyse(process, kw.get("max_states", DEFAULT_MAX_STATES), kw.get("tol", 1e-9))
    return _crypticity(statistical_complexity(a, **kw), excess_entropy(a, **kw), a)


def _crypticity(C: Measure, E: Measure, a) -> Measure:
    if not math.isfinite(float(C)):
        return _unavailable("crypticity", a, "bits")
    chi = float(C) - float(E)
    if C.exact and E.exact:
        return Measure("crypticity", 0.0 if abs(chi) < 1e-10 else chi, True, method="C_mu - E")
    # an estimate stays one: exactness and errors propagate from C_mu and E
    return Measure("crypticity", chi, False, math.hypot(float(C.error), float(E.error)), method="C_mu - E",
                   note=f"C_mu {'exact' if C.exact else 'estimated'}, E estimated ({E.method}); "
                        f"one-sigma error propagated")


def state_uncertainty(process, L: int, *, max_states=DEFAULT_MAX_STATES, tol=1e-9) -> Measure:
    """``U(l) = H[S_l | X_{0:l}]`` for ``l = 0..L`` (array ``(L + 1,)``, bits): the observer's
    average uncertainty in the causal state after ``l`` tokens (``U(0) = C_mu``)."""
    L = _count(L, "L", 0)
    a = _analyse(process, max_states, tol)
    c = _causal(a, max_states, tol)
    if c is None:
        m = _unavailable("state_uncertainty", a, "bits")
        m.value = np.full(L + 1, np.nan)
        return m
    exact = L + 1 <= c.a.exact_depth
    val = c.a.propagate(c.u, L + 1)
    if not exact:
        val[c.a.exact_depth:] = np.nan
    return Measure("state_uncertainty", val, exact, np.zeros(L + 1),
                   method="MSP of the epsilon-machine",
                   note="" if exact else f"epsilon-machine MSP infinite: NaN beyond L = {c.a.exact_depth - 1}")


def synchronization_information(process, *, max_states=DEFAULT_MAX_STATES, tol=1e-9) -> Measure:
    """Synchronisation information ``S = sum_{L>=0} H[S_L | X_{0:L}]`` (bits); infinite when the
    observer never synchronises to the causal state."""
    a = _analyse(process, max_states, tol)
    c = _causal(a, max_states, tol)
    if c is None:
        return _unavailable("synchronization_information", a, "bits")
    ca = c.a
    if not ca.finite:
        return _unavailable("synchronization_information", ca, "bits",
                            why="the epsilon-machine's own MSP is infinite")
    tail = float(ca.limit() @ c.u)
    if tail > 1e-12:
        return Measure("synchronization_information", math.inf, True,
                       method="never synchronises (H[S_L | X_{0:L}] -> %.3g bits)" % tail)
    val = ca.series(c.u)[0]
    return Measure("synchronization_information", val, True, method="Drazin inverse on the epsilon-machine MSP")


def markov_order(process, *, max_states=DEFAULT_MAX_STATES, tol=1e-9) -> Measure:
    """Markov order ``R`` (tokens): the least ``L`` with ``h_mu(L + 1) = h_mu``, i.e. every
    word of length ``R`` synchronises the observer to a causal state. Exact and combinatorial on
    the epsilon-machine's mixed-state graph; ``inf`` when a non-synchronised mixed state lies on
    a cycle. Needs a finite MSP."""
    a = _analyse(process, max_states, tol)
    c = _causal(a, max_states, tol)
    if c is None or not c.a.finite:
        return _unavailable("markov_order", a, "tokens")
    g = c.a.graph
    unsync = c.u > 1e-12
    return Measure("markov_order", _longest_walk(g, unsync), True, units="tokens",
                   method="synchronisation structure of the epsilon-machine MSP")


def _longest_walk(g: MSPGraph, mask: np.ndarray) -> float:
    """Least L such that no walk of length L from state 0 stays inside ``mask``: 0 if state 0
    is outside it, inf if a cycle inside ``mask`` is reachable."""
    if not mask[0]:
        return 0
    sel = mask[g.src] & mask[g.dst]
    src, dst = g.src[sel], g.dst[sel]
    K = g.num_states
    adj = [[] for _ in range(K)]
    for s, d in zip(src.tolist(), dst.tolist()):
        adj[s].append(d)
    # DFS from 0 with cycle detection and longest path (in edges)
    longest = {}
    state = np.zeros(K, dtype=np.int8)  # 0 new, 1 on stack, 2 done
    stack = [(0, 0)]
    state[0] = 1
    while stack:
        node, i = stack[-1]
        if i < len(adj[node]):
            stack[-1] = (node, i + 1)
            nxt = adj[node][i]
            if state[nxt] == 1:
                return math.inf
            if state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, 0))
        else:
            longest[node] = 1 + max((longest[n] for n in adj[node]), default=0)
            state[node] = 2
            stack.pop()
    return longest[0]


def cryptic_order(process, *, max_states=DEFAULT_MAX_STATES, tol=1e-9, max_L: int | None = None,
                  threshold: float = 1e-9) -> Measure:
    """Cryptic order ``k``: the least ``L`` with ``H[S_L | X_{0:inf}] = 0``, using
    ``H[S_L | X_{0:inf}] = U(L) - (E + h_mu L - H(L))`` (``U`` the state uncertainty), which
    is non-increasing; zero is decided with ``threshold`` bits. ``k <= R`` (Markov order)."""
    threshold = real(threshold, "threshold", low=0.0)
    max_L = integer(max_L, "max_L", minimum=1, none_ok=True)
    a = _analyse(process, max_states, tol)
    c = _causal(a, max_states, tol)
    if c is None or not c.a.finite:
        return _unavailable("cryptic_order", a, "tokens")
    R = float(markov_order(a, max_states=max_states, tol=tol))
    n = int(R) + 1 if math.isfinite(R) else (max_L or max(64, 4 * c.a.graph.num_states))
    E = _exact_E(a)
    hm = float(a.limit() @ a.h)
    H = np.concatenate([[0.0], np.cumsum(a.propagate(a.h, n))])  # H(0..n)
    U = c.a.propagate(c.u, n + 1)
    chi = U - (E + hm * np.arange(n + 1) - H)
    hit = np.flatnonzero(chi <= threshold)
    if hit.size:
        return Measure("cryptic_order", int(hit[0]), True, units="tokens",
                       method=f"first L with H[S_L | future] <= {threshold:g} bits")
    return Measure("cryptic_order", math.inf, False, units="tokens",
                   method=f"H[S_L | future] > {threshold:g} bits for L <= {n}",
                   note="not reached within the horizon; reported as infinite")


def _count(v, name, minimum):
    return integer(v, name, minimum=minimum)


def _mc_args(seed, max_tokens=None):
    """Validated Monte Carlo arguments: ``seed`` in [0, 2**64 - 2] (runs use seed and seed + 1),
    ``max_tokens`` an integer >= 1024."""
    seed = integer(seed, "seed", minimum=0, limit=(1 << 64) - 1)
    if max_tokens is not None:
        max_tokens = integer(max_tokens, "max_tokens", minimum=1024)
    return seed, max_tokens


@dataclass
class Summary:
    """All scalar measures of one process (``.measures`` name -> :class:`Measure`)."""

    process: Process
    msp_states: int
    msp_complete: bool
    recurrent_states: int
    measures: dict
    msp_finite: bool = False
    max_merge_distance: float = 0.0

    def __getitem__(self, key) -> Measure:
        return self.measures[key]

    def table(self) -> str:
        if self.msp_finite:
            status = "finite: exact results"
        elif self.msp_complete:
            status = (f"closed only by merging beliefs {self.max_merge_distance:.1e} apart: treated as "
                      f"infinite")
        else:
            status = "truncated: infinite MSP"
        head = (f"process: {self.process!r}\nmixed-state graph: {self.msp_states} states ({status}), "
                f"{self.recurrent_states} recurrent\n")
        rows = []
        for k, m in self.measures.items():
            v = float(m.value)
            val = ("inf" if v == math.inf else "n/a" if math.isnan(v) else
                   f"{int(v)}" if m.units == "tokens" else f"{v:.6f}")
            err = "exact" if m.exact else (f"± {float(m.error):.1e}" if np.isfinite(m.error) else "")
            rows.append(f"  {k:<28s} {val:>10s} {m.units:<11s} {err:<10s} {m.method}")
        return head + "\n".join(rows)

    def __str__(self) -> str:
        return self.table()


def summary(process, *, max_states=DEFAULT_MAX_STATES, tol=1e-9, seed=0, max_tokens=1 << 23) -> Summary:
    """Every scalar measure of ``process``, sharing one MSP analysis (and, for an infinite
    MSP, one Monte Carlo run of about ``max_tokens`` tokens)."""
    seed, max_tokens = _mc_args(seed, max_tokens)
    a = _analyse(process, max_states, tol)
    kw = dict(max_states=max_states, tol=tol)
    ms = {
        "entropy_rate": entropy_rate(a, seed=seed, max_tokens=max_tokens, **kw),
        "excess_entropy": excess_entropy(a, seed=seed, max_tokens=max_tokens, **kw),
        "statistical_complexity": statistical_complexity(a, **kw),
        "crypticity": None,
        "transient_information": transient_information(a, **kw),
        "synchronization_information": synchronization_information(a, **kw),
        "markov_order": markov_order(a, **kw),
        "cryptic_order": cryptic_order(a, **kw),
    }
    C, E = ms["statistical_complexity"], ms["excess_entropy"]
    ms["crypticity"] = _crypticity(C, E, a)
    return Summary(a.process, a.graph.num_states, a.graph.is_complete, int(a.graph.recurrent.sum()), ms,
                   msp_finite=a.finite, max_merge_distance=a.graph.max_merge_distance)


__all__ = ["Measure", "Summary", "entropy_rate", "excess_entropy", "statistical_complexity", "crypticity",
           "transient_information", "synchronization_information", "block_entropy", "myopic_entropy",
           "state_uncertainty", "markov_order", "cryptic_order", "summary"]
