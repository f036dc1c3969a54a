"""The kind of array a call returns: the kind it was given. The backends work on numpy arrays
and torch tensors; arrays of other libraries (JAX, CuPy, anything with ``__dlpack__`` or
``__cuda_array_interface__``) come in as torch tensors and results go back as the caller's kind
on the same device, both through DLPack, so no data is copied where the layout allows it.

numpy arrays, torch tensors and plain array-likes (lists) pass through untouched; results for
torch input come back as torch tensors (sharing the numpy result's memory on the CPU)."""
from __future__ import annotations

import numpy as np

from . import _errors
from ._arrays import is_torch


def identity(x):
    return x


def _family(obj) -> str:
    """Top-level package of an object's type: 'jax', 'jaxlib', 'cupy', 'numba', ..."""
    return type(obj).__module__.split(".", 1)[0]


def is_foreign(x) -> bool:
    """An array from a library other than numpy/torch that exports DLPack or CUDA arrays."""
    if isinstance(x, np.ndarray) or is_torch(x):
        return False
    return hasattr(x, "__dlpack__") or hasattr(x, "__cuda_array_interface__")


def is_immutable(x) -> bool:
    """Arrays that must not be written through a DLPack view (JAX's)."""
    return is_foreign(x) and _family(x) in ("jax", "jaxlib")


def _exporter(family: str, device):
    """Function turning a torch tensor or numpy array into the family's array type on
    ``device`` (a torch.device; the family's own device object where it needs one)."""
    if family in ("jax", "jaxlib"):
        import jax
        import jax.dlpack

        def to_jax(a):
            if isinstance(a, np.ndarray) and not a.flags.writeable:
                a = a.copy()  # DLPack export needs a writeable buffer
            return jax.dlpack.from_dlpack(a)

        return to_jax
    if family == "cupy":
        import cupy

        return lambda a: cupy.from_dlpack(a)
    if family == "numba":
        from numba import cuda

        return lambda a: cuda.as_cuda_array(a)
    return identity  # an exporter we do not know: torch tensors come back


def _wrap_back(back_one, align: int = 0):
    """Apply ``back_one`` to an array (numpy or torch) or pass None through. ``back.align``:
    the CPU buffer alignment at which the target library adopts memory instead of copying."""
    def back(a):
        if a is None:
            return None
        if is_torch(a) and a.device.type == "cpu":
            a = a.numpy()  # numpy exports CPU DLPack everywhere
        return back_one(a)

    back.align = align
    return back


def aligned_empty(shape, dtype, align: int) -> np.ndarray:
    """An uninitialised C-contiguous numpy array whose data starts on an ``align``-byte boundary."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    raw = np.empty(n + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n].view(dt).reshape(shape)


def _to_torch(a):
    import torch

    return torch.from_numpy(a) if isinstance(a, np.ndarray) else a


def incoming(x):
    """``(native, back)``: ``x`` as a numpy array or torch tensor (zero-copy for DLPack /
    CUDA-array-interface inputs, which become torch tensors), and a function returning a result
    of the call (numpy or torch) as ``x``'s kind on ``x``'s device."""
    if is_torch(x):
        return x, _to_torch  # CPU results come back as numpy views: torch tensors sharing them
    if not is_foreign(x):
        return x, identity
    import torch

    try:
        t = torch.from_dlpack(x) if hasattr(x, "__dlpack__") else torch.as_tensor(x, device="cuda")
    except (TypeError, RuntimeError, BufferError) as exc:
        raise _errors.unsupported_array(x) from exc
    family = _family(x)
    return t, _wrap_back(_exporter(family, t.device), align=64 if family in ("jax", "jaxlib") else 0)


def _checked_torch_device(device):
    """``device`` if torch reads it as a device that can hold the results, else one clear error
    (torch's own is a RuntimeError listing every device type; ``meta`` tensors hold no data)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {device!r} is not a device: use None (numpy), 'cpu', 'cuda', 'cuda:N', a "
                         f"torch.device, or a JAX/CuPy device") from None
    if dev.type == "meta":
        raise ValueError("device 'meta' holds no data (the results would be lost): use None (numpy), 'cpu' or 'cuda'")
    return device


def for_device(device):
    """``(torch device or None, back)`` for a ``device=`` argument: a JAX or CuPy device gives
    the matching torch device and a function returning arrays of that library on it; anything
    else (None, strings, torch devices) is returned as it is, with no conversion."""
    family = _family(device)
    if device is None:
        return device, identity
    if isinstance(device, str) or family in ("torch", "builtins"):
        return _checked_torch_device(device), identity
    if family in ("jax", "jaxlib"):
        import jax

        platform = getattr(device, "platform", "cpu")
        torch_dev = "cpu" if platform == "cpu" else f"cuda:{device.id}"
        export = _exporter("jax", None)

        def to_jax_device(a):
            return jax.device_put(export(a), device)  # no copy when already on that device

        return torch_dev, _wrap_back(to_jax_device, align=64)
    if family == "cupy":
        return f"cuda:{device.id}", _wrap_back(_exporter("cupy", None))
    return device, identity
