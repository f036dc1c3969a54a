"""Mixed-state trees deeper than memory, on Dask.

Level N of the tree is the union of the subtrees below the nodes of a shallow level k, in
lexicographic order; one Dask task per shard (a contiguous run of level-k prefixes) walks its
subtrees with the compiled kernels and hands back mergeable partial results:

* phase 1 (always): exact per-level node counts, total probability and block entropy from a
  depth-first walk in C++ that never materialises a level (memory O(depth));
* phase 2 (when chunk reductions or Zarr output are requested): breadth-first expansion of the
  shard in chunks of at most ``max_nodes`` nodes per level, streamed through the reductions
  and optionally written to Zarr at the offsets phase 1 counted.

Everything a finished shard produced is recorded in the ``store`` (a Zarr group), so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from . import _exact
from .reductions import BeliefHistogram, DistinctBeliefs, Reduction, UserReduction
from ..msp_tree import MSPLevel, MSPTree, _expand, msp_tree
from ..process import Process, as_process
from .._arrays import check_count, check_nonneg_float, smallest_uint

FORMAT = "compmech.msp_store/1"


@dataclass
class EntropyResult:
    """Exact per-level totals of the MSP tree to ``depth`` (level 0 = the empty sequence).

    Attributes:
        H: ``(N+1,)`` block entropy H(L) = -sum p log2 p over the level-L sequences, bits.
        h: ``(N,)`` myopic entropy h(L) = H(L) - H(L-1) for L = 1..N, bits.
        total_prob: ``(N+1,)`` sum of the probabilities of each level (1 up to round-off when
            ``min_prob=0``).
        nodes: ``(N+1,)`` int, number of retained sequences per level.
        H_exact, prob_exact: the fixed-point sums (``(N+1, 3)`` uint64 limbs, unit 2^-128).
    """

    H: np.ndarray
    h: np.ndarray
    total_prob: np.ndarray
    nodes: np.ndarray
    H_exact: np.ndarray = field(repr=False)
    prob_exact: np.ndarray = field(repr=False)

    @classmethod
    def from_sums(cls, counts, prob, ent):
        H = _exact.to_float(ent)
        h = _exact.diff_float(ent[1:], ent[:-1])
        return cls(H, h, _exact.to_float(prob), np.asarray(counts, np.int64), ent, prob)


@dataclass
class MSPReduceResult:
    """What :func:`msp_reduce` returns: ``entropy`` plus one entry per chunk reduction (by
    name) in ``results``; ``info`` has the shard plan and timings."""

    entropy: EntropyResult
    results: dict
    info: dict

    def __getitem__(self, name):
        return self.entropy if name == "entropy" else self.results[name]


# ------------------------------------------------------------------------- planning
@dataclass
class _Plan:
    depth: int
    k: int                 # split level
    bounds: list           # shard i covers level-k rows bounds[i]:bounds[i+1]
    top: MSPTree           # levels 0..k in memory

    @property
    def n_shards(self):
        return len(self.bounds) - 1


def _plan(proc: Process, depth: int, shards: int | None, min_prob: float, initial) -> _Plan:
    V = proc.vocab_size
    want = 64 if shards is None else shards
    k = 0
    while k < depth and V ** k < want:
        k += 1
    top = msp_tree(proc, k, min_prob=min_prob, initial=initial)
    n_roots = len(top.level(k))
    n = max(1, min(n_roots, want))
    bounds = [round(i * n_roots / n) for i in range(n + 1)]
    return _Plan(depth, k, bounds, top)


def _process_arrays(proc: Process):
    w = np.ascontiguousarray(proc.w, np.float64) if proc.is_generalized else None
    return np.ascontiguousarray(proc.T, np.float64), w, float(proc.zero_tol)


# ------------------------------------------------------------------------- tasks
def _canonical(a: np.ndarray) -> np.ndarray:
    """A copy with numpy's canonical dtype object: arrays that Dask deserialised carry an
    equal but distinct dtype instance, which the compiled core's dtype checks reject."""
    out = np.empty(a.shape, a.dtype.type)  # np.array(a, dtype) would keep a's dtype instance
    out[...] = a
    if not a.flags.writeable:
        out.setflags(write=False)
    return out


def _canonical_process(proc: Process) -> Process:
    import copy

    proc = copy.copy(proc)
    for k, v in vars(proc).items():
        if isinstance(v, np.ndarray):
            setattr(proc, k, _canonical(v))
    return proc


def _entropy_task(proc: Process, roots: np.ndarray, probs: np.ndarray, below: int, min_prob: float,
                  include_roots: bool = False):
    """Phase 1 for one shard: exact counts and sums for the levels 1..below under its roots
    (relative level 0, the roots, only with include_roots)."""
    from .. import _core

    T, w, zt = _process_arrays(proc)
    return _core.msp_entropy_sums(_canonical(T), None if w is None else _canonical(w),
                                  _canonical(np.asarray(roots, np.float64)), _canonical(np.asarray(probs, np.float64)),
                                  int(below), float(min_prob), zt, bool(include_roots))


def _iter_chunks(proc, lvl: MSPLevel, seq, d: int, N: int, max_nodes: int, min_prob: float,
                 row0: int, offsets: dict) -> Iterator:
    """Yield ``(depth, level chunk, sequences or None, first row, first parent row)`` for
    levels d+1..N of the subtrees of ``lvl`` (rows ``row0..`` of level d within the shard),
    each level's chunks in lexicographic order. ``offsets[depth]`` counts rows per level."""
    if d == N:
        return
    V = proc.vocab_size
    step = max(1, max_nodes // V ** (N - d))
    for g in range(0, len(lvl), step):
        part = MSPLevel(d, np.ascontiguousarray(lvl.beliefs[g:g + step]), np.ascontiguousarray(lvl.probs[g:g + step]),
                        lvl.parent[g:g + step], lvl.token[g:g + step], proc)
        child = _expand(proc, part, min_prob, False)
        if not len(child):
            continue
        cseq = None
        if seq is not None:
            cseq = np.concatenate([seq[g:g + step][child.parent], child.token[:, None].astype(seq.dtype)], axis=1)
        start = offsets[d + 1]
        offsets[d + 1] += len(child)
        yield d + 1, child, cseq, start, row0 + g
        yield from _iter_chunks(proc, child, cseq, d + 1, N, max_nodes, min_prob, start, offsets)


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


def _chunk_task(proc, roots: MSPLevel, roots_seq, k: int, N: int, max_nodes: int, min_prob: float,
                reductions: list, store_path: str | None, level_starts: dict | None, level_ends: dict | None,
                root_row0: int, zarr_chunk: int, level_sizes: list | None = None):
    """Phase 2 for one shard: stream its levels through the reductions and into Zarr."""
    proc = _canonical_process(proc)
    roots = MSPLevel(k, _canonical(roots.beliefs), _canonical(roots.probs), roots.parent, roots.token, proc)
    wanted = {r.name: set(r.depths(N)) for r in reductions}
    need_seq = any(r.needs_sequences for r in reductions)
    deepest = max([max(d) for d in wanted.values() if d] + ([N] if store_path else [k]))
    partials: dict = {r.name: {} for r in reductions}
    writers = {}
    if store_path:
        import zarr

        g = zarr.open_group(store_path, mode="r+")
        for d in range(k + 1, N + 1):
            def open_arrays(d=d):
                return {name: g[f"levels/{d}/{name}"] for name in ("beliefs", "probs", "parent", "token")}

            chunk = _level_chunk(level_sizes[d], zarr_chunk)
            writers[d] = _LevelWriter(open_arrays, level_starts[d], level_ends[d], chunk)
    offsets = {d: 0 for d in range(k + 1, deepest + 1)}
    seq = roots_seq if need_seq else None
    for d, lvl, cseq, start, prow0 in _iter_chunks(proc, roots, seq, k, deepest, max_nodes, min_prob, 0, offsets):
        for r in reductions:
            if d in wanted[r.name]:
                partials[r.name][d] = r.update(partials[r.name].get(d), lvl.beliefs, lvl.probs, cseq)
        if d in writers:
            parent_base = (level_starts[d - 1] if d - 1 > k else root_row0) + prow0
            writers[d].add(level_starts[d] + start, {
                "beliefs": lvl.beliefs, "probs": lvl.probs,
                "parent": lvl.parent.astype(np.int64) + parent_base, "token": lvl.token})
    boundary = {d: w.close() for d, w in writers.items()}
    return partials, boundary


# ------------------------------------------------------------------------- the store
def _run_key(proc, depth, min_prob, plan, reductions, initial) -> str:
    h = hashlib.sha256()
    for a in (proc.T, proc.w if proc.is_generalized else np.ones(0), plan.top.level(0).beliefs):
        h.update(np.ascontiguousarray(a, np.float64).tobytes())
    h.update(json.dumps([depth, float(min_prob), plan.k, plan.bounds,
                         sorted(r.name for r in reductions)]).encode())
    return h.hexdigest()[:16]


class _Store:
    """Run state in a Zarr group: attrs are the manifest (run key, plan, finished shards);
    arrays under ``progress/`` hold each finished shard's partial results."""

    def __init__(self, path: str, key: str, manifest: dict):
        import zarr

        self.path = path
        if os.path.exists(path):
            self.g = zarr.open_group(path, mode="r+")
            old = self.g.attrs.get("run_key")
            if old is not None and old != key:
                raise ValueError(f"{path} holds a different MSP run (other process, depth, options or "
                                 f"reductions); use another path or delete it")
        else:
            self.g = zarr.open_group(path, mode="w")
        if self.g.attrs.get("run_key") is None:
            self.g.attrs.update({"format": FORMAT, "run_key": key, **manifest, "done_entropy": [],
                                 "done_chunks": [], "complete": False})

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


def _zarr_levels(store: _Store, proc, plan: _Plan, level_sizes: list, chunk: int, dtype):
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
    levels = []
    for d in range(N + 1):
        lg = g[f"levels/{d}"]
        levels.append(MSPLevel(d, lg["beliefs"][...], lg["probs"][...], lg["parent"][...].astype(np.int32),
                               lg["token"][...], proc))
    return MSPTree(proc, levels, a["min_prob"])


def open_levels(path: str):
    """Level ``d`` of an MSP Zarr store as lazy dask arrays: ``{d: {"beliefs", "probs",
    "parent", "token"}}`` (``parent`` indexes level d-1)."""
    import dask.array as da
    import zarr

    g = zarr.open_group(path, mode="r")
    return {int(d): {k: da.from_zarr(g[f"levels/{d}/{k}"]) for k in ("beliefs", "probs", "parent", "token")}
            for d in sorted(g["levels"].group_keys(), key=int)}


# ------------------------------------------------------------------------- driver
def _as_reductions(reductions) -> list:
    out = []
    for r in reductions or ():
        if isinstance(r, str):
            r = {"entropy": None, "histogram": BeliefHistogram, "distinct": DistinctBeliefs}[r]
            if r is None:
                continue
            r = r()
        elif r is None:
            continue
        if not isinstance(r, Reduction):
            raise TypeError(f"not a reduction: {r!r} (use 'entropy', 'histogram', 'distinct' or a Reduction)")
        out.append(r)
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ValueError(f"reduction names must be unique, got {names}")
    return out


def _get_client(client):
    if client is not None:
        if isinstance(client, str):
            from dask.distributed import Client

            return Client(client), True
        return client, False
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(processes=False, n_workers=1, threads_per_worker=os.cpu_count() or 1,
                           dashboard_address=None)
    return Client(cluster), True


def _run_phase(client, phase, store, fn, items, on_result, progress, ran: dict, flush=None):
    """Submit fn(*args) per shard, hand results to on_result(shard, result) as they finish,
    marking finished shards in the store (skipped on a rerun). ``flush()`` (optional) saves
    buffered output and returns the shards now safe to mark; it is called every 16 results
    and at the end (also when interrupted)."""
    from dask.distributed import as_completed

    done = store.done(phase) if store else set()
    futures = {}
    for i, args in items:
        if i in done:
            continue
        futures[client.submit(fn, *args, key=f"msp-{phase}-{i}-{time.time_ns()}", retries=2)] = i
    n_total = len(items)
    n_done = n_total - len(futures)
    ran[phase] = len(futures)
    unsaved = []

    def save():
        ready = flush() if flush else list(unsaved)
        unsaved.clear()
        if store and ready:
            store.mark(phase, ready)

    try:
        for fut in as_completed(futures):
            i = futures[fut]
            on_result(i, fut.result())
            fut.release()  # frees the worker's copy; a lost worker will not recompute it
            unsaved.append(i)
            n_done += 1
            if len(unsaved) >= 16:
                save()
            if progress:
                print(f"\r  {phase}: {n_done}/{n_total} shards", end="", flush=True)
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    finally:
        save()
        if progress:
            print()


def msp_reduce(process, depth: int, reductions: Sequence = ("entropy",), *, client=None, max_nodes: int = 1 << 22,
               min_prob: float = 0.0, initial=None, shards: int | None = None, store: str | None = None,
               zarr: bool = False, zarr_chunk: int = 1 << 20, progress: bool = False) -> MSPReduceResult:
    """Reduce the MSP tree of ``process`` to ``depth`` without holding its levels in memory.

    Args:
        reductions: any of ``"entropy"`` (always computed: exact block entropy H(L), myopic
            entropy h(L), total probability and node count per level), ``"histogram"`` /
            :class:`BeliefHistogram`, ``"distinct"`` / :class:`DistinctBeliefs`, or a
            :class:`UserReduction`.
        client: ``None`` (an in-process Dask scheduler with one thread per core), a
            ``dask.distributed.Client`` (LocalCluster or remote), or a scheduler address
            ``"tcp://host:8786"``.
        max_nodes: most nodes per level one task holds at a time in the chunk phase.
        shards: number of shards (default 64, or the number of level-k prefixes); the results
            of the built-in reductions do not depend on it (nor on workers or ``max_nodes``).
        store: a Zarr group path recording finished shards and their partial results: an
            interrupted call (Ctrl-C, lost cluster) rerun with the same arguments resumes.
        zarr: also write every level (beliefs, probs, parent, token, as ``cm.msp_tree``) into
            ``store`` under ``levels/<d>/``, in parallel from the tasks; read them back with
            :func:`load_tree` or :func:`open_levels`.

    Returns an :class:`MSPReduceResult`.
    """
    proc = as_process(process)
    depth = check_count(depth, "depth")
    min_prob = check_nonneg_float(min_prob, "min_prob")
    max_nodes = check_count(max_nodes, "max_nodes")
    if max_nodes < 1:
        raise ValueError("max_nodes must be >= 1")
    if shards is not None and check_count(shards, "shards") < 1:
        raise ValueError("shards must be >= 1")
    reds = _as_reductions(reductions)
    for r in reds:
        r.depths(depth)
    if zarr and store is None:
        raise ValueError("zarr=True needs a store path")
    plan = _plan(proc, depth, shards, min_prob, initial)
    k, N = plan.k, depth
    st = None
    if store is not None:
        manifest = {"depth": N, "min_prob": min_prob, "split_level": k, "shard_bounds": plan.bounds,
                    "process": {"name": proc.name, "T": proc.T.tolist(),
                                "w": proc.w.tolist() if proc.is_generalized else None},
                    "initial": plan.top.level(0).beliefs[0].tolist(), "zarr_chunk": zarr_chunk,
                    "reductions": [r.name for r in reds], "levels_written": bool(zarr), "levels_complete": False}
        st = _Store(store, _run_key(proc, depth, min_prob, plan, reds, initial) + ("z" if zarr else ""), manifest)
    t0 = time.perf_counter()
    cl, own = _get_client(client)
    try:
        roots = plan.top.level(k)
        # Levels 0..k: one small walk from the root; the shards add levels k+1..N.
        top = _entropy_task(proc, plan.top.level(0).beliefs, plan.top.level(0).probs, k, min_prob, True)
        counts = np.zeros(N + 1, np.uint64)
        prob = _exact.zeros(N + 1)
        ent = _exact.zeros(N + 1)
        counts[:k + 1], prob[:k + 1], ent[:k + 1] = top[0], top[1], top[2]
        shard_counts = {}
        results = {}

        rows = st.entropy_rows(plan.n_shards, N - k + 1) if st else None

        def on_entropy(i, res):
            if st:  # saved before the shard is marked done
                for arr, v in zip(rows, res):
                    arr[i] = v
            results[i] = res

        items = [(i, (proc, roots.beliefs[a:b], roots.probs[a:b], N - k, min_prob))
                 for i, (a, b) in enumerate(zip(plan.bounds[:-1], plan.bounds[1:]))]
        ran = {"entropy": 0, "chunks": 0}
        _run_phase(cl, "entropy", st, _entropy_task, items, on_entropy, progress, ran)
        for i in range(plan.n_shards):  # exact integer merges: the order does not matter
            if i in results:
                c, p, e = results[i]
            else:
                c, p, e = (arr[i] for arr in rows)
            shard_counts[i] = np.asarray(c, np.int64)  # [0] (the roots' level) is 0
            counts[k + 1:] += np.asarray(c[1:], np.uint64)
            prob[k + 1:] = _exact.add(prob[k + 1:], p[1:])
            ent[k + 1:] = _exact.add(ent[k + 1:], e[1:])
        t_entropy = time.perf_counter() - t0
        entropy = EntropyResult.from_sums(counts, prob, ent)
        out = {}
        if reds or zarr:
            out = _chunk_phase(cl, st, proc, plan, reds, N, max_nodes, min_prob, zarr, zarr_chunk, entropy,
                               shard_counts, progress, ran)
        if st:
            st.g.attrs.update({"complete": True, "levels_complete": bool(zarr), "level_sizes": entropy.nodes.tolist(),
                               "H_bits": entropy.H.tolist(), "total_prob": entropy.total_prob.tolist()})
        info = {"split_level": k, "shards": plan.n_shards, "shards_run": ran, "nodes": int(entropy.nodes.sum()),
                "seconds_entropy": t_entropy, "seconds": time.perf_counter() - t0}
        return MSPReduceResult(entropy, out, info)
    finally:
        if own:
            cluster = cl.cluster if client is None else None
            cl.close()
            if cluster is not None:
                cluster.close()


def _chunk_phase(cl, st, proc, plan, reds, N, max_nodes, min_prob, zarr, zarr_chunk, entropy, shard_counts, progress,
                 ran):
    k = plan.k
    roots = plan.top.level(k)
    roots_seq = roots.sequences
    starts = ends = None
    if zarr:
        _zarr_levels(st, proc, plan, entropy.nodes.tolist(), zarr_chunk, roots.beliefs.dtype)
        # Row ranges of every shard at every level below k, from phase 1's exact counts.
        starts, ends = [], []
        run = np.zeros(N + 1, np.int64)
        for i in range(plan.n_shards):
            starts.append({d: int(run[d]) for d in range(k + 1, N + 1)})
            run[k:] += shard_counts[i]
            ends.append({d: int(run[d]) for d in range(k + 1, N + 1)})
    store_path = st.path if zarr else None
    items = []
    for i, (a, b) in enumerate(zip(plan.bounds[:-1], plan.bounds[1:])):
        sub = MSPLevel(k, roots.beliefs[a:b], roots.probs[a:b], roots.parent[a:b], roots.token[a:b], proc)
        items.append((i, (proc, sub, roots_seq[a:b], k, N, max_nodes, min_prob, reds, store_path,
                          starts[i] if zarr else None, ends[i] if zarr else None, a, zarr_chunk,
                          entropy.nodes.tolist())))
    pending: dict = {}
    boundary_buf: dict = {}  # level -> [(row0, cols)] of shards not yet marked done
    waiting: list = []

    def on_result(i, res):
        partials, boundary = res
        for d, pieces in boundary.items():
            boundary_buf.setdefault(d, []).extend(pieces)
        if st and reds:
            for r in reds:
                st.put(f"progress/{r.name}/{i}", partials[r.name])
        pending[i] = partials
        waiting.append(i)

    def flush():
        # The client is the only writer of chunks shared by two shards; contiguous pieces are
        # written together, and shards count as done only once their pieces are stored.
        for d, pieces in boundary_buf.items():
            lg = st.g[f"levels/{d}"]
            pieces.sort(key=lambda t: t[0])
            run = []
            for row0, cols in pieces + [(None, None)]:
                if run and (row0 is None or row0 != run[-1][0] + len(run[-1][1]["probs"])):
                    a = run[0][0]
                    for name in run[0][1]:
                        v = np.concatenate([c[name] for _, c in run])
                        lg[name][a:a + len(v)] = v
                    run = []
                if row0 is not None:
                    run.append((row0, cols))
        boundary_buf.clear()
        done = list(waiting)
        waiting.clear()
        return done

    _run_phase(cl, "chunks", st, _chunk_task, items, on_result, progress, ran, flush)
    merged = {r.name: {} for r in reds}
    for d in range(1, k + 1):  # levels above the split are in memory: reduce them here
        lvl = plan.top.level(d)
        seq = lvl.sequences if any(r.needs_sequences for r in reds) else None
        for r in reds:
            if d in r.depths(N):
                merged[r.name][d] = r.update(None, lvl.beliefs, lvl.probs, seq)
    for i in range(plan.n_shards):  # merge in shard order: deterministic for any reduction
        part = pending.pop(i) if i in pending else {r.name: st.get(f"progress/{r.name}/{i}") for r in reds}
        for r in reds:
            merged[r.name] = r.merge(merged[r.name], part[r.name]) if merged[r.name] else part[r.name]
    return {r.name: r.finalize(merged[r.name], proc, N) for r in reds}
