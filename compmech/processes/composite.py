"""Composite processes: mixtures (non-ergodic), products (independent factors with joint
tokens) and a begin-of-sequence wrapper."""
from __future__ import annotations

import numpy as np

from ..process import GHMM, HMM, Process, as_process
from .._validate import ParameterError
from ._registry import get, register


class MixtureHMM(HMM):
    """Block-diagonal HMM of several components. Its transition matrix has one stationary
    distribution per component; ``.stationary`` is the one that picks component ``k`` with
    probability ``weights[k]`` (the mixture's own stationary process), and is the default
    ``initial`` everywhere."""

    def __init__(self, T, weights, component_stationaries, *, name=None):
        super().__init__(T, name=name)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.weights.setflags(write=False)
        self._mix_pi = np.concatenate([w * pi for w, pi in zip(self.weights, component_stationaries)])

    def _compute_stationary(self) -> np.ndarray:
        return self._mix_pi.copy()


class MixtureGHMM(GHMM):
    """Block-diagonal GHMM of several components, at least one a GHMM: ``w`` is the
    concatenation of the components' ``w`` (eigenvalue 1 of ``T.sum(0)`` is not simple, so it
    cannot be found from ``T`` alone), ``.stationary`` picks component ``k`` with probability
    ``weights[k]``. Otherwise as :class:`MixtureHMM`."""

    def __init__(self, T, w, weights, component_stationaries, *, name=None):
        from ..process import _as_transition_array

        arr = _as_transition_array(T, name or "mixture")
        w = np.ascontiguousarray(w, dtype=np.float64)
        if not np.allclose(arr.sum(axis=0) @ w, w, rtol=0, atol=1e-9 * max(1.0, np.abs(w).max())):
            raise ValueError("mixture: the components' w do not give T.sum(0) @ w == w")  # pragma: no cover
        w.setflags(write=False)
        self._w = w
        self.scale = 1.0
        Process.__init__(self, arr, name)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.weights.setflags(write=False)
        self._mix_pi = np.concatenate([wt * pi for wt, pi in zip(self.weights, component_stationaries)])

    def _compute_stationary(self) -> np.ndarray:
        return self._mix_pi.copy()


class _BOSMixin:
    """Default ``initial`` is the begin-of-sequence state (not the stationary distribution)."""

    bos_token: int
    bos_state: int

    @property
    def initial(self) -> np.ndarray:
        e = np.zeros(self.num_states)
        e[self.bos_state] = 1.0
        return e / (e @ self.w)

    def check_initial(self, initial) -> np.ndarray:
        if initial is None:
            return np.ascontiguousarray(self.initial)
        return super().check_initial(initial)


class BOSHMM(_BOSMixin, HMM):
    """HMM with a begin-of-sequence token and state; see :func:`with_bos`."""


class BOSGHMM(_BOSMixin, GHMM):
    """GHMM with a begin-of-sequence token and state; see :func:`with_bos`."""


def _component(p):
    """A process, or a spec naming one (``"mess3"`` or ``{"name": "mess3", "x": 0.1}``), so a
    composite can be written in a config file (``process_params = {processes = [...]}``)."""
    if isinstance(p, str):
        return get(p)
    if isinstance(p, dict):
        spec = dict(p)
        if not isinstance(spec.get("name"), str):
            raise ValueError(f"a component spec needs a process name under 'name', got {p!r}")
        return get(spec.pop("name"), **spec)
    return as_process(p)


def _components(processes, what):
    if isinstance(processes, (str, dict)) or not hasattr(processes, "__iter__"):
        raise TypeError(f"{what} needs a list of processes or process specs, got {processes!r}")
    procs = [_component(p) for p in processes]
    if not procs:
        raise ValueError(f"{what} needs at least one process")
    return procs


@register
def mixture(processes, weights=None, *, name: str = "mixture") -> MixtureHMM | MixtureGHMM:
    """Non-ergodic mixture: pick component ``k`` with probability ``weights[k]`` (default
    uniform) once, then emit from it forever. ``T`` is block-diagonal (states concatenated in
    order); components may have different vocabularies (the joint vocabulary is the largest,
    missing tokens have probability 0). With a GHMM component the result is a
    :class:`MixtureGHMM` whose ``w`` concatenates the components' ``w``."""
    procs = _components(processes, "mixture")
    n = len(procs)
    try:
        wts = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"mixture: weights must be {n} non-negative numbers, got {weights!r}") from None
    if wts.shape != (n,):
        raise ValueError(f"mixture: weights must have length {n} (one per component), got shape {wts.shape}")
    if not np.all(np.isfinite(wts)) or np.any(wts < 0) or abs(wts.sum() - 1) > 1e-9:
        raise ValueError(f"mixture: weights must be non-negative and sum to 1, got {wts.tolist()}")
    V = max(p.vocab_size for p in procs)
    S = sum(p.num_states for p in procs)
    T = np.zeros((V, S, S))
    off = 0
    for p in procs:
        s = p.num_states
        T[: p.vocab_size, off:off + s, off:off + s] = p.T
        off += s
    if any(p.is_generalized for p in procs):
        return MixtureGHMM(T, np.concatenate([p.w for p in procs]), wts, [p.stationary for p in procs], name=name)
    return MixtureHMM(T, wts, [p.stationary for p in procs], name=name)


class _ProductMixin:
    """A product of independent factors (``.factors``): ``cm.beliefs``, ``cm.log_prob`` and
    ``cm.sample`` run on the factors (see :mod:`compmech._product`)."""

    factors: tuple

    def _compute_stationary(self) -> np.ndarray:
        # the outer product of the factors' stationary vectors (unique iff each factor's is)
        out = np.ones(1)
        for f in self.factors:
            out = np.multiply.outer(out, f.stationary).reshape(-1)
        return out


class ProductHMM(_ProductMixin, HMM):
    """Product of HMM factors; see :func:`product`."""


class ProductGHMM(_ProductMixin, GHMM):
    """Product with at least one GHMM factor; see :func:`product`."""


@register
def product(processes, *, name: str = "product") -> Process:
    """Independent factors run side by side: joint state ``(s_1, ..., s_n)`` (row-major),
    joint token ``x = ((x_1 V_2 + x_2) V_3 + x_3) ...`` (row-major over the factors'
    vocabularies), ``T[x] = kron(T_1[x_1], ..., T_n[x_n])``. A GHMM if any factor is one.

    The result keeps its factors (``.factors``): ``cm.beliefs``, ``cm.log_prob`` and ``cm.sample``
    propagate and sample factor by factor (the joint belief is the outer product of the factors'
    beliefs), so k factors cost k small propagations, not one over ``prod S_i`` states; pass
    ``factors=True`` to get the per-factor beliefs instead of the joint."""
    procs = _components(processes, "product")
    T = procs[0].T
    for p in procs[1:]:
        V1, S1 = T.shape[:2]
        V2, S2 = p.T.shape[:2]
        T = np.einsum("aij,bkl->abikjl", T, p.T).reshape(V1 * V2, S1 * S2, S1 * S2)
    cls = ProductGHMM if any(p.is_generalized for p in procs) else ProductHMM
    out = cls(T, name=name)
    out.factors = tuple(procs)
    return out


@register
def with_bos(process, *, name: str | None = None) -> Process:
    """Add a begin-of-sequence token (index ``V``) and state (index ``S``): from the BOS state
    the process emits BOS and moves to the original states with the stationary probabilities
    ``pi``; BOS is never emitted again. The default ``initial`` of the result is the BOS state
    (``.initial``), so ``cm.sample(with_bos(p), B, L, seed=s)[:, 1:]`` is distributed as
    ``cm.sample(p, B, L - 1, ...)``; ``.stationary`` stays the true stationary distribution
    (zero on BOS). ``.bos_token`` and ``.bos_state`` give the indices."""
    p = as_process(process)
    V, S = p.vocab_size, p.num_states
    pi = p.stationary
    T = np.zeros((V + 1, S + 1, S + 1))
    T[:V, :S, :S] = p.T
    T[V, S, :S] = pi  # from BOS: emit BOS, land in pi (for a GHMM, the quasi-state with pi @ w == 1)
    cls = BOSGHMM if p.is_generalized else BOSHMM
    out = cls(T, name=name or f"with_bos({p.name or 'process'})")
    out.bos_token = V
    out.bos_state = S
    return out
