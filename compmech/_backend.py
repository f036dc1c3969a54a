"""The one boundary between the public functions and the kernels.

A backend runs the kernels on one kind of array: :class:`CpuBackend` (numpy, compiled module
``_core``) or :class:`compmech._cuda_ops.CudaBackend` (torch CUDA tensors, module ``_cuda``; or,
with ``emulate=True``, CPU tensors and the same kernels compiled for the CPU, ``_cuda_emu``).
Every backend offers the same primitives and reports data errors as flat indices (never as
messages), so the public wrappers in beliefs.py, sampling.py and msp_tree.py hold all the logic
that must stay in step: argument checks, the error messages (``_errors``), and the optimistic
MSP level expansion (:func:`grow`).

Primitives (``tok`` is 2-D and of a dtype in :data:`TOKEN_DTYPES`):

* ``tokens(x) -> (tok, was_1d)``, ``out_buffer(out, tok, shape)``
* ``beliefs(proc, tok, init, dtype, want_logp, out) -> (beliefs, logp, flags)``, with
  ``read(flags) -> (first zero-probability index, first out-of-vocabulary index)``
* ``sample_hmm(...) -> (tokens, states)``, ``sample_ghmm(...) -> (tokens, beliefs, flags)``
* ``msp_counted(...) -> level``, ``msp_full(...) -> (level, dropped)``, ``first_dropped(...)``

Which backend runs a call is decided by :func:`for_array` / :func:`for_device`, through the
module-level router: tests swap that one object to run the CUDA paths on the emulation.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import _core, _errors
from ._arrays import is_torch, smallest_uint, to_numpy

# Token dtypes every backend's kernels read directly; other integer dtypes are converted.
TOKEN_DTYPES = ("uint8", "uint16", "int32", "int64")


def kernel_token_dtype(name: str, itemsize: int) -> str:
    """The kernel dtype an integer token dtype is converted to (values kept; uint64 values
    above 2**63 wrap negative and so still read as outside the vocabulary)."""
    if name in TOKEN_DTYPES:
        return name
    return "int32" if itemsize < 4 else "int64"


class CpuBackend:
    """numpy arrays on the host; the compiled core ``_core``."""

    name = "cpu"
    max_states = None  # no limit

    # ---- arrays -----------------------------------------------------------------------------
    def tokens(self, x):
        arr = to_numpy(x, "tokens")
        if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
            raise _errors.integer_tokens(arr.dtype)
        if arr.ndim not in (1, 2):
            raise _errors.token_shape(arr.shape)
        was_1d = arr.ndim == 1
        arr = arr[None, :] if was_1d else arr
        want = np.dtype(kernel_token_dtype(arr.dtype.name, arr.dtype.itemsize))
        if arr.dtype != want or not arr.dtype.isnative or arr.dtype.metadata:
            arr = arr.astype(want)  # plain native dtype for the kernel
        return np.ascontiguousarray(arr), was_1d

    def value_at(self, x, flat_index: int) -> int:
        """The caller's token at a flat index (read from the original array, before any dtype
        conversion, so a value the conversion wrapped is reported as given)."""
        return int(to_numpy(x, "tokens").reshape(-1)[flat_index])

    def out_buffer(self, out, tok, shape):
        buf = to_numpy(out, "out")
        if buf.dtype.kind == "f" and not buf.dtype.isnative:
            raise _errors.out_layout("in the machine's native byte order")
        if buf.shape != shape:
            raise _errors.out_shape(shape, buf.shape)
        if np.may_share_memory(buf, tok):
            raise _errors.out_overlaps_tokens()
        return buf

    def from_numpy(self, a):
        return a

    # ---- kernels ----------------------------------------------------------------------------
    def beliefs(self, proc, tok, init, dtype, want_logp, out=None):
        w = proc.w if proc.is_generalized else None
        b, lp, zero, bad = _core.beliefs(proc.T, w, init, tok, dtype, want_logp, proc.zero_tol, out)
        return b, lp, (zero, bad)

    def read(self, flags):
        return tuple(None if f < 0 else int(f) for f in flags)

    def sample_hmm(self, proc, init, B, L, seed, row0, want_states):
        return _core.sample_hmm(proc.T, init, B, L, seed, row0, want_states)

    def sample_ghmm(self, proc, init, B, L, seed, row0, dtype):
        tokens, beliefs, fail = _core.sample_ghmm(proc.T, proc.w, init, B, L, seed, row0, dtype, proc.zero_tol)
        return tokens, beliefs, (fail,)

    def msp_counted(self, proc, parents, probs, min_prob):
        w = proc.w if proc.is_generalized else None
        return _core.msp_level(proc.T, w, parents, probs, float(min_prob), proc.zero_tol, False, True)

    def msp_full(self, proc, parents, probs, min_prob):
        w = proc.w if proc.is_generalized else None
        # (beliefs, probs, None, None): a full level's parent and token are implicit
        level = _core.msp_level(proc.T, w, parents, probs, float(min_prob), proc.zero_tol, True, True)
        return level, level is None

    def first_dropped(self, dropped: list):
        return next((k for k, d in enumerate(dropped) if d), None)

    def speculate(self, nbytes: int) -> bool:
        return False  # the drop is known at once: never expand past a level that dropped

    @staticmethod
    def nbytes(level) -> int:
        return 0 if level is None else sum(a.nbytes for a in level if a is not None)


CPU = CpuBackend()


def check_level_size(parents: int):
    if parents > np.iinfo(np.int32).max:
        raise _errors.level_too_large(parents)


def grow(be, proc, levels: list, depth: int, min_prob: float, full: bool = False) -> list:
    """Append MSP levels ``(beliefs, probs, parent, token)`` to ``levels`` until it holds
    ``depth + 1`` of them, on backend ``be``; ``full``: ``levels[-1]`` kept every child of the
    level before it (known to the caller when ``levels`` holds a single level).

    After a level that kept every child, the next ones are first tried at the fixed offsets
    ``i * V + x`` (one pass, no count; parent and token None, being implicit for a full level);
    whether that guess dropped a child is read back once for a run of such levels
    (``be.speculate``: on a GPU the flags stay on the device until the run ends or grows large),
    and the levels from the first one that dropped are redone by counting.
    """
    V = proc.vocab_size
    pending: list = []  # dropped-flags of the optimistic levels at the end of `levels`
    spec_bytes = 0
    while len(levels) <= depth:
        parents, probs = levels[-1][0], levels[-1][1]
        check_level_size(int(parents.shape[0]))
        if len(levels) >= 2:
            full = int(probs.shape[0]) == V * int(levels[-2][1].shape[0])
        if not full:
            levels.append(be.msp_counted(proc, parents, probs, min_prob))
            continue
        level, dropped = be.msp_full(proc, parents, probs, min_prob)
        levels.append(level)
        pending.append(dropped)
        spec_bytes += be.nbytes(level)
        # go on guessing while the next level (V times this one) keeps the guesses within budget
        if len(levels) <= depth and be.speculate(spec_bytes + V * be.nbytes(level)):
            continue
        first = be.first_dropped(pending)
        start = len(levels) - len(pending)
        pending, spec_bytes = [], 0
        if first is not None:
            del levels[start + first:]
            prev = levels[-1]
            levels.append(be.msp_counted(proc, prev[0], prev[1], min_prob))
    return levels


# ---- which backend runs a call ---------------------------------------------------------------

def _cuda_backend(device, emulate=False):
    from ._cuda_ops import CudaBackend

    return CudaBackend(device, emulate=emulate)


class Router:
    """numpy arrays and CPU tensors run on the CPU, CUDA tensors on their GPU."""

    def for_array(self, x):
        return _cuda_backend(x.device) if is_torch(x) and x.device.type == "cuda" else CPU

    def for_device(self, device):
        """Backend for ``device=`` (None: CPU). Only CUDA devices get a CUDA backend."""
        if device is None:
            return CPU
        import torch

        return _cuda_backend(device) if torch.device(device).type == "cuda" else CPU


class EmulationRouter(Router):
    """Every torch tensor and every CUDA device goes to the CUDA kernels compiled for the CPU,
    CPU tensors standing in for CUDA ones: the tests run the public API's GPU paths this way."""

    def for_array(self, x):
        return _cuda_backend(None, emulate=True) if is_torch(x) else CPU

    def for_device(self, device):
        import torch

        if device is None or torch.device(device).type != "cuda":
            return CPU
        return _cuda_backend(None, emulate=True)


_router = Router()


@contextlib.contextmanager
def routed(router):
    """Run the calls inside on ``router`` (e.g. :class:`EmulationRouter`), then restore."""
    global _router
    previous, _router = _router, router
    try:
        yield router
    finally:
        _router = previous


def for_array(x):
    """Backend for a call whose data (tokens, parent beliefs) is ``x`` (numpy or torch)."""
    return _router.for_array(x)


def for_device(device):
    return _router.for_device(device)


def cuda_state_limit() -> int:
    """Largest S the GPU kernels take, as compiled into the CUDA module."""
    from ._cuda_ops import module

    return int(module().max_states)


def trusted_beliefs(proc, tokens, dtype: str = "float64", *, initial=None, backend=None):
    """Beliefs of ``tokens`` that this library just sampled from ``proc`` (so every token is
    possible): no error flags are read back, so on a GPU nothing waits for the kernel."""
    be = backend or for_array(tokens)
    tok, _ = be.tokens(tokens)
    init = proc.stationary if initial is None else initial
    b, _, _ = be.beliefs(proc, tok, init, dtype, False, None)
    return b


def root_level(be, proc, init: np.ndarray, dtype: str):
    """Level 0 of an MSP tree (the initial belief) as ``be``'s arrays."""
    arrays = (np.ascontiguousarray(init.astype(dtype)[None, :]), np.ones(1), np.zeros(1, np.int32),
              np.zeros(1, smallest_uint(proc.vocab_size)))
    return tuple(be.from_numpy(a) for a in arrays)
