"""Array plumbing shared by the wrappers: numpy/torch in, the same kind out (no copies where
the layout allows), integer-token checks, and argument checks with clear messages."""
from __future__ import annotations

import sys

import numpy as np

from . import _validate

# Token dtypes the compiled core reads directly; others are converted (after range checks).
_KERNEL_TOKEN_DTYPES = (np.uint8, np.uint16, np.int32, np.int64)


def is_cuda(x) -> bool:
    """True for a torch tensor on a CUDA device."""
    return is_torch(x) and x.device.type == "cuda"


def is_torch(x) -> bool:
    """True for a torch.Tensor, without importing torch when it is not loaded already."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x, name: str) -> np.ndarray:
    """numpy view of a numpy array, torch CPU tensor or array-like (copy only if unavoidable)."""
    if is_torch(x):
        if x.device.type != "cpu":
            raise ValueError(
                f"{name} is on device {x.device}; compmech runs on CPU arrays and CUDA tensors "
                f"(move it with .cpu(), or put every tensor of the call on the same CUDA device)")
        return x.detach().resolve_conj().resolve_neg().numpy()
    return np.asarray(x)


def like_input(arr: np.ndarray | None, was_torch: bool):
    """Return arr as a torch tensor sharing its memory when the input was torch."""
    if arr is None or not was_torch:
        return arr
    import torch

    return torch.from_numpy(arr)


def as_tokens(tokens, vocab_size: int):
    """Validate tokens (B, L) or (L,) of any integer dtype; return (C-contiguous 2-D array of a
    kernel dtype, was_1d, was_torch)."""
    was_torch = is_torch(tokens)
    arr = to_numpy(tokens, "tokens")
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise TypeError(f"tokens must be an integer array, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"tokens must have shape (B, L) or (L,), got shape {arr.shape}")
    was_1d = arr.ndim == 1
    if was_1d:
        arr = arr[None, :]
    if arr.dtype.type in _KERNEL_TOKEN_DTYPES and (not arr.dtype.isnative or arr.dtype.metadata):
        arr = arr.astype(arr.dtype.newbyteorder("=").type)  # plain native dtype for the kernel
    if arr.dtype.type not in _KERNEL_TOKEN_DTYPES:
        if arr.dtype.kind == "u" and arr.size and arr.max() >= vocab_size:
            r, t = np.unravel_index(int(np.argmax(arr >= vocab_size)), arr.shape)
            raise ValueError(f"tokens: value {int(arr[r, t])} at row {r}, position {t} is outside the "
                             f"vocabulary [0, {vocab_size})")
        arr = arr.astype(np.int32 if arr.dtype.itemsize < 4 else np.int64)
    return np.ascontiguousarray(arr), was_1d, was_torch


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
