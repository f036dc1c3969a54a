"""Belief-state propagation along token sequences (compiled, multi-threaded)."""
from __future__ import annotations

import numpy as np

from . import _core
from ._arrays import as_tokens, float_dtype_name, is_cuda, like_input, to_numpy
from .process import as_process

_ON_ZERO = ("raise", "nan")


def _out_array(out, arr, was_1d, S):
    """numpy view of a caller-provided output buffer (numpy or torch CPU), checked for shape."""
    if out is None:
        return None
    buf = to_numpy(out, "out")
    want = (arr.shape[1], S) if was_1d else (arr.shape[0], arr.shape[1], S)
    if buf.dtype.kind == "f" and not buf.dtype.isnative:
        raise ValueError("out must have the machine's native byte order")
    if buf.shape != want:
        raise ValueError(f"out must have shape {want}, got {buf.shape}")
    if np.may_share_memory(buf, arr):
        raise ValueError("out must not overlap tokens")
    return buf[None] if was_1d else buf


def _run(process, tokens, initial, dtype, want_logp, on_zero, out=None):
    proc = as_process(process)
    if on_zero not in _ON_ZERO:
        raise ValueError(f"on_zero must be one of {_ON_ZERO}, got {on_zero!r}")
    init = proc.check_initial(initial)
    if is_cuda(tokens):
        from . import _cuda_ops

        if out is not None and not is_cuda(out):
            raise ValueError(f"out must be on the tokens' device {tokens.device}, got {type(out).__name__} on the CPU")
        return _cuda_ops.beliefs(proc, tokens, init, dtype, want_logp, on_zero == "nan", out)
    arr, was_1d, was_torch = as_tokens(tokens, proc.vocab_size)
    w = proc.w if proc.is_generalized else None
    buf = _out_array(out, arr, was_1d, proc.num_states)
    b, lp = _core.beliefs(proc.T, w, init, arr, dtype, want_logp, on_zero == "nan", proc.zero_tol, buf)
    if was_1d:
        b = None if b is None else b[0]
        lp = None if lp is None else lp[0:1].reshape(())
    b = out if out is not None else like_input(b, was_torch)  # out: the caller's own object, filled
    if lp is not None and was_torch:
        lp = like_input(np.asarray(lp), True)
    return b, lp


def beliefs(process, tokens, *, initial=None, dtype=np.float32, return_log_prob=False, on_zero="raise",
            out=None):
    """Belief states along token sequences.

    Args:
        process: a :class:`compmech.HMM` or :class:`compmech.GHMM`.
        tokens: ``(B, L)`` or ``(L,)`` integers in ``[0, V)``; any integer dtype; numpy, torch CPU
            or torch CUDA. CUDA tokens run on their GPU (on torch's current stream; S <= 64) and
            give CUDA tensors there; the call waits for the kernel to check for errors.
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

    Returns:
        beliefs ``(B, L, S)`` (or ``(L, S)``): ``beliefs[b, t]`` is the belief *after*
        ``tokens[b, :t+1]``; the belief before any token is ``initial``. Renormalised every
        step, so any length works. Same array kind as ``tokens`` (torch in, torch out).
    """
    b, lp = _run(process, tokens, initial, float_dtype_name(dtype), return_log_prob, on_zero, out)
    return (b, lp) if return_log_prob else b


def log_prob(process, tokens, *, initial=None, on_zero="raise"):
    """Natural-log probability of each sequence, ``(B,)`` float64 (0-d for ``(L,)`` input),
    without materialising beliefs. ``on_zero="nan"`` gives ``-inf`` for impossible sequences
    instead of raising."""
    return _run(process, tokens, initial, None, True, on_zero)[1]
