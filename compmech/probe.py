"""Linear probes from a model's residual stream to ground-truth belief states.

    from compmech.probe import BeliefProbe, collect_activations, probe_model
    report = probe_model(model, process, ctx=10)        # every layer + concatenation
    report.summary()                                     # headline numbers
    report.layers["blocks.3.hook_resid_post"]["uniform"]["mse"]

Ground truth: every distinct prefix a context-``ctx`` model can see
(:class:`compmech.data.PrefixSet`, from the MSP tree), with its belief, probability and
multiplicity. Activations are collected for all ``V**ctx`` inputs in a few batched forward passes
and read at each prefix's last position (the model is causal, so one input of length ``ctx``
yields the activations of all its prefixes).

Fits are affine least squares in float64 with ``sample_weight`` (normal equations on centred
moments, pseudo-inverse of the Gram matrix so rank-deficient inputs such as LayerNorm outputs are
handled). Two weightings are reported:

* ``"uniform"`` — every (input, position) pair counts once: the unweighted fit over all
  ``V**ctx x ctx`` activations of the original work (its reported metric is the MSE of this fit).
* ``"prob"`` — every prefix weighted by its probability (each position's prefixes sum to one):
  the fit that matters for what the model sees in practice.

Metrics per fit: R² (fraction of belief variance explained, weighted), MSE (mean over rows and
belief components), RMSE; k-fold cross-validated MSE with folds split by input sequence (rows
are grouped by the subtree — the first few tokens — of the input they come from, so no input
contributes to both sides of a split); a shuffle control (beliefs permuted across rows, refit,
several repeats, mean ± sd).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted

from .data import PrefixSet

__all__ = ["BeliefProbe", "collect_activations", "probe_activations", "probe_model", "ProbeReport",
           "default_layers", "project"]


# ---------------------------------------------------------------------------------------------
# Least squares on weighted moments
# ---------------------------------------------------------------------------------------------

class _Moments:
    """Weighted sums ``sw, sx, sy, Sxx, Sxy`` of (shifted) rows; additive over row groups."""

    __slots__ = ("sw", "sx", "sy", "Sxx", "Sxy")

    def __init__(self, sw, sx, sy, Sxx, Sxy):
        self.sw, self.sx, self.sy, self.Sxx, self.Sxy = sw, sx, sy, Sxx, Sxy

    @classmethod
    def zeros(cls, D, S):
        return cls(0.0, np.zeros(D), np.zeros(S), np.zeros((D, D)), np.zeros((D, S)))

    @classmethod
    def of(cls, X, Y, w):
        wX = X * w[:, None]
        return cls(w.sum(), wX.sum(0), w @ Y, X.T @ wX, wX.T @ Y)

    def __sub__(self, o):
        return _Moments(self.sw - o.sw, self.sx - o.sx, self.sy - o.sy, self.Sxx - o.Sxx, self.Sxy - o.Sxy)

    def __add__(self, o):
        return _Moments(self.sw + o.sw, self.sx + o.sx, self.sy + o.sy, self.Sxx + o.Sxx, self.Sxy + o.Sxy)


def _pinv_psd(G, rcond):
    evals, evecs = np.linalg.eigh(G)
    cut = rcond * max(float(evals[-1]), 0.0)
    keep = evals > cut
    if not keep.any():
        return np.zeros_like(G)
    V = evecs[:, keep]
    return (V / evals[keep]) @ V.T


def _solve(m: _Moments, rcond, fit_intercept=True, Sxy=None, sy=None, ridge: float = 0.0):
    """Coefficients ``(D, S)`` and intercept ``(S,)`` (in the shifted frame) from moments;
    ``ridge`` adds ``ridge * trace(G) / D`` to the Gram matrix's diagonal (scale-free)."""
    Sxy = m.Sxy if Sxy is None else Sxy
    sy = m.sy if sy is None else sy
    if m.sw <= 0:
        raise ValueError("probe fit needs a positive total sample weight")
    if fit_intercept:
        mx, my = m.sx / m.sw, sy / m.sw
        G = m.Sxx - np.outer(m.sx, mx)
        b = Sxy - np.outer(m.sx, my)
    else:
        mx, my = np.zeros_like(m.sx), np.zeros_like(sy)
        G, b = m.Sxx, Sxy
    if ridge:
        G = G + (ridge * np.trace(G) / len(G)) * np.eye(len(G))
    coef = _pinv_psd(G, rcond) @ b
    return coef, my - mx @ coef


#: float64 elements in one gathered row chunk (4 MiB): enough rows for full-speed GEMMs, small
#: beside the activations. The fits never hold a float64 copy of a whole design.
_CHUNK_ELEMS = 1 << 19


def _chunks(rows, width):
    """``rows`` in consecutive pieces of about ``_CHUNK_ELEMS / width`` rows."""
    step = max(64, _CHUNK_ELEMS // max(int(width), 1))
    for i in range(0, len(rows), step):
        yield rows[i:i + step]


class _Columns:
    """One design: activation arrays ``(R_all, d_i)`` side by side, read in float64 row chunks
    minus ``shift`` (the columns' mean over the kept rows; any shift gives the same fit, this one
    keeps the moments well scaled). Row ``i`` of the design is row ``kept[i]`` of the arrays, so
    neither the concatenation nor the float64 upcast of the whole design is ever materialised."""

    def __init__(self, arrays, kept, shifts=None):
        self.arrays, self.kept = arrays, kept
        self.D = sum(a.shape[1] for a in arrays)
        self.shift = np.zeros(self.D) if shifts is None else np.concatenate(shifts)
        self._buf = None

    def chunks(self, rows=None):
        """Row chunks of ``rows`` (default: all rows of the design)."""
        return _chunks(np.arange(len(self.kept)) if rows is None else rows, self.D)

    def rows(self, idx):
        """float64 rows ``idx`` minus the shift, in a buffer reused by the next call (so the
        chunks cost one allocation, not one per chunk)."""
        src = self.kept[idx]
        if self._buf is None or len(self._buf) < len(idx):
            self._buf = np.empty((len(idx), self.D))
        out = self._buf[:len(idx)]
        lo = 0
        for a in self.arrays:
            out[:, lo:lo + a.shape[1]] = a[src]
            lo += a.shape[1]
        out -= self.shift
        return out


def _column_mean(name, a, kept):
    """float64 column means of ``a[kept]`` by row chunks; non-finite values are refused here (the
    float64 sums of finite float32 values cannot overflow), naming the first bad row."""
    total = np.zeros(a.shape[1])
    for idx in _chunks(kept, a.shape[1]):
        total += np.add.reduce(a[idx], axis=0, dtype=np.float64)
    if not np.isfinite(total).all():
        n_bad, first = 0, None
        for idx in _chunks(kept, a.shape[1]):
            bad = ~np.isfinite(a[idx]).all(1)
            n_bad += int(bad.sum())
            if first is None and bad.any():
                first = int(idx[np.argmax(bad)])
        raise ValueError(f"activations {name!r} contain {n_bad} rows with NaN or infinite values (first: row "
                         f"{first}); the model has diverged or overflowed")
    return total / len(kept)


# ---------------------------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------------------------

class BeliefProbe(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Affine least-squares probe ``Y ≈ X @ coef_ + intercept_`` with ``sample_weight``: a
    scikit-learn estimator (``get_params``/``set_params``, ``clone``, ``cross_val_score``,
    pipelines). Arithmetic is float64 whatever the input dtype.

    Unlike scikit-learn's ``LinearRegression``, ``coef_`` is ``(D, S)`` (features x belief
    components, so ``predict(X) = X @ coef_ + intercept_``), and :meth:`score` is the
    variance-weighted R² (the fraction of total belief variance explained).

    Args:
        fit_intercept: fit the constant offset (affine probe); ``False`` for a purely linear map.
        rcond: relative cutoff for small eigenvalues of the centred Gram matrix (directions
            with less variance than ``rcond * largest`` are ignored; minimum-norm solution).
    """

    def __init__(self, fit_intercept: bool = True, rcond: float = 1e-10):
        self.fit_intercept = fit_intercept
        self.rcond = rcond

    @staticmethod
    def _check_X(X):
        import scipy.sparse as sp

        if sp.issparse(X):
            raise TypeError("BeliefProbe does not support sparse input X; pass a dense array (X.toarray())")
        shape = np.asarray(X).shape
        if len(shape) != 2:
            raise ValueError(f"X must have shape (N, D), got {shape}. Reshape your data with X.reshape(-1, 1) "
                             f"for one feature or X.reshape(1, -1) for one sample")
        # real, finite, non-empty; float32 stays float32 (read in float64 row chunks, never copied whole)
        return check_array(X, dtype=(np.float64, np.float32))

    def _check(self, X, y, sample_weight=None):
        X = self._check_X(X)
        if y is None:
            raise ValueError("BeliefProbe requires y to be passed, but the target y is None")
        raw = np.asarray(y)
        if raw.dtype.kind in "biufc" and not np.isfinite(raw).all():
            bad = np.argwhere(~np.isfinite(raw))[0]
            raise ValueError(f"y (the targets) contains NaN or infinite values (first at index {tuple(bad)}: "
                             f"{raw[tuple(bad)]}); drop or impute those rows")
        Y = check_array(y, ensure_2d=False, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have shape (N, S) or (N,) with N={X.shape[0]} rows, got {raw.shape}")
        if sample_weight is None:
            w = np.ones(X.shape[0])
        else:
            w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            if w.shape[0] != X.shape[0]:
                raise ValueError(f"sample_weight must have {X.shape[0]} entries, got {w.shape[0]}")
            if (w < 0).any() or not np.isfinite(w).all():
                raise ValueError("sample_weight must be finite and non-negative")
        return X, Y, w

    def _check_params(self):
        r = self.rcond
        if isinstance(r, bool) or not isinstance(r, (int, float, np.floating, np.integer)) \
                or not (np.isfinite(r) and 0 <= r < 1):
            raise ValueError(f"rcond must be a finite number in [0, 1), got {r!r}")

    def fit(self, X, y, sample_weight=None) -> "BeliefProbe":
        """Fit on activations ``X (N, D)`` and targets ``y (N, S)`` (or ``(N,)``); NaN or
        infinite values in either raise ValueError."""
        self._check_params()
        X, Y, w = self._check(X, y, sample_weight)
        if not w.sum() > 0:
            raise ValueError("probe fit needs a positive total sample weight (all sample weights are zero)")
        src = _Columns([X], np.arange(len(X)))
        if self.fit_intercept:
            src.shift = sum(w[idx] @ src.rows(idx) for idx in src.chunks()) / w.sum()
        m = _Moments.zeros(src.D, Y.shape[1])
        for idx in src.chunks():
            m = m + _Moments.of(src.rows(idx), Y[idx], w[idx])
        coef, icpt = _solve(m, self.rcond, self.fit_intercept)
        self.coef_ = coef                          # (D, S)
        self.intercept_ = icpt - src.shift @ coef  # (S,)
        self.n_features_in_ = X.shape[1]
        self._single_target = np.asarray(y).ndim == 1
        return self

    def predict(self, X) -> np.ndarray:
        """``X @ coef_ + intercept_``: ``(N, S)``, or ``(N,)`` when fitted on a 1-D ``y``."""
        check_is_fitted(self, ("coef_", "intercept_"))
        X = self._check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but BeliefProbe is expecting "
                             f"{self.n_features_in_} features as input")
        P = np.empty((len(X), self.coef_.shape[1]))
        for idx in _chunks(np.arange(len(X)), X.shape[1]):
            P[idx] = X[idx] @ self.coef_ + self.intercept_
        return P[:, 0] if getattr(self, "_single_target", False) else P

    def _predict_2d(self, X):
        P = self.predict(X)
        return P[:, None] if P.ndim == 1 else P

    def score(self, X, y, sample_weight=None) -> float:
        """Weighted R²: ``1 - sum w |y - y_hat|^2 / sum w |y - mean_w(y)|^2`` (the fraction of
        total belief variance explained; scikit-learn's ``variance_weighted`` multi-output R²)."""
        check_is_fitted(self, ("coef_", "intercept_"))
        X, Y, w = self._check(X, y, sample_weight)
        return _r2(Y, self._predict_2d(X), w)

    def mse(self, X, y, sample_weight=None) -> float:
        """Weighted mean squared error, averaged over rows and belief components."""
        check_is_fitted(self, ("coef_", "intercept_"))
        X, Y, w = self._check(X, y, sample_weight)
        return _mse(Y, self._predict_2d(X), w)


def _mse(Y, P, w):
    return float(w @ ((Y - P) ** 2).sum(1) / w.sum() / Y.shape[1])


def _r2(Y, P, w):
    my = (w @ Y) / w.sum()
    sst = float(w @ ((Y - my) ** 2).sum(1))
    sse = float(w @ ((Y - P) ** 2).sum(1))
    return 1.0 - sse / sst if sst > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------

def default_layers(model) -> list[str]:
    """Residual-stream names to probe: embedding (token + position), every ``resid_mid`` and
    ``resid_post``, and ``ln_final.hook_normalized`` if present — read from the model's hook
    points (``model.hook_dict``: compmech models and TransformerLens ``HookedTransformer``s)."""
    names = list(getattr(model, "hook_dict", None) or dict(model.named_modules()))
    out = ["embed"]
    out += [n for n in names if n.endswith("hook_resid_mid") or n.endswith("hook_resid_post")]
    if "ln_final.hook_normalized" in names:
        out.append("ln_final.hook_normalized")
    return out


def _embed_source(modules) -> str:
    """The activation behind the alias ``"embed"`` (token + position embedding): the first
    block's input where blocks have hook points, else ``hook_embed`` (recurrent models)."""
    for n in ("blocks.0.hook_resid_pre", "hook_embed"):
        if n in modules:
            return n
    raise ValueError('model has neither "blocks.0.hook_resid_pre" nor "hook_embed" for the name "embed"')


def _resolve(model, names):
    """``want: name -> module name`` (``"embed"`` mapped to its source) and the module dict."""
    mods = dict(model.named_modules())
    want = {n: (_embed_source(mods) if n == "embed" else n) for n in names}
    missing = [n for n, m in want.items() if m not in mods]
    if missing:
        raise ValueError(f"model has no submodules named {missing}; available: {list(mods)[:20]}...")
    return want, mods


def _run_hooks(model, x, want, mods, take):
    """Forward ``x`` once, capturing ``take(name, output)`` of each named submodule with a
    forward hook (compmech and TransformerLens hook points are identity modules, so this reads
    them too). ``take`` keeps only the rows wanted, so no full ``(B, L, d)`` activation outlives
    the layer that made it."""
    first = {}  # one hook per module, under the first name that wants it
    for n, m in want.items():
        first.setdefault(m, n)
    store, handles = {}, []
    for m, n in first.items():
        def hook(_m, _inp, out, n=n):
            store[n] = take(n, out[0] if isinstance(out, (tuple, list)) else out)
        handles.append(mods[m].register_forward_hook(hook))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: store[first[m]] for n, m in want.items()}


class _eval_mode:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)
        return False


#: Memory budget of one sub-walk of :func:`tree_forward` (its outputs, cache and intermediates);
#: an eighth of all the activations where that is more, so that huge sets need fewer sub-walks.
_TREE_CHUNK_BYTES = 64 << 20
#: Fewest subtree roots per sub-walk: every level of a sub-walk then has enough rows that its
#: matrix products give each row the same bits as the single walk (seen: >= 12; small levels of
#: a few rows take other BLAS paths).
_TREE_MIN_ROOTS = 64


def _tree_row_bytes(cfg, n_out, logits):
    """Bytes one row of a ``forward_tree`` walk costs: its outputs, its key/value cache entries
    and the per-row intermediates of a level (attention over ``ctx`` ancestors, MLP)."""
    hd = cfg.n_heads * cfg.d_head
    out = 4 * (n_out * cfg.d_model + (cfg.out_vocab_size if logits else 0))
    kv = 2 * cfg.n_layers * hd * 4
    level = 4 * (2 * cfg.ctx * hd + 3 * hd + 2 * cfg.d_mlp + 6 * cfg.d_model + cfg.out_vocab_size)
    return out + kv + level


def _tree_parts(prefixes: PrefixSet, row_bytes: int, out_bytes: int):
    """Row sets of the sub-walks that cover ``prefixes``: every row shallower than a split level
    ``p`` (shared, recomputed by each sub-walk) plus the subtrees of a run of level-``p`` rows.
    One part (the whole tree) when it fits the budget or no level has enough roots to split
    cheaply."""
    R = len(prefixes)
    pos, parent = prefixes.position, prefixes.parent
    sizes = np.bincount(pos)
    above = np.concatenate([[0], np.cumsum(sizes)])  # rows shallower than each level
    n_parts = min(int(-(-R * row_bytes // max(_TREE_CHUNK_BYTES, out_bytes // 8))), int(sizes.max()) // _TREE_MIN_ROOTS)
    # Fewer parts where the split level would be so deep that recomputing the rows above it in
    # every part costs more than a quarter of the walk.
    while n_parts > 1:
        ok = np.flatnonzero(sizes >= _TREE_MIN_ROOTS * n_parts)
        if ok.size and (n_parts - 1) * above[ok[0]] <= R // 4:
            break
        n_parts -= 1
    if n_parts <= 1:
        return [np.arange(R)]
    p = int(ok[0])
    root = np.where(pos == p, np.arange(R), -1)  # the level-p ancestor of every deeper row
    for q in range(p + 1, len(sizes)):
        rows = np.flatnonzero(pos == q)
        root[rows] = root[parent[rows]]
    shallow = np.flatnonzero(pos < p)
    # Contiguous runs of equally many roots (at least _TREE_MIN_ROOTS each, whatever the shape).
    roots = np.flatnonzero(pos == p)
    part_of_root = np.zeros(R, np.int64)
    part_of_root[roots] = np.arange(len(roots)) * n_parts // len(roots)
    deep = np.flatnonzero(root >= 0)
    by_part = part_of_root[root[deep]]
    return [np.concatenate([shallow, deep[by_part == j]]) for j in range(n_parts)]


def tree_forward(model, prefixes: PrefixSet, names=None, *, return_logits: bool = False, device=None):
    """Activations (and optionally logits) of a model with a ``forward_tree`` method (a compmech
    :class:`~compmech.model.Transformer`) at every row of ``prefixes``, computing each distinct
    prefix once (:meth:`Transformer.forward_tree`: a KV-cached walk of the prefix tree, with
    ``sum_d V**d`` positions computed instead of ``V**ctx * ctx``, 6.7x fewer for Mess3 at
    context 10). Identical to running every input through the model and reading each prefix's
    last position. Runs on the model's device (``device`` is accepted for compatibility).

    Memory: the returned arrays are allocated once and filled by sub-walks over groups of
    subtrees (each with its own key/value cache, freed after it), so the walk costs about
    ``max(64 MiB, activations / 8)`` beyond its output; the few rows above the split level are
    recomputed by every sub-walk. The rows come out with the same bits as one walk of the
    whole tree.

    Returns ``(acts: name -> (R, d_model) float32 numpy, logits (R, V_out) or None)``."""
    if names is None:
        names = default_layers(model)
    want, _ = _resolve(model, list(names))
    mods = sorted(set(want.values()))
    cfg = getattr(model, "cfg", None)
    R = len(prefixes)
    if cfg is not None and hasattr(cfg, "d_mlp"):
        out_bytes = 4 * R * (len(mods) * cfg.d_model + (cfg.out_vocab_size if return_logits else 0))
        parts = _tree_parts(prefixes, _tree_row_bytes(cfg, len(mods), return_logits), out_bytes)
    else:  # unknown sizes: one walk
        parts = [np.arange(R)]
    got = {}  # module name, or None for the logits -> (R, .) numpy array
    local = np.full(R, -1, np.int64)
    with _eval_mode(model):
        for rows in parts:
            local[rows] = np.arange(len(rows))
            par = prefixes.parent[rows]
            par = np.where(par >= 0, local[np.maximum(par, 0)], -1)
            lg, a = model.forward_tree(prefixes.token[rows], par, prefixes.position[rows], mods,
                                       return_logits=return_logits)
            local[rows] = -1
            for m in [*mods, None] if lg is not None else mods:
                x = (lg if m is None else a.pop(m)).cpu().numpy()  # each tensor freed once copied
                if len(parts) == 1:
                    got[m] = x
                    continue
                if m not in got:
                    got[m] = np.empty((R, x.shape[1]), x.dtype)
                got[m][rows] = x
            del a, lg
    return {n: got[m] for n, m in want.items()}, got.get(None)


#: Model positions per batch of :func:`collect_activations`'s batched path by default: the forward
#: pass's intermediates scale with it, and smaller batches gave the same bits, faster.
_BATCH_POSITIONS = 1 << 13


def collect_activations(model, prefixes: PrefixSet, names=None, *, device=None, batch_size: int | None = None,
                        dtype=np.float32, tree: bool = True) -> dict:
    """Activations at every row of ``prefixes``: ``name → (R, d)`` numpy arrays.

    ``names`` are submodule names of ``model`` (``dict(model.named_modules())``) whose output is
    ``(B, L, d)``, read with forward hooks: the hook points of a :mod:`compmech.model` model
    (:func:`compmech.model.hook_names`) or of a TransformerLens ``HookedTransformer``, or any
    submodule of any ``torch.nn.Module`` taking ``(B, L)`` token ids; ``"embed"`` means token +
    position embedding. Inputs are run in batches of ``batch_size`` (default: 8,192 positions,
    ``8192 // ctx`` inputs) under ``torch.inference_mode``; only the rows of ``prefixes`` are
    kept, so memory is ``R x d`` per name plus one batch's forward pass. A model with ``forward_tree`` (a compmech transformer) computes each distinct prefix
    once instead (``tree=True``, :func:`tree_forward`)."""
    import torch

    if names is None:
        names = default_layers(model)
    names = list(names)
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    if tree and prefixes.parent is not None and callable(getattr(model, "forward_tree", None)):
        acts = tree_forward(model, prefixes, names)[0]
        return {n: a.astype(dtype, copy=False) for n, a in acts.items()}
    want, mods = _resolve(model, names)
    order = np.argsort(prefixes.seq_index, kind="stable")
    sidx = prefixes.seq_index[order]
    pos = prefixes.position[order]
    N = prefixes.inputs.shape[0]
    if batch_size is None:
        batch_size = max(1, _BATCH_POSITIONS // prefixes.inputs.shape[1])
    out = {}
    with _eval_mode(model), torch.inference_mode():
        for i in range(0, N, batch_size):
            lo, hi = np.searchsorted(sidx, [i, min(i + batch_size, N)])
            if hi == lo:
                continue
            x = torch.from_numpy(prefixes.inputs[i:i + batch_size]).to(device)
            r_seq = torch.from_numpy(sidx[lo:hi] - i).to(device)
            r_pos = torch.from_numpy(pos[lo:hi]).to(device)

            def take(n, a):
                if a.ndim != 3:
                    raise ValueError(f"activation {n!r} has shape {tuple(a.shape)}, expected (B, L, d)")
                return a[r_seq, r_pos].float().cpu().numpy()

            for n, rows in _run_hooks(model, x, want, mods, take).items():
                if n not in out:
                    out[n] = np.empty((len(order), rows.shape[1]), dtype=dtype)
                out[n][order[lo:hi]] = rows
    return out


# ---------------------------------------------------------------------------------------------
# Full report
# ---------------------------------------------------------------------------------------------

def project(beliefs, ref=None) -> np.ndarray:
    """2-D/3-D coordinates for drawing beliefs ``(R, S)``: the simplex plane for ``S = 3``,
    otherwise the top-3 principal axes of ``ref`` (default: ``beliefs``)."""
    b = np.asarray(beliefs, np.float64)
    if b.shape[1] == 3:
        from .plot.simplex import simplex_coords

        return simplex_coords(b)
    r = b if ref is None else np.asarray(ref, np.float64)
    mu = r.mean(0)
    _, _, vt = np.linalg.svd(r - mu, full_matrices=False)
    return (b - mu) @ vt[:3].T


@dataclass
class ProbeReport:
    """Result of :func:`probe_activations` / :func:`probe_model`.

    Attributes:
        layers: ``name → weighting → metrics`` (``r2``, ``mse``, ``rmse``, ``cv_mse``,
            ``cv_r2``, ``cv_ratio``, ``shuffle_mse_mean``/``_sd``, ``shuffle_r2_mean``/``_sd``,
            ``shuffle_ratio``, ``mse_uniform``/``mse_prob`` (the fit scored under each weighting),
            ``dims``).
        coefs: ``name → weighting → (coef (D, S), intercept (S,))``.
        predictions: ``name → weighting → (R, S)`` predicted beliefs.
        beliefs, weights: ground truth ``(R, S)`` and ``weighting → (R,)`` row weights.
        timing: seconds spent collecting activations and fitting.
    """

    layers: dict
    coefs: dict
    predictions: dict
    beliefs: np.ndarray
    weights: dict
    lengths: np.ndarray
    timing: dict = field(default_factory=dict)
    final_layer: str | None = None
    concat_name: str | None = None

    def summary(self, name: str | None = None) -> dict:
        """Headline numbers for ``name`` (default: the final residual stream): unweighted MSE
        (original work's metric), probability-weighted R², shuffle and CV ratios."""
        name = name or self.final_layer
        u, p = self.layers[name]["uniform"], self.layers[name]["prob"]
        return {"layer": name, "mse": u["mse"], "r2_weighted": p["r2"], "rmse_weighted": p["rmse"],
                "r2_uniform": u["r2"], "mse_weighted": p["mse"],
                "cv_mse": u["cv_mse"], "cv_ratio": u["cv_ratio"], "cv_ratio_weighted": p["cv_ratio"],
                # absent when the report was fitted without shuffles (shuffles=0)
                "shuffle_mse_mean": u.get("shuffle_mse_mean"), "shuffle_mse_sd": u.get("shuffle_mse_sd"),
                "shuffle_ratio": u.get("shuffle_ratio"), "shuffle_ratio_weighted": p.get("shuffle_ratio")}

    def table(self) -> str:
        rows = [f"{'layer':34s} {'dims':>5s} {'R2(prob)':>9s} {'MSE(unif)':>10s} {'CV/in':>6s} {'shuf/in':>8s}"]
        for n, d in self.layers.items():
            u, p = d["uniform"], d["prob"]
            shuf = u.get("shuffle_ratio")
            rows.append(f"{n:34s} {u['dims']:5d} {p['r2']:9.5f} {u['mse']:10.3e} {u['cv_ratio']:6.3f} "
                        + (f"{shuf:8.1f}" if shuf is not None else f"{'n/a':>8s}"))
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return {"layers": self.layers, "timing": self.timing, "final_layer": self.final_layer,
                "concat_name": self.concat_name, "summary": self.summary()}


def _moments_t(X, Y, w):
    """Weighted moments with torch float64 tensors (one GEMM for the Gram matrix)."""
    wX = X * w[:, None]
    return _Moments(float(w.sum()), wX.sum(0).numpy(), (w @ Y).numpy(), (X.T @ wX).numpy(), (wX.T @ Y).numpy())


def _fit_block(src: _Columns, Y, weights, members, perms, rcond, slices):
    """Fit every design ``slices: name -> (lo, hi)`` (column ranges of ``src``) under each row
    weighting ``weights: name -> (R,)``, with CV (fold memberships ``members[w] (R, k)``) and
    the shuffle control ``perms``. Three passes over the rows in chunks: the moments of every
    fold under every weighting (sub-designs use their sub-blocks), then the predictions and the
    shuffled targets' cross-moments, then the held-out errors; extra memory is O(D^2) plus one
    chunk, whatever the number of rows, folds or shuffles.
    Returns ``name -> weighting -> (metrics, (coef, intercept), predictions)``."""
    import torch

    S, R, D = Y.shape[1], len(Y), src.D
    k = next(iter(members.values())).shape[1]
    names = list(slices)
    nS = len(names)
    # Rows of each fold (nonzero membership under any weighting).
    fold_rows = []
    for f in range(k):
        nz = np.zeros(R, bool)
        for M in members.values():
            nz |= M[:, f] > 0
        fold_rows.append(np.flatnonzero(nz))
    fold_m = {wn: [] for wn in weights}
    for f, rows in enumerate(fold_rows):
        acc = {wn: _Moments.zeros(D, S) for wn in weights}
        for idx in src.chunks(rows):
            Xc, Yc = torch.from_numpy(src.rows(idx)), torch.from_numpy(Y[idx])
            for wn, w in weights.items():
                acc[wn] = acc[wn] + _moments_t(Xc, Yc, torch.from_numpy(w[idx] * members[wn][idx, f]))
        for wn in weights:
            fold_m[wn].append(acc[wn])
    # Solves: full fit and the k leave-one-fold-out fits of every design, as block-structured
    # coefficient matrices so that all designs predict in one GEMM.
    fit = {}
    for wn in weights:
        tot = fold_m[wn][0]
        for m in fold_m[wn][1:]:
            tot = tot + m
        C_full, b_full = np.zeros((D, nS * S)), np.zeros(nS * S)
        C_cv, b_cv = np.zeros((k, D, nS * S)), np.zeros((k, nS * S))
        subs = {}
        for j, name in enumerate(names):
            lo, hi = slices[name]
            sub = lambda m: _Moments(m.sw, m.sx[lo:hi], m.sy, m.Sxx[lo:hi, lo:hi], m.Sxy[lo:hi])
            subs[name] = T = sub(tot)
            cols = slice(j * S, (j + 1) * S)
            C_full[lo:hi, cols], b_full[cols] = _solve(T, rcond)
            for f in range(k):
                C_cv[f, lo:hi, cols], b_cv[f, cols] = _solve(T - sub(fold_m[wn][f]), rcond)
        fit[wn] = {"tot": tot, "subs": subs, "C": C_full, "b": b_full, "C_cv": C_cv, "b_cv": b_cv}
    # Predictions of every design and the shuffled targets' cross-moments X^T diag(w) Y[perm].
    P_all = {wn: np.empty((R, nS * S)) for wn in weights}
    Sxy_p = {wn: np.zeros((D, S * len(perms))) for wn in weights}
    for idx in src.chunks():
        Xc = torch.from_numpy(src.rows(idx))
        Yp = torch.from_numpy(np.concatenate([Y[p[idx]] for p in perms], 1)) if perms else None
        for wn, w in weights.items():
            P_all[wn][idx] = (Xc @ torch.from_numpy(fit[wn]["C"])).numpy() + fit[wn]["b"]
            if perms:
                Sxy_p[wn] += (Xc.T @ (torch.from_numpy(w[idx])[:, None] * Yp)).numpy()
    # Held-out errors of every design, fold by fold.
    cv_sse = {wn: np.zeros(nS) for wn in weights}
    for f, rows in enumerate(fold_rows):
        for idx in src.chunks(rows):
            Xc, Yt = torch.from_numpy(src.rows(idx)), np.tile(Y[idx], nS)
            for wn, w in weights.items():
                Pf = (Xc @ torch.from_numpy(fit[wn]["C_cv"][f])).numpy() + fit[wn]["b_cv"][f]
                err = ((Pf - Yt) ** 2).reshape(len(idx), nS, S).sum(2)
                cv_sse[wn] += (w[idx] * members[wn][idx, f]) @ err
    out = {n: {} for n in slices}
    for wn, w in weights.items():
        tot, subs = fit[wn]["tot"], fit[wn]["subs"]
        sst = float(w @ ((Y - (w @ Y) / w.sum()) ** 2).sum(1))
        if perms:  # the shuffled targets' means and total sums of squares, one permutation at a time
            my_p = np.concatenate([(w @ Y[p]) / tot.sw for p in perms])
            sst_p = np.array([(w @ (Y[p] - my_p[i * S:(i + 1) * S]) ** 2).sum() for i, p in enumerate(perms)])
        for j, name in enumerate(names):
            lo, hi = slices[name]
            T = subs[name]
            cols = slice(j * S, (j + 1) * S)
            coef, icpt = fit[wn]["C"][lo:hi, cols], fit[wn]["b"][cols]
            P = P_all[wn][:, cols]
            res = {"dims": int(hi - lo), "mse": _mse(Y, P, w), "r2": _r2(Y, P, w)}
            res["rmse"] = float(np.sqrt(res["mse"]))
            res["cv_mse"] = float(cv_sse[wn][j]) / tot.sw / S
            res["cv_r2"] = 1.0 - float(cv_sse[wn][j]) / sst if sst > 0 else float("nan")
            res["cv_ratio"] = res["cv_mse"] / res["mse"] if res["mse"] > 0 else float("inf")
            if perms:
                G = T.Sxx - np.outer(T.sx, T.sx / T.sw)
                B = Sxy_p[wn][lo:hi] - np.outer(T.sx, my_p)
                explained = ((_pinv_psd(G, rcond) @ B) * B).sum(0).reshape(len(perms), S).sum(1)
                sse_p = np.maximum(sst_p - explained, 0.0)
                mse_p = sse_p / tot.sw / S
                r2_p = 1.0 - sse_p / sst_p
                res.update({"shuffle_mse_mean": float(mse_p.mean()),
                            "shuffle_mse_sd": float(mse_p.std(ddof=1)) if len(perms) > 1 else 0.0,
                            "shuffle_r2_mean": float(r2_p.mean()),
                            "shuffle_r2_sd": float(r2_p.std(ddof=1)) if len(perms) > 1 else 0.0,
                            "shuffle_ratio": float(mse_p.mean() / res["mse"]) if res["mse"] > 0 else float("inf")})
            out[name][wn] = (res, (coef, icpt), P)
    return out


def probe_activations(acts: dict, prefixes: PrefixSet, *, concat: list[str] | None = None,
                      concat_name: str = "concat", cv_folds: int = 5, shuffles: int = 10, seed: int = 0,
                      weightings=("uniform", "prob"), rcond: float = 1e-10, final_layer: str | None = None,
                      min_length: int = 1) -> ProbeReport:
    """Fit belief probes on precomputed activations ``name → (R, d)`` (rows of ``prefixes``).

    ``concat``: names whose activations are concatenated into one extra fit ``concat_name``
    (default: ``"embed"`` and every ``*resid_post`` name, when present). Rows with fewer than
    ``min_length`` process tokens (the BOS-only row) are excluded. ``cv_folds``-fold CV is split
    by input sequence (:meth:`PrefixSet.fold_membership`); ``shuffles`` repeats of the shuffle
    control permute the beliefs across rows with fixed seeds. Arithmetic is float64."""
    with _single_threaded_lapack():
        return _probe_activations(acts, prefixes, concat=concat, concat_name=concat_name, cv_folds=cv_folds,
                                  shuffles=shuffles, seed=seed, weightings=weightings, rcond=rcond,
                                  final_layer=final_layer, min_length=min_length)


class _single_threaded_lapack:
    """Small dense solves (D <= a few hundred) run fastest on one thread, and a multi-threaded
    BLAS pool beside torch's OpenMP pool can stall badly on a busy machine; the large GEMMs of
    the probe go through torch, which keeps its own thread setting."""

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits

            self._ctx = threadpool_limits(limits=1, user_api="blas")
        except Exception:  # threadpoolctl missing: leave the BLAS pool as it is
            self._ctx = None
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.restore_original_limits()
        return False


def _activation_rows(name, a, n_rows):
    """``a`` as a 2-D numpy array of ``n_rows`` rows, without copying a numpy array."""
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] != n_rows:
        raise ValueError(f"activations {name!r} must have shape ({n_rows}, d) (one row per prefix), got {a.shape}")
    return a


def _probe_activations(acts, prefixes, *, concat, concat_name, cv_folds, shuffles, seed, weightings, rcond,
                       final_layer, min_length):
    t0 = time.perf_counter()
    keep = prefixes.length >= min_length
    kept = np.flatnonzero(keep)
    if kept.size == 0:
        raise ValueError(f"no prefix has at least min_length={min_length} process tokens; nothing to fit")
    Y = np.ascontiguousarray(prefixes.beliefs[keep], dtype=np.float64)
    if not np.isfinite(Y).all():
        raise ValueError("probe targets (the prefixes' beliefs) contain NaN or infinite values")
    arrays = {n: _activation_rows(n, a, len(prefixes)) for n, a in acts.items()}
    # Column means of every layer, in one chunked pass that also refuses non-finite activations
    # (a diverged model must not give NaN metrics silently).
    means = {n: _column_mean(n, a, kept) for n, a in arrays.items()}
    weights = {}
    for wn in weightings:
        w = prefixes.weights(wn)[keep]
        weights[wn] = w / w.sum()
    members = {wn: prefixes.fold_membership(cv_folds, seed, "uniform" if wn == "prefix" else wn)[keep]
               for wn in weightings}
    perms = [np.random.default_rng([seed, 1, i]).permutation(len(Y)) for i in range(shuffles)]
    if concat is None:
        concat = [n for n in acts if n == "embed" or n.endswith("hook_resid_post")]
    concat = list(concat) if concat and len(concat) > 1 else []
    missing = [n for n in concat if n not in arrays]
    if missing:
        raise ValueError(f"concat names {missing} are not among the activations {list(arrays)}")
    blocks = []  # (design, slices: name -> column range)
    if concat:
        slices, lo = {}, 0
        for n in concat:
            slices[n] = (lo, lo + arrays[n].shape[1])
            lo += arrays[n].shape[1]
        slices[concat_name] = (0, lo)
        blocks.append((_Columns([arrays[n] for n in concat], kept, [means[n] for n in concat]), slices))
    for n, a in arrays.items():
        if n not in concat:
            blocks.append((_Columns([a], kept, [means[n]]), {n: (0, a.shape[1])}))
    layers = {n: {} for n in acts}
    if concat:
        layers[concat_name] = {}
    coefs = {n: {} for n in layers}
    preds = {n: {} for n in layers}
    for src, slices in blocks:
        res = _fit_block(src, Y, weights, members, perms, rcond, slices)
        for n, per_w in res.items():
            lo, hi = slices[n]
            for wn, (r, (c, b), P) in per_w.items():
                layers[n][wn] = r
                coefs[n][wn] = (c, b - src.shift[lo:hi] @ c)  # intercept in the original (unshifted) frame
                preds[n][wn] = P
    for n in layers:  # every fit scored under every weighting
        for wn in weights:
            for other, wo in weights.items():
                layers[n][wn][f"mse_{other}"] = _mse(Y, preds[n][wn], wo)
    if final_layer is None:
        posts = [n for n in acts if n.endswith("hook_resid_post")]
        final_layer = posts[-1] if posts else next(iter(acts))
    return ProbeReport(layers=layers, coefs=coefs, predictions=preds, beliefs=Y, weights=weights,
                       lengths=prefixes.length[keep], timing={"fit_s": time.perf_counter() - t0},
                       final_layer=final_layer, concat_name=concat_name if concat else None)


def probe_model(model, process, *, ctx: int | None = None, bos: bool = False, names=None,
                prefixes: PrefixSet | None = None, device=None, **kw) -> ProbeReport:
    """Collect activations of ``model`` on every context of ``process`` and fit probes
    (see :func:`probe_activations` for keyword arguments). ``ctx`` defaults to the model's."""
    t0 = time.perf_counter()
    if prefixes is None:
        if ctx is None:
            ctx = model.cfg.ctx
        prefixes = PrefixSet.build(process, ctx, bos=bos)
    t1 = time.perf_counter()
    acts = collect_activations(model, prefixes, names, device=device)
    t2 = time.perf_counter()
    rep = probe_activations(acts, prefixes, **kw)
    rep.timing.update({"prefixes_s": t1 - t0, "activations_s": t2 - t1, "total_s": time.perf_counter() - t0,
                       "rows": len(prefixes), "inputs": int(prefixes.inputs.shape[0])})
    return rep
