"""Thread count of the compiled core. Results never depend on it (work is split by rows)."""
from __future__ import annotations

from . import _core


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads in compiled kernels; ``None`` or 0 restores the default
    (env ``COMPMECH_NUM_THREADS``, else all cores)."""
    _core.set_num_threads(0 if n is None else int(n))


def get_num_threads() -> int:
    return int(_core.get_num_threads())


def build_info() -> dict:
    """How the compiled core was built: SIMD level, native tuning, CUDA support, compiler."""
    return dict(_core.build_info())
