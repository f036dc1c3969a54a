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

import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import _exact
from .store import _LevelWriter, _family_key, _legacy_run_key, _level_chunk, _run_key, _Store, _zarr_levels
from .reductions import BeliefHistogram, DistinctBeliefs, Reduction
from ..msp_tree import MSPLevel, MSPTree, msp_tree, walk_levels
from ..process import Process, as_process
from .._arrays import check_count, check_nonneg_float


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
def _entropy_task(proc: Process, roots: np.ndarray, probs: np.ndarray, below: int, min_prob: float,
                  include_roots: bool = False):
    """Phase 1 for one shard: exact counts and sums for the levels 1..below under its roots
    (relative level 0, the roots, only with include_roots)."""
    from .. import _core

    T, w, zt = _process_arrays(proc)
    return _core.msp_entropy_sums(T, w, np.ascontiguousarray(roots, np.float64), np.ascontiguousarray(probs, np.float64),
                                  int(below), float(min_prob), zt, bool(include_roots))


def _chunk_task(proc, roots: MSPLevel, roots_seq, k: int, N: int, max_nodes: int, min_prob: float,
                reductions: list, store_path: str | None, level_starts: dict | None, level_ends: dict | None,
                root_row0: int, zarr_chunk: int, level_sizes: list | None = None, levels_kept: int = 0):
    """Phase 2 for one shard: stream its levels through the reductions and into Zarr (levels
    up to ``levels_kept`` are already in the store, from the shallower run this one extends)."""
    wanted = {r.name: set(r.depths(N)) for r in reductions}
    need_seq = any(r.needs_sequences for r in reductions)
    deepest = max([max(d) for d in wanted.values() if d] + ([N] if store_path else [k]))
    partials: dict = {r.name: {} for r in reductions}
    writers = {}
    if store_path:
        import zarr

        g = zarr.open_group(store_path, mode="r+")
        for d in range(max(k, levels_kept) + 1, N + 1):
            def open_arrays(d=d):
                return {name: g[f"levels/{d}/{name}"] for name in ("beliefs", "probs", "parent", "token")}

            chunk = _level_chunk(level_sizes[d], zarr_chunk)
            writers[d] = _LevelWriter(open_arrays, level_starts[d], level_ends[d], chunk)
    seq = roots_seq if need_seq else None
    for lvl, cseq, start, prow0 in walk_levels(proc, roots, seq, deepest, max_nodes, min_prob):
        d = lvl.depth
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


class _DropCancelledInstructions:
    """Logging filter for distributed's worker: closing an in-process worker while tasks run
    (Ctrl-C) cancels their coroutines and distributed logs one multi-line WARNING per task
    ("Async instruction for <Task cancelled ...> ended with CancelledError"). That is our own
    shutdown, not a fault: those records, and only those, are dropped while we close."""

    LOGGER = "distributed.worker.state_machine"

    def filter(self, record) -> bool:
        return not record.getMessage().endswith("ended with CancelledError")


def _close_own(cl, cluster):
    """Close the client (and the cluster) msp_reduce started, without distributed's
    cancellation warnings for tasks still running (an interrupted run)."""
    import logging

    log, drop = logging.getLogger(_DropCancelledInstructions.LOGGER), _DropCancelledInstructions()
    log.addFilter(drop)
    try:
        cl.close()
        if cluster is not None:
            cluster.close()
    finally:
        log.removeFilter(drop)


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
            interrupted call (Ctrl-C, lost cluster) rerun with the same arguments resumes. A
            store holding a finished run that differs only in a smaller ``depth`` is extended
            (its written levels are kept; ``info["extended_from"]``); any other run there is
            refused with a ``ValueError`` naming what it holds.
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
        st = _Store(store, _run_key(proc, depth, min_prob, plan, reds, initial, zarr), manifest,
                    _family_key(proc, min_prob, plan, reds, initial, zarr),
                    _legacy_run_key(proc, depth, min_prob, plan, reds, initial, zarr))
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
                "extended_from": st.extended_from if st else None, "levels_kept": st.levels_kept if st else 0,
                "seconds_entropy": t_entropy, "seconds": time.perf_counter() - t0}
        return MSPReduceResult(entropy, out, info)
    finally:
        if own:
            _close_own(cl, cl.cluster if client is None else None)


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
                          entropy.nodes.tolist(), st.levels_kept if zarr else 0)))
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
