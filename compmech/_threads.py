"""Thread count of the compiled core. Results never depend on it (work is split by rows)."""
from __future__ import annotations

from . import _core
from ._validate import ParameterError, integer


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads in compiled kernels; ``None`` or 0 restores the default
    (env ``COMPMECH_NUM_THREADS``, else all cores)."""
    n = 0 if n is None else integer(n, "set_num_threads: n", minimum=None, none_ok=True)
    if n < 0:
        raise ParameterError(f"set_num_threads: n must be >= 1 (or 0/None for the default), got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    return int(_core.get_num_threads())


def build_info() -> dict:
    """How the compiled core was built: SIMD level, native tuning, CUDA support, compiler."""
    return dict(_core.build_info())
