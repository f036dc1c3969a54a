"""Sequence sampling with a counter-based RNG (Philox4x32-10 keyed by the seed, counter by row
and position): the output depends only on the seed and shapes, never on thread count or batch
split, and ``row_offset`` lets a large batch be generated in pieces that match one call."""
from __future__ import annotations

import contextlib

import numpy as np

from . import _core, _product
from ._arrays import check_count, check_seed, float_dtype_name
from .beliefs import beliefs as _beliefs
from .process import as_process


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


def _is_cuda_device(device) -> bool:
    import torch

    return torch.device(device).type == "cuda"


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
        raise ValueError("row_offset + batch must be < 2**64")
    if L >= 1 << 34:
        raise ValueError("length must be < 2**34 (the RNG counter's range)")
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
        raise ValueError("return_states: a GHMM has no hidden states (it is sampled through its beliefs)")
    dt = float_dtype_name(dtype) if return_beliefs else None
    if device is not None and _is_cuda_device(device):
        from . import _cuda_ops

        tokens, states, beliefs = _cuda_ops.sample(proc, B, L, seed, row0, init, bool(return_states), dt, device)
        out = [tokens] + ([states] if return_states else []) + ([beliefs] if return_beliefs else [])
        return out[0] if len(out) == 1 else tuple(out)
    states = beliefs = None
    if proc.is_generalized:
        tokens, beliefs = _core.sample_ghmm(proc.T, proc.w, init, B, L, seed, row0, dt, proc.zero_tol)
    else:
        tokens, states = _core.sample_hmm(proc.T, init, B, L, seed, row0, bool(return_states))
        if return_beliefs:
            beliefs = _beliefs(proc, tokens, initial=init, dtype=dtype)
    out = [tokens]
    if return_states:
        out.append(states)
    if return_beliefs:
        out.append(beliefs)
    if device is not None:
        import torch

        dev = torch.device(device)
        out = [torch.from_numpy(a).to(dev) for a in out]
    return out[0] if len(out) == 1 else tuple(out)
