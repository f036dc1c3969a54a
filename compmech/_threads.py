"""Thread count of the compiled core. Results never depend on it (work is split by rows)."""
from __future__ import annotations

import os
import re
import warnings

from . import _core
from ._validate import ParameterError, integer


def _check_env() -> None:
    """A COMPMECH_NUM_THREADS that is not a whole number in [1, 65536] is ignored by the core
    (all cores are used); say so once, at import, instead of silently."""
    v = os.environ.get("COMPMECH_NUM_THREADS")
    if v is None or not v.strip():
        return
    if not (re.fullmatch(r"\s*\+?[0-9]+\s*", v) and 1 <= int(v) <= 1 << 16):  # as the core's strtol reads it
        warnings.warn(f"COMPMECH_NUM_THREADS={v!r} is not a whole number of threads in [1, 65536]; it is "
                      f"ignored (using all {os.cpu_count()} cores)", RuntimeWarning, stacklevel=3)


_check_env()


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
