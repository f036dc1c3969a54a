"""Mixed-state presentation (MSP) tree: every sequence of length 1..depth with positive
probability, level by level, in lexicographic order, with its belief and probability.

Storage is array-only: each level keeps ``beliefs (M, S)``, ``probs (M,)``, ``parent (M,)``
(index into the previous level) and ``token (M,)``; ``sequences (M, d)`` is rebuilt from the
parent links on request. A *full* level (every node of the level above kept all V children,
the common case) stores no links: its parent and token are implicit (``k // V``, ``k % V``)
and are computed on first access, so a full level costs beliefs + probs only.

No returned object sits in a reference cycle (a level keeps the parent/token arrays of the
levels above it, not the tree), so a tree's memory is returned as soon as it is dropped,
without waiting for the garbage collector."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from . import _backend, _errors, _interop
from ._arrays import check_count, check_nonneg_float, float_dtype_name, is_torch, smallest_uint
from ._sizes import check_fits, msp_level_bounds
from .process import GHMM, Process, as_process


def _token_dtype(V: int, like):
    """The dtype of a level's tokens: ``smallest_uint(V)`` as ``like``'s kind (numpy or torch)."""
    dt = smallest_uint(V)
    if is_torch(like):
        import torch

        return torch.from_numpy(np.zeros(0, dt)).dtype
    return dt


class MSPLevel:
    """All retained sequences of one length ``depth``.

    Attributes (numpy arrays, or torch CUDA tensors for a tree built with ``device="cuda"``):
        beliefs: ``(M, S)`` belief after each sequence.
        probs: ``(M,)`` float64 probability of each sequence (from the initial belief).
        parent: ``(M,)`` int32 index of the sequence's prefix in the previous level.
        token: ``(M,)`` last token of each sequence.

    ``parent`` and ``token`` of a full level (``is_full``: M = V x the previous level's size)
    are not stored; they are computed (``k // V``, ``k % V``) on first access and then kept.
    """

    def __init__(self, depth: int, beliefs, probs, parent, token, _process: Process, _lineage: tuple = (),
                 _sequences=None):
        self.depth = depth
        self.beliefs = beliefs
        self.probs = probs
        self._parent = parent  # None: a full level (implicit lineage)
        self._token = token
        self._process = _process
        # (parent, token) of levels 1..depth-1 ((None, None) for a full one), to rebuild
        # sequences without a link to the tree
        self._lineage = _lineage
        self._sequences = _sequences
        self._implicit: tuple | None = None  # (parent, token) of a full level, once asked for

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    def __repr__(self) -> str:
        return f"MSPLevel(depth={self.depth}, nodes={len(self)}, full={self.is_full})"

    @property
    def is_full(self) -> bool:
        """Every node of the previous level kept all its children: parent and token are implicit."""
        return self._parent is None

    def _links(self) -> tuple:
        if self._parent is not None:
            return self._parent, self._token
        if self._implicit is None:
            V = self._process.vocab_size
            if is_torch(self.probs):
                import torch

                k = torch.arange(len(self), dtype=torch.int32, device=self.probs.device)
                self._implicit = (k // V, (k % V).to(_token_dtype(V, k)))
            else:
                k = np.arange(len(self), dtype=np.int32)
                self._implicit = (k // V, (k % V).astype(smallest_uint(V)))
        return self._implicit

    @property
    def parent(self):
        """``(M,)`` int32 index of each sequence's prefix in the previous level."""
        return self._links()[0]

    @property
    def token(self):
        """``(M,)`` last token of each sequence (``smallest_uint(V)``)."""
        return self._links()[1]

    @property
    def nbytes(self) -> int:
        """Bytes the level holds (beliefs, probs and any stored or computed parent/token)."""
        arrays = [self.beliefs, self.probs, self._parent, self._token] + list(self._implicit or ())
        return sum(_nbytes(a) for a in arrays if a is not None)

    @property
    def sequences(self) -> np.ndarray:
        """``(M, depth)`` token sequences, lexicographically ordered."""
        if self._sequences is not None:  # a chunk from msp_level_chunks carries its own
            return self._sequences
        links = self._lineage + ((self._parent, self._token),)
        return _sequences(links, len(self), self.depth, self._process.vocab_size, self.probs)

    @property
    def next_token_probs(self) -> np.ndarray:
        """``(M, V)`` float64: P(next token = x | sequence), i.e. ``belief @ T[x] @ w``."""
        Tw = self._process.token_weights  # (V, S)
        beliefs, back = _interop.incoming(self.beliefs)
        if is_torch(beliefs):
            import torch

            return back(beliefs.double() @ torch.from_numpy(Tw.T.copy()).to(beliefs.device))
        return back(np.asarray(beliefs, dtype=np.float64) @ Tw.T)


def _nbytes(a) -> int:
    return int(a.numel() * a.element_size()) if is_torch(a) else int(np.asarray(a).nbytes)


def _sequences(links: tuple, M: int, depth: int, V: int, like):
    """``(M, depth)`` sequences of a level from the (parent, token) links of levels 1..depth
    (``(None, None)`` for a full level). The trailing full levels are base-V digits of the row
    index, written by strided assignment; the levels above are walked through the links."""
    probe, back = _interop.incoming(like)
    explicit = [tok for _, tok in links if tok is not None]
    tok_like = _interop.incoming(explicit[-1])[0] if explicit else None
    if is_torch(probe) or is_torch(tok_like):
        import torch

        dev = (tok_like if tok_like is not None else probe).device
        dt = tok_like.dtype if tok_like is not None else _token_dtype(V, probe)
        seq = torch.empty((M, depth), dtype=dt, device=dev)
        digits = torch.arange(V, device=dev).to(dt)
    else:
        seq = np.empty((M, depth), dtype=smallest_uint(V))
        digits = np.arange(V).astype(seq.dtype)
    full = 0
    while full < depth and links[depth - 1 - full][0] is None:
        full += 1
    block = 1  # rows that share the columns above the current one
    for col in range(depth - 1, depth - 1 - full, -1):
        seq.reshape(M // (V * block) if M else 0, V, block, depth)[:, :, :, col] = digits[None, :, None]
        block *= V
    top = depth - full
    if top:
        n = M // block
        idx = torch.arange(n, device=seq.device) if is_torch(seq) else np.arange(n)
        upper = seq.reshape(n, block, depth)
        for d in range(top, 0, -1):
            parent, tok = links[d - 1]
            if parent is None:
                upper[:, :, d - 1] = (idx % V).to(seq.dtype)[:, None] if is_torch(seq) else (idx % V)[:, None]
                idx = idx // V
            else:
                upper[:, :, d - 1] = _interop.incoming(tok)[0][idx][:, None]
                p = _interop.incoming(parent)[0][idx]
                idx = p.long() if is_torch(p) else p
    return back(seq)


class MSPTree:
    """Levels 0..depth of the mixed-state tree; level 0 is the initial belief (empty sequence)."""

    def __init__(self, process: Process, levels: list[MSPLevel], min_prob: float):
        self.process = process
        self.levels = levels
        self.min_prob = min_prob

    @property
    def depth(self) -> int:
        return len(self.levels) - 1

    def level(self, d: int) -> MSPLevel:
        if not 0 <= d <= self.depth:
            raise IndexError(f"level {d} out of range [0, {self.depth}]")
        return self.levels[d]

    @property
    def num_nodes(self) -> int:
        """Number of nodes at depths 1..depth (the root excluded)."""
        return sum(len(lvl) for lvl in self.levels[1:])

    def __iter__(self) -> Iterator[MSPLevel]:
        return iter(self.levels)

    def __repr__(self) -> str:
        return (f"MSPTree(process={self.process!r}, depth={self.depth}, "
                f"nodes per level={[len(l) for l in self.levels]})")


def chain_levels(proc: Process, arrays: list, first: int = 0, lineage: tuple = (), implicit: bool = True) -> list:
    """MSPLevels of depths ``first, first + 1, ...`` from ``(beliefs, probs, parent, token)``
    tuples, each level holding the links of the levels above it (``lineage``: those above
    ``first``). ``parent``/``token`` may be None for a full level; with ``implicit`` any level
    that kept every child of the one before it in ``arrays`` drops its stored links too (they
    equal the implicit ``k // V``, ``k % V`` in a lexicographic tree)."""
    V = proc.vocab_size
    levels = []
    for k, (beliefs, probs, parent, token) in enumerate(arrays):
        if implicit and k > 0 and parent is not None and int(probs.shape[0]) == V * int(arrays[k - 1][1].shape[0]):
            parent = token = None
        levels.append(MSPLevel(first + k, beliefs, probs, parent, token, proc, lineage))
        if first + k > 0:
            lineage = lineage + ((parent, token),)
    return levels


def _levels(proc: Process, levels: list, depth: int, min_prob: float, full: bool = False) -> list:
    """``levels`` (MSPLevels, the last ``lvl.depth``) extended to ``depth`` on their arrays' backend."""
    first = levels[0].depth
    arrays = [(lv.beliefs, lv.probs, lv._parent, lv._token) for lv in levels]
    be = _backend.for_array(arrays[-1][0])
    arrays = _backend.grow(be, proc, arrays, depth - first, min_prob, full)
    return levels + chain_levels(proc, arrays, first, levels[0]._lineage)[len(levels):]


def _expand(proc: Process, lvl: MSPLevel, min_prob: float, expect_full: bool = False) -> MSPLevel:
    """The level below ``lvl``. ``expect_full``: the expansion that made ``lvl`` kept every child,
    so the kernel may first try a single pass at fixed offsets (it falls back to counting)."""
    return _levels(proc, [lvl], lvl.depth + 1, min_prob, expect_full)[-1]


def _full_levels(proc: Process, depth: int, min_prob: float) -> int:
    """How many of levels 1..depth are sure to keep every sequence (so they are stored full,
    without links): every state emits every token with probability >= e, so a length-d sequence
    has probability >= e**d, kept while that clears ``min_prob`` and float64 underflow (e is
    shaved for the rounding of float32 beliefs)."""
    e = float(np.asarray(proc.T, dtype=np.float64).sum(axis=2).min()) * (1 - 1e-5)
    if e <= 0:
        return 0
    if e >= 1:  # a single token: every level is full
        return depth
    return max(0, min(depth, int(np.log(max(min_prob, 1e-290)) / np.log(e))))


def _check_tree_size(proc: Process, init: np.ndarray, depth: int, min_prob: float, dtype: str,
                     implicit: bool = True) -> None:
    """Refuse up front a tree that cannot fit in memory (bound: :func:`msp_level_bounds`). A
    level sure to be full stores beliefs and probs; any other level also a parent and token per
    node (``implicit=False``: the levels are returned with links throughout)."""
    if depth == 0:
        return
    bounds = msp_level_bounds(proc.T, np.asarray(init, dtype=np.float64), depth, min_prob)
    full = proc.num_states * np.dtype(dtype).itemsize + 8
    linked = full + 4 + np.dtype(smallest_uint(proc.vocab_size)).itemsize
    k = _full_levels(proc, depth, min_prob) if implicit else 0
    nodes, nbytes = sum(bounds), sum(bounds[:k]) * full + sum(bounds[k:]) * linked
    sizes = f"{full} bytes each" if k == depth else (f"{linked} bytes each" if k == 0 else
                                                      f"{full} bytes each in levels 1-{k}, {linked} below")
    check_fits(f"cm.msp_tree(depth={depth})", nbytes, f"{nodes:.3g} sequences ({sizes})")


def _check_args(depth, min_prob):
    return check_count(depth, "depth"), check_nonneg_float(min_prob, "min_prob")


def msp_tree(process, depth, *, dtype=np.float64, min_prob=0.0, initial=None, device=None) -> MSPTree:
    """Enumerate the mixed-state tree to ``depth``.

    Every sequence of length 1..depth with positive probability (and probability >=
    ``min_prob``) is kept; impossible ones are dropped, never returned as NaN, and so are the
    descendants of dropped ones. With ``min_prob=0`` each level's probabilities sum to 1.
    Within a level, sequences are in lexicographic order. ``tree.level(d).beliefs[k]`` is the
    belief *after* ``tree.level(d).sequences[k]``; level 0 holds ``initial`` (default
    ``process.stationary``). Beliefs are stored in ``dtype``; probabilities in float64. With
    ``dtype=float32`` each level is computed from the float32-rounded beliefs of the previous
    one, so probabilities then carry float32 relative error (~1e-7 per level).

    ``device="cuda"`` (or ``"cuda:k"``) enumerates on that GPU (S <= 64) and the levels hold
    torch CUDA tensors, equal to the CPU's arrays; ``None`` (default) or ``"cpu"`` gives numpy
    arrays on the CPU; a JAX or CuPy device gives that library's arrays on it.

    A tree whose size bound (see :func:`compmech._sizes.msp_level_bounds`) exceeds the memory
    available is refused up front with a ``MemoryError`` (also a ``ValueError``) that names the
    size; stream such trees with ``cm.scale.msp_reduce`` or :func:`msp_level_chunks`.
    """
    proc = as_process(process)
    depth, min_prob = _check_args(depth, min_prob)
    if device is None or str(device) == "cpu":  # a product runs on its factors (compmech._product)
        from . import _product

        if _product.factors_of(proc) is not None:
            tree = _product.msp_tree(proc, depth, dtype=float_dtype_name(dtype), min_prob=min_prob, initial=initial)
            if tree is not None:
                return tree
    dt = float_dtype_name(dtype)
    device, back = _interop.for_device(device)
    if device is not None:
        import torch

        if torch.device(device).type not in ("cpu", "cuda"):
            raise _errors.not_a_cuda_device(torch.device(device))
    be = _backend.for_device(device)
    init = proc.check_initial(initial)
    _check_tree_size(proc, init, depth, min_prob, dt, implicit=back is _interop.identity)
    root = MSPLevel(0, *_backend.root_level(be, proc, init, dt), proc)
    levels = _levels(proc, [root], depth, min_prob)
    _check_ghmm_level_sums(proc, levels, dt)
    if back is not _interop.identity:
        levels = chain_levels(proc, [tuple(back(a) for a in (lv.beliefs, lv.probs, lv.parent, lv.token))
                                     for lv in levels], implicit=False)
    return MSPTree(proc, levels, min_prob)


def _check_ghmm_level_sums(proc: Process, levels: list, dtype: str) -> None:
    """From a belief that is not a state of the GHMM (an ``initial`` that passes the one-token
    check, or a ``T`` that is not a process) some sequences have negative probability; the
    kernels drop them as impossible, so the rest of their level sums above 1. Refuse that tree
    instead of returning it (float32 beliefs carry ~1e-7 relative error per level)."""
    if not isinstance(proc, GHMM):
        return
    tol = 1e-9 if dtype == "float64" else 1e-5
    for lv in levels[1:]:
        total = float(lv.probs.sum())
        if total > 1 + tol:
            raise ValueError(f"{proc!r}: some sequences of length {lv.depth} have negative probability (the "
                             f"others sum to {total:.10g} > 1): the initial belief is not a state of this GHMM, "
                             f"or T is not a process")


def msp_level_chunks(process, depth, *, max_nodes=1 << 22, dtype=np.float64, min_prob=0.0,
                     initial=None) -> Iterator[MSPLevel]:
    """Yield level ``depth`` of the MSP tree in lexicographic chunks of at most ``max_nodes``
    sequences each (at least one), holding only about ``max_nodes`` nodes in all at a time.
    Each chunk's ``sequences``, ``beliefs`` and ``probs`` are as in :func:`msp_tree` (its
    ``parent`` indexes a chunk-local previous level).

    The tree is walked depth-first in batches: at depth d, parents are expanded ``max_nodes //
    V**(depth - d)`` at a time (at least one), so no batch's subtree exceeds ``max_nodes``
    leaves and the batches on the walk's stack add up to about ``max_nodes`` nodes."""
    proc = as_process(process)
    depth, min_prob = _check_args(depth, min_prob)
    max_nodes = max(1, check_count(max_nodes, "max_nodes"))
    root = MSPLevel(0, *_backend.root_level(_backend.CPU, proc, proc.check_initial(initial), float_dtype_name(dtype)),
                    proc)
    seq = np.empty((1, 0), dtype=smallest_uint(proc.vocab_size))
    if depth == 0:
        below = [(root, seq)]
    else:
        below = ((c, s) for c, s, _, _ in walk_levels(proc, root, seq, depth, max_nodes, min_prob) if c.depth == depth)
    for lvl, lseq in below:  # a batch holds at most V * max(1, max_nodes // V) nodes: cut to max_nodes
        for start in range(0, len(lvl), max_nodes):
            sl = slice(start, start + max_nodes)
            yield MSPLevel(depth, lvl.beliefs[sl], lvl.probs[sl], lvl.parent[sl], lvl.token[sl], proc,
                           _sequences=lseq[sl])


def child_sequences(seq, child: MSPLevel, V: int):
    """Sequences of ``child`` (the level below nodes whose sequences are ``seq``, numpy)."""
    if child.is_full:
        out = np.empty((len(child), seq.shape[1] + 1), dtype=seq.dtype)
        out.reshape(len(seq), V, -1)[:, :, :-1] = seq[:, None, :]
        out.reshape(len(seq), V, -1)[:, :, -1] = np.arange(V, dtype=seq.dtype)
        return out
    return np.concatenate([seq[child.parent], child.token[:, None].astype(seq.dtype)], axis=1)


def walk_levels(proc: Process, lvl: MSPLevel, seq, depth: int, max_nodes: int, min_prob: float,
                full: bool = False, row0: int = 0, rows: dict | None = None) -> Iterator[tuple]:
    """Depth-first walk of the levels below ``lvl`` (numpy; its sequences ``seq``, or None) down
    to ``depth``, in batches: at depth d, ``max_nodes // V**(depth - d)`` nodes (at least one)
    are expanded at a time, so no batch's subtree exceeds ``max_nodes`` leaves and the batches
    on the walk's stack add up to about ``max_nodes`` nodes per level.

    Yields ``(child, child sequences or None, first row, first parent row)`` for every batch,
    each followed by the walk below it; rows count from ``row0`` (``lvl``'s first row) and per
    level in ``rows``. A batch's ``parent`` indexes its own parent batch. ``full``: ``lvl`` kept
    every child of its parents (the first expansion may then take the single-pass kernel)."""
    if lvl.depth >= depth:
        return
    rows = {} if rows is None else rows
    V = proc.vocab_size
    step = max(1, max_nodes // V ** (depth - lvl.depth))
    for g in range(0, len(lvl), step):
        sl = slice(g, g + step)
        links = (None, None) if lvl.is_full else (lvl._parent[sl], lvl._token[sl])
        part = MSPLevel(lvl.depth, np.ascontiguousarray(lvl.beliefs[sl]), np.ascontiguousarray(lvl.probs[sl]),
                        *links, proc)
        child = _expand(proc, part, min_prob, full)
        if not len(child):
            continue
        cseq = None if seq is None else child_sequences(seq[sl], child, V)
        first = rows.get(child.depth, 0)
        rows[child.depth] = first + len(child)
        yield child, cseq, first, row0 + g
        yield from walk_levels(proc, child, cseq, depth, max_nodes, min_prob, len(child) == V * len(part), first,
                               rows)
