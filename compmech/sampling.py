"""Sequence sampling with a counter-based RNG (Philox4x32-10 keyed by the seed, counter by row
and position): the output depends only on the seed and shapes, never on thread count or batch
split, and ``row_offset`` lets a large batch be generated in pieces that match one call."""
from __future__ import annotations

import contextlib

import numpy as np

from . import _backend, _core, _errors, _interop, _product
from ._arrays import check_count, check_seed, float_dtype_name
from .process import as_process
from .results import sample_result


@contextlib.contextmanager
def _force_path(name: str):
    """Private: run the CPU hidden-state sampler on one path ("scalar", "packed", "avx512";
    "auto" is the default choice) inside the block. Every path gives the same tokens; tests and
    benchmarks use this to check that and to compare speeds. Not thread-safe (process-wide)."""
    old = _core.set_sample_path(name)
    try:
        yield
    finally:
        _core.set_sample_path(old)


def sample(process, batch, length, *, seed, initial=None, return_states=False, return_beliefs=False,
           device=None, row_offset=0, dtype=np.float32, factors=False):
    """Sample ``batch`` sequences of ``length`` tokens.

    Args:
        process: :class:`compmech.HMM` (sampled through its hidden states) or
            :class:`compmech.GHMM` (sampled through its beliefs; no hidden state exists).
        seed: integer in ``[0, 2**64)``, required. Row ``r`` of the result is the same for any
            ``batch > r`` and any thread count, and its first ``n`` tokens are the same for any
            ``length >= n``.
        initial: distribution of the first hidden state (HMM) / first belief (GHMM);
            default ``process.stationary``.
        return_states: also return hidden states ``(B, L+1)`` (HMMs only): ``states[b, 0]``
            is the initial state, ``states[b, t+1]`` the state after emitting ``tokens[b, t]``.
        return_beliefs: also return beliefs ``(B, L, S)`` of ``dtype``, ``beliefs[b, t]`` being
            the belief *after* ``tokens[b, :t+1]`` (see :func:`compmech.beliefs`).
        device: ``None`` for numpy arrays; otherwise a torch device, and torch tensors are
            returned there (``"cpu"`` shares memory with the sampled arrays). A CUDA device
            generates on that GPU (on torch's current stream), with the CPU's tokens bit for bit.
            A JAX or CuPy device gives that library's arrays on it (handed over through DLPack).
        row_offset: index of the first row in the RNG stream, to generate a batch in parts.
        factors: for a product process, return the per-factor beliefs (a list) instead of the
            joint ones. A product (:func:`compmech.processes.product`) is always sampled factor
            by factor: factor ``i`` draws its own stream (seed ``compmech._product.factor_seed(seed, i)``)
            and the joint token is the row-major combination of the factors' tokens.

    Returns:
        tokens ``(B, L)`` in the smallest unsigned dtype holding ``V`` (uint8 for V <= 256),
        then states and beliefs if requested, as a tuple.
    """
    proc = as_process(process)
    B = check_count(batch, "batch")
    L = check_count(length, "length")
    seed = check_seed(seed)
    row0 = check_count(row_offset, "row_offset", limit=1 << 64)
    if row0 + B >= 1 << 64:
        raise _errors.rng_rows_exhausted()
    if L >= 1 << 34:
        raise _errors.rng_length_exhausted()
    if _product.factors_of(proc) is not None:
        got = _product.sample(proc, B, L, seed=seed, initial=initial, return_states=return_states,
                              return_beliefs=return_beliefs, device=device, row_offset=row0, dtype=dtype,
                              factors=factors)
        if got is not None:
            return got
    elif factors:
        raise ValueError("factors=True needs a product process (compmech.processes.product)")
    init = proc.check_initial(initial)
    if proc.is_generalized and return_states:
        raise _errors.ghmm_has_no_states()
    dt = float_dtype_name(dtype) if return_beliefs else None
    device, back = _interop.for_device(device)
    be = _backend.for_device(device)
    states = beliefs = None
    if proc.is_generalized:
        tokens, beliefs, flags = be.sample_ghmm(proc, init, B, L, seed, row0, dt)
        (fail,) = be.read(flags)
        if fail is not None:
            raise _errors.not_a_state_at(proc, init, tokens, fail, L) or _errors.no_positive_token(fail, L)
    else:
        if (proc.T < 0).any() or (init < 0).any():
            raise _errors.negative_for_hidden_states()
        tokens, states = be.sample_hmm(proc, init, B, L, seed, row0, bool(return_states))
        if dt is not None:  # sampled tokens are possible by construction: no error flags to read
            beliefs = _backend.trusted_beliefs(proc, tokens, dt, initial=init, backend=be)
    out = [tokens, states, beliefs]
    if back is not _interop.identity:
        out = [None if a is None else back(a) for a in out]
    elif be is _backend.CPU and device is not None:
        import torch

        dev = torch.device(device)
        out = [None if a is None else torch.from_numpy(a).to(dev) for a in out]
    return sample_result(*out, want_states=bool(return_states), want_beliefs=bool(return_beliefs))
