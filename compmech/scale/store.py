"""On-disk side of :func:`compmech.scale.msp_reduce`: a Zarr group whose attributes are the
run's manifest (process, depth, shard plan, finished shards), whose ``progress/`` arrays hold the
finished shards' partial results (for resuming), and whose ``levels/<d>/`` arrays hold the MSP
levels as ``cm.msp_tree`` has them (``beliefs``, ``probs``, ``parent``, ``token``)."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .._arrays import smallest_uint
from ..msp_tree import MSPTree, chain_levels

FORMAT = "compmech.msp_store/1"


def _run_key(proc, depth, min_prob, plan, reductions, initial, zarr: bool = False) -> str:
    """Identity of a run: everything its results depend on."""
    return _family_key(proc, min_prob, plan, reductions, initial, zarr) + f"-d{int(depth)}"


def _digest(proc, plan, fields: list) -> str:
    """16 hex digits of the process (T, w), the root belief and the JSON ``fields``."""
    h = hashlib.sha256()
    for a in (proc.T, proc.w if proc.is_generalized else np.ones(0), plan.top.level(0).beliefs):
        h.update(np.ascontiguousarray(a, np.float64).tobytes())
    h.update(json.dumps(fields).encode())
    return h.hexdigest()[:16]


def _family_key(proc, min_prob, plan, reductions, initial, zarr: bool = False) -> str:
    """A run's identity without its depth: runs of one family differ only in depth, and the
    levels and sums of the shallower are exactly those of the deeper (same split, same shards)."""
    return _digest(proc, plan, [float(min_prob), plan.k, plan.bounds, sorted(r.key() for r in reductions), bool(zarr)])


def _legacy_run_key(proc, depth, min_prob, plan, reductions, initial, zarr: bool = False) -> str:
    """The run key of stores written before family keys (0.2.0): still the same run."""
    fields = [depth, float(min_prob), plan.k, plan.bounds, sorted(r.name for r in reductions)]
    return _digest(proc, plan, fields) + ("z" if zarr else "")


# Totals of a finished run: stale (and removed) once a deeper run takes over its store.
_RESULT_ATTRS = ("level_sizes", "H_bits", "total_prob")


class _Store:
    """Run state in a Zarr group: attrs are the manifest (run key, plan, finished shards);
    arrays under ``progress/`` hold each finished shard's partial results.

    A finished run of the same family (same process, options and shard plan) to a smaller
    depth is extended in place: its levels already written stay (``levels_kept``; they are
    exactly the deeper run's), its per-shard sums are redone (a shard's walk to the new depth
    passes every node above it anyway, so keeping them would save no work). Any other run in
    the store is refused, an unfinished one with the depth that resumes it."""

    def __init__(self, path: str, key: str, manifest: dict, family: str | None = None, legacy: str | None = None):
        import zarr

        self.path = path
        self.extended_from, self.levels_kept = None, 0  # set when a shallower run is extended
        if os.path.exists(path):
            self.g = zarr.open_group(path, mode="r+")
            old = self.g.attrs.get("run_key")
            if old is not None and old == legacy:  # this run, recorded by an older version
                self.g.attrs.update({"run_key": key, "family_key": family})
            elif old is not None and old != key:
                a = self.g.attrs
                same = family is not None and a.get("family_key") == family
                if same and a.get("complete") and a["depth"] < manifest["depth"]:
                    self._take_over(a["depth"])
                elif same and not a.get("complete"):
                    raise ValueError(f"{path} holds an unfinished depth-{a['depth']} run of this process: rerun "
                                     f"with depth {a['depth']} to finish it, or use another path or delete it")
                elif same:
                    raise ValueError(f"{path} holds the finished depth-{a['depth']} run of this process, deeper "
                                     f"than depth {manifest['depth']}; use another path or delete it")
                else:
                    raise ValueError(f"{path} holds a different MSP run (other process, options, shards or "
                                     f"reductions); use another path or delete it")
        else:
            self.g = zarr.open_group(path, mode="w")
        if self.g.attrs.get("run_key") is None:
            self.g.attrs.update({"format": FORMAT, "run_key": key, "family_key": family, **manifest,
                                 "done_entropy": [], "done_chunks": [], "complete": False,
                                 "levels_kept": self.levels_kept})
        self.levels_kept = int(self.g.attrs.get("levels_kept", 0))  # also when resuming an extension

    def _take_over(self, old_depth: int):
        """Make a finished shallower run of the same family into a fresh deeper one."""
        kept = old_depth if self.g.attrs.get("levels_complete") else 0
        if "progress" in self.g:  # per-shard sums to the old depth: their shapes change
            del self.g["progress"]
        for name in list(self.g["levels"].group_keys()) if "levels" in self.g else []:
            if int(name) > kept:  # a partly written level of an unfinished write
                del self.g[f"levels/{name}"]
        a = self.g.attrs.asdict()
        for k in ("run_key",) + _RESULT_ATTRS:
            a.pop(k, None)
        self.g.attrs.put(a)  # no run key: __init__ writes the new run's manifest
        self.extended_from, self.levels_kept = old_depth, kept

    def done(self, phase: str) -> set:
        return set(self.g.attrs.get(f"done_{phase}", []))

    def mark(self, phase: str, shards):
        done = sorted(self.done(phase) | set(shards))
        self.g.attrs[f"done_{phase}"] = done

    def entropy_rows(self, n_shards: int, n_levels: int):
        """One row per shard (its own chunk) for the phase-1 sums: three small arrays in all."""
        g = self.g.require_group("progress")
        if "entropy_counts" not in g:
            g.create_array("entropy_counts", shape=(n_shards, n_levels), chunks=(1, n_levels), dtype=np.uint64)
            g.create_array("entropy_prob", shape=(n_shards, n_levels, 3), chunks=(1, n_levels, 3), dtype=np.uint64)
            g.create_array("entropy_ent", shape=(n_shards, n_levels, 3), chunks=(1, n_levels, 3), dtype=np.uint64)
        return g["entropy_counts"], g["entropy_prob"], g["entropy_ent"]

    def put(self, path: str, obj):
        """Store a partial (array, scalar or nested dict of them) under progress/path."""
        if isinstance(obj, dict):
            for k, v in obj.items():
                self.put(f"{path}/{k}", v)
            self.g.require_group(path)
            self.g[path].attrs["keys"] = [str(k) for k in obj]
            self.g[path].attrs["int_keys"] = [isinstance(k, (int, np.integer)) for k in obj]
            return
        a = np.asarray(obj)
        if a.dtype == object:
            raise TypeError("a partial must be numpy arrays, scalars or dicts of them to be checkpointed")
        self.g.create_array(path, shape=a.shape, dtype=a.dtype, overwrite=True)
        self.g[path][...] = a

    def get(self, path: str):
        node = self.g[path]
        if "keys" in node.attrs:
            keys = node.attrs["keys"]
            ints = node.attrs["int_keys"]
            return {(int(k) if i else k): self.get(f"{path}/{k}") for k, i in zip(keys, ints)}
        a = node[...]
        return a


def _level_chunk(M: int, chunk: int) -> int:
    return max(1, min(int(chunk), int(M)))


def _zarr_levels(store: _Store, proc, plan, level_sizes: list, chunk: int, dtype):
    """Create the per-level arrays and write the levels held in memory (0..k)."""
    g = store.g
    S = proc.num_states
    tok = smallest_uint(proc.vocab_size)
    for d, M in enumerate(level_sizes):
        lg = g.require_group(f"levels/{d}")
        if "probs" in lg:
            continue
        # The chunk length is the writers' (_LevelWriter, via _level_chunk): tasks write whole
        # chunks only.
        c = _level_chunk(M, chunk)
        lg.create_array("beliefs", shape=(M, S), chunks=(c, S), dtype=dtype)
        lg.create_array("probs", shape=(M,), chunks=(c,), dtype=np.float64)
        lg.create_array("parent", shape=(M,), chunks=(c,), dtype=np.int64)
        lg.create_array("token", shape=(M,), chunks=(c,), dtype=tok)
        if d <= plan.k:
            lvl = plan.top.level(d)
            lg["beliefs"][...] = lvl.beliefs
            lg["probs"][...] = lvl.probs
            lg["parent"][...] = lvl.parent
            lg["token"][...] = lvl.token


def load_tree(path: str, depth: int | None = None) -> MSPTree:
    """Read levels 0..depth of an MSP Zarr store (written by ``msp_reduce(..., zarr=...)``)
    into an in-memory :class:`compmech.MSPTree` (the same arrays ``cm.msp_tree`` gives)."""
    import zarr

    from ..process import GHMM, HMM

    g = zarr.open_group(path, mode="r")
    a = dict(g.attrs)
    if a.get("format") != FORMAT:
        raise ValueError(f"{path} is not a compmech MSP store")
    if not a.get("levels_complete"):
        raise ValueError(f"{path}: the levels were not completely written (interrupted run); rerun to finish")
    T = np.asarray(a["process"]["T"], np.float64)
    name = a["process"].get("name")
    proc = GHMM(T, name=name) if a["process"].get("w") is not None else HMM(T, name=name)
    N = a["depth"] if depth is None else int(depth)
    arrays = []
    for d in range(N + 1):
        lg = g[f"levels/{d}"]
        arrays.append((lg["beliefs"][...], lg["probs"][...], lg["parent"][...].astype(np.int32), lg["token"][...]))
    return MSPTree(proc, chain_levels(proc, arrays), a["min_prob"])


def open_levels(path: str):
    """Level ``d`` of an MSP Zarr store as lazy dask arrays: ``{d: {"beliefs", "probs",
    "parent", "token"}}`` (``parent`` indexes level d-1)."""
    import dask.array as da
    import zarr

    g = zarr.open_group(path, mode="r")
    return {int(d): {k: da.from_zarr(g[f"levels/{d}/{k}"]) for k in ("beliefs", "probs", "parent", "token")}
            for d in sorted(g["levels"].group_keys(), key=int)}


class _LevelWriter:
    """Writes one shard's rows of one level to Zarr. Chunks that hold only this shard's rows
    are written here; rows in the (at most two) chunks shared with neighbouring shards are
    returned so that one writer (the client) stores them: no two tasks write one chunk."""

    def __init__(self, open_arrays, start: int, end: int, chunk: int):
        self.open_arrays, self.arrays, self.start, self.end, self.C = open_arrays, None, start, end, chunk
        self.head_end = start if start % chunk == 0 else min(end, (start // chunk + 1) * chunk)
        self.tail_start = end if end % chunk == 0 else max(self.head_end, (end // chunk) * chunk)
        self.pos = self.head_end
        self.buf: list[dict] = []
        self.boundary: list[tuple[int, dict]] = []

    def add(self, row0: int, cols: dict):
        n = len(next(iter(cols.values())))
        for lo, hi, direct in ((self.start, self.head_end, False), (self.head_end, self.tail_start, True),
                               (self.tail_start, self.end, False)):
            a, b = max(lo, row0), min(hi, row0 + n)
            if a >= b:
                continue
            piece = {k: v[a - row0:b - row0] for k, v in cols.items()}
            if direct:
                self.buf.append(piece)
                self._flush(final=False)
            else:
                self.boundary.append((a, piece))

    def _flush(self, final: bool):
        n = sum(len(p["probs"]) for p in self.buf)
        stop = self.pos + n if final else (self.pos + n) // self.C * self.C
        if stop <= self.pos:
            return
        cols = {k: np.concatenate([p[k] for p in self.buf]) for k in self.buf[0]}
        m = stop - self.pos
        if self.arrays is None:  # opened only by shards that own whole chunks of this level
            self.arrays = self.open_arrays()
        for k, arr in self.arrays.items():
            arr[self.pos:stop] = cols[k][:m]
        self.buf = [{k: v[m:] for k, v in cols.items()}] if m < n else []
        self.pos = stop

    def close(self):
        if self.buf:
            self._flush(final=True)
        return self.boundary
