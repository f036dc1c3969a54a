"""The CUDA backend (see ``_backend``): torch CUDA tensors in, torch CUDA tensors out on the same
device, kernels launched on torch's current stream (compiled module ``compmech._cuda``).

Device memory is allocated here with torch (its caching allocator) and handed to the kernels
as raw pointers, so the extension has no compile-time dependency on torch's C++ ABI. Error flags
stay on the device; the wrappers read them (one synchronisation) only where an error must be
raised.

``emulate=True`` runs the same kernels compiled for the CPU (``compmech._cuda_emu``, one
std::thread per CUDA thread) on CPU tensors: the tests use it to check this module and the
kernels on machines without a GPU.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import _core, _errors
from ._arrays import smallest_uint
from ._backend import kernel_token_dtype

_SENTINEL = (1 << 63) - 1  # "no error" in the int64 flag words the kernels atomicMin into
# Optimistic MSP levels whose dropped-flags are still on the device may hold at most this many
# bytes before the flags are read (the memory a wrong guess can waste; see _backend.grow).
SPECULATION_BYTES = 1 << 30


def module():
    """The compiled CUDA module, or a RuntimeError saying why it is unavailable."""
    try:
        from . import _cuda
    except ImportError as exc:
        raise _errors.no_cuda_kernels() from exc
    return _cuda


def device(dev):
    """A torch.device with an explicit index for ``"cuda"``-like input, checked to exist."""
    import torch

    d = torch.device(dev)
    if d.type != "cuda":
        raise _errors.not_a_cuda_device(d)
    if not torch.cuda.is_available():
        raise _errors.no_cuda_gpu(dev)
    idx = torch.cuda.current_device() if d.index is None else d.index
    if not 0 <= idx < torch.cuda.device_count():
        raise _errors.no_such_gpu(idx, torch.cuda.device_count())
    return torch.device("cuda", idx)


def _upload(a: np.ndarray, dev):
    import torch

    return torch.tensor(np.ascontiguousarray(a), device=dev)  # a copy: proc arrays are read-only


def _ptr(t) -> int:
    return 0 if t is None else t.data_ptr()


def _dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


def _torch_dtype(name: str):
    """torch dtype of a numpy dtype name (uint16/uint32 need torch >= 2.3)."""
    import torch

    dt = getattr(torch, np.dtype(name).name, None)
    if dt is None:
        raise _errors.old_torch(name, torch.__version__)
    return dt


def _is_stationary(proc, init: np.ndarray) -> bool:
    """Whether ``init`` is the process's (unique) stationary distribution: device copies of what
    depends on it are then cached on the process."""
    try:
        return np.array_equal(init, proc.stationary)
    except ValueError:  # no unique stationary distribution: the caller passed initial explicitly
        return False


class CudaBackend:
    """Kernels on one CUDA device (module ``_cuda``, torch's current stream), or with
    ``emulate=True`` on the CPU emulation (module ``_cuda_emu``, CPU tensors)."""

    name = "cuda"

    def __init__(self, dev, emulate: bool = False):
        import torch

        self.emulate = emulate
        if emulate:
            from . import _cuda_emu

            self.module, self.device = _cuda_emu, torch.device("cpu")
        else:
            self.module, self.device = module(), device(dev)
        self.max_states = int(self.module.max_states)

    # ---- plumbing ---------------------------------------------------------------------------
    def _launch_args(self):
        import torch

        if self.emulate:
            return 0, 0
        return self.device.index, torch.cuda.current_stream(self.device).cuda_stream

    def _context(self):
        import torch

        return contextlib.nullcontext() if self.emulate else torch.cuda.device(self.device)

    def check_states(self, S: int):
        """The one place the GPU state limit is enforced (a belief lives in each thread)."""
        if S > self.max_states:
            raise _errors.too_many_states(S, self.max_states)

    def _process_tensors(self, proc) -> dict:
        """T, w and the token weights Tw on the device, cached on the (immutable) process per
        device. Cached tensors are never freed, so a kernel on any stream may still read them."""
        cache = proc.__dict__.setdefault("_cuda_tensors", {})
        key = str(self.device)
        if key not in cache:
            t = {"T": _upload(proc.T, self.device)}
            if proc.is_generalized:
                t["w"] = _upload(proc.w, self.device)
                t["Tw"] = _upload(proc.token_weights, self.device)  # the CPU sampler's bits
            cache[key] = t
        return cache[key]

    def _initial(self, proc, init: np.ndarray):
        """The initial belief on the device; the stationary one is cached (no upload, no wait)."""
        if _is_stationary(proc, init):
            t = self._process_tensors(proc)
            if "stationary" not in t:
                t["stationary"] = _upload(proc.stationary, self.device)
            return t["stationary"]
        return _upload(init, self.device)

    def _flags(self, n: int):
        import torch

        return torch.full((n,), _SENTINEL, dtype=torch.int64, device=self.device)

    def read(self, flags):
        """Error flags as host ints (None: no error); one synchronisation."""
        return tuple(None if v == _SENTINEL else int(v) for v in flags.cpu().tolist())

    # ---- arrays -----------------------------------------------------------------------------
    def tokens(self, x):
        """2-D contiguous tokens in a kernel dtype (others converted)."""
        import torch

        if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex:
            raise _errors.integer_tokens(x.dtype)
        if x.ndim not in (1, 2):
            raise _errors.token_shape(x.shape)
        was_1d = x.ndim == 1
        t = x[None] if was_1d else x
        want = kernel_token_dtype(_dtype_name(t), t.element_size())
        if want != _dtype_name(t):
            t = t.to(_torch_dtype(want))
        return t.contiguous(), was_1d

    def value_at(self, tok, flat_index: int) -> int:
        return int(tok.reshape(-1)[flat_index].item())

    def out_buffer(self, out, tok, shape):
        import torch

        if not isinstance(out, torch.Tensor) or out.device != self.device:
            where = out.device if isinstance(out, torch.Tensor) else f"the CPU ({type(out).__name__})"
            raise _errors.other_device("out", where, self.device)
        if out.dtype not in (torch.float32, torch.float64):
            raise _errors.out_dtype(out.dtype)
        if tuple(out.shape) != tuple(shape):
            raise _errors.out_shape(shape, out.shape)
        if not out.is_contiguous():
            raise _errors.out_layout("contiguous")
        if out.untyped_storage().data_ptr() == tok.untyped_storage().data_ptr():
            raise _errors.out_overlaps_tokens()
        return out

    def from_numpy(self, a):
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    # ---- beliefs ----------------------------------------------------------------------------
    def beliefs(self, proc, tok, init, dtype, want_logp, out=None):
        import torch

        self.check_states(proc.num_states)
        B, L = tok.shape
        S = proc.num_states
        if out is None and dtype is not None:
            out = torch.empty((B, L, S), dtype=getattr(torch, dtype), device=self.device)
        lp = (torch.zeros if L == 0 else torch.empty)(B, dtype=torch.float64, device=self.device) if want_logp else None
        flags = self._flags(2)
        pt = self._process_tensors(proc)
        with self._context():
            dev_init = self._initial(proc, init)  # held until the call returns: a temporary's memory may be reused
            self.module.beliefs(*self._launch_args(), _ptr(pt["T"]), _ptr(pt.get("w")), proc.vocab_size, S,
                                proc.zero_tol, _ptr(dev_init), _ptr(tok), _dtype_name(tok), B, L,
                                _ptr(out), _dtype_name(out) if out is not None else "float32", _ptr(lp), _ptr(flags))
        return out, lp, flags

    # ---- sampling ---------------------------------------------------------------------------
    def _hmm_tables(self, proc, init: np.ndarray) -> dict:
        """Alias tables (the CPU sampler's own, built by the core) on the device. Those for the
        stationary initial are cached per device and never freed; others are built per call
        (freed after the launch, on the stream that allocated them: safe)."""
        def build():
            packed, thresh, alias, ithresh, ialias = _core.hmm_sample_tables(proc.T, init)
            up = lambda a: _upload(a.view(np.int32), self.device)  # noqa: E731  signed views, same bits
            return dict(packed=None if packed is None else _upload(packed.view(np.int64), self.device),
                        thresh=up(thresh), alias=up(alias), init_thresh=up(ithresh), init_alias=up(ialias))

        if not _is_stationary(proc, init):
            return build()
        t = self._process_tensors(proc)
        if "tables" not in t:
            t["tables"] = build()
        return t["tables"]

    def sample_hmm(self, proc, init, B, L, seed, row0, want_states):
        import torch

        V, S = proc.vocab_size, proc.num_states
        tokens = torch.empty((B, L), dtype=_torch_dtype(smallest_uint(V).__name__), device=self.device)
        states = torch.empty((B, L + 1), dtype=_torch_dtype(smallest_uint(S).__name__), device=self.device) \
            if want_states else None
        with self._context():
            tb = self._hmm_tables(proc, init)
            self.module.sample_hmm(*self._launch_args(), V, S, _ptr(tb["packed"]), _ptr(tb["thresh"]),
                                   _ptr(tb["alias"]), _ptr(tb["init_thresh"]), _ptr(tb["init_alias"]), B, L, seed,
                                   row0, _ptr(tokens), _dtype_name(tokens), _ptr(states),
                                   _dtype_name(states) if states is not None else "uint8")
        return tokens, states

    def sample_ghmm(self, proc, init, B, L, seed, row0, dtype):
        import torch

        V, S = proc.vocab_size, proc.num_states
        self.check_states(S)
        tokens = torch.empty((B, L), dtype=_torch_dtype(smallest_uint(V).__name__), device=self.device)
        beliefs = torch.empty((B, L, S), dtype=getattr(torch, dtype), device=self.device) if dtype else None
        flags = self._flags(1)
        pt = self._process_tensors(proc)
        with self._context():
            dev_init = self._initial(proc, init)  # held until the call returns (see beliefs)
            self.module.sample_ghmm(*self._launch_args(), _ptr(pt["T"]), _ptr(pt["w"]), V, S, proc.zero_tol,
                                    _ptr(pt["Tw"]), _ptr(dev_init), B, L, seed, row0, _ptr(tokens),
                                    _dtype_name(tokens), _ptr(beliefs), dtype or "float32", _ptr(flags))
        return tokens, beliefs, flags

    # ---- MSP levels -------------------------------------------------------------------------
    def _msp_common(self, proc, parents, probs, min_prob):
        self.check_states(proc.num_states)
        pt = self._process_tensors(proc)
        return (_ptr(pt["T"]), _ptr(pt.get("w")), proc.vocab_size, proc.num_states, proc.zero_tol, _ptr(parents),
                _dtype_name(parents), _ptr(probs), int(parents.shape[0]), float(min_prob))

    def _msp_fill(self, proc, common, M, parents, keep, offsets, dropped):
        """The level's arrays; without keep/offsets (the optimistic full layout) no parent and
        token are written (None: a full level's are implicit)."""
        import torch

        dev = self.device
        b = torch.empty((M, proc.num_states), dtype=parents.dtype, device=dev)
        p = torch.empty(M, dtype=torch.float64, device=dev)
        tok_name = smallest_uint(proc.vocab_size).__name__
        par = tok = None
        if keep is not None:
            par = torch.empty(M, dtype=torch.int32, device=dev)
            tok = torch.empty(M, dtype=_torch_dtype(tok_name), device=dev)
        self.module.msp_fill(*self._launch_args(), *common, _ptr(keep), _ptr(offsets), _ptr(b), _ptr(p), _ptr(par),
                             _ptr(tok), tok_name, _ptr(dropped))
        return b, p, par, tok

    def msp_full(self, proc, parents, probs, min_prob):
        """Every child at i * V + x (beliefs and probs only), and a device flag set if one of
        them should have been dropped."""
        import torch

        common = self._msp_common(proc, parents, probs, min_prob)
        dropped = torch.zeros(1, dtype=torch.int64, device=self.device)
        with self._context():
            level = self._msp_fill(proc, common, int(parents.shape[0]) * proc.vocab_size, parents, None, None,
                                   dropped)
        return level, dropped

    def msp_counted(self, proc, parents, probs, min_prob):
        import torch

        common = self._msp_common(proc, parents, probs, min_prob)
        n = int(parents.shape[0]) * proc.vocab_size
        with self._context():
            keep = torch.empty(n, dtype=torch.int32, device=self.device)
            self.module.msp_keep(*self._launch_args(), *common, _ptr(keep))
            ends = torch.cumsum(keep, 0)  # int64
            M = int(ends[-1].item()) if n else 0
            return self._msp_fill(proc, common, M, parents, keep, ends - keep, None)

    def first_dropped(self, dropped: list):
        """Index of the first level whose flag is set: one read for all of them."""
        import torch

        flags = torch.cat(dropped).cpu().tolist()
        return next((k for k, d in enumerate(flags) if d), None)

    def speculate(self, nbytes: int) -> bool:
        return nbytes <= SPECULATION_BYTES

    @staticmethod
    def nbytes(level) -> int:
        return sum(a.numel() * a.element_size() for a in level if a is not None)
