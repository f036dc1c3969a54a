"""Array plumbing shared by the wrappers: numpy/torch views, and argument checks of scalars
with clear messages."""
from __future__ import annotations

import sys

import numpy as np

from . import _errors, _validate


def is_torch(x) -> bool:
    """True for a torch.Tensor, without importing torch when it is not loaded already."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x, name: str) -> np.ndarray:
    """numpy view of a numpy array, torch CPU tensor, CPU DLPack array (JAX) or array-like
    (copy only if unavoidable)."""
    if not isinstance(x, np.ndarray) and not is_torch(x) and hasattr(x, "__dlpack__"):
        from ._interop import incoming

        x = incoming(x)[0]  # a torch tensor viewing the same memory
    if is_torch(x):
        if x.device.type != "cpu":
            raise _errors.cpu_only(name, x.device)
        return x.detach().resolve_conj().resolve_neg().numpy()
    return np.asarray(x)


def check_count(value, name: str, limit: int = 1 << 63) -> int:
    """A non-negative Python integer below ``limit`` (numpy/torch integer scalars accepted)."""
    return _validate.integer(value, name, minimum=0, limit=limit)


def check_seed(seed) -> int:
    return _validate.seed(seed)


def check_nonneg_float(value, name: str) -> float:
    """A finite real number >= 0."""
    return _validate.real(value, name, low=0.0)


def float_dtype_name(dtype) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(dtype, torch.dtype):
        dtype = str(dtype).replace("torch.", "")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt.name


def smallest_uint(n: int):
    """Smallest unsigned numpy dtype that holds the values 0..n-1."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if n - 1 <= np.iinfo(dt).max:
            return dt
    return np.uint64
