"""compmech data for other training loops: a torch ``IterableDataset`` and Hugging Face
``datasets`` objects, deterministic in the seed whatever the number of workers.

    from torch.utils.data import DataLoader
    from compmech.loaders import StreamDataset, SourceDataset, hf_dataset, hf_iterable_dataset

    ds = StreamDataset(proc, ctx=10, batch_size=512, seed=0, targets="distribution", beliefs=True)
    for batch in DataLoader(ds, batch_size=None, num_workers=4):   # batch_size=None: items are batches
        batch["inputs"], batch["targets"], batch["beliefs"]

    hf = hf_dataset(proc, length=11, num_rows=100_000, seed=0, beliefs=True, next_probs=True)

Torch items are whole batches, keyed like :class:`compmech.data.StreamSource`: batch ``s`` is rows
``[s*B, (s+1)*B)`` of the counter-based sample stream (``cm.sample(..., row_offset=s*B)``), so it
is the same batch as ``StreamSource(...).batch(s)``. DataLoader worker ``k`` of ``W`` produces
batches ``s = k, k+W, ...`` and the DataLoader returns workers' items round-robin, so any number
of workers gives the same stream in the same order.

Workers start by ``fork`` on Linux; in a process that has already started other thread pools
(JAX, for one) pass ``multiprocessing_context="forkserver"`` (or ``"spawn"``) to the DataLoader.

Hugging Face rows are sequences of ``length`` process tokens: row ``r`` is row ``row_offset + r``
of the same stream; ``beliefs[t]`` is the belief after ``tokens[:t+1]`` and ``next_probs[t]``
the distribution of ``tokens[t+1]`` given ``tokens[:t+1]``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import _version
from .beliefs import beliefs as _beliefs
from .data import n_tokens_for
from .process import as_process
from .sampling import sample

__all__ = ["StreamDataset", "SourceDataset", "hf_dataset", "hf_iterable_dataset", "sequence_columns"]


def _positive(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _nonneg(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    return int(v)


def _next_probs(proc, b: np.ndarray) -> np.ndarray:
    """``(..., S)`` beliefs → ``(..., V)`` float32 next-token distributions (clipped at 0 and
    renormalised, for GHMMs whose quasi-probabilities round below zero)."""
    q = np.clip(np.einsum("...s,vs->...v", b, proc.T @ proc.w), 0.0, None)
    return (q / q.sum(-1, keepdims=True)).astype(np.float32)


def _worker_shard():
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class StreamDataset(IterableDataset):
    """Training batches sampled from ``process``, as a torch ``IterableDataset`` of dicts.

    Args:
        ctx: model context; each batch holds ``inputs (B, ctx)`` long and ``targets``.
        batch_size: sequences per item (use ``DataLoader(ds, batch_size=None)``).
        seed: the sample stream's key; batch ``s`` depends only on ``(seed, s)``.
        bos: prepend a BOS token (id ``V``) to the inputs (layout of :mod:`compmech.data`).
        targets: ``"tokens"`` (next tokens ``(B, ctx)`` long) or ``"distribution"`` (their true
            conditional distributions ``(B, ctx, V)`` float32).
        beliefs: also return ``beliefs (B, ctx, S)`` float32, the belief at each model position
            (after the process tokens that position has seen; the initial belief at a BOS).
        next_probs: also return ``next_probs (B, ctx, V)`` float32 whatever ``targets`` is.
        steps: number of batches (``None``: endless); ``start_step``: first batch (resume).
    """

    def __init__(self, process, ctx: int, batch_size: int, *, seed: int, bos: bool = False,
                 targets: str = "tokens", beliefs: bool = False, next_probs: bool = False,
                 steps: int | None = None, start_step: int = 0):
        super().__init__()
        self.process = as_process(process)
        self.ctx = _positive("ctx", ctx)
        self.batch_size = _positive("batch_size", batch_size)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
        self.seed = int(seed)
        if targets not in ("tokens", "distribution"):
            raise ValueError(f"targets must be 'tokens' or 'distribution', got {targets!r}")
        self.targets, self.bos = targets, bool(bos)
        self.want_beliefs, self.want_next_probs = bool(beliefs), bool(next_probs)
        self.steps = None if steps is None else _nonneg("steps", steps)
        self.start_step = _nonneg("start_step", start_step)
        self.n_tokens = n_tokens_for(self.ctx, self.bos)

    def batch(self, step: int) -> dict:
        """Batch ``step`` (numpy → torch, CPU)."""
        p, B, ctx = self.process, self.batch_size, self.ctx
        seq = sample(p, B, self.n_tokens, seed=self.seed, row_offset=int(step) * B)
        if self.bos:
            x = np.empty((B, ctx), np.int64)
            x[:, 0] = p.vocab_size
            x[:, 1:] = seq[:, :-1]
            y = seq
        else:
            x, y = seq[:, :-1].astype(np.int64), seq[:, 1:]
        out = {"inputs": torch.from_numpy(np.ascontiguousarray(x))}
        need_b = self.want_beliefs or self.want_next_probs or self.targets == "distribution"
        if need_b:
            n_in = ctx - 1 if self.bos else ctx
            b = (_beliefs(p, seq[:, :n_in], dtype=np.float64) if n_in > 0
                 else np.zeros((B, 0, p.num_states)))
            if self.bos:
                b = np.concatenate([np.broadcast_to(p.stationary, (B, 1, p.num_states)), b], 1)
            q = _next_probs(p, b)
        out["targets"] = torch.from_numpy(q if self.targets == "distribution" else y.astype(np.int64))
        if self.want_beliefs:
            out["beliefs"] = torch.from_numpy(b.astype(np.float32))
        if self.want_next_probs:
            out["next_probs"] = torch.from_numpy(q)
        return out

    def __iter__(self):
        k, W = _worker_shard()
        s = self.start_step + k
        stop = None if self.steps is None else self.start_step + self.steps
        while stop is None or s < stop:
            yield self.batch(s)
            s += W

    def __len__(self):
        if self.steps is None:
            raise TypeError("an endless StreamDataset has no length (pass steps=...)")
        return self.steps


class SourceDataset(IterableDataset):
    """Any :mod:`compmech.data` source (``ExactSource``, ``StreamSource``, ...) as a torch
    ``IterableDataset`` of ``(inputs, targets)`` batches: batch ``s`` is the source's batch
    ``s``. Worker ``k`` of ``W`` keeps batches ``s ≡ k (mod W)`` of the source's own stream, so
    the DataLoader's round-robin gives the source's order for any number of workers (each
    worker generates the whole stream: prefer :class:`StreamDataset` for sampled data, which
    generates only its own batches). The source should run on the CPU without its background
    thread (``device="cpu", background=False``)."""

    def __init__(self, source, *, steps: int | None = None, start_step: int = 0):
        super().__init__()
        if not hasattr(source, "batches"):
            raise TypeError(f"source must be a compmech.data source with .batches(), got {type(source).__name__}")
        self.source = source
        self.steps = None if steps is None else _nonneg("steps", steps)
        self.start_step = _nonneg("start_step", start_step)

    def __iter__(self):
        k, W = _worker_shard()
        it = self.source.batches(self.start_step)
        try:
            i = 0
            while self.steps is None or i < self.steps:
                x, y = next(it)
                if i % W == k:
                    yield x, y
                i += 1
        finally:
            it.close()

    def __len__(self):
        if self.steps is None:
            raise TypeError("an endless SourceDataset has no length (pass steps=...)")
        return self.steps


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets
# ---------------------------------------------------------------------------------------------


def sequence_columns(process, length: int, rows: int, *, seed: int, row_offset: int = 0, beliefs: bool = False,
                     next_probs: bool = False) -> dict:
    """Rows ``[row_offset, row_offset + rows)`` of the sample stream as columns: ``tokens
    (rows, length)`` int64, optional ``beliefs (rows, length, S)`` and ``next_probs (rows,
    length, V)`` float32 (after each prefix ``tokens[:t+1]``)."""
    p = as_process(process)
    seq = sample(p, rows, length, seed=seed, row_offset=row_offset)
    cols = {"tokens": seq.astype(np.int64)}
    if beliefs or next_probs:
        b = _beliefs(p, seq, dtype=np.float64)
        if beliefs:
            cols["beliefs"] = b.astype(np.float32)
        if next_probs:
            cols["next_probs"] = _next_probs(p, b)
    return cols


def _features(p, length, beliefs, next_probs):
    from datasets import Array2D, Features, Sequence, Value

    f = {"tokens": Sequence(Value("int64"), length=length)}
    if beliefs:
        f["beliefs"] = Array2D((length, p.num_states), "float32")
    if next_probs:
        f["next_probs"] = Array2D((length, p.vocab_size), "float32")
    return Features(f)


def _gen_rows(process, length, seed, beliefs, next_probs, chunks, compmech_version=None):
    """Generator over rows of the given ``(row_start, rows)`` chunks (a list, so Hugging Face
    can shard it across workers). ``compmech_version`` is unused here: it is in the arguments so
    that Hugging Face's cache key changes with the compiled sampler, which its hash cannot see."""
    for start, n in chunks:
        cols = sequence_columns(process, length, n, seed=seed, row_offset=start, beliefs=beliefs,
                                next_probs=next_probs)
        for i in range(n):
            yield {k: v[i] for k, v in cols.items()}


def _chunks(num_rows, row_offset, chunk_rows):
    return [(row_offset + s, min(chunk_rows, num_rows - s)) for s in range(0, num_rows, chunk_rows)]


def _hf_args(process, length, num_rows, seed, row_offset, chunk_rows):
    p = as_process(process)
    length = _positive("length", length)
    num_rows = _positive("num_rows", num_rows)
    row_offset = _nonneg("row_offset", row_offset)
    chunk_rows = _positive("chunk_rows", chunk_rows)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    return p, length, num_rows, int(seed), row_offset, chunk_rows


def hf_dataset(process, length: int, num_rows: int, *, seed: int, beliefs: bool = False, next_probs: bool = False,
               row_offset: int = 0, chunk_rows: int = 8192, cache_dir=None, keep_in_memory: bool = False):
    """A ``datasets.Dataset`` of ``num_rows`` sampled sequences (columns ``tokens`` and
    optionally ``beliefs``, ``next_probs``), written chunk by chunk to Arrow files (memory
    stays at one chunk). Row ``r`` is the same for any ``chunk_rows``; nothing is downloaded."""
    from datasets import Dataset

    p, length, num_rows, seed, row_offset, chunk_rows = _hf_args(process, length, num_rows, seed, row_offset,
                                                                 chunk_rows)
    return Dataset.from_generator(
        _gen_rows, features=_features(p, length, beliefs, next_probs), cache_dir=cache_dir,
        keep_in_memory=keep_in_memory,
        gen_kwargs=dict(process=p, length=length, seed=seed, beliefs=bool(beliefs), next_probs=bool(next_probs),
                        chunks=_chunks(num_rows, row_offset, chunk_rows), compmech_version=_version.__version__))


def hf_iterable_dataset(process, length: int, num_rows: int, *, seed: int, beliefs: bool = False,
                        next_probs: bool = False, row_offset: int = 0, chunk_rows: int = 8192):
    """A streaming ``datasets.IterableDataset`` with the rows of :func:`hf_dataset`, generated
    on the fly. Its shards are the chunks of ``chunk_rows`` rows (``ds.num_shards``), which
    Hugging Face splits across DataLoader workers or nodes; each shard's rows are fixed by the
    seed and their row indices."""
    from datasets import IterableDataset as HFIterable

    p, length, num_rows, seed, row_offset, chunk_rows = _hf_args(process, length, num_rows, seed, row_offset,
                                                                 chunk_rows)
    return HFIterable.from_generator(
        _gen_rows, features=_features(p, length, beliefs, next_probs),
        gen_kwargs=dict(process=p, length=length, seed=seed, beliefs=bool(beliefs), next_probs=bool(next_probs),
                        chunks=_chunks(num_rows, row_offset, chunk_rows)))
