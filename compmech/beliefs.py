"""Belief-state propagation along token sequences (compiled, multi-threaded)."""
from __future__ import annotations

import numpy as np

from . import _backend, _errors, _interop
from ._arrays import float_dtype_name
from .process import as_process
from .results import beliefs_result

_ON_ZERO = ("raise", "nan")


def _run(process, tokens, initial, dtype, want_logp, on_zero, out=None):
    proc = as_process(process)
    if on_zero not in _ON_ZERO:
        raise _errors.on_zero_choice(on_zero, _ON_ZERO)
    init = proc.check_initial(initial)
    x, back = _interop.incoming(tokens)
    be = _backend.for_array(x)
    tok, was_1d = be.tokens(x)
    B, L = tok.shape
    buf = None
    if out is not None:
        if _interop.is_immutable(out):
            raise _errors.immutable_out(out)
        shape = (L, proc.num_states) if was_1d else (B, L, proc.num_states)
        buf = be.out_buffer(_interop.incoming(out)[0], tok, shape)
        buf = buf[None] if was_1d else buf
    elif dtype is not None and be is _backend.CPU and getattr(back, "align", 0):
        # a buffer the caller's library (JAX) adopts without a copy
        buf = _interop.aligned_empty((B, L, proc.num_states), dtype, back.align)
    b, lp, flags = be.beliefs(proc, tok, init, dtype, want_logp, buf)
    zero, bad = be.read(flags)
    if bad is not None:
        raise _errors.outside_vocabulary(be.value_at(x, bad), bad, L, proc.vocab_size)
    if zero is not None:
        # a negative probability means the initial vector is no state, whatever on_zero says
        err = _errors.not_a_state_at(proc, init, tok, zero, L)
        if err is not None:
            raise err
        if on_zero == "raise":
            raise _errors.zero_probability(be.value_at(x, zero), zero, L)
    if was_1d:
        b = None if b is None else b[0]
        lp = None if lp is None else lp.reshape(B)[0:1].reshape(())
    b = out if out is not None else back(b)  # out: the caller's own object, filled
    return b, back(lp)


def beliefs(process, tokens, *, initial=None, dtype=np.float32, return_log_prob=False, on_zero="raise",
            out=None, factors=False):
    """Belief states along token sequences.

    Args:
        process: a :class:`compmech.HMM` or :class:`compmech.GHMM`.
        tokens: ``(B, L)`` or ``(L,)`` integers in ``[0, V)``; any integer dtype; numpy, torch CPU
            or torch CUDA, or any DLPack / ``__cuda_array_interface__`` array (JAX, CuPy: read in
            place, results returned as that library's arrays on the same device). CUDA tokens run
            on their GPU (on torch's current stream; S <= 64) and give CUDA arrays there; the
            call waits for the kernel to check for errors.
        initial: belief before the first token, ``(S,)``; default ``process.stationary``.
        dtype: float32 (default) or float64 output. Arithmetic is float64 throughout.
        return_log_prob: also return the natural-log probability of each whole sequence
            (accumulated in float64), ``(B,)`` (a 0-d array for ``(L,)`` input). Beliefs and
            log-probabilities are bit-identical whatever the batch, the thread count or the
            SIMD path a row takes (one accumulator for every path).
        on_zero: ``"raise"`` (default): a token with zero probability under the current belief
            raises ValueError naming its row and position. ``"nan"``: that row's beliefs are NaN
            from there on and its log-probability is ``-inf``.
        out: optional preallocated ``(B, L, S)`` float32/float64 C-contiguous array (numpy,
            torch CPU, or torch CUDA on the tokens' device) to write into and return, e.g. to
            reuse one buffer across training steps; its dtype overrides ``dtype``.
        factors: for a product process (:func:`compmech.processes.product`), return the list of
            per-factor beliefs ``(B, L, S_i)`` instead of the joint ``(B, L, prod S_i)``. A
            product is always propagated factor by factor (the joint is their outer product).

    Returns:
        beliefs ``(B, L, S)`` (or ``(L, S)``): ``beliefs[b, t]`` is the belief *after*
        ``tokens[b, :t+1]``; the belief before any token is ``initial``. Renormalised every
        step, so any length works. Same array kind as ``tokens`` (torch in, torch out).
    """
    dt = float_dtype_name(dtype)
    got = _product_run("beliefs", process, tokens, initial=initial, dtype=dt,
                       return_log_prob=return_log_prob, on_zero=on_zero, out=out, factors=factors)
    if got is not None:
        return got
    b, lp = _run(process, tokens, initial, dt, return_log_prob, on_zero, out)
    return beliefs_result(b, lp, want_log_prob=return_log_prob)


def log_prob(process, tokens, *, initial=None, on_zero="raise"):
    """Natural-log probability of each sequence, ``(B,)`` float64 (0-d for ``(L,)`` input),
    without materialising beliefs. ``on_zero="nan"`` gives ``-inf`` for impossible sequences
    instead of raising.

    Its own arithmetic: unnormalised beliefs kept in range by exact power-of-two rescaling (no
    division per step). Bit-identical whatever the batch, the thread count or the path a row
    takes; within a few ulp of ``beliefs(..., return_log_prob=True)``, which normalises."""
    got = _product_run("log_prob", process, tokens, initial=initial, on_zero=on_zero)
    return got if got is not None else _run(process, tokens, initial, None, True, on_zero)[1]


def _product_run(what, process, tokens, **kw):
    """A product process runs factor by factor (compmech._product); None for other processes and
    for an initial belief that is not of product form (then the joint process runs)."""
    from . import _product

    proc = as_process(process)
    if _product.factors_of(proc) is None:
        if kw.get("factors"):
            raise ValueError("factors=True needs a product process (compmech.processes.product)")
        return None
    if kw.get("on_zero", "raise") not in _ON_ZERO:
        raise ValueError(f"on_zero must be one of {_ON_ZERO}, got {kw['on_zero']!r}")
    return getattr(_product, what)(proc, tokens, **kw)
