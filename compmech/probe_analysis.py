"""Probe analyses beyond the exhaustive belief probe: sampled prefixes, other targets (factor
beliefs of products, component posteriors of mixtures, GHMM coordinates), subspace geometry.

    from compmech import probe_analysis as pa
    ps, info = pa.choose_prefixes(proc, ctx=10)         # exhaustive when V**ctx is small, else sampled
    ys = pa.factor_beliefs(ps, [mess3(), mess3()])       # one (R, S_i) target per factor
    rep = pa.probe_targets(acts, ps, ys[0])              # same metrics as compmech.probe
    pa.principal_angles(coef_a, coef_b)                  # degrees, between two probes' subspaces
    pa.effective_dimension(predictions)                  # PCA dims for 95 % of the variance

Every target is one row per prefix of a :class:`compmech.data.PrefixSet`, so the probe's CV split
by input sequence, its weightings and its shuffle control apply unchanged to every target.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .beliefs import beliefs as _beliefs
from .data import PrefixSet, entropy_nats, subtree_groups
from .msp_tree import msp_tree
from .process import as_process
from .sampling import sample

__all__ = ["sampled_prefixes", "choose_prefixes", "row_values", "factor_tokens", "factor_beliefs",
           "component_blocks", "component_posterior", "within_component_beliefs", "ghmm_targets",
           "probe_targets", "principal_angles", "effective_dimension", "probe_subspace", "cv_ratio_by_group_depth",
           "component_losses"]

#: Exhaustive probing up to this many model inputs (Mess3 at context 10: 3**10 = 59,049).
MAX_EXHAUSTIVE_INPUTS = 65_536
#: Sequences drawn in sampled mode by default (<= 10 x this many prefix rows).
DEFAULT_SAMPLED_SEQUENCES = 10_000


def _root(proc):
    lvl = msp_tree(proc, 0).level(0)
    return np.asarray(lvl.beliefs, np.float64)[0], np.asarray(lvl.next_token_probs, np.float64)[0]


def sampled_prefixes(process, ctx: int, n_sequences: int = DEFAULT_SAMPLED_SEQUENCES, *, seed: int = 0,
                     bos: bool = False, group_depth: int | None = None) -> PrefixSet:
    """A :class:`~compmech.data.PrefixSet` of the prefixes of ``n_sequences`` sequences drawn by
    :func:`compmech.sample`, deduplicated: each distinct prefix is one row weighted by its
    empirical count (``multiplicity``; ``probs`` = count / n_sequences, so both of the probe's
    weightings are the empirical probability weighting). Beliefs and next-token distributions
    are exact (propagated along each sequence). ``inputs`` are the distinct sampled sequences;
    CV folds split them by their first ``group_depth`` tokens, as in the exhaustive set."""
    proc = as_process(process)
    n = int(n_sequences)
    if n < 2:
        raise ValueError(f"n_sequences must be >= 2, got {n_sequences!r}")
    V = proc.vocab_size
    n_in = ctx - 1 if bos else ctx
    if n_in < 1:
        raise ValueError(f"ctx must leave at least one process token, got ctx={ctx}, bos={bos}")
    seqs, cnt = np.unique(np.asarray(sample(proc, n, n_in, seed=seed), np.int64), axis=0, return_counts=True)
    N = seqs.shape[0]
    bel = np.asarray(_beliefs(proc, seqs, dtype=np.float64))  # (N, n_in, S) after each token
    group_depth, gcode = subtree_groups(seqs, V, group_depth)
    cols = {k: [] for k in ("seq_index", "position", "length", "beliefs", "probs", "multiplicity",
                            "next_probs", "group", "parent", "token")}
    prev_id, prev_off, offset = None, -1, 0
    if bos:
        b0, q0 = _root(proc)
        for k, v in (("seq_index", 0), ("position", 0), ("length", 0), ("probs", 1.0), ("multiplicity", float(n)),
                     ("group", gcode[0]), ("parent", -1), ("token", V)):
            cols[k].append(np.array([v]))
        cols["beliefs"].append(b0[None])
        cols["next_probs"].append(q0[None])
        prev_id, prev_off, offset = np.zeros(N, np.int64), 0, 1
    for d in range(1, n_in + 1):
        # Sequences are sorted, so the sequences sharing a d-token prefix are contiguous.
        new = np.ones(N, bool)
        new[1:] = (seqs[1:, :d] != seqs[:-1, :d]).any(1)
        starts = np.flatnonzero(new)
        ids = np.cumsum(new) - 1
        counts = np.add.reduceat(cnt, starts).astype(np.float64)
        b = bel[starts, d - 1]
        cols["seq_index"].append(starts)
        cols["position"].append(np.full(len(starts), d if bos else d - 1))
        cols["length"].append(np.full(len(starts), d))
        cols["beliefs"].append(b)
        cols["probs"].append(counts / n)
        cols["multiplicity"].append(counts)
        cols["next_probs"].append(np.clip(proc.next_token_probs(b), 0.0, None))
        cols["group"].append(gcode[starts])
        cols["parent"].append(prev_off + prev_id[starts] if prev_id is not None else np.full(len(starts), -1))
        cols["token"].append(seqs[starts, d - 1])
        prev_id, prev_off, offset = ids, offset, offset + len(starts)
    inputs = np.concatenate([np.full((N, 1), V, np.int64), seqs], 1) if bos else seqs
    out = {k: np.concatenate(v) for k, v in cols.items()}
    for k in ("seq_index", "position", "length", "group", "parent", "token"):
        out[k] = out[k].astype(np.int64)
    return PrefixSet(proc, ctx, bos, inputs, **out, group_depth=group_depth)


def choose_prefixes(process, ctx: int, *, bos: bool = False, max_inputs: int = MAX_EXHAUSTIVE_INPUTS,
                    n_sequences: int = DEFAULT_SAMPLED_SEQUENCES, seed: int = 0, mode: str = "auto"):
    """``(prefixes, info)``: every prefix (:meth:`PrefixSet.build`) when the process has at most
    ``max_inputs`` possible inputs (``V**n_in``), else :func:`sampled_prefixes` of ``n_sequences``
    sequences. ``mode`` forces ``"exhaustive"`` or ``"sampled"``; ``info`` records the choice
    (write it into metrics so a reader knows which probe was run)."""
    proc = as_process(process)
    n_in = ctx - 1 if bos else ctx
    n_inputs = proc.vocab_size ** n_in
    if mode not in ("auto", "exhaustive", "sampled"):
        raise ValueError(f"mode must be 'auto', 'exhaustive' or 'sampled', got {mode!r}")
    if mode == "auto":
        mode = "exhaustive" if n_inputs <= max_inputs else "sampled"
    if mode == "exhaustive":
        ps = PrefixSet.build(proc, ctx, bos=bos)
        info = {"mode": "exhaustive", "possible_inputs": int(n_inputs)}
    else:
        ps = sampled_prefixes(proc, ctx, n_sequences, seed=seed, bos=bos)
        info = {"mode": "sampled", "possible_inputs": int(n_inputs), "sequences": int(n_sequences),
                "distinct_sequences": int(ps.inputs.shape[0]), "seed": int(seed)}
    info.update({"rows": len(ps), "max_exhaustive_inputs": int(max_inputs)})
    return ps, info


# ---------------------------------------------------------------------------------------------
# Targets (one row per prefix)
# ---------------------------------------------------------------------------------------------

def _process_tokens(prefixes: PrefixSet) -> np.ndarray:
    return prefixes.inputs[:, 1:] if prefixes.bos else prefixes.inputs


def row_values(prefixes: PrefixSet, along, before) -> np.ndarray:
    """Per-row values of a function of the prefix: ``along(tokens (N, n_in)) -> (N, n_in, K)``
    gives the value after each token of every input; ``before (K,)`` is the value of the empty
    prefix (the BOS row). Returns ``(R, K)`` float64."""
    vals = np.asarray(along(_process_tokens(prefixes)), np.float64)
    out = np.empty((len(prefixes), vals.shape[2]))
    long = prefixes.length >= 1
    out[long] = vals[prefixes.seq_index[long], prefixes.length[long] - 1]
    out[~long] = np.asarray(before, np.float64)
    return out


def factor_tokens(tokens, vocab_sizes) -> list[np.ndarray]:
    """Decode joint tokens of :func:`compmech.processes.product` (row-major over the factors'
    vocabularies, ``x = (x_1 V_2 + x_2) V_3 + x_3 ...``) into one token array per factor."""
    x = np.asarray(tokens, np.int64)
    out = []
    for V in reversed(list(vocab_sizes)):
        out.append(x % V)
        x = x // V
    return out[::-1]


def factor_beliefs(prefixes: PrefixSet, factors) -> list[np.ndarray]:
    """Each factor's belief after every prefix of a product process: ``[(R, S_i), ...]``, by
    propagating each factor on its own decoded token stream (for HMM factors these are the
    marginals of the joint belief)."""
    factors = [as_process(f) for f in factors]
    vs = [f.vocab_size for f in factors]
    if int(np.prod(vs)) != prefixes.process.vocab_size:
        raise ValueError(f"factor vocabularies {vs} do not multiply to the process's {prefixes.process.vocab_size}")
    out = []
    for i, f in enumerate(factors):
        def along(tok, i=i, f=f):
            return _beliefs(f, factor_tokens(tok, vs)[i], dtype=np.float64)
        out.append(row_values(prefixes, along, _root(f)[0]))
    return out


def component_blocks(components) -> list[slice]:
    """State ranges of each component in :func:`compmech.processes.mixture` (concatenated in order)."""
    out, lo = [], 0
    for c in components:
        s = as_process(c).num_states
        out.append(slice(lo, lo + s))
        lo += s
    return out


def component_posterior(beliefs, components) -> np.ndarray:
    """Posterior over a mixture's components given each prefix, ``(R, K)``: the belief's mass in
    each component's block (``eta_block @ w_block``, so GHMM components count correctly)."""
    b = np.asarray(beliefs, np.float64)
    comps = [as_process(c) for c in components]
    return np.stack([b[:, sl] @ c.w for sl, c in zip(component_blocks(comps), comps)], 1)


def within_component_beliefs(beliefs, components) -> list[np.ndarray]:
    """Belief inside each component given each prefix, ``[(R, S_k), ...]``: the component's block
    of the mixture belief renormalised (what the component alone would believe). Rows whose
    prefix is impossible under component ``k`` have no such belief; ValueError names them."""
    b = np.asarray(beliefs, np.float64)
    comps = [as_process(c) for c in components]
    post = component_posterior(b, comps)
    out = []
    for k, (sl, c) in enumerate(zip(component_blocks(comps), comps)):
        m = post[:, k]
        if (m <= 1e-300).any():
            raise ValueError(f"component {k} has zero posterior after {int((m <= 1e-300).sum())} prefixes; "
                             f"its within-component belief is undefined there")
        out.append(b[:, sl] / m[:, None])
    return out


def component_losses(row_log_probs, prefixes: PrefixSet, components) -> list[dict]:
    """Per-position cross-entropy on the sequences of each mixture component: ``[{"loss",
    "bayes_optimal", "myopic_entropy"}, ...]`` (nats, one value per model position). Row ``r``
    of ``prefixes`` (a mixture's) has probability ``P_k(r) = posterior_k(r) P(r) / pi_k`` under
    component ``k`` and next-token distribution ``q_k`` (the within-component belief's), so
    ``loss`` is ``E_k[-sum_x q_k log p]`` for the predictor ``row_log_probs (R, V)`` (log-probs
    at each row); ``bayes_optimal`` the same for the mixture's own predictive (the best any
    model can do on component k's sequences without knowing k; it falls to the component's
    entropy rate as the posterior concentrates); ``myopic_entropy`` the component's own
    optimum (``E_k[H(q_k)]``). Exact on an exhaustive prefix set, an estimate on a sampled one."""
    comps = [as_process(c) for c in components]
    lp = np.asarray(row_log_probs, np.float64)
    pi = getattr(prefixes.process, "weights", None)
    if pi is None or len(pi) != len(comps):
        raise ValueError("component_losses needs the prefixes of a compmech.processes.mixture of these components")
    post = component_posterior(prefixes.beliefs, comps)
    within = within_component_beliefs(prefixes.beliefs, comps)
    with np.errstate(divide="ignore"):
        log_mix = np.log(np.clip(prefixes.next_probs, 0.0, None))
    pos = prefixes.position
    n_pos = int(pos.max()) + 1
    out = []
    for k, c in enumerate(comps):
        q = np.clip(within[k] @ c.token_weights.T, 0.0, None)  # (R, V): component k's next token
        pk = post[:, k] * prefixes.probs / pi[k]
        with np.errstate(invalid="ignore"):
            rows = {"loss": -(q * lp).sum(1), "bayes_optimal": -np.where(q > 0, q * log_mix, 0.0).sum(1),
                    "myopic_entropy": entropy_nats(q, 1)}
        norm = np.bincount(pos, weights=pk, minlength=n_pos)
        out.append({key: (np.bincount(pos, weights=pk * v, minlength=n_pos) / norm).tolist()
                    for key, v in rows.items()})
    return out


def ghmm_targets(prefixes: PrefixSet) -> dict:
    """Belief targets of a GHMM: ``"ghmm"`` — the GHMM's own belief vector normalised by its
    ``w`` (``eta @ w == 1``); ``"classical"`` — the belief of the equivalent HMM presentation on
    the same states (:meth:`Process.to_hmm`, ``eta_i w_i``) where one exists, else None."""
    proc = prefixes.process
    eta = np.asarray(prefixes.beliefs, np.float64)
    eta = eta / (eta @ proc.w)[:, None]
    classical = eta * proc.w[None, :] if proc.has_hmm_form else None
    return {"ghmm": eta, "classical": classical}


def probe_targets(acts: dict, prefixes: PrefixSet, targets, **kw):
    """:func:`compmech.probe.probe_activations` with ``targets (R, K)`` in place of the beliefs
    (same fits, CV split, weightings and shuffle control)."""
    from .probe import probe_activations

    Y = np.asarray(targets, np.float64)
    if Y.ndim != 2 or Y.shape[0] != len(prefixes):
        raise ValueError(f"targets must have shape ({len(prefixes)}, K), got {Y.shape}")
    return probe_activations(acts, dataclasses.replace(prefixes, beliefs=Y), **kw)


def cv_ratio_by_group_depth(acts, prefixes: PrefixSet, depths, *, layer: str, folds: int = 5, seed: int = 0,
                            weighting: str = "prob") -> dict:
    """How the probe's CV/in-sample MSE ratio for ``layer`` depends on the CV split: for each
    ``g`` in ``depths`` the inputs are dealt into folds by their first ``g`` tokens (the probe's
    default is the fewest giving >= 24 subtrees). A coarse split holds out whole regions of
    belief space (every input starting ``000``), so its ratio also measures how a linear map
    fitted elsewhere extrapolates; a fine split approaches a CV over individual inputs, whose
    short prefixes are then shared between training and held-out folds. Returns
    ``{g: {"cv_ratio", "mse", "cv_mse", "groups"}}``."""
    from .probe import probe_activations

    V, n_in = prefixes.process.vocab_size, prefixes.inputs.shape[1] - (1 if prefixes.bos else 0)
    toks = _process_tokens(prefixes)
    out = {}
    for g in depths:
        g = int(g)
        if not 1 <= g <= n_in:
            raise ValueError(f"group depths must lie in 1..{n_in}, got {g}")
        _, codes = subtree_groups(toks, V, g)
        ps = dataclasses.replace(prefixes, group_depth=g, group=codes[prefixes.seq_index])
        r = probe_activations({layer: acts[layer]}, ps, cv_folds=folds, shuffles=0, seed=seed,
                              weightings=(weighting,), final_layer=layer, concat=[]).layers[layer][weighting]
        out[g] = {"cv_ratio": r["cv_ratio"], "mse": r["mse"], "cv_mse": r["cv_mse"],
                  "groups": int(np.unique(codes).size)}
    return out


# ---------------------------------------------------------------------------------------------
# Subspace geometry
# ---------------------------------------------------------------------------------------------

def probe_subspace(coef, rtol: float = 1e-6) -> np.ndarray:
    """Orthonormal basis ``(D, r)`` of the activation directions a probe reads (the column space
    of ``coef (D, K)``; directions with singular value below ``rtol`` x the largest dropped, so
    the simplex constraint's null direction does not count)."""
    C = np.asarray(coef, np.float64)
    U, s, _ = np.linalg.svd(C, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return U[:, :0]
    return U[:, s > rtol * s[0]]


def principal_angles(a, b, rtol: float = 1e-6) -> np.ndarray:
    """Principal angles in degrees (ascending) between the column spaces of ``a (D, k)`` and
    ``b (D, l)``: 0 = a shared direction, 90 = orthogonal."""
    Qa, Qb = probe_subspace(a, rtol), probe_subspace(b, rtol)
    if Qa.shape[1] == 0 or Qb.shape[1] == 0:
        return np.zeros(0)
    s = np.linalg.svd(Qa.T @ Qb, compute_uv=False)
    return np.degrees(np.arccos(np.clip(s, -1.0, 1.0)))


def effective_dimension(X, weights=None, threshold: float = 0.95) -> dict:
    """PCA of rows ``X (R, D)`` (optionally weighted): ``{"dims": k, "cumulative": [...]}``
    where ``k`` is the fewest principal components explaining at least ``threshold`` of the
    (weighted) variance and ``cumulative[i]`` the fraction explained by the first ``i + 1``."""
    X = np.asarray(X, np.float64)
    w = np.ones(len(X)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    Xc = X - w @ X
    ev = np.clip(np.linalg.eigvalsh((Xc * w[:, None]).T @ Xc)[::-1], 0.0, None)
    tot = ev.sum()
    cum = np.cumsum(ev) / tot if tot > 0 else np.ones_like(ev)
    k = int(np.searchsorted(cum, threshold - 1e-12) + 1) if tot > 0 else 0
    return {"dims": min(k, len(cum)), "threshold": threshold, "cumulative": cum.tolist()}
