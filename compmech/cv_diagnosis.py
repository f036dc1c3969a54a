"""Why a belief probe's held-out error exceeds its in-sample error.

    from compmech.cv_diagnosis import diagnose_cv
    d = diagnose_cv(acts["blocks.3.hook_resid_post"], prefixes)
    d["by_subtree"][0]            # the held-out subtree that adds most to the CV excess
    d["ridge"]["nested"]          # a ridge probe whose strength is chosen by nested CV
    d["held_out_distance"]        # extrapolation in belief space at a fixed position
    d["position_dependence"]      # the same belief at adjacent positions vs at one position

The probe's CV deals whole subtrees of inputs (their first ``g`` tokens) into folds
(:meth:`compmech.data.PrefixSet.fold_membership`). Its CV/in-sample ratio can exceed 1 for
three different reasons, which call for different responses:

* *overfitting* (too many coefficients for the effective number of rows, ``1 / sum(w**2)``
  under the probability weighting): a ridge probe whose strength is chosen by nested CV (the
  inner CV on the outer training folds only) then has a lower held-out error than the plain fit;
* *extrapolation in belief space*: a held-out subtree holds the only prefixes of some length
  whose beliefs lie in some region (a run of one symbol at the start of a non-ergodic mixture
  keeps the posterior on the sticky component at every later length), so its rows are far
  from every training belief *at the same position*;
* *a position-dependent representation*: the network places the same belief at different
  activations at different positions, so training rows with a near-identical belief at another
  position do not stand in for the held-out ones.

All numbers are float64 and deterministic (fixed folds; no sampling).
"""
from __future__ import annotations

import numpy as np

from .data import PrefixSet

__all__ = ["DEFAULT_ALPHAS", "diagnose_cv", "ridge_path", "held_out_distance", "position_dependence"]

# Ridge strengths relative to the mean eigenvalue of the centred weighted Gram matrix.
DEFAULT_ALPHAS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _fold_moments(X, Y, w, M):
    from .probe import _Moments

    Xc = X - X.mean(0)  # any shift: the fits are centred algebraically; this keeps moments well scaled
    return Xc, [_Moments.of(Xc, Y, w * M[:, f]) for f in range(M.shape[1])]


def _fit(moments, rcond, alpha):
    from .probe import _solve

    tot = moments[0]
    for m in moments[1:]:
        tot = tot + m
    return _solve(tot, rcond, ridge=alpha)


def _row_errors(Xc, Y, coef_icpt):
    c, b = coef_icpt
    return ((Xc @ c + b - Y) ** 2).sum(1)


def ridge_path(X, Y, w, M, alphas=DEFAULT_ALPHAS, *, rcond: float = 1e-10) -> dict:
    """In-sample and CV MSE of a ridge probe ``Y ~ X`` (row weights ``w``, fold memberships
    ``M (R, k)`` whose rows sum to 1) for each strength in ``alphas``, and a nested CV: for each
    outer fold the strength is chosen by the CV over the other folds alone, refitted on them and
    scored on the held-out fold. ``nested.cv_ratio`` is that held-out MSE over the in-sample MSE
    at the strength the plain CV picks on all folds (the probe one would report)."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    w = np.asarray(w, np.float64) / np.sum(w)
    alphas = [float(a) for a in alphas]
    if not alphas or any(not np.isfinite(a) or a < 0 for a in alphas):
        raise ValueError(f"ridge strengths must be finite and >= 0, got {alphas}")
    k, S = M.shape[1], Y.shape[1]
    Xc, fm = _fold_moments(X, Y, w, M)
    fold_w = [w * M[:, f] for f in range(k)]
    rows = [np.flatnonzero(M[:, f] > 0) for f in range(k)]

    def fold_sse(train, f, alpha):  # weighted SSE on fold f of the fit on folds ``train``
        e = _row_errors(Xc[rows[f]], Y[rows[f]], _fit([fm[j] for j in train], rcond, alpha))
        return float(fold_w[f][rows[f]] @ e)

    ins = [float(w @ _row_errors(Xc, Y, _fit(fm, rcond, a))) / S for a in alphas]
    cv = [sum(fold_sse([j for j in range(k) if j != f], f, a) for f in range(k)) / S for a in alphas]
    chosen, nested = [], 0.0
    for f in range(k):
        inner = [j for j in range(k) if j != f]
        scores = [sum(fold_sse([i for i in inner if i != j], j, a) for j in inner) for a in alphas]
        a = alphas[int(np.argmin(scores))]
        chosen.append(a)
        nested += fold_sse(inner, f, a)
    nested /= S
    best = int(np.argmin(cv))
    return {"alphas": alphas, "in_sample_mse": ins, "cv_mse": cv, "cv_ratio": [c / i for c, i in zip(cv, ins)],
            "best_alpha": alphas[best],
            "nested": {"alpha_per_fold": chosen, "cv_mse": nested, "in_sample_mse": ins[best],
                       "cv_ratio": nested / ins[best]}}


def held_out_distance(prefixes: PrefixSet, M, keep) -> np.ndarray:
    """For every row of ``prefixes[keep]`` held out whole (prefixes of at least ``group_depth``
    tokens), the Euclidean distance from its belief to the nearest belief of the same length
    in the training folds; NaN for shorter rows (shared between folds)."""
    from scipy.spatial import cKDTree

    Y, lk = prefixes.beliefs[keep], prefixes.length[keep]
    out = np.full(len(Y), np.nan)
    for f in range(M.shape[1]):
        for d in np.unique(lk[lk >= prefixes.group_depth]):
            ho = np.flatnonzero((M[:, f] == 1) & (lk == d))
            tr = np.flatnonzero((M[:, f] == 0) & (lk == d))
            if len(ho) and len(tr):
                out[ho] = cKDTree(Y[tr]).query(Y[ho])[0]
    return out


def position_dependence(X, Y, lengths, radius: float = 2e-3) -> dict:
    """How much the activations ``X`` of rows with (nearly) the same belief ``Y`` differ at the
    same prefix length and at adjacent lengths: every row is paired with its nearest other row
    of the same length and its nearest row one token longer, pairs farther apart than ``radius``
    in belief dropped. ``ratio`` = mean squared activation distance of adjacent-length pairs over
    same-length ones (about 1 for a representation that is a function of the belief alone).
    ``from_belief`` is what the belief difference alone would explain, for scale: the pairs'
    mean squared belief distance times the activations' total variance per unit of belief
    variance."""
    from scipy.spatial import cKDTree

    X, Y, lengths = np.asarray(X, np.float64), np.asarray(Y, np.float64), np.asarray(lengths)
    acc = {"same": [], "adjacent": []}
    for d in np.unique(lengths):
        a = np.flatnonzero(lengths == d)
        b = np.flatnonzero(lengths == d + 1)
        if len(a) > 1:
            dist, j = cKDTree(Y[a]).query(Y[a], k=2)
            # with duplicate beliefs the row itself need not come first: take the other one
            own = j[:, 0] == np.arange(len(a))
            nb, dn = np.where(own, j[:, 1], j[:, 0]), np.where(own, dist[:, 1], dist[:, 0])
            acc["same"].append(np.stack([a, a[nb]], 1)[dn <= radius])
        if len(b):
            dist, j = cKDTree(Y[b]).query(Y[a])
            acc["adjacent"].append(np.stack([a, b[j]], 1)[dist <= radius])
    out = {"radius": float(radius)}
    scale = X.var(0).sum() / max(Y.var(0).sum(), 1e-300)
    for kind, pairs in acc.items():
        p = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
        out[kind] = {"pairs": int(len(p)),
                     "belief_distance": float(np.linalg.norm(Y[p[:, 0]] - Y[p[:, 1]], axis=1).mean()) if len(p) else None,
                     "activation_distance2": float(((X[p[:, 0]] - X[p[:, 1]]) ** 2).sum(1).mean()) if len(p) else None,
                     "from_belief": float(scale * ((Y[p[:, 0]] - Y[p[:, 1]]) ** 2).sum(1).mean()) if len(p) else None}
    s, a = out["same"]["activation_distance2"], out["adjacent"]["activation_distance2"]
    out["ratio"] = a / s if s and a is not None else None
    return out


def _mahalanobis2(Xc, moments, rcond):
    """Squared Mahalanobis distance of rows ``Xc`` under the weighted covariance of the rows
    behind ``moments`` (about the number of features for a row like the training rows)."""
    tot = moments[0]
    for m in moments[1:]:
        tot = tot + m
    mx = tot.sx / tot.sw
    ev, V = np.linalg.eigh(tot.Sxx / tot.sw - np.outer(mx, mx))
    ok = ev > rcond * max(float(ev[-1]), 0.0)
    return ((((Xc - mx) @ V[:, ok]) / np.sqrt(ev[ok])) ** 2).sum(1)


def _subtree_label(code: int, depth: int, V: int) -> str:
    digits = []
    for _ in range(depth):
        code, r = divmod(code, V)
        digits.append(str(r))
    return ("" if V <= 10 else ",").join(reversed(digits))


def diagnose_cv(X, prefixes: PrefixSet, *, folds: int = 5, seed: int = 0, weighting: str = "prob",
                alphas=DEFAULT_ALPHAS, radius: float = 2e-3, rcond: float = 1e-10, top: int | None = None) -> dict:
    """Where a probe's CV excess comes from, for activations ``X (R, D)`` (rows of
    ``prefixes``) with the probe's own folds and weighting: ``n_eff`` (``1 / sum(w**2)``) against
    the ``features`` (D + 1); ``by_subtree`` (the ``top`` held-out subtrees, all when None,
    sorted by their share of the excess ``sum w (e_cv - e_in)``, with their mass, CV/in-sample
    ratio and the weighted mean distance of their beliefs to the nearest training belief of the
    same length); ``by_length`` (the same shares and ratios per prefix length: short heavy
    prefixes or a region that persists along the prefix); for the ``top_3`` subtrees and the
    rest, that distance and the held-out rows' mean squared Mahalanobis distance under the
    training folds' activation covariance (about ``D`` for rows like the training rows);
    :func:`ridge_path`; and :func:`position_dependence`."""
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or X.shape[0] != len(prefixes):
        raise ValueError(f"X must have shape ({len(prefixes)}, D), one row per prefix; got {X.shape}")
    keep = prefixes.length >= 1
    X, Y = X[keep], np.asarray(prefixes.beliefs, np.float64)[keep]
    w = prefixes.weights(weighting)[keep]
    w = w / w.sum()
    M = prefixes.fold_membership(folds, seed, weighting)[keep]
    S = Y.shape[1]
    ridge = ridge_path(X, Y, w, M, alphas, rcond=rcond)
    Xc, fm = _fold_moments(X, Y, w, M)
    e_in = _row_errors(Xc, Y, _fit(fm, rcond, 0.0))
    e_cv, maha = np.zeros(len(Y)), np.full(len(Y), np.nan)
    for f in range(M.shape[1]):
        train = [m for j, m in enumerate(fm) if j != f]
        e_cv += M[:, f] * _row_errors(Xc, Y, _fit(train, rcond, 0.0))
        ho = M[:, f] == 1
        maha[ho] = _mahalanobis2(Xc[ho], train, rcond)
    excess = w * (e_cv - e_in)
    # shares of the total excess; a fit whose CV error does not exceed its in-sample one has none
    total = float(excess.sum())
    share = (lambda x: float(x) / total) if total > 0 else (lambda x: None)
    ratio = lambda a, b: float(a / b) if b > 0 else None  # noqa: E731
    g, lk = prefixes.group_depth, prefixes.length[keep]
    dist = held_out_distance(prefixes, M, keep)
    whole = lk >= g
    codes = prefixes.group[keep]

    def mean_over(v, s):  # prob-weighted mean of v over rows s where it is defined
        s = s & ~np.isnan(v)
        return float(w[s] @ v[s] / w[s].sum()) if s.any() else None

    groups = []
    for c in np.unique(codes[whole]):
        s = whole & (codes == c)
        groups.append((float(excess[s].sum()), int(c), {
            "subtree": _subtree_label(int(c), g, prefixes.process.vocab_size), "mass": float(w[s].sum()),
            "excess_share": share(excess[s].sum()), "cv_ratio": ratio(w[s] @ e_cv[s], w[s] @ e_in[s]),
            "same_length_distance": mean_over(dist, s)}))
    groups.sort(key=lambda t: -t[0])
    top3 = whole & np.isin(codes, [c for _, c, _ in groups[:3]])
    groups = [r for _, _, r in groups]

    return {"weighting": weighting, "group_depth": int(g), "n_eff": float(1.0 / np.sum(w ** 2)), "rows": int(len(w)),
            "features": int(X.shape[1] + 1), "targets": int(S),
            "in_sample_mse": float(w @ e_in) / S, "cv_mse": float(w @ e_cv) / S,
            "shared_rows_excess_share": share(excess[~whole].sum()),
            "top3_excess_share": share(excess[top3].sum()),
            "by_subtree": groups if top is None else groups[:top],
            "by_length": [{"length": int(d), "mass": float(w[lk == d].sum()), "excess_share": share(excess[lk == d].sum()),
                           "cv_ratio": ratio(w[lk == d] @ e_cv[lk == d], w[lk == d] @ e_in[lk == d])}
                          for d in np.unique(lk)],
            "held_out_distance": {"same_length_top3": mean_over(dist, top3),
                                  "same_length_rest": mean_over(dist, whole & ~top3),
                                  "mahalanobis2_top3": mean_over(maha, top3),
                                  "mahalanobis2_rest": mean_over(maha, whole & ~top3)},
            "ridge": ridge,
            "position_dependence": position_dependence(X, Y, lk, radius)}
