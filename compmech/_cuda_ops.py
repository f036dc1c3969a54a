"""GPU path of beliefs, sampling and MSP levels: torch CUDA tensors in, torch CUDA tensors out on
the same device, kernels launched on torch's current stream (compiled module ``compmech._cuda``).

Device memory is allocated here with torch (its caching allocator) and handed to the kernels
as raw pointers, so the extension has no compile-time dependency on torch's C++ ABI. Each call
reads back a few bytes of error flags (one synchronisation) so that impossible or out-of-range
tokens raise the same errors as on the CPU.

``emulate=True`` runs the same kernels compiled for the CPU (``compmech._cuda_emu``, one
std::thread per CUDA thread) on CPU tensors: the tests use it to check this module and the
kernels on machines without a GPU.
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._arrays import smallest_uint

_SENTINEL = (1 << 63) - 1  # "no error" in the int64 flag words the kernels atomicMin into


def module():
    """The compiled CUDA module, or a RuntimeError saying why it is unavailable."""
    try:
        from . import _cuda
    except ImportError as exc:
        raise RuntimeError(
            "this build of compmech has no CUDA kernels (compmech.build_info()['cuda'] is False): it was "
            "built without a CUDA toolkit or with COMPMECH_CUDA=OFF; reinstall with nvcc on the PATH") from exc
    return _cuda


def device(dev):
    """A torch.device with an explicit index for ``"cuda"``-like input, checked to exist."""
    import torch

    d = torch.device(dev)
    if d.type != "cuda":
        raise ValueError(f"expected a CUDA device, got {d}")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {str(dev)!r} requested, but torch sees no CUDA GPU "
                           "(torch.cuda.is_available() is False)")
    idx = torch.cuda.current_device() if d.index is None else d.index
    if not 0 <= idx < torch.cuda.device_count():
        raise ValueError(f"device cuda:{idx} does not exist ({torch.cuda.device_count()} CUDA device(s) visible)")
    return torch.device("cuda", idx)


class _Backend:
    """Where kernels run: a CUDA device (module _cuda, torch's current stream) or the CPU
    emulation (module _cuda_emu, CPU tensors)."""

    def __init__(self, dev, emulate: bool):
        import torch

        self.emulate = emulate
        if emulate:
            from . import _cuda_emu

            self.module, self.device = _cuda_emu, torch.device("cpu")
        else:
            self.module, self.device = module(), device(dev)

    def launch_args(self):
        import torch

        if self.emulate:
            return 0, 0
        return self.device.index, torch.cuda.current_stream(self.device).cuda_stream

    def context(self):
        import contextlib

        import torch

        return contextlib.nullcontext() if self.emulate else torch.cuda.device(self.device)


def max_states() -> int:
    """Largest S the CUDA kernels take (a belief is held per GPU thread)."""
    from . import _cuda_emu  # always built; shares the limit with the CUDA module

    return int(_cuda_emu.max_states)


def _check_states(S: int):
    limit = max_states()
    if S > limit:
        raise ValueError(f"the CUDA kernels take processes with at most {limit} states, this one has {S}; "
                         "use CPU arrays for it")


def _upload(a: np.ndarray, dev):
    import torch

    return torch.tensor(np.ascontiguousarray(a), device=dev)  # a copy: proc arrays are read-only


def _process_tensors(proc, dev) -> dict:
    """T, w and the token weights Tw on the device, cached on the (immutable) process per device.
    Cached tensors are never freed, so a kernel on any stream may still be reading them."""
    cache = proc.__dict__.setdefault("_cuda_tensors", {})
    key = str(dev)
    if key not in cache:
        t = {"T": _upload(proc.T, dev)}
        if proc.is_generalized:
            t["w"] = _upload(proc.w, dev)
            t["Tw"] = _upload(proc.token_weights, dev)  # the CPU sampler's own bits
        cache[key] = t
    return cache[key]


def _is_stationary(proc, init: np.ndarray) -> bool:
    """Whether ``init`` is the process's (unique) stationary distribution: device copies of what
    depends on it are then cached on the process."""
    try:
        return np.array_equal(init, proc.stationary)
    except ValueError:  # no unique stationary distribution: the caller passed initial explicitly
        return False


def _initial_tensor(proc, init: np.ndarray, dev):
    """The initial belief on the device; the stationary one is cached (no upload, no wait)."""
    if _is_stationary(proc, init):
        stationary = proc.stationary
        t = _process_tensors(proc, dev)
        if "stationary" not in t:
            t["stationary"] = _upload(stationary, dev)
        return t["stationary"]
    return _upload(init, dev)


def _ptr(t) -> int:
    return 0 if t is None else t.data_ptr()


def _dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


def _torch_uint(np_dtype):
    """torch dtype matching numpy's unsigned token/state dtype (uint16/uint32 need torch >= 2.3)."""
    import torch

    name = np.dtype(np_dtype).name
    dt = getattr(torch, name, None)
    if dt is None:
        raise RuntimeError(f"this torch ({torch.__version__}) has no {name} tensors; upgrade torch to >= 2.3")
    return dt


def _read_flags(flags) -> list[int]:
    return [int(v) for v in flags.cpu().tolist()]


def _where(idx: int, L: int) -> str:
    return f"row {idx // L}, position {idx % L}"


# ---- beliefs --------------------------------------------------------------------------------

_KERNEL_TOKEN_DTYPES = ("uint8", "int32", "int64")


def _kernel_tokens(tokens):
    """2-D contiguous tokens in a dtype the kernel reads (uint8/int32/int64); others converted."""
    import torch

    if tokens.dtype == torch.bool or tokens.dtype.is_floating_point or tokens.dtype.is_complex:
        raise TypeError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
    if tokens.ndim not in (1, 2):
        raise ValueError(f"tokens must have shape (B, L) or (L,), got shape {tuple(tokens.shape)}")
    was_1d = tokens.ndim == 1
    t = tokens[None] if was_1d else tokens
    name = _dtype_name(t)
    if name not in _KERNEL_TOKEN_DTYPES:
        # uint32/uint64 values above int32/int63 range must still read as out-of-vocabulary
        t = t.to(torch.int64) if name in ("uint32", "uint64") else t.to(torch.int32)
    return t.contiguous(), was_1d


def _check_out(out, dev, B, L, S):
    import torch

    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch tensor on {dev} when tokens are, got {type(out).__name__}")
    if out.device != dev:
        raise ValueError(f"out is on {out.device}, tokens on {dev}")
    if out.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"out must be float32 or float64, got {out.dtype}")
    if tuple(out.shape) != (B, L, S):
        raise ValueError(f"out must have shape {(B, L, S)}, got {tuple(out.shape)}")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous")


def _check_no_overlap(out, tok):
    if out.untyped_storage().data_ptr() == tok.untyped_storage().data_ptr():
        raise ValueError("out must not overlap tokens")


def beliefs(proc, tokens, init: np.ndarray, dtype: str | None, want_logp: bool, nan_on_zero: bool, out=None,
            emulate: bool = False, check: bool = True):
    """Beliefs (B, L, S) of ``dtype`` (None: not computed) and log-probabilities (B,) float64
    for CUDA ``tokens``; same conventions and errors as the CPU path. ``check=False`` skips the
    error-flag read (and so the wait for the kernel): only for tokens this library just sampled
    from ``proc`` with ``nan_on_zero`` semantics acceptable."""
    import torch

    be = _Backend(tokens.device, emulate)
    cu, dev = be.module, be.device
    _check_states(proc.num_states)
    tok, was_1d = _kernel_tokens(tokens)
    B, L = tok.shape
    S = proc.num_states
    if out is not None:
        want = (L, S) if was_1d else (B, L, S)
        if tuple(out.shape) != want:
            raise ValueError(f"out must have shape {want}, got {tuple(getattr(out, 'shape', ()))}")
        buf = out[None] if was_1d else out
        _check_out(buf, dev, B, L, S)
        _check_no_overlap(buf, tok)
    elif dtype is not None:
        buf = torch.empty((B, L, S), dtype=getattr(torch, dtype), device=dev)
    else:
        buf = None
    lp = (torch.zeros if L == 0 else torch.empty)(B, dtype=torch.float64, device=dev) if want_logp else None
    flags = torch.full((2,), _SENTINEL, dtype=torch.int64, device=dev)
    pt = _process_tensors(proc, dev)
    init_t = _initial_tensor(proc, init, dev)
    with be.context():
        cu.beliefs(*be.launch_args(), _ptr(pt["T"]), _ptr(pt.get("w")), proc.vocab_size, S, proc.zero_tol,
                   _ptr(init_t), _ptr(tok), _dtype_name(tok), B, L, _ptr(buf),
                   _dtype_name(buf) if buf is not None else "float32", _ptr(lp), _ptr(flags))
        zero, bad = _read_flags(flags) if check else (_SENTINEL, _SENTINEL)
    if bad != _SENTINEL:
        value = int(tok.view(-1)[bad].item())
        raise ValueError(f"tokens: value {value} at {_where(bad, L)} is outside the vocabulary "
                         f"[0, {proc.vocab_size})")
    if zero != _SENTINEL and not nan_on_zero:
        value = int(tok.view(-1)[zero].item())
        raise ValueError(f"token {value} at {_where(zero, L)} has zero probability under the belief before it: the "
                         "sequence is impossible under this process (pass on_zero='nan' to get NaN beliefs and "
                         "log_prob=-inf instead)")
    b = out if out is not None else (buf[0] if was_1d and buf is not None else buf)
    if lp is not None and was_1d:
        lp = lp[0]
    return b, lp


# ---- sampling -------------------------------------------------------------------------------

def _hmm_tables(proc, init: np.ndarray, dev) -> dict:
    """Alias tables (the CPU sampler's own, built by the core) on the device. Those for the
    stationary initial are cached per device and never freed; others are built per call (freed
    after the launch, on the stream that allocated them: safe)."""
    def build():
        packed, thresh, alias, ithresh, ialias = _core.hmm_sample_tables(proc.T, init)
        # uploaded as signed views: the kernels read the same bits as unsigned
        return dict(packed=None if packed is None else _upload(packed.view(np.int64), dev),
                    thresh=_upload(thresh.view(np.int32), dev), alias=_upload(alias.view(np.int32), dev),
                    init_thresh=_upload(ithresh.view(np.int32), dev), init_alias=_upload(ialias.view(np.int32), dev))

    if not _is_stationary(proc, init):
        return build()
    t = _process_tensors(proc, dev)
    if "tables" not in t:
        t["tables"] = build()
    return t["tables"]


def sample(proc, B: int, L: int, seed: int, row0: int, init: np.ndarray, want_states: bool,
           beliefs_dtype: str | None, dev, emulate: bool = False):
    """(tokens, states or None, beliefs or None) generated on ``dev``; the CPU's tokens bit for bit."""
    import torch

    be = _Backend(dev, emulate)
    cu, dev = be.module, be.device
    V, S = proc.vocab_size, proc.num_states
    tokens = torch.empty((B, L), dtype=_torch_uint(smallest_uint(V)), device=dev)
    states = beliefs_out = None
    with be.context():
        if proc.is_generalized:
            _check_states(S)
            if beliefs_dtype is not None:
                beliefs_out = torch.empty((B, L, S), dtype=getattr(torch, beliefs_dtype), device=dev)
            flags = torch.full((1,), _SENTINEL, dtype=torch.int64, device=dev)
            pt = _process_tensors(proc, dev)
            init_t = _initial_tensor(proc, init, dev)
            cu.sample_ghmm(*be.launch_args(), _ptr(pt["T"]), _ptr(pt["w"]), V, S, proc.zero_tol, _ptr(pt["Tw"]),
                           _ptr(init_t), B, L, seed, row0, _ptr(tokens), _dtype_name(tokens), _ptr(beliefs_out),
                           beliefs_dtype or "float32", _ptr(flags))
            (fail,) = _read_flags(flags)
            if fail != _SENTINEL:
                raise ValueError(f"sampling reached a belief that gives no token positive probability at "
                                 f"{_where(fail, L)}: the GHMM does not define a valid process from this initial "
                                 "belief")
            return tokens, None, beliefs_out
        if (proc.T < 0).any() or (init < 0).any():
            raise ValueError("T and initial must be non-negative for hidden-state sampling")
        tb = _hmm_tables(proc, init, dev)
        if want_states:
            states = torch.empty((B, L + 1), dtype=_torch_uint(smallest_uint(S)), device=dev)
        cu.sample_hmm(*be.launch_args(), V, S, _ptr(tb["packed"]), _ptr(tb["thresh"]), _ptr(tb["alias"]),
                      _ptr(tb["init_thresh"]), _ptr(tb["init_alias"]), B, L, seed, row0, _ptr(tokens),
                      _dtype_name(tokens), _ptr(states), _dtype_name(states) if states is not None else "uint8")
    if beliefs_dtype is not None:  # sampled tokens are possible by construction: no error check needed
        beliefs_out, _ = beliefs(proc, tokens, init, beliefs_dtype, False, False, emulate=emulate, check=False)
    return tokens, states, beliefs_out


# ---- MSP levels -----------------------------------------------------------------------------

def msp_level(proc, parents, parent_probs, min_prob: float, expect_full: bool, emulate: bool = False):
    """Children of one MSP level on the parents' device: (beliefs, probs, parent int32, token),
    in (parent, token) order, as the CPU's ``_core.msp_level``."""
    import torch

    be = _Backend(parents.device, emulate)
    cu, dev = be.module, be.device
    _check_states(proc.num_states)
    V, S = proc.vocab_size, proc.num_states
    P = int(parents.shape[0])
    if P > np.iinfo(np.int32).max:
        raise ValueError(f"msp level too large ({P} parents): use compmech.msp_level_chunks")
    pt = _process_tensors(proc, dev)
    tok_dtype = _torch_uint(smallest_uint(V))
    common = (_ptr(pt["T"]), _ptr(pt.get("w")), V, S, proc.zero_tol, _ptr(parents), _dtype_name(parents),
              _ptr(parent_probs), P, float(min_prob))

    def fill(M, keep, offsets, dropped):
        b = torch.empty((M, S), dtype=parents.dtype, device=dev)
        p = torch.empty(M, dtype=torch.float64, device=dev)
        par = torch.empty(M, dtype=torch.int32, device=dev)
        tok = torch.empty(M, dtype=tok_dtype, device=dev)
        cu.msp_fill(*be.launch_args(), *common, _ptr(keep), _ptr(offsets), _ptr(b), _ptr(p), _ptr(par), _ptr(tok),
                    _dtype_name(tok), _ptr(dropped))
        return b, p, par, tok

    with be.context():
        if expect_full:
            # Optimistic single pass at fixed offsets i * V + x; redone by counting if a child drops.
            dropped = torch.zeros(1, dtype=torch.int64, device=dev)
            out = fill(P * V, None, None, dropped)
            if int(dropped.item()) == 0:
                return out
            del out
        keep = torch.empty(P * V, dtype=torch.int32, device=dev)
        cu.msp_keep(*be.launch_args(), *common, _ptr(keep))
        ends = torch.cumsum(keep, 0)  # int64
        M = int(ends[-1].item()) if P * V else 0
        offsets = ends - keep
        return fill(M, keep, offsets, None)
