"""Mergeable reductions over the levels of an MSP tree, for :func:`compmech.scale.msp_reduce`.

A reduction sees level chunks ``(beliefs (M, S), probs (M,), sequences (M, d))`` in
lexicographic order inside each shard and produces a *partial* per shard; partials merge in
shard order. The built-in ones are exact: integer counts and fixed-point sums (``_exact``), so
their results are the same bits for any number of workers, shards or chunk sizes.

A partial is a dict ``{depth: dict of numpy arrays}`` so it can be checkpointed in a Zarr store.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import _exact


class Reduction:
    """Base class. Subclasses set ``name`` and implement ``update``, ``merge_depth`` and
    ``finalize``; ``depths(N)`` says which levels the reduction reads (default: level N)."""

    name = "reduction"
    needs_sequences = False

    def __init__(self, depths=None):
        self._depths = None if depths is None else sorted({int(d) for d in np.atleast_1d(depths)})

    def key(self) -> list:
        """What a stored partial depends on (a store's run identity): a rerun with other
        parameters must not merge with partials saved under these. A user reduction's
        functions cannot be compared: its name stands for them."""
        return [self.name, self._depths]

    def depths(self, depth: int) -> list[int]:
        ds = [depth] if self._depths is None else self._depths
        bad = [d for d in ds if not 1 <= d <= depth]
        if bad:
            raise ValueError(f"{self.name}: depths {bad} outside 1..{depth}")
        return ds

    def update(self, partial: dict | None, beliefs, probs, sequences) -> dict:
        raise NotImplementedError

    def merge_depth(self, a: dict, b: dict) -> dict:
        raise NotImplementedError

    def merge(self, a: dict, b: dict) -> dict:
        """Merge two ``{depth: partial}`` dicts (``a`` from the earlier shards)."""
        out = dict(a)
        for d, pb in b.items():
            out[d] = self.merge_depth(out[d], pb) if d in out else pb
        return out

    def finalize(self, partial: dict, process, depth: int):
        return partial


# ---------------------------------------------------------------- belief histogram on a grid
@dataclass
class BeliefHistogramResult:
    """Per depth: ``counts[d]`` (number of sequences) and ``mass[d]`` (their total probability)
    in the cells of a grid of ``bins`` per axis on the first ``S - 1`` belief coordinates
    (the last coordinate is determined by the others)."""

    bins: int
    counts: dict = field(default_factory=dict)
    mass: dict = field(default_factory=dict)

    def box_counting_dimension(self, depth: int, min_boxes: int = 2):
        """Box-counting dimension of the beliefs at ``depth``: slope of log N(eps) against
        log(1/eps) over the dyadic coarsenings eps = 2^j / bins of the grid (``bins`` a power of
        two). Returns ``(dimension, standard error of the slope, (1/eps, N) table)``. A finite
        tree has finitely many points, so read it over the scales where N(eps) is still below
        the number of distinct beliefs."""
        occ = self.counts[depth] > 0
        n = self.bins
        rows = []
        while n >= 1:
            rows.append((n, int(occ.sum())))
            if n == 1 or n % 2:
                break
            axes = occ.ndim
            occ = occ.reshape(sum(((n // 2, 2) for _ in range(axes)), ())).any(axis=tuple(range(1, 2 * axes, 2)))
            n //= 2
        table = np.array(rows[::-1], dtype=np.float64)
        table = table[table[:, 1] >= min_boxes]
        if len(table) < 3:
            raise ValueError("box_counting_dimension needs at least 3 scales with >= min_boxes occupied cells")
        x, y = np.log2(table[:, 0]), np.log2(table[:, 1])
        A = np.stack([x, np.ones_like(x)], axis=1)
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        resid = y - A @ coef
        se = math.sqrt(float(resid @ resid) / max(len(x) - 2, 1) / float(((x - x.mean()) ** 2).sum()))
        return float(coef[0]), se, table


class BeliefHistogram(Reduction):
    """Counts and probability mass of the beliefs on a grid of the simplex (see
    :class:`BeliefHistogramResult`); by default at the deepest level only."""

    name = "histogram"

    def __init__(self, bins: int = 64, depths=None):
        super().__init__(depths)
        self.bins = int(bins)
        if self.bins < 1:
            raise ValueError("histogram bins must be >= 1")

    def key(self) -> list:
        return super().key() + [self.bins]

    def _cells(self, beliefs: np.ndarray) -> np.ndarray:
        S = beliefs.shape[1]
        if self.bins ** max(S - 1, 0) > 1 << 26:
            raise ValueError(f"histogram: {self.bins}^{S - 1} cells is too many; use fewer bins")
        idx = np.clip(np.floor(np.asarray(beliefs[:, : S - 1], np.float64) * self.bins), 0, self.bins - 1)
        idx = idx.astype(np.int64)
        flat = np.zeros(len(beliefs), np.int64)
        for j in range(S - 1):
            flat = flat * self.bins + idx[:, j]
        return flat

    def update(self, partial, beliefs, probs, sequences):
        from .. import _core

        ncell = self.bins ** max(beliefs.shape[1] - 1, 0)
        cells = self._cells(beliefs)
        part = {"counts": np.bincount(cells, minlength=ncell).astype(np.int64),
                "mass": _core.exact_bin_sums(np.ascontiguousarray(probs, np.float64), cells, ncell)}
        return part if partial is None else self.merge_depth(partial, part)

    def merge_depth(self, a, b):
        return {"counts": a["counts"] + b["counts"], "mass": _exact.add(a["mass"], b["mass"])}

    def finalize(self, partial, process, depth):
        S = process.num_states
        shape = (self.bins,) * max(S - 1, 0)
        res = BeliefHistogramResult(self.bins)
        for d, p in sorted(partial.items()):
            res.counts[d] = p["counts"].reshape(shape)
            res.mass[d] = _exact.to_float(p["mass"]).reshape(shape)
        return res


# ------------------------------------------------------------- distinct beliefs per depth
def belief_keys(beliefs: np.ndarray, tol: float) -> np.ndarray:
    """Integer keys of beliefs rounded to the grid ``tol`` (two beliefs are "the same" when
    every coordinate rounds to the same multiple of ``tol``)."""
    return np.rint(np.asarray(beliefs, np.float64) / tol).astype(np.int64)


def _unique_rows(keys: np.ndarray) -> np.ndarray:
    if len(keys) == 0:
        return keys
    return np.unique(keys, axis=0)


class DistinctBeliefs(Reduction):
    """Number of distinct beliefs per depth after rounding every coordinate to a multiple of
    ``tol``. Keys are split into ``buckets`` hash shards, each deduplicated on its own, so the
    union never needs one global sort; the count is exact. Memory: the distinct keys of a depth
    (8 S bytes each). By default every depth 1..N."""

    name = "distinct"

    def __init__(self, tol: float = 1e-9, buckets: int = 16, depths=None):
        super().__init__(depths)
        self.tol = float(tol)
        self.buckets = int(buckets)
        if not self.tol > 0 or self.buckets < 1:
            raise ValueError("distinct: tol must be > 0 and buckets >= 1")

    def key(self) -> list:
        return super().key() + [self.tol, self.buckets]

    def depths(self, depth):
        return list(range(1, depth + 1)) if self._depths is None else super().depths(depth)

    def _bucket(self, keys):
        # Deterministic row hash (multiply-xorshift over the integer coordinates).
        h = np.zeros(len(keys), np.uint64)
        with np.errstate(over="ignore"):
            for j in range(keys.shape[1]):
                h = (h ^ keys[:, j].astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
                h ^= h >> np.uint64(29)
        return (h % np.uint64(self.buckets)).astype(np.int64)

    def update(self, partial, beliefs, probs, sequences):
        keys = _unique_rows(belief_keys(beliefs, self.tol))
        b = self._bucket(keys)
        part = {f"b{i}": keys[b == i] for i in range(self.buckets)}
        return part if partial is None else self.merge_depth(partial, part)

    def merge_depth(self, a, b):
        return {k: _unique_rows(np.concatenate([a[k], b[k]])) for k in a}

    def finalize(self, partial, process, depth):
        return {d: int(sum(len(v) for v in p.values())) for d, p in sorted(partial.items())}


# ------------------------------------------------------------------- user-supplied reduction
class UserReduction(Reduction):
    """``fn(beliefs, probs, sequences) -> partial`` on each chunk and ``merge(a, b) -> partial``
    (associative; called in lexicographic chunk order). For checkpointing, partials should be
    numpy arrays or dicts of them. ``finalize(partial)`` (optional) maps the merged partial to
    the result. Unless the merge is exact (integers), float results can differ in the last bits
    between different ``max_nodes`` (chunkings); the shard split itself is fixed."""

    needs_sequences = True

    def __init__(self, name: str, fn: Callable, merge: Callable, finalize: Callable | None = None, depths=None):
        super().__init__(depths)
        if not callable(fn) or not callable(merge):
            raise TypeError("a user reduction needs callables fn and merge")
        self.name, self._fn, self._merge, self._finalize = str(name), fn, merge, finalize

    def update(self, partial, beliefs, probs, sequences):
        part = self._fn(beliefs, probs, sequences)
        return part if partial is None else self._merge(partial, part)

    def merge_depth(self, a, b):
        return self._merge(a, b)

    def finalize(self, partial, process, depth):
        f = self._finalize or (lambda x: x)
        return {d: f(p) for d, p in sorted(partial.items())}
