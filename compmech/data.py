"""Training data and exact evaluation sets for next-token models of a process.

Layout. A model with context ``ctx`` is trained on sequences of ``n_tokens`` process tokens:

* no BOS: ``n_tokens = ctx + 1``; inputs ``seq[:, :ctx]``, targets ``seq[:, 1:]``. Model position
  ``t`` has seen ``seq[:, :t+1]`` and predicts ``seq[:, t+1]``.
* BOS (token id ``V``): ``n_tokens = ctx``; inputs ``[V, seq[:, :ctx-1]]``, targets ``seq``.
  Model position ``t`` has seen ``seq[:, :t]`` (position 0: nothing) and predicts ``seq[:, t]``.

Sources (deterministic in ``(seed, step)``, so a resumed run sees exactly the batches the
uninterrupted run would have seen):

* :class:`ExactSource` — every sequence of length ``n_tokens`` with its probability (from the
  MSP tree); batches drawn i.i.d. by probability.
* :class:`StreamSource` — fresh sequences from :func:`compmech.sample` each step (row offset
  ``step * batch``), produced by a background thread so the optimiser never waits.

Evaluation: :class:`PrefixSet` holds every distinct context prefix a model can see, with its
belief, probability, multiplicity and true next-token distribution (the probe's ground truth and
the exact per-position loss); :func:`optimal_loss_per_position` gives the optimal loss per position
(nats; ``compmech.measures.myopic_entropy`` is the same sequence in bits).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np

from . import _backend
from .msp_tree import msp_tree
from .beliefs import beliefs as _beliefs
from .process import as_process
from .sampling import sample

__all__ = ["ExactSource", "StreamSource", "make_source", "PrefixSet", "optimal_loss_per_position", "myopic_entropy",
           "n_tokens_for", "to_model_io"]


def _links(lvl, V: int) -> tuple:
    """``(parent, token)`` int64 of an MSP level; a full level's are computed here (``k // V``,
    ``k % V``) so the tree's level is not made to store them."""
    if lvl.is_full:
        k = np.arange(len(lvl), dtype=np.int64)
        return k // V, k % V
    return np.asarray(lvl.parent, np.int64), np.asarray(lvl.token, np.int64)


def entropy_nats(q, axis: int = -1) -> np.ndarray:
    """Entropy (nats) of the distributions ``q`` along ``axis``, with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(axis)


def n_tokens_for(ctx: int, bos: bool) -> int:
    """Process tokens per training sequence for a model of context ``ctx``."""
    return ctx if bos else ctx + 1


def to_model_io(seq, bos_id: int | None):
    """``seq (B, n_tokens)`` torch integer tensor → ``(inputs (B, ctx) long, targets (B, ctx) long)``."""
    import torch

    seq = seq.long()
    if bos_id is None:
        return seq[:, :-1], seq[:, 1:]
    bos = torch.full((seq.shape[0], 1), bos_id, dtype=torch.long, device=seq.device)
    return torch.cat([bos, seq[:, :-1]], 1), seq


def optimal_loss_per_position(process, n: int, *, tree=None) -> np.ndarray:
    """``(n,)`` float64 optimal next-token cross-entropy in nats, ``h[k] = H(X_{k+1} | X_1..X_k)``
    for ``k = 0..n-1`` (the entropy of the next token after a prefix of ``k`` tokens, averaged
    over prefixes by probability), exact from the mixed-state tree (``tree``: one to reuse).
    ``h[k]`` decreases to the entropy rate. The same sequence in bits, with error bars where
    the MSP is too large, is :func:`compmech.measures.myopic_entropy` (its ``L = k + 1``)."""
    proc = as_process(process)
    if tree is None or tree.depth < n - 1:
        tree = msp_tree(proc, max(n - 1, 0))
    h = np.empty(n)
    for k in range(n):
        lvl = tree.level(k)
        h[k] = lvl.probs @ entropy_nats(lvl.next_token_probs)
    return h


def myopic_entropy(process, n: int, *, tree=None) -> np.ndarray:
    """Deprecated name of :func:`optimal_loss_per_position` (nats). ``myopic_entropy`` means
    :func:`compmech.measures.myopic_entropy` (bits, with exactness and errors)."""
    import warnings

    warnings.warn("compmech.data.myopic_entropy is deprecated: use compmech.data.optimal_loss_per_position "
                  "(nats, the same values) or compmech.measures.myopic_entropy (bits)", DeprecationWarning,
                  stacklevel=2)
    return optimal_loss_per_position(process, n, tree=tree)


class _Prefetcher:
    """Runs ``make(chunk_index)`` for consecutive chunks in a daemon thread, ``depth`` ahead."""

    def __init__(self, make, first_chunk: int, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._make = make
        self._thread = threading.Thread(target=self._run, args=(first_chunk,), daemon=True)
        self._thread.start()

    def _run(self, c):
        while not self._stop.is_set():
            try:
                item = (c, self._make(c), None)
            except BaseException as exc:  # surfaced in the consumer
                item = (c, None, exc)
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            c += 1

    def get(self):
        c, val, exc = self._q.get()
        if exc is not None:
            raise exc
        return c, val

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)


class _Source:
    """Shared batching: chunks of ``chunk_steps`` batches, each deterministic in (seed, chunk)."""

    chunk_steps = 64

    def __init__(self, process, ctx: int, batch_size: int, *, seed: int, bos: bool = False,
                 device="cpu", background: bool = True, soft_targets: bool = False):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(ctx) < 1:
            raise ValueError(f"ctx must be >= 1, got {ctx}")
        self.process = as_process(process)
        self.ctx, self.batch_size, self.seed, self.bos = int(ctx), int(batch_size), int(seed), bool(bos)
        self.n_tokens = n_tokens_for(self.ctx, self.bos)
        self.bos_id = self.process.vocab_size if self.bos else None
        self.device = device
        self.background = background
        self.soft_targets = bool(soft_targets)

    @property
    def input_vocab_size(self) -> int:
        return self.process.vocab_size + (1 if self.bos else 0)

    def _draw(self, c: int):
        """Chunk ``c``: ``(chunk_steps * B, n_tokens)`` uint8 sequences and, with soft targets,
        their ``(chunk_steps * B, ctx, V)`` next-token distributions (else None)."""
        raise NotImplementedError

    def _make(self, c: int):
        """Numpy-only batch preparation (runs in the prefetch thread: no torch kernels there, so
        no second OpenMP team competes with the training step's threads)."""
        seq, q = self._draw(c)
        C, B = self.chunk_steps, self.batch_size
        if self.bos:
            x = np.empty((len(seq), self.ctx), np.int64)
            x[:, 0] = self.bos_id
            x[:, 1:] = seq[:, :-1]
            y = seq
        else:
            x, y = seq[:, :-1].astype(np.int64), seq[:, 1:]
        x = np.ascontiguousarray(x).reshape(C, B, self.ctx)
        if q is not None:
            y = np.ascontiguousarray(q, dtype=np.float32).reshape(C, B, self.ctx, -1)
        else:
            y = np.ascontiguousarray(y, dtype=np.int64).reshape(C, B, self.ctx)
        return x, y

    def _torch(self, a: np.ndarray):
        import torch

        t = torch.from_numpy(a)  # zero-copy on CPU
        dev = torch.device(self.device)
        return t if dev.type == "cpu" else t.to(dev, non_blocking=True)

    def _next_token_probs(self, seq: np.ndarray, rows_per_chunk: int = 1 << 13) -> np.ndarray:
        """``(B, ctx, V)`` float32 true next-token distribution at every model position.

        Computed in chunks of rows into the float32 output, so the float64 temporaries (beliefs
        and unnormalised distributions, ~6x the output) never exist for all rows at once; each
        row's arithmetic is the same whatever the chunking."""
        p = self.process
        out = np.empty((len(seq), self.ctx, p.vocab_size), np.float32)
        for i in range(0, len(seq), rows_per_chunk):
            out[i:i + rows_per_chunk] = self._next_token_probs_rows(seq[i:i + rows_per_chunk])
        return out

    def _next_token_probs_rows(self, seq: np.ndarray) -> np.ndarray:
        p = self.process
        Tw = p.token_weights.T  # (S, V)
        n_in = self.ctx - 1 if self.bos else self.ctx
        b = _beliefs(p, seq[:, :n_in], dtype=np.float64) if n_in > 0 else np.zeros((len(seq), 0, p.num_states))
        if self.bos:
            b = np.concatenate([np.broadcast_to(p.stationary, (len(seq), 1, p.num_states)), b], 1)
        q = np.clip(np.einsum("bls,sv->blv", b, Tw), 0.0, None)  # einsum: no BLAS thread pool
        return (q / q.sum(-1, keepdims=True)).astype(np.float32)

    def batches(self, start_step: int = 0):
        """Yield ``(inputs (B, ctx) long, targets)`` for steps ``start_step, ...`` (forever); targets
        are the next tokens ``(B, ctx)`` long, or with ``soft_targets`` their true conditional
        distributions ``(B, ctx, V)`` float32 (the expectation of the one-hot target given the
        input: same expected gradient, less noise). Batch ``s`` depends only on ``(seed, s)``."""
        C = self.chunk_steps
        c0, off = divmod(int(start_step), C)
        pre = _Prefetcher(self._make, c0) if self.background else None
        try:
            c = c0
            while True:
                if pre is not None:
                    got, (xs, ys) = pre.get()
                    assert got == c
                else:
                    xs, ys = self._make(c)
                for i in range(off, C):
                    yield self._torch(xs[i]), self._torch(ys[i])
                off = 0
                c += 1
        finally:
            if pre is not None:
                pre.close()

    def batch(self, step: int):
        """The batch of one step (same as the ``step``-th item of :meth:`batches`)."""
        c, i = divmod(int(step), self.chunk_steps)
        xs, ys = self._make(c)
        return self._torch(xs[i]), self._torch(ys[i])


class ExactSource(_Source):
    """Batches drawn by probability from all ``V**n_tokens`` sequences (impossible ones
    excluded); sequences and probabilities come from :func:`compmech.msp_tree`.

    Attributes: ``sequences (M, n_tokens)`` uint8, ``probs (M,)`` float64 summing to 1.
    """

    def __init__(self, process, ctx, batch_size, *, seed, bos=False, device="cpu", background=True,
                 soft_targets=False, max_sequences: int = 20_000_000, max_bytes: int = 4 << 30):
        super().__init__(process, ctx, batch_size, seed=seed, bos=bos, device=device, background=background,
                         soft_targets=soft_targets)
        V = self.process.vocab_size
        M = V ** self.n_tokens  # an upper bound: impossible sequences are dropped
        need = self.bytes_needed(V, self.ctx, self.bos, self.soft_targets)
        if M > max_sequences or need > max_bytes:
            raise ValueError(f"exact mode would enumerate up to {V}**{self.n_tokens} = {M:,} sequences and keep "
                             f"{need / 2**30:.2f} GiB (limits: max_sequences={max_sequences:,}, max_bytes="
                             f"{max_bytes / 2**30:.2f} GiB); use streaming data (data='stream') instead")
        lvl = msp_tree(self.process, self.n_tokens).level(self.n_tokens)
        self.sequences = np.ascontiguousarray(lvl.sequences)
        self.probs = lvl.probs / lvl.probs.sum()
        del lvl  # drops the tree (every shorter level) before the soft targets are computed
        self._cdf = np.cumsum(self.probs)
        self._cdf[-1] = 1.0
        self._q = self._next_token_probs(self.sequences) if self.soft_targets else None

    @staticmethod
    def bytes_needed(vocab_size: int, ctx: int, bos: bool = False, soft_targets: bool = False) -> int:
        """Upper bound of the bytes an exact source keeps: sequences, probabilities and CDF, and
        with soft targets the ``(M, ctx, V)`` float32 distributions (the peak stays close to it)."""
        n_tokens = n_tokens_for(ctx, bos)
        M = vocab_size ** n_tokens
        return M * (n_tokens + 16 + (ctx * vocab_size * 4 if soft_targets else 0))

    def _draw(self, c):
        rng = np.random.Generator(np.random.Philox(key=[self.seed & (2**64 - 1), c]))
        u = rng.random(self.chunk_steps * self.batch_size)
        idx = np.minimum(np.searchsorted(self._cdf, u, side="right"), len(self._cdf) - 1)
        return self.sequences[idx], (self._q[idx] if self._q is not None else None)


class StreamSource(_Source):
    """Fresh sampled sequences every step: batch ``s`` is rows ``[s*B, (s+1)*B)`` of the
    counter-based sample stream keyed by ``seed`` (so it never repeats and resumes exactly).

    On a CUDA device (with compmech's CUDA kernels built) each batch is sampled, and its soft
    targets computed, directly on the GPU: the same tokens as on the CPU, no host round trip."""

    def _draw(self, c):
        B, C = self.batch_size, self.chunk_steps
        tok = sample(self.process, C * B, self.n_tokens, seed=self.seed, row_offset=c * C * B)
        return tok, (self._next_token_probs(tok) if self.soft_targets else None)

    def on_gpu(self) -> bool:
        """True when batches are generated on the GPU (else on the CPU and copied there)."""
        import torch

        from ._threads import build_info

        if torch.device(self.device).type != "cuda" or not build_info()["cuda"]:
            return False
        needs_beliefs = self.soft_targets or self.process.is_generalized
        return not needs_beliefs or self.process.num_states <= _backend.cuda_state_limit()

    def _gpu_batch(self, step: int):
        import torch

        B, dev = self.batch_size, torch.device(self.device)
        seq = sample(self.process, B, self.n_tokens, seed=self.seed, row_offset=int(step) * B, device=dev)
        if self.bos:
            x = torch.empty((B, self.ctx), dtype=torch.long, device=seq.device)
            x[:, 0] = self.bos_id
            x[:, 1:] = seq[:, :-1]
            y = seq
        else:
            x, y = seq[:, :-1].long(), seq[:, 1:]
        y = self._next_token_probs_gpu(seq) if self.soft_targets else y.long()
        return x.contiguous(), y.contiguous()

    def _next_token_probs_gpu(self, seq):
        """As :meth:`_next_token_probs`, for CUDA sequences, on their device. Nothing here waits
        for the GPU: constants are uploaded once, and sampled tokens need no error check."""
        import torch

        p = self.process
        if getattr(self, "_gpu_consts", None) is None:
            self._gpu_consts = (torch.as_tensor(p.token_weights.T.copy(), device=seq.device),  # (S, V)
                                torch.tensor(np.array(p.stationary), device=seq.device))
        Tw, stationary = self._gpu_consts
        n_in = self.ctx - 1 if self.bos else self.ctx
        B, S = seq.shape[0], p.num_states
        b = (_backend.trusted_beliefs(p, seq[:, :n_in], "float64") if n_in > 0
             else torch.zeros((B, 0, S), dtype=torch.float64, device=seq.device))
        if self.bos:
            b = torch.cat([stationary.expand(B, 1, S), b], 1)
        q = (b @ Tw).clamp_(min=0.0)
        return (q / q.sum(-1, keepdim=True)).float()

    def batches(self, start_step: int = 0):
        if not self.on_gpu():
            yield from super().batches(start_step)
            return
        step = int(start_step)
        while True:
            yield self._gpu_batch(step)
            step += 1

    def batch(self, step: int):
        return self._gpu_batch(step) if self.on_gpu() else super().batch(step)


def make_source(mode: str, process, ctx, batch_size, *, seed, bos=False, device="cpu", background=True,
                soft_targets=False):
    """``mode`` ``"exact"`` → :class:`ExactSource`, ``"stream"`` → :class:`StreamSource`."""
    kw = dict(seed=seed, bos=bos, device=device, background=background, soft_targets=soft_targets)
    if mode == "exact":
        return ExactSource(process, ctx, batch_size, **kw)
    if mode == "stream":
        return StreamSource(process, ctx, batch_size, **kw)
    raise ValueError(f"data mode must be 'exact' or 'stream', got {mode!r}")


def subtree_groups(seqs: np.ndarray, V: int, group_depth: int | None = None):
    """``(group_depth, codes)``: the subtree of each input sequence ``seqs (N, n)`` for CV split
    by input — the code of its first ``group_depth`` tokens (default: the fewest giving >= 24
    subtrees, at most ``n``)."""
    n_in = seqs.shape[1]
    if group_depth is None:
        group_depth = 1
        while V ** group_depth < 24 and group_depth < n_in:
            group_depth += 1
    group_depth = max(0, min(group_depth, n_in))
    codes = np.zeros(seqs.shape[0], np.int64)
    for d in range(group_depth):
        codes = codes * V + seqs[:, d]
    return group_depth, codes


@dataclass
class PrefixSet:
    """Every distinct prefix a model of context ``ctx`` conditions on, deduplicated.

    The model is run once on ``inputs (N, ctx)`` (all possible sequences of ``n_in`` process
    tokens, BOS-prefixed if ``bos``); row ``r`` of the set is read from model position
    ``position[r]`` of input ``seq_index[r]``. Rows are ordered by prefix length, then
    lexicographically.

    Attributes (``R`` rows):
        inputs: ``(N, ctx)`` int64 model inputs.
        seq_index, position: ``(R,)`` where to read each prefix's activation.
        length: ``(R,)`` number of process tokens in the prefix (0 = BOS only).
        beliefs: ``(R, S)`` float64 belief *after* the prefix (ground truth for the probe).
        probs: ``(R,)`` probability of the prefix; sums to 1 over each length.
        multiplicity: ``(R,)`` how many of the ``N`` inputs contain the prefix at that position
            (weights that reproduce an unweighted fit over all ``N x ctx`` input positions).
        next_probs: ``(R, V)`` true next-token distribution after the prefix.
        group: ``(R,)`` subtree id (first ``group_depth`` tokens of the input it is read from)
            for cross-validation split by input sequence (see :meth:`fold_membership`).
        group_depth: number of leading tokens that define a subtree.
        parent: ``(R,)`` row of the prefix one token shorter (-1 for the shortest rows).
        token: ``(R,)`` last input id at the row's position (the BOS id for the BOS row).
    """

    process: object
    ctx: int
    bos: bool
    inputs: np.ndarray
    seq_index: np.ndarray
    position: np.ndarray
    length: np.ndarray
    beliefs: np.ndarray
    probs: np.ndarray
    multiplicity: np.ndarray
    next_probs: np.ndarray
    group: np.ndarray
    group_depth: int = 1
    parent: np.ndarray | None = None
    token: np.ndarray | None = None

    @classmethod
    def build(cls, process, ctx: int, *, bos: bool = False, group_depth: int | None = None) -> "PrefixSet":
        proc = as_process(process)
        V = proc.vocab_size
        n_in = ctx - 1 if bos else ctx  # process tokens in a model input
        tree = msp_tree(proc, n_in)
        top = tree.level(n_in)
        seqs = top.sequences.astype(np.int64)
        N = seqs.shape[0]
        if bos:
            inputs = np.concatenate([np.full((N, 1), V, np.int64), seqs], 1)
        else:
            inputs = seqs
        group_depth, top_group = subtree_groups(seqs, V, group_depth)
        # Ancestor of every top-level row at each depth, via parent links.
        anc = np.arange(N)
        ancestors = {n_in: anc}
        for d in range(n_in, 1, -1):
            lvl = tree.level(d)
            anc = anc // V if lvl.is_full else np.asarray(lvl.parent, np.int64)[anc]
            ancestors[d - 1] = anc
        cols = {k: [] for k in ("seq_index", "position", "length", "beliefs", "probs", "multiplicity",
                                "next_probs", "group", "parent", "token")}
        offset, prev_offset = 0, -1
        depths = range(0 if bos else 1, n_in + 1)
        for d in depths:
            lvl = tree.level(d)
            if d == 0:
                first, counts = np.array([0]), np.array([N])
            else:
                _, first, counts = np.unique(ancestors[d], return_index=True, return_counts=True)
            if len(first) != len(lvl):
                raise RuntimeError(f"prefix bookkeeping failed at depth {d}")
            cols["seq_index"].append(first)
            cols["position"].append(np.full(len(lvl), d if bos else d - 1))
            cols["length"].append(np.full(len(lvl), d))
            cols["beliefs"].append(np.asarray(lvl.beliefs, np.float64))
            cols["probs"].append(np.asarray(lvl.probs, np.float64))
            cols["multiplicity"].append(counts.astype(np.float64))
            cols["next_probs"].append(lvl.next_token_probs)
            cols["group"].append(top_group[first])
            if d == 0:
                cols["parent"].append(np.full(1, -1))
                cols["token"].append(np.full(1, V))
            else:
                parent, token = _links(lvl, V)
                cols["parent"].append(parent + prev_offset if prev_offset >= 0 else np.full(len(lvl), -1))
                cols["token"].append(token)
            prev_offset, offset = offset, offset + len(lvl)
        out = {k: np.concatenate(v) for k, v in cols.items()}
        return cls(proc, ctx, bos, inputs, **out, group_depth=group_depth)

    def __len__(self) -> int:
        return int(self.seq_index.shape[0])

    def gather(self, acts):
        """``acts (N, ctx, ...)`` (numpy or torch) → ``(R, ...)`` rows of this set."""
        return acts[self.seq_index, self.position]

    def weights(self, kind: str) -> np.ndarray:
        """Row weights: ``"prob"`` (prefix probability / number of lengths, sums to 1),
        ``"uniform"`` (every input x position counts once, as in an unweighted fit over all
        ``N x ctx`` activations; normalised) or ``"prefix"`` (every distinct prefix once)."""
        if kind == "prob":
            w = self.probs
        elif kind == "uniform":
            w = self.multiplicity
        elif kind == "prefix":
            w = np.ones(len(self))
        else:
            raise ValueError(f"weights kind must be 'prob', 'uniform' or 'prefix', got {kind!r}")
        return w / w.sum()

    @property
    def n_subtrees(self) -> int:
        """How many subtrees (distinct first ``group_depth`` tokens) the inputs fall into: the
        most folds :meth:`fold_membership` can deal them into."""
        return int(np.count_nonzero(self.length == self.group_depth))

    def fold_membership(self, k: int, seed: int = 0, kind: str = "uniform") -> np.ndarray:
        """``(R, k)`` fraction of each row in each cross-validation fold, for k-fold CV split by
        input sequence: the inputs are dealt into ``k`` folds by subtree (their first
        ``group_depth`` tokens, subtrees assigned at random), so every input lies in one fold.
        A prefix of at least ``group_depth`` tokens then belongs to exactly one fold; a shorter
        prefix is shared by inputs of several folds and is split between them in proportion to
        the weight (``kind``: ``"uniform"`` input counts or ``"prob"`` probability) of its
        extensions in each — exactly as in a CV over all ``N x ctx`` (input, position) rows."""
        g = self.group_depth
        V = self.process.vocab_size
        is_group = self.length == g
        gcode = self.group[is_group]
        n_groups = len(gcode)
        k = max(2, min(int(k), n_groups))
        gfold = np.random.default_rng(seed).permutation(n_groups) % k
        fold_of_code = dict(zip(gcode.tolist(), gfold.tolist()))
        M = np.zeros((len(self), k))
        long_rows = self.length >= g
        M[np.flatnonzero(long_rows), [fold_of_code[c] for c in self.group[long_rows].tolist()]] = 1.0
        gw = (self.multiplicity if kind == "uniform" else self.probs)[is_group]
        offset = 1 if self.bos else 0
        for r in np.flatnonzero(~long_rows):
            d = int(self.length[r])
            code = 0
            for t in range(d):
                code = code * V + int(self.inputs[self.seq_index[r], offset + t])
            ext = (gcode // V ** (g - d)) == code
            tot = np.bincount(gfold[ext], weights=gw[ext], minlength=k)
            M[r] = tot / tot.sum()
        return M

    def optimal_loss(self) -> np.ndarray:
        """``(ctx,)`` optimal cross-entropy (nats) at each model position."""
        return self._per_position(self._entropy_rows())

    def _entropy_rows(self):
        return entropy_nats(self.next_probs)

    def _per_position(self, row_values):
        out = np.zeros(self.ctx)
        np.add.at(out, self.position, self.probs * row_values)
        return out

    def expected_loss(self, logits, *, per_row: bool = False) -> np.ndarray:
        """Exact expected cross-entropy (nats) per model position, ``(ctx,)``: ``sum_prefix
        P(prefix) * sum_x P(x | prefix) * -log p_model(x | prefix)``. ``logits`` are the model's
        on :attr:`inputs`, ``(N, ctx, V)``, or (``per_row=True``) already one per row ``(R, V)``."""
        import torch

        lg = logits if isinstance(logits, torch.Tensor) else torch.from_numpy(np.asarray(logits))
        lg = lg.detach().to("cpu", torch.float64)
        lp = torch.log_softmax(lg if per_row else self.gather(lg), -1).numpy()
        V = self.next_probs.shape[1]
        q = self.next_probs
        ce = -(np.where(q > 0, q * lp[:, :V], 0.0)).sum(1)
        return self._per_position(ce)
